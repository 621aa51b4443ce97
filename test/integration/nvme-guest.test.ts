// nvme.rom (test/guests/nvme/nvme.c) drives an NVMe controller as an OS
// does: CC/CSTS bring-up, admin queues, IDENTIFY, number of queues, an I/O
// queue pair, 32 writes of 64 KiB in flight through PRP lists, FLUSH, read
// back with a CRC-32, 512 random reads at depth 32, DSM deallocate (and
// WRITE ZEROES where ONCS offers it), the SMART log; by polling and by
// MSI-X (completions taken only after an interrupt). The same ROM runs on
// our bhyve (-s nvme) and on QEMU (-device nvme) and must end alike.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { GUESTS, bhyveArgs, installedCopy, kvmUnavailable, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, romWith, runHeld, runQemu, stat } from '../support/guest-rom.js';
import { CAP } from '../../src/sys/kvm-abi.js';
import { Kvm } from '../../src/sys/kvm.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'nvme.rom')) ? undefined : 'nvme.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping NVMe guest tests: ${skip}`);

/** Whether KVM offers the coalesced MMIO ring the CQ doorbells use. */
const coalescedMmio = skip === undefined && (() => { const k = Kvm.open(); try { return k.checkExtension(CAP.COALESCED_MMIO) > 0; } finally { k.close(); } })();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme-guest-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function disk(): string {
  const p = path.join(tmp, `disk${n++}.img`);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, 8 << 20);
  return p;
}

const NVME = 'nvme@pci.0.4.0';

function common(out: string): void {
  expect(out).toContain('nvme: wrote 4096 sectors, read back OK, checksum 8c49cf0d');
  expect(out).toContain('nvme: 512 random reads at depth 32 match');
  expect(out).toContain('nvme: deallocated 64 KiB reads back as zeros');
  expect(out).toMatch(/nvme: SMART: temperature \d+ K, spare \d+%, host writes 32, host reads 5\d\d/);
}

describe.skipIf(skip !== undefined)('nvme.rom on bhyve and QEMU', () => {
  for (const [label, mode] of [['polling', MODE.POLL], ['MSI-X', MODE.MSIX]] as const) {
    it(`bhyve, ${label}: Doorbell Buffer Config and the I/O thread`, async () => {
      const name = vmName(`nvme-${label}`);
      const r = await runHeld(bhyveArgs(romWith(tmp, 'nvme', mode | MODE.HOLD), name, { extra: ['-s', `4,nvme,${disk()},iothread=true`] }), name);
      expect(r.status, r.out).toBe(33);
      common(r.out);
      expect(r.out).toContain("nvme: model 'bhyve-NVMe' serial 'NVME-4-0', namespace 1: 16384 blocks of 512 (8 MiB), MDTS 9, ONCS 4");
      expect(r.out).toContain('nvme: doorbell buffer config on (OACS 102)');
      expect(r.out).toMatch(/nvme: doorbell buffer: [1-9]\d* of \d+ I\/O doorbell writes skipped/);
      expect(stat(r.stats, NVME, 'writes')).toBe(32);
      expect(stat(r.stats, NVME, 'reads')).toBeGreaterThanOrEqual(512 + 16);
      expect(stat(r.stats, NVME, 'flushes')).toBe(1);
      expect(stat(r.stats, NVME, 'deallocates')).toBe(1);
      expect(stat(r.stats, NVME, 'errors')).toBe(0);
      expect(stat(r.stats, NVME, 'dbbufConfigs')).toBe(1);
      // The I/O thread owned the I/O queues: no I/O doorbell exited to this
      // process (KVM signalled its eventfd), it started once, and MSI-X went
      // by irqfd.
      expect(stat(r.stats, NVME, 'iothread starts')).toBe(1);
      expect(stat(r.stats, NVME, 'ioSqDoorbellExits')).toBe(0);
      expect(stat(r.stats, NVME, 'ioDoorbellExits')).toBe(0);
      expect(stat(r.stats, NVME, 'iothread wake-ups')).toBeGreaterThan(0);
      expect(stat(r.stats, NVME, 'poolRequests')).toBe(0);
      // Only the admin CQ's doorbell stays in the coalesced ring.
      expect(stat(r.stats, NVME, 'cq doorbell zones')).toBe(coalescedMmio ? 1 : 0);
      expect(stat(r.stats, NVME, 'msi-x messages by irqfd') > 0).toBe(mode === MODE.MSIX);
      if (mode === MODE.MSIX) expect(r.out).toMatch(/nvme: interrupts: msix vector [0-9a-f]+ [1-9]\d*, vector [0-9a-f]+ [1-9]\d*, \d+ commands/);
    }, 120_000);

    it.skipIf(!HAVE_QEMU)(`QEMU (-device nvme), ${label}`, async () => {
      const r = await runQemu(romWith(tmp, 'nvme', mode), [
        '-drive', `if=none,id=n0,file=${disk()},format=raw,discard=unmap`, '-device', 'nvme,drive=n0,serial=QEMUNVME',
      ]);
      expect(r.status, r.out).toBe(33);
      common(r.out);
      expect(r.out).toContain('nvme: WRITE ZEROES of 4 KiB reads back as zeros');
      // QEMU 7.1+ offers Doorbell Buffer Config too (OACS bit 8).
      expect(r.out).toMatch(/nvme: doorbell buffer config on \(OACS 1[0-9a-f]{2}\)/);
    }, 120_000);
  }

  it('bhyve with iothread=false and iopool=1: Doorbell Buffer Config on the exit path, large transfers on the pool', async () => {
    const name = vmName('nvme-exitpath');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'nvme', MODE.MSIX | MODE.HOLD), name, {
      extra: ['-s', `4,nvme,${disk()}`, '-o', 'pci.0.4.0.iopool=1', '-o', 'pci.0.4.0.iothread=false'],
    }), name);
    expect(r.status, r.out).toBe(33);
    common(r.out);
    expect(r.out).toContain('nvme: doorbell buffer config on (OACS 102)');
    expect(stat(r.stats, NVME, 'iothread starts')).toBe(0);
    expect(stat(r.stats, NVME, 'ioSqDoorbellExits')).toBeGreaterThan(0);
    expect(stat(r.stats, NVME, 'errors')).toBe(0);
    expect(stat(r.stats, NVME, 'cq doorbell zones')).toBe(coalescedMmio ? 17 : 0);
    // The 64 KiB writes and 128 KiB reads went to the I/O pool (iopool_min
    // 64 KiB), which posted their completions itself once it was up: it
    // starts with the first I/O queue, and on a loaded host the guest may
    // finish before it is (those ran in their exits).
    expect(stat(r.stats, NVME, 'poolRequests') + stat(r.stats, NVME, 'pool requests before its thread was up')).toBeGreaterThan(0);
  }, 120_000);

  it('bhyve with cqcoalesce=false, iopool=0 and dbbuf=false: every CQ head doorbell is an exit, every command runs in its exit, same results', async () => {
    const name = vmName('nvme-nocoalesce');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'nvme', MODE.MSIX | MODE.HOLD), name, {
      extra: ['-s', `4,nvme,${disk()}`, '-o', 'pci.0.4.0.cqcoalesce=false', '-o', 'pci.0.4.0.iopool=0', '-o', 'pci.0.4.0.dbbuf=false'],
    }), name);
    expect(r.status, r.out).toBe(33);
    common(r.out);
    expect(r.out).not.toContain('doorbell buffer config');
    expect(stat(r.stats, NVME, 'iothread starts')).toBe(0);
    expect(stat(r.stats, NVME, 'poolRequests')).toBe(0);
    expect(stat(r.stats, NVME, 'cq doorbell zones')).toBe(0);
    expect(stat(r.stats, NVME, 'cqDoorbells')).toBeGreaterThan(512);
    expect(stat(r.stats, NVME, 'cqDoorbellsCoalesced')).toBe(0);
  }, 120_000);

  it('an I/O thread whose bundle cannot load: one warning, the doorbell exits serve the I/O queues, same results', async () => {
    // The worker's bundle throws while loader.cjs loads it (what an
    // unreadable koffi.node does), before it could ring the device thread;
    // the I/O doorbells go to its eventfd until the start watch looks.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme-loadfail-'));
    try {
      const { bhyve, rundir } = installedCopy(dir, 'nvme-iothread-worker');
      const r = await execa(bhyve, bhyveArgs(romWith(tmp, 'nvme', MODE.MSIX), vmName('nvme-loadfail'), { extra: ['-s', `4,nvme,${disk()},iothread=true`] }),
        { reject: false, timeout: 90_000, env: { BHYVE_RUNDIR: rundir } });
      expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(33);
      common(r.stdout);
      expect(r.stderr).toMatch(/nvme: I\/O thread could not start \(nvme-iothread-worker: could not load/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('a RAM namespace (ram=16) with 4 KiB blocks', async () => {
    const name = vmName('nvme-ram');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'nvme', MODE.MSIX | MODE.HOLD), name, { extra: ['-s', '4,nvme,ram=16,ser=RAMNS'] }), name);
    expect(r.status, r.out).toBe(33);
    expect(r.out).toContain("serial 'RAMNS', namespace 1: 4096 blocks of 4096 (16 MiB), MDTS 9, ONCS 0");
    expect(r.out).toContain('nvme: wrote 4096 sectors, read back OK, checksum 8c49cf0d');
  }, 120_000);
});
