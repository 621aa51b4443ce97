// ahci.rom (test/guests/ahci/ahci.c) drives an AHCI controller as an OS
// does: IDENTIFY, 32 NCQ writes in flight, FLUSH, read back with READ DMA
// EXT and a CRC-32, 512 random NCQ reads at depth 32, TRIM, and ATAPI
// INQUIRY / READ CAPACITY / READ(10) on a CD port; by polling, by MSI and
// by INTx (completions taken only after an interrupt). The same ROM runs
// on our bhyve (-s ahci,hd:...,cd:...) and on QEMU (-device ahci with
// ide-hd and ide-cd) and must end alike, with the same checksums.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUESTS, ROOT, bhyveArgs, kvmUnavailable, runBhyve, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, romWith, runHeld, runQemu, stat } from '../support/guest-rom.js';
import { CAP } from '../../src/sys/kvm-abi.js';
import { Kvm } from '../../src/sys/kvm.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'ahci.rom')) ? undefined : 'ahci.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping AHCI guest tests: ${skip}`);

/** Whether KVM can map the register page (KVM_CAP_READONLY_MEM). */
const readonlyMem = skip === undefined && (() => { const k = Kvm.open(); try { return k.checkExtension(CAP.READONLY_MEM) > 0; } finally { k.close(); } })();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ahci-guest-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let iso = '';
let n = 0;
function disk(): string {
  const p = path.join(tmp, `disk${n++}.img`);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, 8 << 20);
  return p;
}

const CHECKSUM = 'ahci: wrote 4096 sectors, read back OK, checksum 8c49cf0d';
const AHCI = 'ahci@pci.0.4.0';

function common(out: string): string {
  expect(out).toContain(CHECKSUM);
  expect(out).toContain('ahci: 512 random NCQ reads at depth 32 match');
  expect(out).toContain('ahci: TRIM of 128 sectors reads back as zeros');
  const cd = /ahci: port 1 ATAPI .*, (\d+) blocks of 2048, sector 0 crc ([0-9a-f]{8})/.exec(out);
  expect(cd, out).not.toBeNull();
  return `${cd![1]} ${cd![2]}`;
}

describe.skipIf(skip !== undefined)('ahci.rom on bhyve and QEMU', () => {
  const cdOf: Record<string, string> = {};
  beforeAll(async () => {
    const dir = path.join(tmp, 'cdroot');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'hello.txt'), 'an El Torito-less data CD\n');
    iso = path.join(tmp, 'cd.iso');
    // A small ISO 9660 image; a file of zeros when genisoimage is missing.
    const r = await execa('genisoimage', ['-quiet', '-o', iso, dir], { reject: false });
    if (r.exitCode !== 0) { fs.writeFileSync(iso, ''); fs.truncateSync(iso, 64 * 2048); }
  });

  for (const [label, mode] of [['polling', MODE.POLL], ['MSI', MODE.MSI], ['INTx', MODE.INTX]] as const) {
    it(`bhyve, ${label}`, async () => {
      const name = vmName(`ahci-${label}`);
      const r = await runHeld(bhyveArgs(romWith(tmp, 'ahci', mode | MODE.HOLD), name, {
        extra: ['-s', `4,ahci,hd:${disk()},cd:${iso},ro`],
      }), name);
      expect(r.status, r.out).toBe(33);
      cdOf[`bhyve ${label}`] = common(r.out);
      expect(stat(r.stats, AHCI, 'port 0 reads')).toBeGreaterThanOrEqual(512 + 32);
      expect(stat(r.stats, AHCI, 'port 0 writes')).toBe(32);
      expect(stat(r.stats, AHCI, 'port 0 flushes')).toBe(1);
      expect(stat(r.stats, AHCI, 'port 0 trims')).toBe(1);
      expect(stat(r.stats, AHCI, 'port 0 errors')).toBe(0);
      // No I/O thread by default (iopool=0; the iopool=2 run below has them).
      expect(stat(r.stats, AHCI, 'io pool threads up')).toBe(0);
      // Register reads come from the read-only register page (regpage,
      // KVM_CAP_READONLY_MEM): none of the guest's polls exits.
      expect(stat(r.stats, AHCI, 'register page mapped')).toBe(readonlyMem ? 1 : 0);
      if (readonlyMem) expect(stat(r.stats, AHCI, 'register reads by exit')).toBe(0);
      // The disk port's PxSACT writes wait in KVM's coalesced ring (sactcoalesce); not the CD's.
      expect(stat(r.stats, AHCI, 'PxSACT writes coalesced (ports)')).toBe(1);
      expect(stat(r.stats, AHCI, 'msi messages') > 0).toBe(mode === MODE.MSI);
      expect(stat(r.stats, AHCI, 'intx assertions') > 0).toBe(mode === MODE.INTX);
      if (mode !== MODE.POLL) expect(r.out).toMatch(/ahci: interrupts: (msi|intx) vector [0-9a-f]+ [1-9]\d*, \d+ commands/);
    }, 120_000);

    it.skipIf(!HAVE_QEMU)(`QEMU (-device ahci, ide-hd, ide-cd), ${label}`, async () => {
      const r = await runQemu(romWith(tmp, 'ahci', mode), [
        '-device', 'ahci,id=ahci0',
        '-drive', `if=none,id=d0,file=${disk()},format=raw,discard=unmap`, '-device', 'ide-hd,drive=d0,bus=ahci0.0',
        '-drive', `if=none,id=c0,file=${iso},format=raw,media=cdrom,readonly=on`, '-device', 'ide-cd,drive=c0,bus=ahci0.1',
      ]);
      expect(r.status, r.out).toBe(33);
      cdOf[`qemu ${label}`] = common(r.out);
      expect(r.out).toContain("disk 'QEMU HARDDISK'");
    }, 120_000);
  }

  it('both read the same CD sector 0 and capacity', () => {
    const values = new Set(Object.values(cdOf));
    expect(Object.keys(cdOf).length).toBeGreaterThanOrEqual(3);
    expect(values.size).toBe(1);
  });

  it('bhyve with regpage=false and sactcoalesce=false: every register access is an exit, same results', async () => {
    const name = vmName('ahci-noregpage');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'ahci', MODE.POLL | MODE.HOLD), name, {
      extra: ['-s', `4,ahci,hd:${disk()},cd:${iso},ro`, '-o', 'pci.0.4.0.regpage=false', '-o', 'pci.0.4.0.sactcoalesce=false'],
    }), name);
    expect(r.status, r.out).toBe(33);
    common(r.out);
    expect(stat(r.stats, AHCI, 'register page mapped')).toBe(0);
    expect(stat(r.stats, AHCI, 'io pool threads up')).toBe(0); // no page: no I/O thread unless asked
    expect(stat(r.stats, AHCI, 'PxSACT writes coalesced (ports)')).toBe(0);
    expect(stat(r.stats, AHCI, 'register reads by exit'), String(stat(r.stats, AHCI, 'register reads by exit'))).toBeGreaterThan(100);
  }, 120_000);

  for (const [label, mode] of [['polling', MODE.POLL], ['MSI', MODE.MSI]] as const) {
    it(`bhyve with iopool=2, iopool_min=4096 (every NCQ transfer on the I/O threads), ${label}: same results`, async () => {
      const name = vmName(`ahci-iopool-${label}`);
      const r = await runHeld(bhyveArgs(romWith(tmp, 'ahci', mode | MODE.HOLD), name, {
        extra: ['-s', `4,ahci,hd:${disk()},cd:${iso},ro`, '-o', 'pci.0.4.0.iopool=2', '-o', 'pci.0.4.0.iopool_min=4096'],
      }), name);
      expect(r.status, r.out).toBe(33);
      expect(common(r.out)).toBe(cdOf[`bhyve ${label}`] ?? common(r.out));
      expect(stat(r.stats, AHCI, 'port 0 errors')).toBe(0);
      expect(stat(r.stats, AHCI, 'io pool threads up')).toBe(2);
      // NCQ transfers went to the pool once its threads were up (they start
      // with the port; how many came before that depends on the host's load).
      expect(stat(r.stats, AHCI, 'io pool requests')).toBeGreaterThan(0);
      // With the register page the threads completed NCQ transfers themselves.
      if (readonlyMem) expect(stat(r.stats, AHCI, 'port 0 threadCompletions')).toBeGreaterThan(0);
    }, 180_000);
  }

  it('a plain IDENTIFY on bhyve shows bhyve\'s model and serial', async () => {
    const r = await runBhyve(bhyveArgs(path.join(GUESTS, 'ahci.rom'), vmName('ahci-id'), {
      extra: ['-s', `4,ahci-hd,${disk()},ser=SERIAL42,model=Model Z`],
    }), { timeout: 90_000 });
    expect(r.exitCode).toBe(33);
    expect(r.stdout).toContain("ahci: port 0 disk 'Model Z' serial 'SERIAL42', 16384 sectors (8 MiB), NCQ yes depth 32, TRIM yes");
    expect(ROOT).toBeTruthy();
  }, 120_000);
});
