// What the sandbox grants a VM (sandboxPlan): its own files and nothing
// else, and nothing at all with security.sandbox=false.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseBhyveArgs } from '../../src/config/bhyve-args.js';
import type { ConfigTree } from '../../src/config/tree.js';
import { FS } from '../../src/vmm/sandbox/landlock.js';
import { sandboxPlan } from '../../src/vmm/sandbox/sandbox.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

function config(argv: string): ConfigTree {
  const r = parseBhyveArgs(argv.split(' '));
  if (r.kind !== 'run') throw new Error(`expected run, got ${r.kind}`);
  return r.config;
}

const base = '-s 0,hostbridge -s 31,lpc -l com1,stdio -l bootrom,/usr/share/seabios/bios.bin';
const vm = { dir: '/run/bhyve/vm1', memoryPath: '/run/bhyve/vm1/memory' };

describe('sandboxPlan', () => {
  it('grants the code, the memory file, removals in the VM and runtime directories, console socket directories and disk images', () => {
    const plan = sandboxPlan(config(`${base} -s 3,virtio-blk,/img/a.raw -s 4,virtio-blk,/img/b.iso,ro -s 6,virtio-scsi,/img/c.raw,ro `
      + '-s 5,virtio-console,port1=/sockets/p1 vm1'), vm);
    expect(plan).toBeDefined();
    const rules = new Map(plan!.landlockRules.map((r) => [r.path, r.access]));
    expect(rules.get(ROOT)).toBe(FS.READ_FILE);
    expect(rules.get('/run/bhyve/vm1/memory')).toBe(FS.READ_FILE | FS.WRITE_FILE);
    expect(rules.get('/run/bhyve/vm1')).toBe(FS.REMOVE_FILE | FS.READ_DIR);
    expect(rules.get('/run/bhyve')).toBe(FS.REMOVE_DIR | FS.MAKE_DIR); // destroy renames, then removes
    expect(rules.get('/sockets')).toBe(FS.REMOVE_FILE);
    expect(rules.get('/img/a.raw')).toBe(FS.READ_FILE | FS.WRITE_FILE | FS.IOCTL_DEV);
    expect(rules.get('/img/b.iso')).toBe(FS.READ_FILE | FS.IOCTL_DEV);
    expect(rules.get('/img/c.raw')).toBe(FS.READ_FILE | FS.IOCTL_DEV);
    // Nothing that would let the process write outside its own files.
    const writable = plan!.landlockRules.filter((r) => r.access & (FS.WRITE_FILE | FS.MAKE_REG | FS.MAKE_DIR | FS.MAKE_SYM));
    expect(writable.map((r) => r.path).sort()).toEqual(['/img/a.raw', '/run/bhyve', '/run/bhyve/vm1/memory']);
    expect(plan!.log).toBe(false);
  });

  it('no new sockets unless a NIC uses slirp; then sockets, resolv.conf read-only, nothing writable more', () => {
    const tap = sandboxPlan(config(`${base} -s 3,e1000,tap0 vm1`), vm)!;
    expect(tap.sockets).toBe(false);
    const slirp = sandboxPlan(config(`${base} -s 3,e1000,slirp,hostfwd=tcp::2222-:22 vm1`), vm)!;
    expect(slirp.sockets).toBe(true);
    const rules = new Map(slirp.landlockRules.map((r) => [r.path, r.access]));
    expect(rules.get('/etc/resolv.conf')).toBe(FS.READ_FILE);
    expect(slirp.landlockRules.filter((r) => r.access & FS.WRITE_FILE).map((r) => r.path)).toEqual(['/run/bhyve/vm1/memory']);
    expect(sandboxPlan(config(`${base} -s 3,virtio-net,slirp vm1`), vm)!.sockets).toBe(true);
  });

  it('grants virtio-9p shares: read-only for ro, changes beneath a writable one; the filter follows', () => {
    const ro = sandboxPlan(config(`${base} -s 6,virtio-9p,docs=/srv/docs,ro vm1`), vm)!;
    expect(new Map(ro.landlockRules.map((r) => [r.path, r.access])).get('/srv/docs')).toBe(FS.READ_FILE | FS.READ_DIR);
    expect(ro.shares).toBe('ro');
    const rw = sandboxPlan(config(`${base} -s 6,virtio-9p,docs=/srv/docs,ro -s 7,virtio-9p,work=/srv/work vm1`), vm)!;
    const work = new Map(rw.landlockRules.map((r) => [r.path, r.access])).get('/srv/work')!;
    expect(work & (FS.READ_FILE | FS.WRITE_FILE | FS.MAKE_REG | FS.MAKE_DIR | FS.REMOVE_FILE | FS.MAKE_SYM | FS.REFER))
      .toBe(FS.READ_FILE | FS.WRITE_FILE | FS.MAKE_REG | FS.MAKE_DIR | FS.REMOVE_FILE | FS.MAKE_SYM | FS.REFER);
    expect(work & (FS.MAKE_CHAR | FS.MAKE_BLOCK | FS.EXECUTE | FS.IOCTL_DEV)).toBe(0n);
    expect(rw.shares).toBe('rw');
    expect(sandboxPlan(config(`${base} vm1`), vm)!.shares).toBeUndefined();
  });

  it('security.sandbox=false: no plan; security.sandbox_log=true: log mode', () => {
    expect(sandboxPlan(config(`${base} -o security.sandbox=false vm1`), vm)).toBeUndefined();
    expect(sandboxPlan(config(`${base} -o security.sandbox_log=true vm1`), vm)?.log).toBe(true);
  });

  it('a value that is not a boolean is refused when the command line is read', () => {
    expect(() => config(`${base} -o security.sandbox=maybe vm1`)).toThrow(/security\.sandbox/);
  });
});

describe('codeDirectories', () => {
  it('is bhyve\'s tree, and koffi\'s directory as Node resolves it when that lies outside (found without the resolver when koffi is in the tree)', async () => {
    const { codeDirectories } = await import('../../src/vmm/sandbox/sandbox.js');
    const { installRoot } = await import('../../src/install-root.js');
    const { createRequire } = await import('node:module');
    const root = installRoot();
    const resolved = path.dirname(createRequire(path.join(root, 'src', 'x.js')).resolve('koffi'));
    expect(codeDirectories()).toEqual(resolved.startsWith(root + path.sep) ? [root] : [root, resolved]);
  });
});
