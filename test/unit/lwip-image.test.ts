// scripts/lwip-image.mjs: loads Debian's liblwip.so.0 into tcp.rom at build
// time. Checked against binutils' own reading of the same files: exported
// symbols land at base + their value, every import slot holds the address
// of the guest's function of that name, the library's calls to itself hold
// its own functions, and a guest that lacks an import is refused by name.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { GUESTS, ROOT } from '../support/bhyve.js';

const LIB = '/usr/lib/x86_64-linux-gnu/liblwip.so.0';
const TOOL = path.join(ROOT, 'scripts/lwip-image.mjs');
const BASE = 0x1000000;
const skip = !fs.existsSync(LIB) ? 'liblwip0 is not installed (apt-get install liblwip0 liblwip-dev)'
  : !fs.existsSync(path.join(GUESTS, 'tcp.elf')) || !fs.existsSync(path.join(GUESTS, 'virtio-net.elf'))
    ? 'tcp.rom is not built: run scripts/build-guests.sh' : undefined;
if (skip) console.warn(`skipping lwip-image tests: ${skip}`);

/** readelf's dynamic relocations of the library: offset, type, symbol, addend. */
function relocations(): { off: number; type: string; sym: string; addend: number }[] {
  const out = execFileSync('readelf', ['-rW', LIB], { encoding: 'utf8' });
  const rows = [];
  for (const l of out.split('\n')) {
    const m = l.match(/^([0-9a-f]{16})\s+[0-9a-f]{16}\s+(R_X86_64_\w+)\s+(?:([0-9a-f]{16})\s+([^\s@]+)(?:@\S+)?\s+\+\s+([0-9a-f]+)|([0-9a-f]+))?/);
    if (m) rows.push({ off: parseInt(m[1], 16), type: m[2], sym: m[4] ?? '', addend: parseInt(m[5] ?? m[6] ?? '0', 16) });
  }
  return rows;
}

/** nm's symbol table of an ELF file as name -> address. */
function nm(file: string, dynamic = false): Map<string, number> {
  const out = execFileSync('nm', [...(dynamic ? ['-D', '--defined-only'] : []), file], { encoding: 'utf8' });
  const m = new Map<string, number>();
  for (const l of out.split('\n')) {
    const f = l.trim().split(/\s+/);
    if (f.length === 3) m.set(f[2].replace(/@.*/, ''), parseInt(f[0], 16));
  }
  return m;
}

describe.skipIf(skip !== undefined)('scripts/lwip-image.mjs', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lwip-image-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('symbols: every symbol the library defines at base + its value', () => {
    execFileSync(process.execPath, [TOOL, 'symbols', LIB, String(BASE), path.join(tmp, 's.ld'), path.join(tmp, 's.h')]);
    const ld = new Map(fs.readFileSync(path.join(tmp, 's.ld'), 'utf8').split('\n')
      .map((l) => l.match(/^(\S+) = (0x[0-9a-f]+);$/)).filter((m) => m !== null).map((m) => [m![1], Number(m![2])]));
    const lib = nm(LIB, true);
    expect(ld.size).toBeGreaterThan(400);
    for (const name of ['lwip_init', 'tcp_write', 'netif_add', 'ethernet_input', 'sys_check_timeouts', 'tcp_active_pcbs']) {
      expect(ld.get(name), name).toBe(BASE + lib.get(name)!);
    }
    const h = fs.readFileSync(path.join(tmp, 's.h'), 'utf8');
    expect(h).toMatch(/#define LWIP_BASE 0x1000000ul/);
    // the image sits in front of the 64 KiB ROM, which ends at 4 GiB
    const filesz = Number(h.match(/LWIP_FILESZ (0x[0-9a-f]+)/)![1]);
    const romImage = Number(h.match(/LWIP_ROM_IMAGE (0x[0-9a-f]+)/)![1]);
    expect(romImage).toBe(2 ** 32 - (Math.ceil(filesz / 65536) * 65536 + 65536));
  });

  it('rom: imports bound to the guest, the library relocated to its base, the 64 KiB ROM at the end', () => {
    const out = path.join(tmp, 'tcp.rom');
    const rom64k = path.join(GUESTS, 'virtio', 'tcp.rom64k');
    execFileSync(process.execPath, [TOOL, 'rom', LIB, String(BASE), path.join(GUESTS, 'tcp.elf'), rom64k, out], { stdio: 'ignore' });
    const img = fs.readFileSync(out);
    expect(img.length % 65536).toBe(0);
    expect(img.subarray(img.length - 65536).equals(fs.readFileSync(rom64k))).toBe(true);
    const guest = nm(path.join(GUESTS, 'tcp.elf'));
    const lib = nm(LIB, true);
    const rel = relocations();
    expect(rel.length).toBeGreaterThan(400);
    const at = (off: number) => Number(img.readBigUInt64LE(off));
    let imports = 0;
    for (const r of rel) {
      if (r.type === 'R_X86_64_RELATIVE') {
        expect(at(r.off), `RELATIVE at ${r.off.toString(16)}`).toBe(BASE + r.addend);
      } else if (r.type === 'R_X86_64_JUMP_SLOT' || r.type === 'R_X86_64_GLOB_DAT' || r.type === 'R_X86_64_64') {
        const own = lib.get(r.sym);
        const g = guest.get(r.sym);
        // weak, undefined everywhere (_ITM_*, __gmon_start__, __cxa_finalize): 0
        const want = own !== undefined ? BASE + own : g ?? 0;
        expect(at(r.off), `${r.type} ${r.sym}`).toBe(want + (r.type === 'R_X86_64_64' ? r.addend : 0));
        if (own === undefined && g !== undefined) imports++;
      } else {
        throw new Error(`unexpected relocation ${r.type}`);
      }
    }
    expect(imports).toBeGreaterThan(40);
    expect(at(rel.find((r) => r.sym === 'malloc')!.off)).toBe(guest.get('malloc'));
  });

  it('rom: a guest that lacks what the library imports is refused, by name', () => {
    const r = spawnSync(process.execPath, [TOOL, 'rom', LIB, String(BASE), path.join(GUESTS, 'virtio-net.elf'),
      path.join(GUESTS, 'virtio', 'tcp.rom64k'), path.join(tmp, 'bad.rom')], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^lwip-image: .*virtio-net\.elf does not define what .*liblwip\.so\.0 imports: .*\bcalloc\b.*\bmalloc\b.*\bpthread_mutex_lock\b/);
    expect(r.stderr).not.toMatch(/\bmemcpy\b/); // vlib.c has it
    expect(fs.existsSync(path.join(tmp, 'bad.rom'))).toBe(false);
  });
});
