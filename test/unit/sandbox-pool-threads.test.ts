// libuv's pool under the sandbox (src/vmm/sandbox/pool-threads.ts), in a
// throwaway Node process (no KVM needed): pool threads started before the
// sandbox each take no_new_privs, Landlock and the capability drop, every
// one of them exactly once, a pool thread held by a tap-style poll does not
// hold the sandbox up, and the main thread is left alone.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DIST = path.join(ROOT, 'dist');

function why(): string | undefined {
  if (!fs.existsSync(path.join(DIST, 'vmm/sandbox/pool-threads.js'))) return 'dist/ is not built: run npm run build';
  return undefined;
}
const skip = why();

const CHILD = `
import fs from 'node:fs';
const D = ${JSON.stringify(DIST)};
const { confinePoolThreads } = await import(D + '/vmm/sandbox/pool-threads.js');
const { landlockStatus, FS } = await import(D + '/vmm/sandbox/landlock.js');
const { pollReadable } = await import(D + '/sys/tap.js');
const { eventfd } = await import(D + '/sys/eventfd.js');
const [dir] = process.argv.slice(2);
const ll = landlockStatus();
await fs.promises.readFile('/etc/hostname'); // libuv's pool starts now
// A descriptor nobody writes: its poll holds a pool thread for 5 s unless
// the sandbox interrupts it.
const held = pollReadable(eventfd(0), 5000);
await new Promise((r) => setTimeout(r, 50));
const t0 = Date.now();
const tids = await confinePoolThreads({ landlockAbi: 'abi' in ll ? ll.abi : 0, handleNet: true, landlockDone: false,
  landlockRules: [{ path: dir, access: FS.READ_FILE }] });
const ms = Date.now() - t0;
const status = (tid) => fs.readFileSync('/proc/self/task/' + tid + '/status', 'utf8');
const field = (st, k) => new RegExp('^' + k + ':\\\\s*(\\\\S+)', 'm').exec(st)?.[1];
const threads = tids.map((tid) => { const st = status(tid); return { nnp: field(st, 'NoNewPrivs'), capEff: field(st, 'CapEff') }; });
const tryAsync = (p) => p.then(() => 'ok', (e) => e.code);
const out = {
  landlock: 'abi' in ll, tids, ms, held: await held, threads,
  asyncOther: await tryAsync(fs.promises.readFile('/etc/passwd')),
  asyncGranted: await tryAsync(fs.promises.readFile(dir + '/keep')),
  mainOther: (() => { try { fs.readFileSync('/etc/passwd'); return 'ok'; } catch (e) { return e.code; } })(),
  mainNnp: field(fs.readFileSync('/proc/self/status', 'utf8'), 'NoNewPrivs'),
};
process.stdout.write(JSON.stringify(out));
`;

const dirs: string[] = [];
afterAll(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

describe.skipIf(skip)(`libuv's pool under the sandbox${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('every pool thread takes the steps once; a held poll is interrupted; the main thread is untouched', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-pool-'));
    dirs.push(dir);
    fs.writeFileSync(path.join(dir, 'keep'), 'kept');
    fs.writeFileSync(path.join(dir, 'child.mjs'), CHILD);
    const r = await execa('node', [path.join(dir, 'child.mjs'), dir], {
      reject: false, timeout: 30_000, env: { UV_THREADPOOL_SIZE: '6' },
    });
    expect(r.exitCode, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as {
      landlock: boolean; tids: number[]; ms: number; held: string; threads: Array<{ nnp: string; capEff: string }>;
      asyncOther: string; asyncGranted: string; mainOther: string; mainNnp: string;
    };
    expect(new Set(out.tids).size).toBe(6);
    expect(out.threads.every((t) => t.nnp === '1')).toBe(true);
    if (process.getuid?.() === 0) expect(out.threads.map((t) => t.capEff)).toEqual(Array(6).fill('0000000000000000'));
    // The poll's thread came to rest long before its 5 s were up.
    expect(out.held).toBe('timeout');
    expect(out.ms).toBeLessThan(4000);
    expect(out.asyncOther).toBe(out.landlock ? 'EACCES' : 'ok');
    expect(out.asyncGranted).toBe('ok');
    expect(out.mainOther).toBe('ok');
    expect(out.mainNnp).toBe('0');
  });
});
