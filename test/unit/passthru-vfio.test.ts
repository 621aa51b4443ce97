// passthru's host backend (devices/passthru/vfio-backend.ts) against a
// scripted kernel (test/support/fake-vfio-kernel.ts) that decodes the VFIO
// and iommufd structures the backend passes and answers as Linux does: the
// call sequences of the iommufd and container/group paths, region and
// interrupt discovery (the sparse-mmap capability included), the passthrough
// function on top (config write-through by pwrite, BAR pages mapped from the
// device file, MSI-X eventfds by SET_IRQS), DMA windows at start and as the
// guest's IOMMU maps and unmaps, reset at start and stop, and one line for
// each way the host refuses. Then the real host calls, as far as this host
// (no IOMMU, no VFIO) lets them go.
import fs from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext, KvmDoorbells, MsiIrqfd } from '../../src/devices/device.js';
import { identityDmaSpace, type DmaMappingLike, type DmaSpaceLike } from '../../src/devices/passthru/dma-window.js';
import { checkHostDevice, HostSetupError, type HostDevice, type PassthruSource } from '../../src/devices/passthru/host-device.js';
import { PassthruFunction, romBarSize } from '../../src/devices/passthru/passthru-function.js';
import { guestRamInMapping, VfioBackend } from '../../src/devices/passthru/vfio-backend.js';
import { hostVfioIo, type VfioHostIo } from '../../src/devices/passthru/vfio-host-io.js';
import { PciBus } from '../../src/devices/pci/pci-bus.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { Kvm, Vm } from '../../src/sys/kvm.js';
import { KVM_UNUSABLE } from '../support/probes.js';
import { DEVICE_FLAGS, IRQ_INFO_FLAG, IRQ_SET_FLAG, PCI_IRQ, REGION_INFO_FLAG } from '../../src/sys/vfio-abi.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { E, fakeNic, FakeVfioKernel, NIC, regionOffset, RW, type FakeKernelOptions } from '../support/fake-vfio-kernel.js';
import { fakeHostTree, type FakeHost } from '../support/fake-sysfs.js';

const RAM_BASE = 0x7e0000000000n;
const MIB = 0x100000;

const nic = fakeNic;

const GROUP_DEV: HostDevice = { address: NIC, group: 5, api: 'group', node: '/dev/vfio/5' };
const CDEV_DEV: HostDevice = { address: NIC, group: 5, api: 'iommufd', node: '/dev/vfio/devices/vfio0' };

function kernel(o: Partial<FakeKernelOptions> = {}): FakeVfioKernel {
  return new FakeVfioKernel({ files: ['/dev/vfio/vfio', '/dev/vfio/5', '/dev/iommu', '/dev/vfio/devices/vfio0'], device: nic(), ...o });
}

/** Guest RAM: 1 MiB low (and `high` bytes from 4 GiB), mapped at RAM_BASE as lowmem then highmem. */
function ram(high = 0) {
  const regions = [{ gpa: 0, bytes: new Uint8Array(MIB) }];
  if (high) regions.push({ gpa: 0x100000000, bytes: new Uint8Array(high) });
  const mem = new GuestMemory(regions);
  return { mem, host: guestRamInMapping(RAM_BASE, { lowmem: MIB, highmem: high }) };
}

/** A DMA space the test drives as the guest's virtio-iommu would. */
function iommuSpace() {
  const listeners: Array<{ map(m: DmaMappingLike): void; unmap(iova: number, length: number): void }> = [];
  const space: DmaSpaceLike = {
    identity: false,
    translate: () => { throw new Error('not used'); },
    listen(l) { listeners.push(l); return () => { listeners.splice(listeners.indexOf(l), 1); }; },
  };
  return {
    space,
    listeners,
    map: (iova: number, gpa: number, length: number, access: number) => { for (const l of listeners) l.map({ iova, gpa, length, access }); },
    unmap: (iova: number, length: number) => { for (const l of listeners) l.unmap(iova, length); },
  };
}

/** KVM's VFIO pseudo-device as the backend sees it, writing into the kernel's log. */
function kvmVfio(k: FakeVfioKernel, refuse = false) {
  return {
    vfioFile(fd: number) {
      if (refuse) return undefined;
      k.log.push(`kvm vfio add ${k.fds.get(fd)?.path}`);
      return { close: () => { k.log.push(`kvm vfio del ${k.fds.get(fd)?.path}`); } };
    },
  };
}

function open(k: FakeVfioKernel, dev: HostDevice = GROUP_DEV, o: { high?: number; space?: DmaSpaceLike; kvm?: ReturnType<typeof kvmVfio> } = {}) {
  const r = ram(o.high);
  const backend = VfioBackend.open(dev, { io: k, space: o.space ?? identityDmaSpace(r.mem.ranges()), ram: r.host, kvm: o.kvm });
  return { backend, mem: r.mem };
}

function refusal(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(HostSetupError);
    const msg = (e as Error).message;
    expect(msg.split('\n')).toHaveLength(1);
    return msg;
  }
  throw new Error('expected a refusal');
}

const DISCOVERY = [
  'VFIO_DEVICE_GET_INFO',
  'VFIO_DEVICE_GET_REGION_INFO 0', 'VFIO_DEVICE_GET_REGION_INFO 0 argsz=64',
  'VFIO_DEVICE_GET_REGION_INFO 1', 'VFIO_DEVICE_GET_REGION_INFO 2', 'VFIO_DEVICE_GET_REGION_INFO 3',
  'VFIO_DEVICE_GET_REGION_INFO 4', 'VFIO_DEVICE_GET_REGION_INFO 5', 'VFIO_DEVICE_GET_REGION_INFO 6',
  'VFIO_DEVICE_GET_REGION_INFO 7', 'VFIO_DEVICE_GET_REGION_INFO 8', 'VFIO_DEVICE_GET_REGION_INFO -> errno 22',
  'VFIO_DEVICE_GET_IRQ_INFO INTX', 'VFIO_DEVICE_GET_IRQ_INFO MSI', 'VFIO_DEVICE_GET_IRQ_INFO MSIX',
  'VFIO_DEVICE_GET_IRQ_INFO ERR', 'VFIO_DEVICE_GET_IRQ_INFO REQ',
];

describe('VFIO backend: opening the device', () => {
  it('container/group API: the calls in the kernel\'s order, then discovery and guest RAM mapped at IOVA = GPA', () => {
    const k = kernel();
    const { backend } = open(k);
    expect(k.log).toEqual([
      'open /dev/vfio/vfio', 'VFIO_GET_API_VERSION', 'VFIO_CHECK_EXTENSION TYPE1v2',
      'open /dev/vfio/5', 'VFIO_GROUP_GET_STATUS', 'VFIO_GROUP_SET_CONTAINER /dev/vfio/vfio', 'VFIO_SET_IOMMU TYPE1v2',
      `VFIO_GROUP_GET_DEVICE_FD ${NIC}`,
      ...DISCOVERY,
      'VFIO_IOMMU_MAP_DMA iova=0x0 size=0x100000 vaddr=0x7e0000000000 rw',
    ]);
    expect(backend.api).toBe('group');
    expect(backend.name).toBe('host 0000:01:00.0 (VFIO group 5)');
    expect([...k.windows]).toEqual([[0, { size: MIB, vaddr: RAM_BASE, write: true }]]);
    backend.close();
    expect(k.openFiles()).toEqual([]);
    expect(k.log.slice(-3)).toEqual(['close device', 'close /dev/vfio/5', 'close /dev/vfio/vfio']);
  });

  it('iommufd (cdev) API: bind, an I/O address space, attach; guest RAM mapped with IOAS_MAP at a fixed IOVA', () => {
    const k = kernel();
    const { backend } = open(k, CDEV_DEV, { high: 2 * MIB });
    expect(k.log).toEqual([
      'open /dev/vfio/devices/vfio0', 'open /dev/iommu',
      'VFIO_DEVICE_BIND_IOMMUFD /dev/iommu', 'IOMMU_IOAS_ALLOC -> 3', 'VFIO_DEVICE_ATTACH_IOMMUFD_PT 3',
      ...DISCOVERY,
      'IOMMU_IOAS_MAP ioas=3 iova=0x0 size=0x100000 vaddr=0x7e0000000000 rw',
      // highmem follows lowmem in the RAM file
      'IOMMU_IOAS_MAP ioas=3 iova=0x100000000 size=0x200000 vaddr=0x7e0000100000 rw',
    ]);
    expect(backend.api).toBe('iommufd');
    expect(backend.name).toBe('host 0000:01:00.0 (iommufd, /dev/vfio/devices/vfio0)');
    backend.close();
    expect(k.openFiles()).toEqual([]);
  });

  it('KVM\'s VFIO device is told of the group (group API) or the device file (iommufd), and untold before they close', () => {
    const k = kernel();
    open(k, GROUP_DEV, { kvm: kvmVfio(k) }).backend.close();
    expect(k.log.filter((l) => l.startsWith('kvm') || l.startsWith('close'))).toEqual([
      'kvm vfio add /dev/vfio/5', 'kvm vfio del /dev/vfio/5', 'close device', 'close /dev/vfio/5', 'close /dev/vfio/vfio',
    ]);
    const k2 = kernel();
    open(k2, CDEV_DEV, { kvm: kvmVfio(k2) }).backend.close();
    expect(k2.log.filter((l) => l.startsWith('kvm'))).toEqual(['kvm vfio add /dev/vfio/devices/vfio0', 'kvm vfio del /dev/vfio/devices/vfio0']);
  });

  it('KVM refusing its VFIO device: the device still works, one warning', () => {
    const k = kernel();
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const { backend } = open(k, GROUP_DEV, { kvm: kvmVfio(k, true) });
      expect(String(err.mock.calls[0][0])).toMatch(/^bhyve: passthru host 0000:01:00\.0 \(VFIO group 5\): KVM refused its VFIO device/);
      expect(backend.stats()['vfio file known to KVM']).toBe(0);
    } finally {
      err.mockRestore();
    }
  });

  it('regions: sizes, access, file offsets, and the sparse-mmap areas of a BAR', () => {
    const { backend } = open(kernel());
    expect(backend.region(0)).toEqual({
      index: 0, size: 0x4000, readable: true, writable: true, fileOffset: 0,
      mmap: { fd: expect.any(Number), offset: 0, areas: [{ offset: 0, size: 0x3000 }] },
    });
    expect(backend.region(2)).toMatchObject({ size: 0x20, readable: true, writable: true, fileOffset: regionOffset(2) });
    expect(backend.region(2).mmap).toBeUndefined();
    expect(backend.region(7)).toMatchObject({ size: 256, fileOffset: regionOffset(7) });
    expect(backend.region(8).size).toBe(0); // no VGA region: refused by the kernel, absent here
    expect([0, 1, 2, 3, 4].map((i) => backend.irqCount(i))).toEqual([1, 1, 4, 1, 1]);
    expect(backend.canReset).toBe(true);
  });

  it('a mappable region without the capability maps whole; a sparse area outside the region is dropped', () => {
    const dev = nic();
    dev.regions[0] = { ...dev.regions[0], sparse: [{ offset: 0, size: 0x3000 }, { offset: 0x3000, size: 0x2000 }] };
    dev.regions[2] = { ...dev.regions[2], flags: RW | REGION_INFO_FLAG.MMAP };
    const { backend } = open(kernel({ device: dev }));
    expect(backend.region(0).mmap?.areas).toEqual([{ offset: 0, size: 0x3000 }]);
    expect(backend.region(2).mmap?.areas).toEqual([{ offset: 0, size: 0x20 }]);
  });

  it('region reads and writes are pread/pwrite at the region offset; past the end reads all-ones and writes nothing', () => {
    const k = kernel();
    const { backend } = open(k);
    expect(Array.from(backend.read(2, 4, 4))).toEqual([0xa4, 0xa5, 0xa6, 0xa7]);
    backend.write(2, 0, Uint8Array.of(1, 2));
    expect(k.log.at(-1)).toBe('pwrite region 2 +0x0 0102');
    expect(Array.from(backend.read(2, 0x1e, 4))).toEqual([0xff, 0xff, 0xff, 0xff]);
    const n = k.log.length;
    backend.write(2, 0x1f, Uint8Array.of(1, 2));
    expect(k.log.length).toBe(n);
  });

  it('interrupts: SET_IRQS with eventfds as triggers, DATA_NONE to turn them off, the INTx unmask eventfd', () => {
    const k = kernel();
    const { backend } = open(k);
    backend.setIrqEventfds(PCI_IRQ.MSIX, [40, 41, 42]);
    backend.setIrqEventfds(PCI_IRQ.MSIX, []);
    backend.setIrqEventfds(PCI_IRQ.INTX, [50]);
    backend.setIntxUnmaskFd(51);
    expect(k.log.slice(-4)).toEqual([
      'VFIO_DEVICE_SET_IRQS MSIX trigger eventfd start=0 count=3',
      'VFIO_DEVICE_SET_IRQS MSIX trigger none start=0 count=0',
      'VFIO_DEVICE_SET_IRQS INTX trigger eventfd start=0 count=1',
      'VFIO_DEVICE_SET_IRQS INTX unmask eventfd start=0 count=1',
    ]);
    expect(k.irqSets.map((s) => s.fds)).toEqual([[40, 41, 42], [], [50], [51]]);
    expect(k.irqSets[3].flags).toBe(IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_UNMASK);
  });
});

describe('VFIO backend: DMA windows', () => {
  it('behind the virtio-iommu: nothing at start; the guest\'s maps and unmaps are mirrored at their IOVA', () => {
    const k = kernel();
    const iommu = iommuSpace();
    const { backend } = open(k, GROUP_DEV, { space: iommu.space, high: MIB });
    expect(k.log.filter((l) => l.startsWith('VFIO_IOMMU'))).toEqual([]);
    iommu.map(0x10000, 0x20000, 0x2000, 1); // read-only for the device
    iommu.map(0x80000000, 0x100000000, 0x1000, 3); // highmem, read-write
    iommu.map(0x90000000, 0xfee00000, 0x1000, 3); // not RAM: the device cannot reach it
    iommu.map(0xb0000000, 0x30000, 0x1000, 2); // write-only: the device may not read it
    iommu.map(0xc0000000, 0x30000, 0x1000, 0); // no access: no window
    iommu.map(0xa0000000, -0x1000, 0x2000, 3); // made-up addresses reach nothing either
    iommu.map(-0x1000, 0x1000, 0x1000, 3);
    iommu.map(2 ** 53, 0x1000, 0x1000, 3);
    expect(k.log.filter((l) => l.startsWith('VFIO_IOMMU'))).toEqual([
      'VFIO_IOMMU_MAP_DMA iova=0x10000 size=0x2000 vaddr=0x7e0000020000 r',
      'VFIO_IOMMU_MAP_DMA iova=0x80000000 size=0x1000 vaddr=0x7e0000100000 rw',
      'VFIO_IOMMU_MAP_DMA iova=0xb0000000 size=0x1000 vaddr=0x7e0000030000 w',
    ]);
    expect(backend.stats()).toMatchObject({ 'vfio dma windows': 3, 'vfio dma mappings outside RAM': 4 });
    iommu.unmap(0x10000, 0x2000);
    expect(k.log.at(-1)).toBe('VFIO_IOMMU_UNMAP_DMA iova=0x10000 size=0x2000');
    expect([...k.windows.keys()]).toEqual([0x80000000, 0xb0000000]);
    // An unmap of a larger range takes every window inside it, whole.
    iommu.unmap(0, 2 ** 40);
    expect(k.windows.size).toBe(0);
    backend.close();
    expect(iommu.listeners).toHaveLength(0);
  });

  it('iommufd: the guest\'s mappings go to the device\'s I/O address space', () => {
    const k = kernel();
    const iommu = iommuSpace();
    open(k, CDEV_DEV, { space: iommu.space });
    iommu.map(0x4000, 0x8000, 0x1000, 3);
    iommu.unmap(0x4000, 0x1000);
    expect(k.log.slice(-2)).toEqual([
      'IOMMU_IOAS_MAP ioas=3 iova=0x4000 size=0x1000 vaddr=0x7e0000008000 rw',
      'IOMMU_IOAS_UNMAP ioas=3 iova=0x4000 size=0x1000',
    ]);
  });

  it('a window the kernel refuses at run time: counted, told once, the VM goes on', () => {
    const k = kernel();
    const iommu = iommuSpace();
    const { backend } = open(k, GROUP_DEV, { space: iommu.space });
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      k.o.ioctlErrno = { VFIO_IOMMU_MAP_DMA: E.ENOMEM };
      iommu.map(0x10000, 0x20000, 0x1000, 3);
      iommu.map(0x20000, 0x30000, 0x1000, 3);
      expect(err).toHaveBeenCalledTimes(1);
      expect(String(err.mock.calls[0][0])).toMatch(/^bhyve: passthru: cannot pin 1 MiB of guest memory .*locked-memory limit/);
      expect(backend.stats()).toMatchObject({ 'vfio dma map failures': 2, 'vfio dma windows': 0 });
    } finally {
      err.mockRestore();
    }
  });

  it('guest memory on a file system Linux will not pin for long (not tmpfs or hugetlbfs): one line saying where it must be', () => {
    const k = kernel({ ioctlErrno: { IOMMU_IOAS_MAP: E.EFAULT } });
    expect(refusal(() => open(k, CDEV_DEV))).toMatch(/^passthru: cannot pin guest memory for the device's DMA \(IOMMU_IOAS_MAP: .*\): the guest memory file must be on tmpfs or hugetlbfs \(set BHYVE_RUNDIR/);
    expect(k.openFiles()).toEqual([]);
  });

  it('guest RAM the kernel will not pin at start: one line about the locked-memory limit, everything closed', () => {
    const k = kernel({ ioctlErrno: { VFIO_IOMMU_MAP_DMA: E.ENOMEM } });
    expect(refusal(() => open(k))).toMatch(/^passthru: cannot pin 1 MiB of guest memory for the device's DMA \(VFIO_IOMMU_MAP_DMA: .*\): the locked-memory limit is too low/);
    expect(k.openFiles()).toEqual([]);
  });
});

describe('VFIO backend under the passthrough function', () => {
  function rig(k: FakeVfioKernel, dev: HostDevice = GROUP_DEV, rom?: Uint8Array) {
    const io = new LocalIoBus();
    const maps: Array<{ gpa: number; size: number; address: bigint }> = [];
    let gsi = 24;
    const kvm = {
      msiIrqfd(fd: number): MsiIrqfd { return { gsi: gsi++, route: () => {}, attach: () => {}, detach: () => {}, close: () => {}, fd } as unknown as MsiIrqfd; },
      mapHostMemory(gpa: number, size: number, address: bigint) { maps.push({ gpa, size, address }); return true; },
      unmapHostMemory(gpa: number) { maps.splice(maps.findIndex((m) => m.gpa === gpa), 1); },
    } as unknown as KvmDoorbells;
    const { backend, mem } = open(k, dev);
    const ctx = {
      io, config: new ConfigTree(), mem, kvm,
      irq: { setLevel: () => {}, pulse: () => {}, signalMsi: () => {} },
      machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined, timer: () => { throw new Error('no timers'); },
    } as unknown as DeviceContext;
    const fn = new PassthruFunction(ctx, backend, { rom });
    const bus = new PciBus();
    bus.attach(0, 5, 0, fn);
    const rd = (off: number, size = 4) => bus.configRead(0, 5, 0, off, size);
    const wr = (off: number, v: number, size = 4) => bus.configWrite(0, 5, 0, off, size, v);
    return { io, fn, rd, wr, maps, backend };
  }

  it('resets the device when the VM starts and when it stops, before its files are closed', () => {
    const k = kernel();
    const r = rig(k);
    expect(k.resets).toHaveLength(1);
    expect(k.log[k.resets[0] - 1]).toBe('VFIO_DEVICE_RESET');
    // The reset comes after guest RAM is mapped (the device may DMA once out of reset).
    expect(k.log.findIndex((l) => l.startsWith('VFIO_IOMMU_MAP_DMA'))).toBeLessThan(k.resets[0] - 1);
    r.fn.close();
    expect(k.resets).toHaveLength(2);
    expect(k.log.slice(-4)).toEqual(['VFIO_DEVICE_RESET', 'close device', 'close /dev/vfio/5', 'close /dev/vfio/vfio']);
    expect(k.openFiles()).toEqual([]);
  });

  it('a device without reset is not reset (and the kernel is not asked)', () => {
    const k = kernel({ device: nic({ flags: DEVICE_FLAGS.PCI }) });
    const r = rig(k);
    r.fn.close();
    expect(k.log.filter((l) => l === 'VFIO_DEVICE_RESET')).toEqual([]);
  });

  it('identity and capabilities from the config region; the command register written through with pwrite', () => {
    const k = kernel();
    const r = rig(k, CDEV_DEV);
    expect(r.rd(0x00)).toBe(0x10d38086);
    expect(r.fn.caps.map((c) => c.id)).toEqual([0x11, 0x05, 0x01, 0x10]);
    r.wr(0x10, 0xffffffff);
    expect(r.rd(0x10)).toBe(0xffffc000); // BAR 0: 16 KiB of memory
    r.wr(0x18, 0xffffffff);
    expect(r.rd(0x18) & 0xffff).toBe(0xffe1); // BAR 2: 32 bytes of I/O
    r.wr(0x04, 0x0006, 2);
    expect(k.log.at(-1)).toBe('pwrite region 7 +0x4 0600');
  });

  it('decoding and bus mastering the platform turns on (no firmware) reach the device when its BARs start to decode', () => {
    const k = kernel();
    const r = rig(k);
    // platform.ts for guests without a boot ROM: the shadow command set directly, then the BARs placed.
    r.fn.cfg.set16(0x04, r.fn.cfg.get16(0x04) | 0x0007);
    r.fn.setBarAddress(2, 0xe000);
    expect(k.log.filter((l) => l.startsWith('pwrite region 7 +0x4'))).toEqual(['pwrite region 7 +0x4 0700']);
    r.fn.setBarAddress(0, 0xc0000000);
    expect(k.log.filter((l) => l.startsWith('pwrite region 7 +0x4'))).toHaveLength(1); // once
    expect(r.maps.map((m) => m.gpa)).toEqual([0xc0000000]);
    // After a reset the device's register is written again when a BAR decodes.
    r.fn.reset();
    r.fn.setBarAddress(2, 0xe040);
    expect(k.log.filter((l) => l.startsWith('pwrite region 7 +0x4'))).toHaveLength(2);
  });

  it('BAR 0: its mappable pages mapped from the device file into the guest, the MSI-X table page trapped', () => {
    const k = kernel();
    const r = rig(k);
    // Only the sparse areas: the kernel refuses a mapping over the MSI-X table page.
    expect(k.log).toContain('mmap host 0000:01:00.0 (VFIO group 5) region 0 +0x0 0x4000 areas +0x0:0x3000');
    r.wr(0x10, 0xc0000000);
    r.wr(0x04, 0x0002, 2);
    expect(r.maps.map(({ gpa, size }) => ({ gpa, size }))).toEqual([{ gpa: 0xc0000000, size: 0x3000 }]);
    expect(r.fn.barPlan(0)).toEqual([{ offset: 0, size: 0x3000, how: 'map' }, { offset: 0x3000, size: 0x1000, how: 'trap' }]);
    // The trapped page: the emulated table (vector 0 masked), not the device's.
    const d = new Uint8Array(4);
    r.io.mmioRead(0xc000300c, d);
    expect(d[0] & 1).toBe(1);
  });

  it('MSI-X enabled by the guest: one eventfd per vector given to the device; disabled: taken back', () => {
    const k = kernel();
    const r = rig(k);
    r.wr(0x42, 0x8000, 2);
    const on = k.irqSets.at(-1)!;
    expect(on).toMatchObject({ index: PCI_IRQ.MSIX, start: 0, count: 4, flags: IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_TRIGGER });
    expect(new Set(on.fds).size).toBe(4);
    for (const fd of on.fds) expect(fs.fstatSync(fd).isFile()).toBe(false); // real eventfds
    r.wr(0x42, 0, 2);
    expect(k.irqSets.at(-1)).toMatchObject({ index: PCI_IRQ.MSIX, count: 0, flags: IRQ_SET_FLAG.DATA_NONE | IRQ_SET_FLAG.ACTION_TRIGGER });
    r.fn.close();
  });
});

describe('passthru rom=: the expansion ROM BAR (bhyve\'s passthru_init_rom)', () => {
  function rig(rom?: Uint8Array) {
    const io = new LocalIoBus();
    const { backend, mem } = open(kernel());
    const ctx = {
      io, config: new ConfigTree(), mem,
      irq: { setLevel: () => {}, pulse: () => {}, signalMsi: () => {} },
      machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined, timer: () => { throw new Error('no timers'); },
    } as unknown as DeviceContext;
    const fn = new PassthruFunction(ctx, backend, { rom });
    const bus = new PciBus();
    bus.attach(0, 5, 0, fn);
    const rd = (off: number, size = 4) => bus.configRead(0, 5, 0, off, size);
    const wr = (off: number, v: number, size = 4) => bus.configWrite(0, 5, 0, off, size, v);
    const mrd = (a: number, n = 4) => { const d = new Uint8Array(n); io.mmioRead(a, d); return Array.from(d); };
    return { fn, rd, wr, mrd };
  }

  it('sizes as bhyve: 1 << fls(length), at least 2 KiB', () => {
    expect([1, 2047, 2048, 3000, 4096, 65535].map(romBarSize)).toEqual([0x800, 0x800, 0x1000, 0x1000, 0x2000, 0x10000]);
  });

  it('sized by the guest, decoded read-only where it is placed once enabled with memory decoding, gone when disabled', () => {
    const rom = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) & 0xff);
    rom[0] = 0x55; rom[1] = 0xaa;
    const r = rig(rom);
    expect(r.rd(0x30)).toBe(0);
    r.wr(0x30, 0xfffff800);
    expect(r.rd(0x30)).toBe(0xfffff000); // 4 KiB, disabled
    r.wr(0x30, 0xd0000000 | 1);
    expect(r.rd(0x30)).toBe(0xd0000001);
    const nothing = r.mrd(0xdead0000); // what the bus reads where nothing decodes
    expect(r.mrd(0xd0000000)).toEqual(nothing); // memory decoding off
    r.wr(0x04, 0x0002, 2);
    expect(r.mrd(0xd0000000)).toEqual([0x55, 0xaa, 14, 21]);
    expect(r.mrd(0xd0000000 + 2996)).toEqual([2996 * 7 & 0xff, 2997 * 7 & 0xff, 2998 * 7 & 0xff, 2999 * 7 & 0xff]);
    expect(r.mrd(0xd0000000 + 3000)).toEqual([0, 0, 0, 0]); // padding up to the BAR size
    // Read-only: a write changes nothing.
    const w = Uint8Array.of(1, 2, 3, 4);
    (r.fn as unknown as { ctx: { io: LocalIoBus } }).ctx.io.mmioWrite(0xd0000000, w);
    expect(r.mrd(0xd0000000, 2)).toEqual([0x55, 0xaa]);
    r.wr(0x30, 0xd0000000); // disabled
    expect(r.mrd(0xd0000000)).toEqual(nothing);
    r.wr(0x30, 0xe0000001); // moved and enabled again
    expect(r.mrd(0xe0000000, 2)).toEqual([0x55, 0xaa]);
    r.fn.reset(); // a reset turns it off
    expect(r.rd(0x30)).toBe(0);
    expect(r.mrd(0xe0000000)).toEqual(nothing);
  });

  it('without rom=, the function has no expansion ROM: the register stays 0', () => {
    const r = rig();
    r.wr(0x30, 0xfffff801);
    expect(r.rd(0x30)).toBe(0);
  });

  it('an empty ROM is refused', () => {
    expect(() => rig(new Uint8Array(0))).toThrow('the ROM file is empty');
  });
});

describe('VFIO backend: one line for each way the host refuses', () => {
  it('no permission on the group, the container, the device file or /dev/iommu', () => {
    for (const [file, dev] of [['/dev/vfio/5', GROUP_DEV], ['/dev/vfio/vfio', GROUP_DEV], ['/dev/vfio/devices/vfio0', CDEV_DEV], ['/dev/iommu', CDEV_DEV]] as const) {
      const k = kernel({ openErrno: { [file]: E.EACCES } });
      expect(refusal(() => open(k, dev))).toBe(`passthru: no permission to open ${file} read-write (run bhyve as root, or give its user the file: chown USER ${file})`);
      expect(k.openFiles()).toEqual([]);
    }
  });

  it('no such device file', () => {
    const k = kernel({ files: ['/dev/vfio/vfio'] });
    expect(refusal(() => open(k))).toBe('passthru: no such device: /dev/vfio/5 (for host PCI device 0000:01:00.0)');
    expect(k.openFiles()).toEqual([]);
  });

  it('the group is not viable (a device of it on a host driver): refused before it joins a container', () => {
    const k = kernel({ viable: false });
    expect(refusal(() => open(k))).toBe('passthru: IOMMU group 5 of 0000:01:00.0 is not viable: a device of /sys/kernel/iommu_groups/5/devices is bound to a host driver (bind every device of the group to vfio-pci, or unbind it)');
    expect(k.log).not.toContain('VFIO_GROUP_SET_CONTAINER /dev/vfio/vfio');
    expect(k.openFiles()).toEqual([]);
  });

  it('the group or device is in use elsewhere', () => {
    const k = kernel({ openErrno: { '/dev/vfio/5': E.EBUSY } });
    expect(refusal(() => open(k))).toBe('passthru: /dev/vfio/5 is busy: host PCI device 0000:01:00.0 (or its IOMMU group) is in use by another process or VM');
  });

  it('no type 1 v2 IOMMU in the container, or another VFIO API version', () => {
    expect(refusal(() => open(kernel({ type1v2: false })))).toMatch(/^passthru: the host's VFIO has no type 1 v2 IOMMU/);
    expect(refusal(() => open(kernel({ apiVersion: 1 })))).toBe('passthru: /dev/vfio/vfio speaks VFIO API version 1, not 0');
  });

  it('the device is not a vfio-pci device', () => {
    const k = kernel({ device: nic({ flags: 0 }) });
    expect(refusal(() => open(k))).toBe('passthru: 0000:01:00.0 is not a VFIO PCI device (not bound to vfio-pci)');
    expect(k.openFiles()).toEqual([]);
  });

  it('the device refusing a call while it is discovered: named by its address, everything closed', () => {
    const k = kernel({ ioctlErrno: { VFIO_DEVICE_GET_INFO: 5 } });
    expect(refusal(() => open(k))).toBe('passthru: VFIO_DEVICE_GET_INFO on host PCI device 0000:01:00.0: Input/output error');
    expect(k.openFiles()).toEqual([]);
  });

  it('iommufd refuses the bind (the group is open through the legacy API elsewhere)', () => {
    const k = kernel({ ioctlErrno: { VFIO_DEVICE_BIND_IOMMUFD: E.EPERM } });
    expect(refusal(() => open(k, CDEV_DEV))).toMatch(/^passthru: VFIO_DEVICE_BIND_IOMMUFD on \/dev\/vfio\/devices\/vfio0: not permitted/);
    expect(k.openFiles()).toEqual([]);
  });

  describe('from sysfs, before the kernel is asked (host-device.ts, then the backend)', () => {
    const roots: string[] = [];
    afterEach(() => { for (const r of roots.splice(0)) fs.rmSync(r, { recursive: true, force: true }); });
    const READY: FakeHost = { devices: { [NIC]: { driver: 'vfio-pci', group: 5 } }, dev: ['vfio/vfio', 'vfio/5'] };
    const SOURCE: PassthruSource = { kind: 'address', address: NIC };
    function startHost(h: FakeHost, k: FakeVfioKernel): VfioBackend {
      const device = checkHostDevice(SOURCE, { root: fakeHostTree(h, roots) });
      return open(k, device).backend;
    }

    it('a ready host: the device opens through the group the checks found', () => {
      const k = kernel();
      expect(startHost(READY, k).api).toBe('group');
    });

    it('IOMMU off: no IOMMU groups', () => {
      const k = kernel();
      expect(refusal(() => startHost({ devices: { [NIC]: { driver: 'vfio-pci' } }, dev: ['vfio/vfio'] }, k))).toMatch(/^passthru: no IOMMU: /);
      expect(k.log).toEqual([]);
    });

    it('the device bound to its host driver, not vfio-pci', () => {
      const k = kernel();
      expect(refusal(() => startHost({ ...READY, devices: { [NIC]: { driver: 'e1000e', group: 5 } } }, k)))
        .toMatch(/^passthru: host PCI device 0000:01:00\.0 is bound to e1000e, not vfio-pci/);
      expect(k.log).toEqual([]);
    });

    it('no such device', () => {
      const k = kernel();
      expect(refusal(() => startHost({ ...READY, devices: { '0000:02:00.0': { driver: 'vfio-pci', group: 5 } } }, k)))
        .toBe('passthru: host PCI device 0000:01:00.0 does not exist (see lspci -D)');
    });
  });
});

describe('VFIO backend: the real host calls', () => {
  const roots: string[] = [];
  afterEach(() => { for (const r of roots.splice(0)) fs.rmSync(r, { recursive: true, force: true }); });

  function realOpen(io: VfioHostIo, dev: HostDevice): VfioBackend {
    return VfioBackend.open(dev, { io, space: identityDmaSpace([{ gpa: 0, length: MIB }]), ram: guestRamInMapping(RAM_BASE, { lowmem: MIB, highmem: 0 }) });
  }

  it('pread/pwrite at an offset, mmap, and errno on failure, through the real calls (a plain file for a device)', () => {
    const root = fakeHostTree({ devices: {}, dev: ['vfio/devices/vfio0'] }, roots);
    fs.truncateSync(`${root}/dev/vfio/devices/vfio0`, 0x3000);
    const io = hostVfioIo(root);
    const fd = io.open('/dev/vfio/devices/vfio0');
    expect(io.pwrite(fd, Uint8Array.of(1, 2, 3), 0x1ffe)).toBe(3);
    const back = new Uint8Array(4);
    expect(io.pread(fd, back, 0x1ffd)).toBe(4);
    expect(Array.from(back)).toEqual([0, 1, 2, 3]);
    const m = io.mmap(fd, 0x1000, 0x2000, 'test region');
    expect(m.bytes[0]).toBe(3);
    m.unmap();
    const holes = io.mmap(fd, 0x3000, 0, 'test region', [{ offset: 0x2000, size: 0x1000 }]);
    expect(holes.address % 4096n).toBe(0n);
    holes.unmap();
    io.close(fd);
    expect(() => io.pread(fd, back, 0)).toThrow(expect.objectContaining({ call: 'pread', errno: E.EBADF }));
    expect(() => io.ioctl(fd, 0x3b64, null, 'VFIO_GET_API_VERSION')).toThrow(expect.objectContaining({ errno: E.EBADF }));
    expect(() => io.open('/dev/vfio/nothing')).toThrow(expect.objectContaining({ call: 'open', file: '/dev/vfio/nothing', errno: E.ENOENT }));
  });

  it('device nodes that are not VFIO\'s (plain files under a fake root): the kernel\'s ENOTTY, in one line', () => {
    const root = fakeHostTree({ devices: {}, dev: ['vfio/vfio', 'vfio/5', 'iommu', 'vfio/devices/vfio0'] }, roots);
    const io = hostVfioIo(root);
    expect(refusal(() => realOpen(io, GROUP_DEV))).toBe('passthru: /dev/vfio/vfio is not a VFIO device: the kernel does not know VFIO_GET_API_VERSION there');
    expect(refusal(() => realOpen(io, CDEV_DEV))).toBe('passthru: /dev/vfio/devices/vfio0 is not a VFIO device: the kernel does not know VFIO_DEVICE_BIND_IOMMUFD there');
  });

  it.skipIf(KVM_UNUSABLE)('KVM\'s VFIO device exists here and refuses a file that is not VFIO\'s', () => {
    const vm = Kvm.open().createVm();
    const dev = vm.createVfioDevice();
    const root = fakeHostTree({ devices: {}, dev: ['vfio/5'] }, roots);
    const plain = fs.openSync(`${root}/dev/vfio/5`, 'r+');
    try {
      expect(() => Vm.vfioFile(dev, plain, true)).toThrow(/^KVM_SET_DEVICE_ATTR \(VFIO file add\): /);
    } finally {
      fs.closeSync(plain);
      fs.closeSync(dev);
      fs.closeSync(vm.fd);
    }
  });

  it.runIf(!fs.existsSync('/dev/vfio/vfio'))('this host has no /dev/vfio/vfio: no such device', () => {
    expect(refusal(() => realOpen(hostVfioIo('/'), GROUP_DEV))).toBe('passthru: no such device: /dev/vfio/vfio (for host PCI device 0000:01:00.0)');
  });

  it.runIf(!fs.existsSync('/dev/iommu'))('this host has no /dev/iommu: no such device', () => {
    const root = fakeHostTree({ devices: {}, dev: ['vfio/devices/vfio0'] }, roots);
    expect(refusal(() => realOpen(hostVfioIo(root), CDEV_DEV))).toBe('passthru: no such device: /dev/iommu (for host PCI device 0000:01:00.0)');
  });
});
