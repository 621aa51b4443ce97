// The KVM doorbells the virtio-blk iothread builds on, against the real
// /dev/kvm (skipped without it): an ioeventfd on an MMIO address is
// accepted and removed again; GSI routing with an MSI route above KVM's
// default routes, and an irqfd on it, are accepted, fire, and are removed.
// And the virtio-blk test guest on our bhyve with iothread=true.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { bhyveArgs, kvmUnavailable, rom, vmName } from '../support/bhyve.js';
import { KVM_UNUSABLE } from '../support/probes.js';
import { MODE, romWith, runHeld, stat } from '../support/guest-rom.js';
import { CAP, IOAPIC_NUM_PINS } from '../../src/sys/kvm-abi.js';
import { Kvm } from '../../src/sys/kvm.js';
import { closeFd, EFD_CLOEXEC, EFD_NONBLOCK, eventfd, eventfdRead, eventfdWrite } from '../../src/sys/eventfd.js';

const haveKvm = KVM_UNUSABLE === undefined;

describe('eventfd', () => {
  it('counts writes and reads them back as one value; non-blocking read of zero is 0', () => {
    const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    expect(eventfdRead(fd)).toBe(0n);
    expect(eventfdWrite(fd)).toBe(0);
    expect(eventfdWrite(fd, 41)).toBe(0);
    expect(eventfdRead(fd)).toBe(42n);
    expect(eventfdRead(fd)).toBe(0n);
    closeFd(fd);
  });
});

describe.skipIf(!haveKvm)('KVM ioeventfd / irqfd / GSI routing', () => {
  it('ioeventfd on an MMIO notify address: assign, duplicate refused, deassign', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    try {
      expect(vm.checkExtension(CAP.IOEVENTFD)).toBeGreaterThan(0);
      const anyLength = vm.checkExtension(CAP.IOEVENTFD_ANY_LENGTH) !== 0;
      const fd = eventfd();
      const addr = 0xc0003000;
      vm.ioeventfd({ fd, addr, len: anyLength ? 0 : 2 });
      expect(() => vm.ioeventfd({ fd, addr, len: anyLength ? 0 : 2 })).toThrow(/KVM_IOEVENTFD/);
      vm.ioeventfd({ fd, addr, len: anyLength ? 0 : 2, deassign: true });
      expect(() => vm.ioeventfd({ fd, addr, len: anyLength ? 0 : 2, deassign: true })).toThrow(/KVM_IOEVENTFD/);
      closeFd(fd);
    } finally {
      fs.closeSync(vm.fd);
      kvm.close();
    }
  });

  it('an MSI route above the default routes and an irqfd on it', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    try {
      vm.createIrqchip();
      expect(vm.checkExtension(CAP.IRQ_ROUTING)).toBeGreaterThan(0);
      expect(vm.checkExtension(CAP.IRQFD)).toBeGreaterThan(0);
      const gsi = IOAPIC_NUM_PINS;
      vm.setGsiRouting([{ gsi, address: 0xfee00000, data: 0x4041 }]);
      const fd = eventfd();
      vm.irqfd(fd, gsi);
      expect(eventfdWrite(fd)).toBe(0); // injected by the kernel (no vCPU runs: it stays pending)
      vm.irqfd(fd, gsi, true);
      // The default routes are still there: an IOAPIC line can be driven.
      expect(() => vm.irqLine(4, true)).not.toThrow();
      expect(() => vm.irqLine(4, false)).not.toThrow();
      closeFd(fd);
    } finally {
      fs.closeSync(vm.fd);
      kvm.close();
    }
  });
});

const guestSkip = kvmUnavailable() ?? (fs.existsSync(rom('virtio-blk')) ? undefined : 'virtio test guests are not built');

describe.skipIf(guestSkip !== undefined)('virtio-blk guest with iothread=true', () => {
  it('writes, flushes and reads back 4 MiB through the iothread; the image holds it', async () => {
    await readBack([], (stats, dev) => {
      expect(stat(stats, dev, 'iothread reads handed to its reader threads')).toBe(0);
    });
  });

  it('with iothread_readers=2 the same, every request counted on the iothread, its 64 KiB reads handed to readers while they keep up', async () => {
    await readBack([',iothread_readers=2'], (stats, dev) => {
      // Whether a read reached a reader depends on the host (a reader that
      // is not up yet, or lost its CPU, leaves reads to the iothread):
      // blk-readers.test.ts checks that they do; here, that they count.
      const n = stat(stats, dev, 'iothread reads handed to its reader threads');
      expect(n).toBeLessThanOrEqual(64);
      expect(stat(stats, dev, 'iothread reads handed over and done by the iothread')).toBeLessThanOrEqual(n);
    });
  });
});

async function readBack(opts: string[], check: (stats: Map<string, number>, dev: string) => void): Promise<void> {
  {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blk-iot-int-'));
    try {
      const img = path.join(tmp, 'blk.img');
      fs.writeFileSync(img, '');
      fs.truncateSync(img, 8 << 20);
      // The guest holds at its end (MODE.HOLD) while bhyvectl reads which
      // thread served the requests and how the notifies got there.
      const name = vmName('vblkiot');
      const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-blk', MODE.HOLD), name, {
        extra: ['-s', `3,virtio-blk,${img},ser=TESTSERIAL,iothread=true${opts.join('')}`],
      }), name);
      const m = r.out.match(/virtio-blk: wrote (\d+) sectors, read back OK, checksum ([0-9a-f]{8})\r\n/);
      expect(m, r.out).not.toBeNull();
      expect(r.out).toContain("virtio-blk: serial 'TESTSERIAL'\r\n");
      expect(r.status, r.out).toBe(33);
      expect(crc32(fs.readFileSync(img).subarray(0, 8192 * 512)).toString(16).padStart(8, '0')).toBe(m![2]);
      const dev = 'virtio-blk@pci.0.3.0';
      // GET_ID, 16 writes, a flush, 64 reads: all on the iothread, none on
      // the device thread; every notify went through the ioeventfd.
      expect(stat(r.stats, dev, 'requests served on the iothread')).toBe(82);
      expect(stat(r.stats, dev, 'requests served on the device thread')).toBe(0);
      expect(stat(r.stats, dev, 'queue notifies by exit')).toBe(0);
      expect(stat(r.stats, dev, 'notifies forwarded to the iothread')).toBe(0);
      expect(stat(r.stats, dev, 'iothread wakeups')).toBeGreaterThan(0);
      check(r.stats, dev);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
}
