// The virtio-9p file server inside bhyve's sandbox, on this kernel, in a
// throwaway Node process (no KVM needed): after enterSandbox with a
// share's plan (its Landlock rule and the filter's share calls), every
// 9P2000.L operation still works on the share, and what the sandbox must
// still refuse (exec, a file created outside the share where Landlock is)
// is refused. Without the share calls in the filter, the same operations
// fail: the test shows which calls the server needs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DIST = path.join(ROOT, 'dist');

function why(): string | undefined {
  if (!fs.existsSync(path.join(DIST, 'devices/virtio/p9/p9-server.js'))) return 'dist/ is not built: run npm run build';
  if (!/^Seccomp:/m.test(fs.readFileSync('/proc/self/status', 'utf8'))) return 'the kernel has no seccomp (CONFIG_SECCOMP)';
  return undefined;
}
const skip = why();

// The child: open the share, sandbox itself as bhyve would for
// `-s N,virtio-9p,tag=SHARE[,ro]`, then run 9P requests through the server.
const CHILD = `
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
const D = ${JSON.stringify(DIST)};
const { enterSandbox } = await import(D + '/vmm/sandbox/sandbox.js');
const { confinePool } = await import(D + '/vmm/sandbox/pool-threads.js');
const { landlockStatus, FS } = await import(D + '/vmm/sandbox/landlock.js');
const { P9Server } = await import(D + '/devices/virtio/p9/p9-server.js');
const { P9Share } = await import(D + '/devices/virtio/p9/p9-share.js');
const { DescriptorChain } = await import(D + '/devices/virtio/virtqueue.js');
const { preloadLibc } = await import(D + '/sys/libc.js');
preloadLibc(); // bhyve loads koffi before it sandboxes itself
const [share, mode] = process.argv.slice(2);
const ro = mode === 'ro';
const srv = new P9Server(new P9Share(share, ro));
const ll = landlockStatus();
const write = FS.WRITE_FILE | FS.REMOVE_DIR | FS.REMOVE_FILE | FS.MAKE_DIR | FS.MAKE_REG | FS.MAKE_SOCK | FS.MAKE_FIFO | FS.MAKE_SYM | FS.REFER | FS.TRUNCATE;
const plan = { log: false, landlockAbi: 'abi' in ll ? ll.abi : 0, notes: [],
  landlockRules: [{ path: share, access: FS.READ_FILE | FS.READ_DIR | (ro ? 0n : write) }],
  ...(mode === 'none' ? {} : { shares: ro ? 'ro' : 'rw' }) };
await enterSandbox(plan, confinePool(plan));
const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); return b; };
const u64 = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; };
const u16 = (v) => Buffer.from([v & 255, v >> 8]);
const u8 = (v) => Buffer.from([v]);
const str = (s) => { const x = Buffer.from(s); return Buffer.concat([u16(x.length), x]); };
const resp = new Uint8Array(70000);
function rpc(type, ...parts) {
  const b = Buffer.concat(parts);
  const m = Buffer.alloc(7 + b.length);
  m.writeUInt32LE(m.length); m[4] = type; m.writeUInt16LE(1, 5); b.copy(m, 7);
  const c = new DescriptorChain();
  c.readable.push(m); c.readableLength = m.length; c.writable.push(resp); c.writableLength = resp.length;
  srv.handle(c);
  return resp[4] === 7 ? Buffer.from(resp).readUInt32LE(7) : 0;
}
const out = {};
out.version = rpc(100, u32(65536), str('9P2000.L'));
out.attach = rpc(104, u32(0), u32(0xffffffff), str('u'), str(''), u32(0));
out.walk = rpc(110, u32(0), u32(1), u16(1), str('host.txt'));
out.getattr = rpc(24, u32(1), u64(0x7ff));
out.statfs = rpc(8, u32(0));
out.lopen = rpc(12, u32(1), u32(0));
out.read = rpc(116, u32(1), u64(0), u32(100));
out.walkDir = rpc(110, u32(0), u32(2), u16(0));
out.readdirOpen = rpc(12, u32(2), u32(0o200000));
out.readdir = rpc(40, u32(2), u64(0), u32(4096));
out.clone = rpc(110, u32(0), u32(3), u16(0));
out.lcreate = rpc(14, u32(3), str('new.txt'), u32(2), u32(0o600), u32(0));
out.write = rpc(118, u32(3), u64(0), u32(5), Buffer.from('hello'));
out.fsync = rpc(50, u32(3), u32(0));
out.mkdir = rpc(72, u32(0), str('dir'), u32(0o755), u32(0));
out.symlink = rpc(16, u32(0), str('ln'), str('new.txt'), u32(0));
out.mknod = rpc(18, u32(0), str('fifo'), u32(0o010600), u32(0), u32(0), u32(0));
out.walk2 = rpc(110, u32(0), u32(4), u16(1), str('new.txt'));
out.link = rpc(70, u32(0), u32(4), str('hard.txt'));
out.setattrMode = rpc(26, u32(4), u32(0x1), u32(0o640), u32(0), u32(0), u64(0), u64(0), u64(0), u64(0), u64(0));
out.setattrTimes = rpc(26, u32(4), u32(0x10 | 0x20 | 0x80 | 0x100), u32(0), u32(0), u32(0), u64(0), u64(1000), u64(0), u64(2000), u64(0));
out.setattrOwner = rpc(26, u32(4), u32(0x2 | 0x4), u32(0), u32(process.getuid()), u32(process.getgid()), u64(0), u64(0), u64(0), u64(0), u64(0));
out.truncate = rpc(26, u32(4), u32(0x8), u32(0), u32(0), u32(0), u64(2), u64(0), u64(0), u64(0), u64(0));
out.renameat = rpc(74, u32(0), str('hard.txt'), u32(0), str('moved.txt'));
out.unlinkat = rpc(76, u32(0), str('moved.txt'), u32(0));
out.rmdir = rpc(76, u32(0), str('dir'), u32(0x200));
out.exec = (() => { const r = spawnSync('/bin/true'); return r.error ? r.error.code : 'ran'; })();
out.outside = (() => { try { fs.writeFileSync(path.join(path.dirname(share), 'outside.txt'), 'x'); return 'ok'; } catch (e) { return e.code; } })();
out.landlock = 'abi' in ll;
process.stdout.write(JSON.stringify(out));
`;

const dirs: string[] = [];
async function run(mode: 'rw' | 'ro' | 'none'): Promise<Record<string, unknown> & { dir: string }> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'v9p-sandbox-'));
  dirs.push(base);
  const share = path.join(base, 'share');
  fs.mkdirSync(share);
  fs.writeFileSync(path.join(share, 'host.txt'), 'host');
  fs.writeFileSync(path.join(base, 'child.mjs'), CHILD);
  const r = await execa('node', [path.join(base, 'child.mjs'), share, mode], { reject: false, timeout: 30_000 });
  expect(r.exitCode, r.stderr).toBe(0);
  return { ...(JSON.parse(r.stdout) as Record<string, unknown>), dir: share };
}

afterAll(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

const EPERM = 1;
const EROFS = 30;

describe.skipIf(skip)(`virtio-9p in the sandbox on this kernel${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('a writable share: every 9P operation works; exec stays refused', async () => {
    const out = await run('rw');
    const { exec, outside, landlock, dir, ...ops } = out;
    expect(ops).toEqual(Object.fromEntries(Object.keys(ops).map((k) => [k, 0])));
    expect(exec).toBe('EPERM');
    // Landlock keeps new files inside the share; the filter alone cannot.
    if (landlock) expect(outside).toBe('EACCES');
    // Before reading it (a read under relatime moves atime): the truncate after the setattr moved mtime.
    expect(fs.statSync(path.join(dir, 'new.txt')).atimeMs).toBe(1000 * 1000);
    expect(fs.readFileSync(path.join(dir, 'new.txt'), 'utf8')).toBe('he');
    expect(fs.lstatSync(path.join(dir, 'fifo')).isFIFO()).toBe(true);
    expect(fs.statSync(path.join(dir, 'new.txt')).mode & 0o777).toBe(0o640);
  });

  it('a read-only share: reads work, changes are EROFS before any call', async () => {
    const out = await run('ro');
    for (const k of ['version', 'attach', 'walk', 'getattr', 'statfs', 'lopen', 'read', 'readdir']) expect(out[k], k).toBe(0);
    for (const k of ['lcreate', 'mkdir', 'symlink', 'mknod', 'renameat', 'unlinkat']) expect(out[k], k).toBe(EROFS);
    expect(fs.readdirSync(out.dir)).toEqual(['host.txt']);
  });

  it('without the share calls in the filter the server cannot work (what the allowlist adds is needed)', async () => {
    const out = await run('none');
    expect(out.statfs).toBe(EPERM);
    expect(out.lcreate).toBe(EPERM);
    expect(out.mkdir).toBe(EPERM);
    expect(out.getattr).toBe(0);
  });
});
