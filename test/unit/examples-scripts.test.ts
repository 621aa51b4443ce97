// The shell scripts in examples/ are POSIX sh: they parse under dash (Debian's
// /bin/sh, which runs them in test/integration/examples-*.test.ts) and under
// bash in POSIX mode, shellcheck finds no warning in them, and every file
// there is covered by a test.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../support/bhyve.js';

const EX = path.join(ROOT, 'examples');
const scripts = ['vm', 'rc.d/vm'];
const SHELLCHECK_MISSING = spawnSync('sh', ['-c', 'command -v shellcheck']).status === 0
  ? undefined : 'shellcheck is not installed (apt-get install shellcheck)';
if (SHELLCHECK_MISSING) console.warn(`skipping the shellcheck test: ${SHELLCHECK_MISSING}`);

describe('examples/ shell scripts', () => {
  it.each(scripts)('%s parses with sh -n, dash -n and bash --posix -n, and starts with #!/bin/sh', (s) => {
    const file = path.join(EX, s);
    expect(fs.readFileSync(file, 'utf8').split('\n')[0]).toBe('#!/bin/sh');
    expect(fs.statSync(file).mode & 0o111).not.toBe(0);
    for (const sh of [['sh', '-n'], ['dash', '-n'], ['bash', '--posix', '-n']]) {
      const r = spawnSync(sh[0], [...sh.slice(1), file], { encoding: 'utf8' });
      expect(r.stderr, sh.join(' ')).toBe('');
      expect(r.status, sh.join(' ')).toBe(0);
    }
  });

  it.skipIf(SHELLCHECK_MISSING !== undefined)(`shellcheck -s sh finds no warning${SHELLCHECK_MISSING ? ` (skipped: ${SHELLCHECK_MISSING})` : ''}`, () => {
    const r = spawnSync('shellcheck', ['-s', 'sh', '-S', 'warning', ...scripts.map((s) => path.join(EX, s))], { encoding: 'utf8' });
    expect(r.stdout).toBe('');
    expect(r.status).toBe(0);
  });

  it('uses no bash-only syntax: [[, function, arrays, local, $\'...\', ==, source, <(...)', () => {
    for (const s of scripts) {
      const code = fs.readFileSync(path.join(EX, s), 'utf8').split('\n')
        .filter((l) => !/^\s*#/.test(l)).join('\n');
      for (const bad of [/(^|\s)\[\[\s/, /^\s*function\s/m, /\w+=\(/, /^\s*local\s/m, /\$'/, /\[ [^\]]* == /, /^\s*source\s/m, /<\(/, /\$\{\w+:\d/]) {
        expect(code, `${s}: ${bad}`).not.toMatch(bad);
      }
    }
  });

  it('every file in examples/ is one of those scripts, the unit or the README', () => {
    const all: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p); else all.push(path.relative(EX, p));
      }
    };
    walk(EX);
    expect(all.sort()).toEqual(['README.md', 'rc.d/vm', 'systemd/bhyve@.service', 'vm']);
  });
});
