// The fw_cfg test guest (build/guests/fwcfg.rom, test/guests/fwcfg/) on our
// bhyve with -o lpc.fwcfg=qemu: every numbered item and every file of the
// directory is read through the I/O interface (0x510/0x511) and the DMA
// interface (0x514/0x518) and must agree (the guest exits 33, else 3); the
// decoded values must match the command line: NB_CPUS/MAX_CPUS = -c, RAM
// size and etc/e820 = -m as bhyve lays memory out (RAM below 1 MiB up to the
// VGA hole, from 1 MiB to lowmem (at most 3 GiB), the rest from 4 GiB), the
// UUID = -U, the directory = the standard files (+ the -f user files).
import fs from 'node:fs';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { FEATURES } from '../../src/devices/registry.js';
import { bhyveArgs, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';

const skip = kvmUnavailable() ?? (fs.existsSync(rom('fwcfg')) ? undefined : 'fwcfg test guest is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping fw_cfg integration tests: ${skip}`);
const noUserFiles = FEATURES['fwcfg-files'].implemented ? undefined : 'bhyve refuses -f (fwcfg-files is not marked implemented in src/devices/registry.ts)';
if (!skip && noUserFiles) console.warn(`skipping the fw_cfg -f integration test: ${noUserFiles}`);

const STANDARD = ['etc/acpi/rsdp', 'etc/acpi/tables', 'etc/e820', 'etc/smbios/smbios-anchor', 'etc/smbios/smbios-tables', 'etc/table-loader'];
const MiB = 1n << 20n;
const GiB = 1n << 30n;

interface FileLine { sel: number; name: string; size: number; io: string; dma: string; ok: boolean }

function fileLines(out: string): FileLine[] {
  return [...out.matchAll(/^file 0x([0-9a-f]{4}) (\S+) size (\d+) io crc32 ([0-9a-f]{8}) dma crc32 ([0-9a-f]{8}) (OK|MISMATCH)$/gm)]
    .map((m) => ({ sel: parseInt(m[1], 16), name: m[2], size: Number(m[3]), io: m[4], dma: m[5], ok: m[6] === 'OK' }));
}

function e820Lines(out: string): Array<{ base: bigint; length: bigint; type: number }> {
  return [...out.matchAll(/^e820 ([0-9a-f]{16}) ([0-9a-f]{16}) type (\d+)$/gm)]
    .map((m) => ({ base: BigInt(`0x${m[1]}`), length: BigInt(`0x${m[2]}`), type: Number(m[3]) }));
}

/** bhyve's E820 RAM for `mem` bytes: lowmem up to 3 GiB, holes 0xA0000-0xFFFFF, the rest at 4 GiB. */
function expectedE820(mem: bigint) {
  const low = mem < 3n * GiB ? mem : 3n * GiB;
  const out = [{ base: 0n, length: 0xa0000n, type: 1 }, { base: 0x100000n, length: low - 0x100000n, type: 1 }];
  if (mem > low) out.push({ base: 4n * GiB, length: mem - low, type: 1 });
  return out;
}

async function run(cpus: number, mem: string, extra: string[]) {
  const r = await runBhyve(bhyveArgs(rom('fwcfg'), vmName('fwcfg'), {
    cpus, mem, extra: ['-o', 'lpc.fwcfg=qemu', ...extra],
  }), { timeout: 60_000 });
  const stdout = String(r.stdout ?? '');
  return { out: stdout.replace(/\r\n/g, '\n'), all: `${stdout}${String(r.stderr ?? '')}`, status: r.exitCode };
}

/** The checks every run shares; returns the file lines. */
function checkCommon(r: { out: string; all: string; status?: number }, cpus: number, mem: bigint): FileLine[] {
  expect(r.out, r.all).toContain("fwcfg: signature 'QEMU'\n");
  expect(r.out).toContain('fwcfg: id 0x00000003 (traditional dma)\n');
  expect(r.out).toContain("fwcfg: dma register 'QEMU CFG'\n");
  expect(r.out).toContain(`fwcfg: nb_cpus ${cpus}\n`);
  expect(r.out).toContain(`fwcfg: max_cpus ${cpus}\n`);
  expect(r.out).toContain(`fwcfg: ram_size ${mem} (${mem / MiB} MiB)\n`);
  expect(r.out).toContain('fwcfg: boot_menu 0\n');
  const items = [...r.out.matchAll(/^item 0x([0-9a-f]{4}) (\S+) size \d+ io crc32 ([0-9a-f]{8}) dma crc32 ([0-9a-f]{8}) (OK|MISMATCH)$/gm)];
  expect(items.map((m) => m[2])).toEqual(['signature', 'id', 'uuid', 'ram_size', 'nographic', 'nb_cpus', 'boot_menu', 'max_cpus', 'file_dir']);
  for (const m of items) {
    expect(m[3], m[0]).toBe(m[4]);
    expect(m[5], m[0]).toBe('OK');
  }
  const count = Number(r.out.match(/^fwcfg: directory (\d+) files$/m)?.[1]);
  const files = fileLines(r.out);
  expect(files.length, r.all).toBe(count);
  for (const f of files) {
    expect(f.ok, `${f.name}\n${r.all}`).toBe(true);
    expect(f.io).toBe(f.dma);
  }
  expect(files.map((f) => f.sel)).toEqual(files.map((_, i) => 0x20 + i));
  expect(e820Lines(r.out)).toEqual(expectedE820(mem));
  expect(r.out).toContain(`fwcfg: 9 items and ${count} files agree over I/O and DMA\n`);
  expect(r.status, r.all).toBe(33);
  return files;
}

describe.skipIf(skip !== undefined)('fwcfg test guest on bhyve (lpc.fwcfg=qemu)', () => {
  it('-c 2 -m 128M: items and files agree over I/O and DMA, CPU count, RAM size, e820 and the directory match', async () => {
    const r = await run(2, '128M', []);
    const files = checkCommon(r, 2, 128n * MiB);
    expect(files.map((f) => f.name)).toEqual(STANDARD);
    expect(files.find((f) => f.name === 'etc/e820')!.size).toBe(40);
    expect(r.out).toContain(`fwcfg: uuid ${'0'.repeat(32)}\n`);
  }, 90_000);

  it('-c 3 -m 4G -U: lowmem ends at 3 GiB, 1 GiB at 4 GiB, the UUID', async () => {
    const r = await run(3, '4G', ['-U', '6ba7b810-9dad-11d1-80b4-00c04fd430c8']);
    const files = checkCommon(r, 3, 4n * GiB);
    expect(files.map((f) => f.name)).toEqual(STANDARD);
    expect(files.find((f) => f.name === 'etc/e820')!.size).toBe(60);
    expect(r.out).toContain('fwcfg: uuid 6ba7b8109dad11d180b400c04fd430c8\n');
  }, 90_000);

  it.skipIf(noUserFiles !== undefined)('-f string= and file= user files are listed, read alike and printed exactly', async () => {
    const blobPath = rom('exit-testdev');
    const blob = fs.readFileSync(blobPath);
    const r = await run(2, '128M', ['-f', 'opt/test,string=hello', '-f', `opt/blob,file=${blobPath}`]);
    const files = checkCommon(r, 2, 128n * MiB);
    expect(files.map((f) => f.name)).toEqual([...STANDARD, 'opt/blob', 'opt/test']);
    const test = files.find((f) => f.name === 'opt/test')!;
    expect(test.size).toBe(5);
    expect(test.io).toBe(crc32('hello').toString(16).padStart(8, '0'));
    expect(r.out).toContain("content opt/test: 'hello'\n");
    const fblob = files.find((f) => f.name === 'opt/blob')!;
    expect(fblob.size).toBe(blob.length);
    expect(fblob.io).toBe(crc32(blob).toString(16).padStart(8, '0'));
  }, 90_000);
});
