import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FirmwareVolumeError, guidString, looksLikeFirmwareVolume, parseFirmwareVolumes } from '../../src/firmware/fv.js';
import { BootromError, loadBootrom } from '../../src/vmm/bootrom.js';

const FFS2 = [0x78, 0xe5, 0x8c, 0x8c, 0x3d, 0x8a, 0x1c, 0x4f, 0x99, 0x35, 0x89, 0x61, 0x85, 0xc3, 0x2d, 0xd3];

/** A firmware volume of `blocks` 4 KiB blocks with a valid header. */
function volume(blocks: number, fill = 0xff): Uint8Array {
  const len = blocks * 0x1000;
  const b = new Uint8Array(len).fill(fill);
  const v = new DataView(b.buffer);
  b.fill(0, 0, 72);
  b.set(FFS2, 16);
  v.setBigUint64(32, BigInt(len), true);
  b.set([0x5f, 0x46, 0x56, 0x48], 40); // _FVH
  v.setUint32(44, 0x4feff, true);
  v.setUint16(48, 72, true);
  v.setUint8(55, 2);
  v.setUint32(56, blocks, true);
  v.setUint32(60, 0x1000, true);
  fixChecksum(b, 0);
  return b;
}

function fixChecksum(b: Uint8Array, off: number): void {
  const v = new DataView(b.buffer, b.byteOffset + off);
  v.setUint16(50, 0, true);
  let sum = 0;
  for (let i = 0; i < v.getUint16(48, true); i += 2) sum = (sum + v.getUint16(i, true)) & 0xffff;
  v.setUint16(50, (0x10000 - sum) & 0xffff, true);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

describe('firmware volume headers', () => {
  it('parses a sequence of volumes', () => {
    const img = concat(volume(2), volume(3));
    expect(looksLikeFirmwareVolume(img)).toBe(true);
    const fvs = parseFirmwareVolumes(img);
    expect(fvs.map((f) => [f.offset, f.length, f.kind])).toEqual([[0, 0x2000, 'FFS2'], [0x2000, 0x3000, 'FFS2']]);
    expect(fvs[0].blockMap).toEqual([{ numBlocks: 2, length: 0x1000 }]);
    expect(guidString(new Uint8Array(FFS2))).toBe('8c8ce578-8a3d-4f1c-9935-896185c32dd3');
  });

  it('accepts blank padding after the last volume, not garbage', () => {
    expect(parseFirmwareVolumes(concat(volume(1), new Uint8Array(0x1000).fill(0xff)))).toHaveLength(1);
    expect(parseFirmwareVolumes(concat(volume(1), new Uint8Array(0x1000)))).toHaveLength(1);
    const junk = concat(volume(1), new Uint8Array(0x1000).fill(0x90));
    expect(() => parseFirmwareVolumes(junk)).toThrow(/no firmware volume header at offset 0x1000/);
  });

  it('refuses a bad checksum, signature, revision, length or block map', () => {
    const bad = (mutate: (b: Uint8Array, v: DataView) => void, fix = true): (() => void) => {
      const b = volume(2);
      mutate(b, new DataView(b.buffer));
      if (fix) fixChecksum(b, 0);
      return () => parseFirmwareVolumes(b);
    };
    expect(bad((b) => { b[20] ^= 1; }, false)).toThrow(/header checksum is wrong/);
    expect(bad((b) => { b[40] = 0x41; })).toThrow(FirmwareVolumeError);
    expect(bad((_b, v) => v.setUint8(55, 1))).toThrow(/revision 1/);
    expect(bad((_b, v) => v.setUint32(56, 1, true))).toThrow(/block map covers 0x1000 bytes, volume length is 0x2000/);
    expect(bad((_b, v) => v.setUint16(48, 63, true))).toThrow(/header length 63/);
    expect(bad((_b, v) => v.setUint16(48, 64, true))).toThrow(/block map/);
    expect(bad((_b, v) => v.setUint16(52, 0x3000, true))).toThrow(/extended header offset/);
  });

  it('refuses a truncated image', () => {
    const img = volume(4).subarray(0, 0x2000);
    expect(() => parseFirmwareVolumes(img)).toThrow(/volume is 0x4000 bytes but the image ends 0x2000 bytes after its start \(truncated\)/);
    expect(() => parseFirmwareVolumes(volume(1).subarray(0, 60))).toThrow(/truncated/);
  });
});

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fv-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function load(rom: string, vars?: string) {
  const segs = loadBootrom(rom, vars);
  for (const s of segs) fs.closeSync(s.fd);
  return segs;
}

describe('loadBootrom checks firmware-volume images', () => {
  it('accepts a valid image and maps it as before', () => {
    const rom = path.join(tmp, 'good.fd');
    fs.writeFileSync(rom, concat(volume(2), volume(2)));
    expect(load(rom).map((s) => [s.kind, s.gpa])).toEqual([['rom', 0x1_0000_0000 - 0x4000]]);
  });

  it('refuses a corrupt image with one line naming the file', () => {
    const img = concat(volume(2), volume(2));
    img[0x2000 + 33] ^= 0x10; // second volume's length, checksum not fixed
    const rom = path.join(tmp, 'corrupt.fd');
    fs.writeFileSync(rom, img);
    let err: unknown;
    try { load(rom); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(BootromError);
    expect((err as Error).message).toBe(`boot ROM '${rom}' is not a valid UEFI firmware image: firmware volume at offset 0x2000: header checksum is wrong (the header sums to 0x1000, not 0; corrupt image)`);
    expect((err as Error).message).not.toContain('\n');
  });

  it('leaves ROMs that are not firmware volumes alone', () => {
    const rom = path.join(tmp, 'plain.rom');
    fs.writeFileSync(rom, new Uint8Array(0x1000).fill(0xf4));
    expect(load(rom)).toHaveLength(1);
  });
});

const OVMF_DIR = '/usr/share/OVMF';
const ovmfMissing = fs.existsSync(path.join(OVMF_DIR, 'OVMF_CODE.fd')) && fs.existsSync(path.join(OVMF_DIR, 'OVMF_VARS.fd'))
  ? undefined : `${OVMF_DIR}/OVMF_CODE.fd or OVMF_VARS.fd is missing (apt-get install ovmf)`;
if (ovmfMissing) console.warn(`skipping OVMF image tests: ${ovmfMissing}`);

describe.skipIf(ovmfMissing !== undefined)("Debian's OVMF images", () => {
  const codes = fs.existsSync(OVMF_DIR) ? fs.readdirSync(OVMF_DIR).filter((f) => /^OVMF_CODE.*\.fd$/.test(f)) : [];

  it.each(codes)('%s: volumes validate and the ROM + a VARS copy map at 4 GiB', (name) => {
    const code = path.join(OVMF_DIR, name);
    const image = new Uint8Array(fs.readFileSync(code));
    const fvs = parseFirmwareVolumes(image);
    expect(fvs.length).toBeGreaterThanOrEqual(2);
    expect(fvs.every((f) => f.kind === 'FFS2')).toBe(true);
    expect(fvs.reduce((n, f) => n + f.length, 0)).toBe(image.length);
    const varsSrc = path.join(OVMF_DIR, name.includes('_4M') ? 'OVMF_VARS_4M.fd' : 'OVMF_VARS.fd');
    const vars = path.join(tmp, `vars-${name}`);
    fs.copyFileSync(varsSrc, vars);
    expect(parseFirmwareVolumes(new Uint8Array(fs.readFileSync(vars)))[0].kind).toBe('NV storage');
    const segs = load(code, vars);
    const romGpa = 0x1_0000_0000 - image.length;
    expect(segs.map((s) => [s.kind, s.gpa, s.size])).toEqual([
      ['rom', romGpa, image.length],
      ['vars', romGpa - fs.statSync(vars).size, fs.statSync(vars).size],
    ]);
  });

  it('a corrupted copy of OVMF_CODE.fd is refused, naming the file', () => {
    const img = new Uint8Array(fs.readFileSync(path.join(OVMF_DIR, 'OVMF_CODE.fd')));
    const second = parseFirmwareVolumes(img)[1].offset;
    img[second + 16] ^= 0xff; // FileSystemGuid byte of the SEC/PEI volume
    const bad = path.join(tmp, 'OVMF_CODE-corrupt.fd');
    fs.writeFileSync(bad, img);
    expect(() => load(bad)).toThrow(new RegExp(`^boot ROM '${bad}' is not a valid UEFI firmware image: firmware volume at offset 0x${second.toString(16)}: header checksum`));
  });

  it('a truncated copy of OVMF_CODE.fd is refused, naming the file', () => {
    const img = fs.readFileSync(path.join(OVMF_DIR, 'OVMF_CODE.fd'));
    const cut = path.join(tmp, 'OVMF_CODE-cut.fd');
    fs.writeFileSync(cut, img.subarray(0, 1024 * 1024));
    expect(() => load(cut)).toThrow(/^boot ROM '.*OVMF_CODE-cut\.fd' is not a valid UEFI firmware image: firmware volume at offset 0x0: volume is 0x1ac000 bytes but the image ends 0x100000 bytes after its start \(truncated\)$/);
  });
});
