// Debian's real kernel: the bzImage from a linux-image-*-amd64 package
// (fetched with `apt-get download`, extracted with dpkg-deb, cached under
// build/debian-kernel/) parses, and loads exactly where the boot protocol
// says. Skipped, with the reason, when the package cannot be fetched.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

import { fromHex, regValue } from '../../src/loader/boot-state.js';
import { detectKernelFormat } from '../../src/loader/index.js';
import { BP, loadBzImage, parseSetupHeader, XLF_KERNEL_64 } from '../../src/loader/linux.js';
import { HostDirSource } from '../../src/loader/source.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { computeLayout } from '../../src/sys/memory-map.js';

const cache = fileURLToPath(new URL('../../build/debian-kernel', import.meta.url));

function findKernel(): { file?: string; reason?: string } {
  const find = () => {
    const boot = path.join(cache, 'root', 'boot');
    const k = fs.existsSync(boot) ? fs.readdirSync(boot).filter((f) => f.startsWith('vmlinuz-')).sort() : [];
    return k.length ? path.join(boot, k[k.length - 1]) : undefined;
  };
  const have = find();
  if (have) return { file: have };
  const run = (cmd: string, args: string[], cwd = cache) => spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 300_000 });
  fs.mkdirSync(cache, { recursive: true });
  const dep = run('apt-cache', ['depends', 'linux-image-amd64']);
  const pkg = dep.status === 0 ? /Depends: (linux-image-\S+-amd64)/.exec(dep.stdout)?.[1] : undefined;
  if (!pkg) return { reason: 'apt-cache cannot name the linux-image-*-amd64 package' };
  const dl = run('apt-get', ['download', pkg]);
  const deb = fs.readdirSync(cache).find((f) => f.startsWith(pkg) && f.endsWith('.deb'));
  if (dl.status !== 0 || !deb) return { reason: `apt-get download ${pkg} failed: ${(dl.stderr || '').trim().split('\n').pop()}` };
  const x = run('dpkg-deb', ['-x', deb, 'root']);
  fs.rmSync(path.join(cache, deb), { force: true });
  // Keep /boot only: the modules take hundreds of MiB.
  for (const d of fs.readdirSync(path.join(cache, 'root'))) if (d !== 'boot') fs.rmSync(path.join(cache, 'root', d), { recursive: true, force: true });
  if (x.status !== 0) return { reason: `dpkg-deb -x ${deb} failed` };
  const k = find();
  return k ? { file: k } : { reason: `${deb} holds no /boot/vmlinuz-*` };
}

const { file, reason } = findKernel();
const M = 1024 * 1024;

describe.skipIf(!file)(file ? `Debian kernel ${path.basename(file)}` : `Debian kernel (skipped: ${reason})`, () => {
  it('parses as a 64-bit relocatable bzImage', () => {
    const img = new Uint8Array(fs.readFileSync(file!));
    expect(detectKernelFormat(img)).toBe('bzimage');
    const h = parseSetupHeader(img, file);
    expect(h.version).toBeGreaterThanOrEqual(0x020c);
    expect(h.xloadflags & XLF_KERNEL_64).toBe(XLF_KERNEL_64);
    expect(h.relocatable).toBe(true);
    expect(h.kernelOffset).toBe((img[0x1f1] + 1) * 512);
    expect(h.initSize).toBeGreaterThan(h.kernelSize);
  });

  it('loads kernel, zero page, command line and initrd where the boot protocol says', () => {
    const img = new Uint8Array(fs.readFileSync(file!));
    const h = parseSetupHeader(img, file);
    const layout = computeLayout(512 * M);
    const memory = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(layout.lowmem) }]);
    const initrd = new Uint8Array(4 * M + 123).map((_, i) => (i * 2654435761) >>> 24);
    const cmdline = 'console=ttyS0 root=/dev/vda1 ro quiet';
    // Read through the host-path source, as bhyveload will.
    const src = new HostDirSource(path.join(cache, 'root'));
    const kernel = src.readFile(`/boot/${path.basename(file!)}`, 'kernel');
    const r = loadBzImage(kernel, { memory, layout, cmdline, initrd, kernelName: file });

    const load = Number(h.prefAddress);
    expect(r.loadAddress).toBe(load);
    expect(load % h.kernelAlignment).toBe(0);
    const pm = img.subarray(h.kernelOffset);
    expect(Buffer.from(memory.slice(load, pm.length)).equals(Buffer.from(pm))).toBe(true);

    const zp = r.zeroPage;
    const hdrEnd = 0x202 + img[0x201];
    const copy = memory.read(zp + 0x1f1, hdrEnd - 0x1f1);
    const changed = new Set<number>();
    for (const [off, len] of [[BP.vid_mode, 2], [BP.type_of_loader, 1], [BP.ramdisk_image, 4], [BP.ramdisk_size, 4], [BP.cmd_line_ptr, 4]]) {
      for (let i = 0; i < len; i++) changed.add(off + i);
    }
    for (let i = 0; i < copy.length; i++) if (!changed.has(0x1f1 + i)) expect(copy[i]).toBe(img[0x1f1 + i]);
    expect(memory.readU32(zp + BP.header)).toBe(0x53726448);
    expect(memory.readU8(zp + BP.type_of_loader)).toBe(0xff);
    const cmdAt = memory.readU32(zp + BP.cmd_line_ptr);
    expect(Buffer.from(memory.read(cmdAt, cmdline.length + 1)).toString('latin1')).toBe(cmdline + '\0');

    const max = Math.min(h.initrdAddrMax, layout.lowmem - 1);
    const want = Math.floor((max + 1 - initrd.length) / 4096) * 4096;
    expect(memory.readU32(zp + BP.ramdisk_image)).toBe(want);
    expect(memory.readU32(zp + BP.ramdisk_size)).toBe(initrd.length);
    expect(Buffer.from(memory.slice(want, initrd.length)).equals(Buffer.from(initrd))).toBe(true);
    expect(want).toBeGreaterThanOrEqual(load + h.initSize);

    expect(memory.readU8(zp + BP.e820_entries)).toBe(3);
    expect(regValue(r.state, 'rip')).toBe(BigInt(load + 0x200));
    expect(regValue(r.state, 'rsi')).toBe(BigInt(zp));
    expect(fromHex(r.state.sregs.efer)).toBe(0x500n);
    // Placements never overlap.
    const p = [...r.placements].sort((a, b) => a.addr - b.addr);
    for (let i = 1; i < p.length; i++) expect(p[i].addr).toBeGreaterThanOrEqual(p[i - 1].addr + p[i - 1].size);
  });
});
