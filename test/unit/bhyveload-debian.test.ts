// The real bin/bhyveload with Debian's real kernel: the bzImage from a
// linux-image-*-amd64 package (fetched with `apt-get download`, extracted
// with dpkg-deb, cached under build/debian-kernel/ as test/unit/
// loader-debian.test.ts does), loaded into a VM object in a temporary
// BHYVE_RUNDIR. The kernel cannot run on these hosts (CPL0 is interpreted,
// no x87/SSE), so the test reads what bhyveload left in the VM object (the
// guest memory file and boot-state.json, named by src/vmm/vm-object.ts) and
// checks it against the boot protocol: the protected-mode kernel at its load
// address byte for byte, the zero page's setup header copy, cmd_line_ptr,
// ramdisk_image/ramdisk_size and the e820 map, and the 64-bit entry state.
// Skipped, with the reason, when the package cannot be fetched or bin/ and
// dist/ are not built. No /dev/kvm needed: bhyveload only writes files.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

import { fromHex, regValue, type BootState } from '../../src/loader/boot-state.js';
import { guestMemoryMap } from '../../src/loader/guest-layout.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { VmObject } from '../../src/vmm/vm-object.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BHYVELOAD = path.join(ROOT, 'bin/bhyveload');
const cache = path.join(ROOT, 'build/debian-kernel');

function newestKernel(root: string): string | undefined {
  const boot = path.join(root, 'boot');
  const k = fs.existsSync(boot) ? fs.readdirSync(boot).filter((f) => f.startsWith('vmlinuz-')).sort() : [];
  return k.length ? path.join(boot, k[k.length - 1]) : undefined;
}

/** Debian's kernel from the shared cache, fetched into it when absent. The
 * download is extracted in a private directory and moved into the cache
 * only if no other test got there first, so concurrent fetches cannot clash. */
function findKernel(): { file?: string; reason?: string } {
  const have = newestKernel(path.join(cache, 'root'));
  if (have) return { file: have };
  fs.mkdirSync(cache, { recursive: true });
  const work = fs.mkdtempSync(path.join(cache, '.bhyveload-'));
  const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { cwd: work, encoding: 'utf8', timeout: 300_000 });
  const fail = (why: string) => {
    fs.rmSync(work, { recursive: true, force: true });
    return { reason: why };
  };
  const dep = run('apt-cache', ['depends', 'linux-image-amd64']);
  const pkg = dep.status === 0 ? /Depends: (linux-image-\S+-amd64)/.exec(dep.stdout)?.[1] : undefined;
  if (!pkg) return fail('apt-cache cannot name the linux-image-*-amd64 package');
  const dl = run('apt-get', ['download', pkg]);
  const deb = fs.readdirSync(work).find((f) => f.startsWith(pkg) && f.endsWith('.deb'));
  if (dl.status !== 0 || !deb) return fail(`apt-get download ${pkg} failed: ${(dl.stderr || '').trim().split('\n').pop()}`);
  const x = run('dpkg-deb', ['-x', deb, 'root']);
  fs.rmSync(path.join(work, deb), { force: true });
  if (x.status !== 0) return fail(`dpkg-deb -x ${deb} failed`);
  // Keep /boot only: the modules take hundreds of MiB.
  for (const d of fs.readdirSync(path.join(work, 'root'))) if (d !== 'boot') fs.rmSync(path.join(work, 'root', d), { recursive: true, force: true });
  try {
    fs.renameSync(path.join(work, 'root'), path.join(cache, 'root'));
    fs.rmSync(work, { recursive: true, force: true });
  } catch {
    // Another test filled the cache meanwhile: use ours, in its private directory.
    const ours = newestKernel(path.join(work, 'root'));
    return ours ? { file: ours } : { reason: `${deb} holds no /boot/vmlinuz-*` };
  }
  const k = newestKernel(path.join(cache, 'root'));
  return k ? { file: k } : { reason: `${deb} holds no /boot/vmlinuz-*` };
}

function skipReason(): { file?: string; reason?: string } {
  if (!fs.existsSync(path.join(ROOT, 'dist/cli/bhyveload-main.js'))) return { reason: 'dist/ is not built: run npm run build' };
  try {
    fs.accessSync(BHYVELOAD, fs.constants.X_OK);
  } catch {
    return { reason: 'bin/bhyveload is missing or not executable' };
  }
  return findKernel();
}

const { file, reason } = skipReason();
const M = 1024 * 1024;
const CMDLINE = 'console=ttyS0 root=/dev/vda';
const VM = 'debian';

let tmp = '';
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(!file)(file ? `bhyveload of Debian's ${path.basename(file)}` : `bhyveload of Debian's kernel (skipped: ${reason})`, () => {
  it('leaves the kernel, zero page, command line, initrd and 64-bit entry state in the VM object', () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyveload-debian-'));
    const host = path.join(tmp, 'host');
    const rundir = path.join(tmp, 'run');
    fs.mkdirSync(host);
    fs.copyFileSync(file!, path.join(host, 'vmlinuz'));
    // Debian's package carries no initrd (initramfs-tools makes one on the
    // target): a 5 MiB + 123 byte stand-in with bytes that differ everywhere.
    const initrd = Buffer.from(Array.from({ length: 5 * M + 123 }, (_, i) => (i * 2654435761 + 7) >>> 24));
    fs.writeFileSync(path.join(host, 'initrd.img'), initrd);

    const r = spawnSync(BHYVELOAD, ['-m', '512M', '-h', host, '-e', 'kernel=vmlinuz', '-e', 'initrd=initrd.img', '-e', `cmdline=${CMDLINE}`, VM], {
      encoding: 'utf8', env: { ...process.env, BHYVE_RUNDIR: rundir, BHYVE_DEBUG: '' }, timeout: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);

    const obj = VmObject.open(VM, rundir);
    expect(fs.statSync(obj.memoryPath).size).toBe(512 * M);
    const fd = fs.openSync(obj.memoryPath, 'r');
    // Guest RAM below 4 GiB sits at its physical address in the memory file.
    const read = (gpa: number, len: number): Buffer => {
      const b = Buffer.alloc(len);
      expect(fs.readSync(fd, b, 0, len, gpa)).toBe(len);
      return b;
    };
    try {
      const img = fs.readFileSync(file!);
      // The boot protocol, read from the image itself (Documentation/arch/x86/boot.rst).
      expect(img.toString('latin1', 0x202, 0x206)).toBe('HdrS');
      const version = img.readUInt16LE(0x206);
      expect(version).toBeGreaterThanOrEqual(0x020c);
      expect(img.readUInt16LE(0x236) & 1).toBe(1); // XLF_KERNEL_64
      const setupSects = img[0x1f1] || 4;
      const pm = img.subarray((setupSects + 1) * 512);
      const prefAddress = Number(img.readBigUInt64LE(0x258));
      const initSize = img.readUInt32LE(0x260);
      const initrdAddrMax = img.readUInt32LE(0x22c);
      const kernelAlignment = img.readUInt32LE(0x230);
      const load = prefAddress; // Debian's pref_address (16 MiB) fits in 512M
      expect(load % kernelAlignment).toBe(0);

      // The boot vCPU state: 64-bit entry at load + 0x200, %rsi = zero page.
      const state = JSON.parse(fs.readFileSync(obj.bootStatePath, 'utf8')) as BootState;
      expect(state.entry).toBe('bzimage-64');
      expect(regValue(state, 'rip')).toBe(BigInt(load + 0x200));
      const zp = Number(regValue(state, 'rsi'));
      expect(zp % 4096).toBe(0);
      expect(zp).toBeLessThan(0xa0000);
      expect(fromHex(state.sregs.efer) & 0x500n).toBe(0x500n); // LME | LMA
      expect(fromHex(state.sregs.cr0) & 0x80000001n).toBe(0x80000001n); // PG | PE
      expect(state.sregs.cs.l).toBe(1);

      // The protected-mode kernel at the load address, byte for byte.
      expect(read(load, pm.length).equals(pm)).toBe(true);

      // The zero page's copy of the setup header (0x1f1 up to the end the
      // jump at 0x200 gives), equal to the image's except what a loader fills.
      const page = read(zp, 4096);
      const hdrEnd = 0x202 + img[0x201];
      const filled = new Set<number>();
      for (const [off, len] of [[0x1fa, 2], [0x210, 1], [0x218, 4], [0x21c, 4], [0x228, 4]]) for (let i = 0; i < len; i++) filled.add(off + i);
      for (let o = 0x1f1; o < hdrEnd; o++) if (!filled.has(o)) expect(page[o], `zero page byte ${o.toString(16)}`).toBe(img[o]);
      expect(page.toString('latin1', 0x202, 0x206)).toBe('HdrS');
      expect(page[0x210]).toBe(0xff); // type_of_loader: undefined
      expect(page.subarray(0, 0x1e8).every((b) => b === 0)).toBe(true); // nothing else before the e820 count

      // cmd_line_ptr -> the command line, NUL-terminated.
      const cmdAt = page.readUInt32LE(0x228);
      expect(page.readUInt32LE(0xc8)).toBe(0); // ext_cmd_line_ptr
      expect(read(cmdAt, CMDLINE.length + 1).toString('latin1')).toBe(`${CMDLINE}\0`);

      // ramdisk_image/ramdisk_size -> the initrd, page aligned, above the
      // kernel's init_size and below initrd_addr_max.
      const rdAt = page.readUInt32LE(0x218);
      expect(page.readUInt32LE(0xc0)).toBe(0); // ext_ramdisk_image
      expect(page.readUInt32LE(0x21c)).toBe(initrd.length);
      expect(rdAt % 4096).toBe(0);
      expect(rdAt).toBeGreaterThanOrEqual(load + initSize);
      expect(rdAt + initrd.length - 1).toBeLessThanOrEqual(Math.min(initrdAddrMax, 512 * M - 1));
      expect(read(rdAt, initrd.length).equals(initrd)).toBe(true);

      // The e820 map: bhyve's layout of 512M.
      const map = guestMemoryMap(computeLayout(512 * M));
      expect(page[0x1e8]).toBe(map.length);
      map.forEach((e, i) => {
        const at = 0x2d0 + i * 20;
        expect([Number(page.readBigUInt64LE(at)), Number(page.readBigUInt64LE(at + 8)), page.readUInt32LE(at + 16)]).toEqual([e.addr, e.size, e.type]);
      });
    } finally {
      fs.closeSync(fd);
    }
  }, 120_000);
});
