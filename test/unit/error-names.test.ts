// The bundles are minified without esbuild's keepNames (scripts/bundle.mjs:
// ~1 MiB of peak RSS at launch), so a class's or function's own .name is a
// minified identifier there. So: every user error (a subclass of UserError,
// at any depth) names itself with a `name` field holding its class name,
// and no code reads `new.target.name` or `constructor.name`. Checked on the
// source, and on the bundle for the errors a user sees most.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SRC = path.join(ROOT, 'src');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

const FILES = sources(SRC).map((file) => ({ file, text: fs.readFileSync(file, 'utf8') }));

/** class name -> { parent, body's opening text, file } */
function classes(): Map<string, { parent: string; file: string; text: string; at: number }> {
  const out = new Map<string, { parent: string; file: string; text: string; at: number }>();
  for (const { file, text } of FILES) {
    for (const m of text.matchAll(/\bclass (\w+)(?:<[^>{]*>)? extends (\w+)/g)) {
      out.set(m[1], { parent: m[2], file, text, at: m.index! + m[0].length });
    }
  }
  return out;
}

describe('error and class names without keepNames', () => {
  const all = classes();
  const isUserError = (name: string): boolean => {
    for (let c: string | undefined = name, depth = 0; c !== undefined && depth < 20; c = all.get(c)?.parent, depth++) {
      if (c === 'UserError') return true;
    }
    return false;
  };
  const userErrors = [...all.keys()].filter((c) => c !== 'UserError' && isUserError(c));

  it('finds the user errors', () => {
    expect(userErrors).toEqual(expect.arrayContaining(['ConfigError', 'UsageError', 'SysError', 'VmSetupError', 'GuestLimitError']));
  });

  it('every subclass of UserError sets name to its class name', () => {
    const missing = userErrors.filter((c) => {
      const { text, at } = all.get(c)!;
      // The class body's own fields come first: the name within its first lines.
      const head = text.slice(at, at + 400);
      return !new RegExp(`^\\s*\\{\\s*override readonly name: string = '${c}';`).test(head);
    });
    expect(missing).toEqual([]);
  });

  it('no code reads a class name at run time', () => {
    const readers = FILES.filter(({ text }) => /\bnew\.target\.name\b|\bconstructor\.name\b/.test(text))
      .map(({ file }) => path.relative(ROOT, file));
    expect(readers).toEqual([]);
  });

  const BUNDLE = path.join(ROOT, 'dist/bundle/bhyve-main.cjs');
  it.skipIf(!fs.existsSync(BUNDLE))('the bundle is built without keepNames and keeps the errors\' names', () => {
    const text = fs.readFileSync(BUNDLE, 'utf8');
    // keepNames' helper: (t, e) => defineProperty(t, "name", { value: e, configurable: true }).
    expect(text).not.toMatch(/"name",\{value:/);
    for (const c of ['UserError', 'ConfigError', 'UsageError', 'SysError', 'VmSetupError']) expect(text).toContain(`"${c}"`);
  });
});
