// One of bhyve's own PCI device models (virtio-blk, nvme, ...) served over
// vfio-user: the model is built from a `-s` slot option as bhyve builds it,
// on a device context of this process, and its BARs, configuration space
// and interrupts become vfio-user regions and irqs:
//
//   - BARs are placed at addresses of our own (the client decides where
//     the guest sees them) and decoded on a private I/O bus; a region
//     access is an access there;
//   - the configuration space is the model's, except that BAR and decode
//     bits stay ours (the client virtualises BARs);
//   - the client emulates MSI-X itself (its guest never programs the
//     model's table), so when it hands us eventfds for the MSI-X vectors,
//     the model's table is programmed with one tag message per vector and
//     MSI-X turned on: the model's message for vector v is eventfd v.
//     INTx is eventfd INTx (automasked, re-signalled on unmask while the
//     model holds the line);
//   - the model reaches the client's memory through the DMA windows the
//     client shared (their files mapped here), with DMA address = guest
//     physical address as bhyve's client gives them.

import { ConfigTree } from '../config/tree.js';
import { parseSlotOption } from '../config/bhyve-args.js';
import { findPciDevice, loadedPciModel, loadPciModels } from '../devices/registry.js';
import type { Device, DeviceContext, DeviceTimer } from '../devices/device.js';
import type { Chipset, PciSlot } from '../devices/pci-device.js';
import { PciBus } from '../devices/pci/pci-bus.js';
import { PciEmulFunction } from '../devices/pci/pci-emul.js';
import { PCIM_CMD_MEMEN, PCIM_CMD_PORTEN, PCIR_BAR0, PCIR_COMMAND, PCIR_INTPIN, PCIY_MSIX, PCI_BAR_COUNT } from '../devices/pci/config-space.js';
import { ConfigError } from '../config/tree.js';
import { GuestMemory } from '../sys/guest-memory.js';
import { IRQ_INFO_FLAG, PCI_IRQ, PCI_REGION, REGION_INFO_FLAG } from '../sys/vfio-abi.js';
import { LocalIoBus } from './io-bus.js';
import type { DeviceServices, ServedDevice, ServedRegion } from '../devices/vfio-user/server.js';

/** The address of the tag messages (never a real MSI address). */
const TAG_ADDRESS = 0xfee0_0000 + 0xff000;
const IO_BASE = 0x1000;
const MEM_BASE = 0x1_0000_0000;

export class ServedPciModel implements ServedDevice {
  readonly regions: Array<ServedRegion | undefined> = [];
  readonly irqs: Array<{ count: number; flags: number }>;
  readonly fn: PciEmulFunction & Device;
  private readonly io = new LocalIoBus();
  private readonly bus = new PciBus();
  private readonly mem = new GuestMemory([]);
  private services: DeviceServices | undefined;
  private readonly bases: number[] = [];
  private msixOn = false;
  readonly emulation: string;

  /** The model's configuration (pci.0.0.0.*), as bhyve's -s made it. */
  readonly config: ConfigTree;

  /** The model of `spec` loaded (registry.ts), then the constructor's. */
  static async open(spec: string): Promise<ServedPciModel> {
    const config = new ConfigTree();
    parseSlotOption(config, `0,${spec}`);
    await loadPciModels(config);
    return new ServedPciModel(spec);
  }

  /** `spec`: what follows the slot in `-s slot,NAME,conf` ("virtio-blk,disk.img");
   * its model loaded (open()). */
  constructor(spec: string) {
    const config = new ConfigTree();
    this.config = config;
    parseSlotOption(config, `0,${spec}`);
    const node = 'pci.0.0.0';
    const slot: PciSlot = { bus: 0, slot: 0, func: 0, node, where: '0:0:0' };
    this.emulation = config.get(`${node}.device`)!;
    const record = findPciDevice(this.emulation);
    if (!record?.model) throw new ConfigError(`cannot serve "${this.emulation}": not a device model bhyve builds`);
    if (this.emulation === 'passthru' || this.emulation === 'hostbridge' || this.emulation === 'lpc') throw new ConfigError(`cannot serve "${this.emulation}" over vfio-user`);
    record.validate?.(config, slot);
    const ctx: DeviceContext = {
      io: this.io,
      irq: {
        setLevel: () => {},
        pulse: () => {},
        signalMsi: (address, data) => {
          if (address === TAG_ADDRESS) this.services?.trigger(PCI_IRQ.MSIX, data);
        },
      },
      mem: this.mem,
      config,
      machine: { requestExit: () => {}, vcpuCount: 1 },
      stream: () => undefined,
      timer: (): DeviceTimer => ({ armAt: () => { throw new Error('device timers are not available in a vfio-user server'); }, cancel: () => {}, now: () => process.hrtime.bigint() }),
    };
    const chipset = { bus: this.bus, msix: true, qemu: false } as unknown as Chipset;
    const model = loadedPciModel(record);
    if (!model) throw new Error(`${this.emulation}: its model is not loaded (ServedPciModel.open)`);
    const fn = model.create(ctx, slot, chipset);
    if (!(fn instanceof PciEmulFunction)) throw new ConfigError(`cannot serve "${this.emulation}": not a PCI function with BARs`);
    this.fn = fn;
    this.bus.attach(0, 0, 0, fn);
    if (fn.wantsIntx) {
      // Pin INTA (the client routes it); the platform would have set it.
      fn.cfg.set8(PCIR_INTPIN, 1);
      fn.intx = {
        assert: () => { this.services?.trigger(PCI_IRQ.INTX, 0); },
        deassert: () => {},
      };
    }
    this.placeBars();
    this.irqs = [
      { count: fn.wantsIntx ? 1 : 0, flags: IRQ_INFO_FLAG.EVENTFD | IRQ_INFO_FLAG.MASKABLE | IRQ_INFO_FLAG.AUTOMASKED },
      { count: 0, flags: 0 }, // MSI: bhyve's MSI capability is not offered (MSI-X is)
      { count: fn.msixVectorCount, flags: IRQ_INFO_FLAG.EVENTFD | IRQ_INFO_FLAG.NORESIZE },
      { count: 0, flags: 0 },
      { count: 0, flags: 0 },
    ];
    this.regions[PCI_REGION.CONFIG] = {
      size: fn.cfg.size,
      flags: REGION_INFO_FLAG.READ | REGION_INFO_FLAG.WRITE,
      read: (off, data) => this.cfgAccess(off, data, false),
      write: (off, data) => this.cfgAccess(off, data, true),
    };
  }

  /** Our own BAR addresses, decoding on: region accesses go there. */
  private placeBars(): void {
    let io = IO_BASE;
    let mem = MEM_BASE;
    for (const b of this.fn.declaredBars()) {
      const align = (x: number, a: number): number => Math.ceil(x / a) * a;
      const base = b.kind === 'io' ? (io = align(io, b.size)) : (mem = align(mem, b.size));
      if (b.kind === 'io') io += b.size; else mem += b.size;
      this.fn.setBarAddress(b.idx, base);
      this.bases[b.idx] = base;
      const isIo = b.kind === 'io';
      this.regions[b.idx] = {
        size: b.size,
        flags: REGION_INFO_FLAG.READ | REGION_INFO_FLAG.WRITE,
        read: (off, data) => this.barAccess(isIo, base + off, data, false),
        write: (off, data) => this.barAccess(isIo, base + off, data, true),
      };
    }
    this.decodeOn();
  }

  private decodeOn(): void {
    const cmd = this.fn.cfg.get16(PCIR_COMMAND);
    const want = cmd | PCIM_CMD_MEMEN | PCIM_CMD_PORTEN;
    this.fn.cfg.set16(PCIR_COMMAND, want);
    this.fn.commandChanged?.(cmd, want);
  }

  private barAccess(isIo: boolean, addr: number, data: Uint8Array, write: boolean): void {
    if (!isIo) {
      const ok = write ? this.io.mmioWrite(addr, data) : this.io.mmioRead(addr, data);
      if (!ok && !write) data.fill(0xff);
      return;
    }
    // Port I/O in 4/2/1-byte pieces.
    for (let o = 0; o < data.length;) {
      const size = (data.length - o >= 4 && ((addr + o) & 3) === 0 ? 4 : data.length - o >= 2 && ((addr + o) & 1) === 0 ? 2 : 1) as 1 | 2 | 4;
      if (write) {
        let v = 0;
        for (let i = 0; i < size; i++) v |= data[o + i] << (8 * i);
        this.io.portWrite(addr + o, size, v >>> 0);
      } else {
        const v = this.io.portRead(addr + o, size) ?? 0xffffffff;
        for (let i = 0; i < size; i++) data[o + i] = (v >>> (8 * i)) & 0xff;
      }
      o += size;
    }
  }

  private cfgAccess(off: number, data: Uint8Array, write: boolean): void {
    for (let o = 0; o < data.length;) {
      const at = off + o;
      const size = (data.length - o >= 4 && (at & 3) === 0 ? 4 : data.length - o >= 2 && (at & 1) === 0 ? 2 : 1) as 1 | 2 | 4;
      if (write) {
        let v = 0;
        for (let i = 0; i < size; i++) v |= data[o + i] << (8 * i);
        // BARs are the client's business; decode stays on here.
        if (!(at >= PCIR_BAR0 && at < PCIR_BAR0 + 4 * PCI_BAR_COUNT)) {
          if (at <= PCIR_COMMAND && at + size > PCIR_COMMAND) v |= (PCIM_CMD_MEMEN | PCIM_CMD_PORTEN) << (8 * (PCIR_COMMAND - at));
          this.bus.configWrite(0, 0, 0, at, size, v >>> 0);
        }
      } else {
        const v = this.bus.configRead(0, 0, 0, at, size);
        for (let i = 0; i < size; i++) data[o + i] = (v >>> (8 * i)) & 0xff;
      }
      o += size;
    }
  }

  attach(services: DeviceServices): void {
    this.services = services;
  }

  irqsChanged(index: number, count: number): void {
    if (index !== PCI_IRQ.MSIX) return;
    this.setMsix(count > 0);
  }

  /** MSI-X of the model on (each vector's tag message, unmasked) or off. */
  private setMsix(on: boolean): void {
    const cap = this.fn.cfg.findCapability(PCIY_MSIX);
    if (!cap) return;
    const tableReg = this.fn.cfg.get32(cap.offset + 4);
    const base = this.bases[tableReg & 7];
    if (base === undefined) return;
    const table = base + (tableReg & ~7);
    const w32 = (a: number, v: number): void => { this.io.mmioWrite(a, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24)); };
    if (on) {
      for (let v = 0; v < this.fn.msixVectorCount; v++) {
        w32(table + 16 * v, TAG_ADDRESS);
        w32(table + 16 * v + 4, 0);
        w32(table + 16 * v + 8, v);
        w32(table + 16 * v + 12, 0);
      }
    }
    const ctrl = this.fn.cfg.get16(cap.offset + 2);
    this.bus.configWrite(0, 0, 0, cap.offset + 2, 2, on ? (ctrl | 0x8000) & ~0x4000 : ctrl & ~0x8000);
    this.msixOn = on;
  }

  dmaChanged(): void {
    this.mem.setRegions((this.services?.mappedWindows() ?? []).map((w) => ({ gpa: w.address, bytes: w.bytes })));
  }

  intxUnmasked(): void {
    if (this.fn.intxState === 'asserted') this.services?.trigger(PCI_IRQ.INTX, 0);
  }

  reset(): void {
    this.fn.reset?.();
    this.decodeOn();
    if (this.msixOn) this.setMsix(true);
  }

  close(): void {
    this.fn.close?.();
  }
}
