// The fw_cfg test guest (test/guests/fwcfg/fwcfg.c -> build/guests/fwcfg.rom)
// under QEMU, the reference for our lpc.fwcfg=qemu: it reads every numbered
// item and every file of the directory through the I/O interface (0x510/0x511)
// and the DMA interface (0x514/0x518), prints a CRC-32 of each read per
// interface, decodes the CPU count, RAM size and etc/e820, prints small text
// files, and exits 33 when the two interfaces agree (3 otherwise).
// Skipped when qemu-system-x86_64 is not installed; -accel kvm with TCG as
// the fallback when KVM is unavailable.

import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { HAVE_QEMU } from '../support/probes.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ROM = join(ROOT, 'build', 'guests', 'fwcfg.rom');
const BLOB = join(ROOT, 'build', 'guests', 'exit-testdev.rom');
if (!HAVE_QEMU) console.warn('skipping the fw_cfg guest under QEMU: qemu-system-x86_64 is not installed');

function qemu(smp: number, mem: number) {
  const r = spawnSync('qemu-system-x86_64', [
    '-accel', 'kvm', '-accel', 'tcg', '-machine', 'pc', '-nodefaults', '-display', 'none', '-monitor', 'none',
    '-bios', ROM, '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot',
    '-smp', String(smp), '-m', String(mem),
    '-fw_cfg', 'name=opt/test,string=hello', '-fw_cfg', `name=opt/blob,file=${BLOB}`,
  ], { encoding: 'latin1', timeout: 60_000, input: '' });
  return { status: r.status, out: r.stdout.replace(/\r\n/g, '\n'), err: r.stderr };
}

interface FileLine { sel: number; name: string; size: number; io: string; dma: string; ok: boolean }

/** The `file 0xSSSS NAME size N io crc32 X dma crc32 Y OK|MISMATCH` lines. */
function fileLines(out: string): FileLine[] {
  return [...out.matchAll(/^file 0x([0-9a-f]{4}) (\S+) size (\d+) io crc32 ([0-9a-f]{8}) dma crc32 ([0-9a-f]{8}) (OK|MISMATCH)$/gm)]
    .map((m) => ({ sel: parseInt(m[1], 16), name: m[2], size: Number(m[3]), io: m[4], dma: m[5], ok: m[6] === 'OK' }));
}

function e820Lines(out: string): Array<{ base: bigint; length: bigint; type: number }> {
  return [...out.matchAll(/^e820 ([0-9a-f]{16}) ([0-9a-f]{16}) type (\d+)$/gm)]
    .map((m) => ({ base: BigInt(`0x${m[1]}`), length: BigInt(`0x${m[2]}`), type: Number(m[3]) }));
}

beforeAll(() => {
  execFileSync(join(ROOT, 'scripts', 'build-guests.sh'), { stdio: 'pipe' });
}, 60_000);

describe('fwcfg test ROM image', () => {
  it('is 64 KiB with a near jmp to offset 0 at the reset vector and parameter 0', () => {
    const b = readFileSync(ROM);
    expect(b.length).toBe(65536);
    expect(b[0xfff0]).toBe(0xe9);
    expect((0xfff3 + b.readInt16LE(0xfff1)) & 0xffff).toBe(0);
    expect(b.readUInt32LE(0xffe0)).toBe(0);
  });
});

describe.skipIf(!HAVE_QEMU)('fwcfg test ROM under QEMU', () => {
  it.each([[2, 128], [3, 256]])('-smp %i -m %i: every item and file agrees over I/O and DMA and matches the command line', (smp, mem) => {
    const r = qemu(smp, mem);
    const all = r.out + r.err;
    expect(r.out, all).toContain("fwcfg: signature 'QEMU'\n");
    expect(r.out).toContain('fwcfg: id 0x00000003 (traditional dma)\n');
    expect(r.out).toContain("fwcfg: dma register 'QEMU CFG'\n");
    expect(r.out).toContain(`fwcfg: nb_cpus ${smp}\n`);
    expect(r.out).toContain(`fwcfg: ram_size ${mem * 1024 * 1024} (${mem} MiB)\n`);
    const items = [...r.out.matchAll(/^item 0x([0-9a-f]{4}) (\S+) size \d+ io crc32 ([0-9a-f]{8}) dma crc32 ([0-9a-f]{8}) (OK|MISMATCH)$/gm)];
    expect(items.map((m) => m[2])).toEqual(['signature', 'id', 'uuid', 'ram_size', 'nographic', 'nb_cpus', 'boot_menu', 'max_cpus', 'file_dir']);
    for (const m of items) expect(m[3], m[0]).toBe(m[4]);

    const count = Number(r.out.match(/^fwcfg: directory (\d+) files$/m)?.[1]);
    const files = fileLines(r.out);
    expect(files.length).toBe(count);
    for (const f of files) {
      expect(f.ok, `${f.name}\n${all}`).toBe(true);
      expect(f.io).toBe(f.dma);
    }
    const names = files.map((f) => f.name);
    for (const n of ['etc/e820', 'etc/acpi/tables', 'etc/acpi/rsdp', 'etc/table-loader', 'etc/smbios/smbios-tables', 'etc/smbios/smbios-anchor', 'opt/test', 'opt/blob']) {
      expect(names).toContain(n);
    }
    expect([...names].sort()).toEqual(names);                    // the directory is sorted by name
    expect(files.map((f) => f.sel)).toEqual(files.map((_, i) => 0x20 + i));
    const test = files.find((f) => f.name === 'opt/test')!;
    expect(test.size).toBe(5);
    expect(test.io).toBe(crc32('hello').toString(16).padStart(8, '0'));
    expect(r.out).toContain("content opt/test: 'hello'\n");
    const blob = readFileSync(BLOB);
    const fblob = files.find((f) => f.name === 'opt/blob')!;
    expect(fblob.size).toBe(blob.length);
    expect(fblob.io).toBe(crc32(blob).toString(16).padStart(8, '0'));

    // QEMU's e820: RAM from 0 up to the -m size (below 4 GiB), no holes.
    const ram = e820Lines(r.out).filter((e) => e.type === 1);
    expect(ram).toContainEqual({ base: 0n, length: BigInt(mem) << 20n, type: 1 });
    expect(ram.reduce((s, e) => s + e.length, 0n)).toBe(BigInt(mem) << 20n);

    expect(r.out).toContain(`fwcfg: 9 items and ${count} files agree over I/O and DMA\n`);
    expect(r.status, all).toBe(33);
  }, 90_000);
});
