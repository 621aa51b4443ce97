// hda.rom (test/guests/hda/hda.c) drives an HD Audio controller as an OS
// does: controller reset, CORB/RIRB, codec enumeration, the output path
// (converter format and stream, amplifiers, pin), an output stream with a
// BDL of IOC entries over a known PCM buffer, the DMA position buffer, and
// stops after one lap of the cyclic buffer; by polling and by INTx. The
// host file must receive the buffer byte for byte. The same ROM runs on
// our bhyve (-s 5,hda,play=FILE: raw PCM) and on QEMU (-device intel-hda
// -device hda-output -audiodev wav: a 44-byte WAV header, then the PCM).
// For QEMU the wav backend runs at the guest's 48 kHz (out.frequency, so
// its mixing engine does not resample) and the codec has no timer of its
// own (use-timer=off: with it, QEMU's codec skipped a few KiB of a stream
// here now and then); both are QEMU's options, not the guest's business.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GUESTS, bhyveArgs, kvmUnavailable, runBhyve, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, romWith, runHeld, runQemu, stat } from '../support/guest-rom.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'hda.rom')) ? undefined : 'hda.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping hda guest tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hda-guest-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const TOTAL = 16384;
/** The guest's buffer: byte i is (i * 31 + (i >> 8) * 7 + 1) & 0xff, played
 * cyclically. */
function pcm(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) { const k = i % TOTAL; b[i] = (k * 31 + (k >> 8) * 7 + 1) & 0xff; }
  return b;
}
const CRC = 'hda: played 16384 bytes, crc 71524e9d, 8 IOC in 2 laps';
const HOSTILE = 0x40000000;

/** The played bytes start with the buffer and continue it cyclically. */
function expectPlayed(got: Buffer, out: string): void {
  expect(got.length, out).toBeGreaterThanOrEqual(TOTAL);
  expect(Buffer.compare(got.subarray(0, TOTAL), pcm(TOTAL)), out).toBe(0);
  expect(Buffer.compare(got, pcm(got.length)), 'what followed the first lap continues the cyclic buffer').toBe(0);
}

describe.skipIf(skip !== undefined)('hda.rom on bhyve and QEMU', () => {
  for (const [label, mode] of [['polling', MODE.POLL], ['INTx', MODE.INTX]] as const) {
    it(`bhyve (-s 5,hda,play=FILE), ${label}: the file receives the buffer byte for byte`, async () => {
      const play = path.join(tmp, `bhyve-${label}.pcm`);
      const vm = vmName(`hda-${label}`);
      const r = await runHeld(bhyveArgs(romWith(tmp, 'hda', mode | MODE.HOLD, HOSTILE), vm, {
        extra: ['-s', `5,hda,play=${play}`],
      }), vm, { timeout: 150_000 });
      expect(r.status, r.out).toBe(33);
      expect(r.out).toContain('hda: 8086:27d8 at 00:05.0 class 040300, HDA 1.0, 4 input and 4 output streams, 64-bit, INTA');
      expect(r.out).toContain('hda: codecs in STATESTS 1, using address 0');
      expect(r.out).toContain('hda: codec 0: vendor 00008086 revision 0000ffff, function groups 1 from NID 1');
      expect(r.out).toContain('hda: output path: converter NID 2 -> pin NID 3');
      expect(r.out).toContain(CRC);
      expect(r.out).toContain('hda: hostile: BDL outside RAM: RUN 0 DESE 1');
      expect(r.out).toContain('hda: hostile: entry of length 0: RUN 0 DESE 1');
      expectPlayed(fs.readFileSync(play), r.out);
      expect(stat(r.stats, 'hda@pci.0.5.0', 'ioc interrupts')).toBeGreaterThanOrEqual(8);
      expect(stat(r.stats, 'hda@pci.0.5.0', 'descriptor errors')).toBe(2);
      expect(stat(r.stats, 'hda@pci.0.5.0', 'bytes played')).toBe(fs.statSync(play).size);
      const intx = stat(r.stats, 'hda@pci.0.5.0', 'intx assertions');
      if (mode === MODE.INTX) {
        expect(r.out).toMatch(/hda: interrupts: intx vector [0-9a-f]+ \d+ \(\d+ responses, 8 IOC\)/);
        expect(r.out).toContain('from the MP table');
        expect(intx).toBeGreaterThanOrEqual(8);
      } else {
        expect(intx).toBe(0);
      }
    }, 180_000);

    it.skipIf(!HAVE_QEMU)(`QEMU (-device intel-hda -device hda-output -audiodev wav), ${label}: the WAV holds the buffer byte for byte`, async () => {
      const wav = path.join(tmp, `qemu-${label}.wav`);
      const r = await runQemu(romWith(tmp, 'hda', mode), [
        '-device', 'intel-hda', '-device', 'hda-output,audiodev=a,use-timer=off',
        '-audiodev', `wav,id=a,path=${wav},out.frequency=48000`,
      ], [], 120_000);
      expect(r.status, r.out).toBe(33);
      expect(r.out).toMatch(/hda: 8086:2668 at 00:[0-9a-f]{2}\.0 class 040300, HDA 1\.0, 4 input and 4 output streams, 64-bit, INTA/);
      expect(r.out).toContain(CRC);
      const file = fs.readFileSync(wav);
      expect(file.subarray(0, 4).toString('latin1')).toBe('RIFF');
      expect(file.readUInt32LE(24)).toBe(48000);
      expectPlayed(file.subarray(44), r.out);
      if (mode === MODE.INTX) expect(r.out).toMatch(/hda: interrupts: intx vector [0-9a-f]+ \d+ \(\d+ responses, 8 IOC\)/);
    }, 180_000);
  }

  it('bhyve (-s 5,hda,play=FILE,rec=FILE), INTx: the guest records the rec= file byte for byte on an input stream', async () => {
    const rec = path.join(tmp, 'rec.pcm');
    // Three laps of the guest's cyclic buffer: the device may run into the
    // next lap before the guest stops it, and must find the same bytes there.
    const data = Buffer.alloc(3 * TOTAL);
    for (let i = 0; i < data.length; i++) { const k = i % TOTAL; data[i] = (k * 13 + (k >> 8) * 5 + 7) & 0xff; }
    fs.writeFileSync(rec, data);
    const r = await runBhyve(bhyveArgs(romWith(tmp, 'hda', MODE.INTX, 0x20000000), vmName('hda-rec'), {
      extra: ['-s', `5,hda,play=${path.join(tmp, 'duplex.pcm')},rec=${rec}`],
    }), { timeout: 120_000 });
    const out = String(r.stdout);
    expect(r.exitCode, out).toBe(33);
    expect(out).toContain('hda: audio function group NID 1: widgets 4 from NID 2'); // duplex
    expect(out).toContain(CRC);
    expect(out).toMatch(/hda: recorded 16384 bytes from converter NID 4, crc [0-9a-f]{8}, 4 IOC, as the file holds/);
  }, 150_000);

  it('bhyve refuses a rec= file that does not exist, with one line naming the slot', async () => {
    const r = await runBhyve(bhyveArgs(path.join(GUESTS, 'hda.rom'), vmName('hda-bad'), {
      extra: ['-s', '5,hda,rec=/nonexistent/in.pcm'],
    }), { timeout: 60_000 });
    expect(r.exitCode).toBe(4);
    const lines = String(r.stderr).trim().split('\n').filter((l) => !l.includes('warning:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('hda at pci slot 0:5:0: rec file /nonexistent/in.pcm does not exist');
  }, 90_000);

  it('bhyve plays into a FIFO the test reads', async () => {
    const fifo = path.join(tmp, 'play.fifo');
    const { execFileSync } = await import('node:child_process');
    execFileSync('mkfifo', [fifo]);
    const vm = vmName('hda-fifo');
    const chunks: Buffer[] = [];
    const reader = fs.createReadStream(fifo);
    reader.on('data', (c) => chunks.push(c as Buffer));
    const r = await runBhyve(bhyveArgs(romWith(tmp, 'hda', MODE.INTX), vm, { extra: ['-s', `5,hda,play=${fifo}`] }), { timeout: 120_000 });
    await new Promise((res) => setTimeout(res, 200));
    reader.destroy();
    expect(r.exitCode, String(r.stdout)).toBe(33);
    expectPlayed(Buffer.concat(chunks), String(r.stdout));
  }, 150_000);
});
