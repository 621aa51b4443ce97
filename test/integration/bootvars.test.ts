// The UEFI VARS file written through bootvars.ts's CFI flash by a test ROM
// (test/guests/cfi-vars.S) persists across two runs of bhyve.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { bhyveArgs, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';

const skip = kvmUnavailable() ?? (fs.existsSync(rom('cfi-vars')) ? undefined : 'cfi-vars.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping bootvars integration tests: ${skip}`);

describe.skipIf(skip !== undefined)('UEFI variables through CFI flash (bootrom VARS)', () => {
  it('a counter in VARS goes 0 -> 1 -> 2 over two runs, and the file holds it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bootvars-'));
    const vars = path.join(dir, 'VARS.fd');
    fs.writeFileSync(vars, Buffer.alloc(4096));
    try {
      const run = async (): Promise<string> => {
        const args = bhyveArgs(rom('cfi-vars'), vmName('cfivars'))
          .map((a) => (a.startsWith('bootrom,') ? `${a},${vars}` : a));
        const r = await runBhyve(args);
        expect(r.stderr).not.toMatch(/Error|at .*\.js/);
        expect(r.exitCode).toBe(33);
        return String(r.stdout);
      };
      const first = await run();
      expect(first).toContain('cfi-vars: counter 0\r\n');
      expect(first).toContain('cfi-vars: wrote 1, status 0x80, read back 1\r\n');
      expect(fs.readFileSync(vars)[0]).toBe(1);

      const second = await run();
      expect(second).toContain('cfi-vars: counter 1\r\n');
      expect(second).toContain('cfi-vars: wrote 2, status 0x80, read back 2\r\n');
      const bytes = fs.readFileSync(vars);
      expect(bytes[0]).toBe(2);
      expect(bytes.subarray(1).every((b) => b === 0)).toBe(true);
      expect(bytes.length).toBe(4096);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
