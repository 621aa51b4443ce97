// BHYVE_TEST_NO_SKIP=1 (set by .ci/run): a skipped test is a failure. Tests
// skip where the host lacks what they need (/dev/kvm, root, QEMU, OVMF,
// iasl, ...); CI installs all of it, so a skip there means part of the
// suite silently did not run. This reporter lists every skipped or todo
// test with its reason and fails the run. Without the variable it does
// nothing (developers' machines may lack a package).
import path from 'node:path';
import type { Reporter, TestModule } from 'vitest/node';

export default class NoSkipReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    if (!process.env.BHYVE_TEST_NO_SKIP) return;
    const skipped: string[] = [];
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const r = t.result();
        if (r.state !== 'skipped') continue;
        skipped.push(`  ${path.relative(process.cwd(), m.moduleId)}: ${t.fullName}${r.note ? ` (${r.note})` : ''}`);
      }
    }
    if (skipped.length === 0) {
      process.stdout.write('BHYVE_TEST_NO_SKIP: 0 tests skipped\n');
      return;
    }
    process.stderr.write(`BHYVE_TEST_NO_SKIP: ${skipped.length} test(s) skipped, which counts as a failure:\n${skipped.join('\n')}\n`);
    process.exitCode = 1;
  }
}
