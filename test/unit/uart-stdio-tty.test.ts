// The stdio backend on a real terminal: stdin goes raw while the backend is
// open and comes back however the process ends (close, uncaught exception,
// fatal signal). `script` gives the child a pty; the shell that runs the child
// prints `stty -g` after it has gone, on the same pty.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ts from 'typescript';

const haveScript = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;
let dir = '';

function transpile(rel: string): void {
  const src = readFileSync(new URL(`../../src/${rel}.ts`, import.meta.url), 'utf8');
  const out = ts.transpileModule(src, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  const file = join(dir, `${rel}.js`);
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, out);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'uart-stdio-'));
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
  transpile('vmm/byte-ring');
  transpile('vmm/ring-pumps');
  transpile('devices/lpc/uart-backend');
  transpile('user-error');
  writeFileSync(join(dir, 'child.js'), `
import { execFileSync } from 'node:child_process';
import { openUartBackend, restoreTerminal } from './devices/lpc/uart-backend.js';
const g = () => execFileSync('stty', ['-g'], { stdio: ['inherit', 'pipe', 'pipe'], encoding: 'utf8' }).trim();
const mode = process.argv[2];
const before = g();
const host = await openUartBackend('stdio', () => {});
const during = g();
console.log('BEFORE=' + before);
console.log('STATE=' + JSON.stringify({ isTTY: !!process.stdin.isTTY, raw: before !== during }));
if (mode === 'close') {
  await host.close();
  restoreTerminal();
  console.log('CLOSED=' + g());
  process.exit(0);
} else if (mode === 'throw') {
  setTimeout(() => { throw new Error('boom'); }, 10);
} else if (mode === 'signal') {
  setTimeout(() => process.kill(process.pid, 'SIGTERM'), 10);
  setTimeout(() => {}, 5000);
}
`);
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function run(mode: string): { before: string; state: { isTTY: boolean; raw: boolean }; after: string; rc: string; text: string } {
  const cmd = `node ${join(dir, 'child.js')} ${mode} 2>/dev/null; echo RC=$?; echo AFTER=$(stty -g)`;
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', timeout: 20_000 });
  const text = r.stdout.replace(/\r/g, '');
  const pick = (k: string): string => (new RegExp(`^${k}=(.*)$`, 'm').exec(text)?.[1] ?? '').trim();
  return { before: pick('BEFORE'), state: JSON.parse(pick('STATE') || '{}'), after: pick('AFTER'), rc: pick('RC'), text };
}

describe.skipIf(!haveScript)('stdio backend on a terminal', () => {
  it('is raw while open and restored by close()', () => {
    const r = run('close');
    expect(r.state, r.text).toEqual({ isTTY: true, raw: true });
    expect(r.before).not.toBe('');
    expect(r.after).toBe(r.before);
    expect(r.rc).toBe('0');
  });

  it('is restored after an uncaught exception', () => {
    const r = run('throw');
    expect(r.state, r.text).toEqual({ isTTY: true, raw: true });
    expect(r.rc).toBe('1');
    expect(r.after).toBe(r.before);
  });

  it('is restored on SIGTERM, and the process still dies by the signal', () => {
    const r = run('signal');
    expect(r.state, r.text).toEqual({ isTTY: true, raw: true });
    expect(r.rc).toBe('143');
    expect(r.after).toBe(r.before);
  });
});
