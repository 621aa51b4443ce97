// What an NCQ command costs in VM exits on the sequential bench rows: the
// bench guest (ahci.rom in bench mode, polling, as bench/disk-controller.mjs
// runs it) issues each 128 KiB READ/WRITE FPDMA QUEUED with a PxSACT write
// and a PxCI write, and polls PxCI/PxSACT/PxTFD for completion. With the
// register page (regpage) the polls read a read-only page and never exit;
// with sactcoalesce the PxSACT write goes into KVM's coalesced MMIO ring
// (a trap the kernel completes) and only the PxCI write exits to us. So an
// NCQ command is one MMIO exit to userspace, whether its data moves in that
// exit or on an I/O thread (iopool). Two runs that differ only in the bench
// size give the exits per command (boot, calibration and the flush cancel).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GUESTS, bhyveArgs, kvmUnavailable, vmName } from '../support/bhyve.js';
import { MODE, romWith, runHeld, stat } from '../support/guest-rom.js';
import { CAP } from '../../src/sys/kvm-abi.js';
import { Kvm } from '../../src/sys/kvm.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'ahci.rom')) ? undefined : 'ahci.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping AHCI exit-count tests: ${skip}`);
/** The register page needs KVM_CAP_READONLY_MEM, the PxSACT zone KVM's coalesced MMIO ring. */
const pageAndRing = skip === undefined && (() => {
  const k = Kvm.open();
  try { return k.checkExtension(CAP.READONLY_MEM) > 0 && k.checkExtension(CAP.COALESCED_MMIO) > 0; } finally { k.close(); }
})();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ahci-traps-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const AHCI = 'ahci@pci.0.3.0';

/** bench mode, M MiB each way (128 KiB commands: 8 per MiB per phase), no random reads. */
async function bench(mib: number, keys: string[]): Promise<Map<string, number>> {
  const img = path.join(tmp, `d${mib}.img`);
  fs.writeFileSync(img, '');
  fs.truncateSync(img, (mib + 16) << 20);
  const name = vmName(`ahci-traps-${mib}`);
  const r = await runHeld(bhyveArgs(romWith(tmp, 'ahci', MODE.POLL | MODE.HOLD, mib), name, {
    extra: ['-s', `3,ahci-hd,${img}`, ...keys.flatMap((k) => ['-o', `pci.0.3.0.${k}`])],
  }), name, { timeout: 150_000 });
  expect(r.status, r.out).toBe(33);
  expect(r.out).toContain('bench: done');
  return r.stats;
}

/** Per NCQ command of the difference between a 2 MiB and a 6 MiB bench:
 * MMIO exits to userspace and register reads that exited. */
async function perCommand(keys: string[]): Promise<{ exits: number; reads: number; commands: number }> {
  const a = await bench(2, keys);
  const b = await bench(6, keys);
  const d = (what: string) => (b.get(what) ?? 0) - (a.get(what) ?? 0);
  const commands = d(`${AHCI} port 0 commands`);
  expect(commands).toBe(2 * 4 * 8); // 4 MiB more written and read in 128 KiB commands
  return { exits: d('vm exits due to MMIO') / commands, reads: d(`${AHCI} register reads by exit`) / commands, commands };
}

describe.skipIf(skip !== undefined || !pageAndRing)('AHCI sequential bench: VM exits per NCQ command', () => {
  it('one (its PxCI write) with the register page and coalesced PxSACT writes (the defaults)', async () => {
    const r = await perCommand([]);
    expect(r.exits).toBe(1);
    expect(r.reads).toBe(0);
  }, 300_000);

  it('two with sactcoalesce=false (the PxSACT write exits too)', async () => {
    const r = await perCommand(['sactcoalesce=false']);
    expect(r.exits).toBe(2);
    expect(r.reads).toBe(0);
  }, 300_000);

  it('still one with an I/O thread (iopool=1): it completes the transfer in the page, no ring for a polling guest', async () => {
    const r = await perCommand(['iopool=1']);
    expect(r.exits).toBe(1);
    expect(r.reads).toBe(0);
  }, 300_000);
});
