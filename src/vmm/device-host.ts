// The devices of a VM, on the thread that runs them (vCPU 0's): the
// DeviceContext they see, the platform built from the config tree, and the
// work that reaches them by kick (other vCPUs' mailboxes, host input, timer
// expiries, the power button).

import fs from 'node:fs';
import os from 'node:os';
import { ConfigTree } from '../config/tree.js';
import type { ByteStream, Device, DeviceContext, HelperThreadData, InterruptSink, KvmDoorbells, MachineControl, RegisterPages } from '../devices/device.js';
import { attachUartStream } from '../devices/lpc/uart-backend.js';
import { buildPlatform, type Platform } from '../devices/platform.js';
import { findPciDevice, loadedPciModelNames, loadPciModel, loadPciModels } from '../devices/registry.js';
import { buildFirmwareInMemory } from '../firmware/index.js';
import { errorLine } from '../user-error.js';
import { Mailbox } from './ap-mailbox.js';
import { DeviceMemoryMap } from './device-memory-map.js';
import { DeviceTimers } from './device-timers.js';
import type { ExitRequest } from './exit-status.js';
import { GuestMemory } from '../sys/guest-memory.js';
import { mapGuestRam, ramRegions, writeRamFile } from '../sys/guest-ram.js';
import { LocalIoBus } from './io-bus.js';
import { CAP } from '../sys/kvm-abi.js';
import { PAGE_SIZE } from '../sys/memory-map.js';
import { Vm } from '../sys/kvm.js';
import { MsiRoutes } from './msi-routes.js';
import { DEVICE_REQUEST } from '../sys/doorbell.js';
import { CoalescedMmioRing } from '../sys/coalesced-mmio.js';
import { anonymousMapping, mmap, PROT_READ, PROT_WRITE, type Mapping } from '../sys/libc.js';
import { memfd } from '../sys/memfd.js';
import type { DeviceHostData } from './vcpu-thread-data.js';
import type { Doorbell } from '../sys/doorbell.js';
import { hostPortLookup } from '../devices/virtio/host-ports.js';
import { PM1_PWRBTN_STS } from '../devices/lpc/pm.js';
import { trace } from './startup-trace.js';

/** While vCPU 0's thread waits for its data (the main thread parses and
 * creates the VM meanwhile): the models of the devices `-s` names on the
 * command line (bin/bhyve gives the thread its argv), loaded ahead, so that
 * their modules' first run is off the critical path. loadDeviceModels()
 * loads the rest (-o, -k) once the config arrives; a name -s got wrong
 * loads nothing here and is refused there. */
export function preloadDeviceModels(argv: readonly string[]): void {
  for (let i = 0; i < argv.length; i++) {
    const spec = argv[i] === '-s' ? argv[i + 1] : argv[i].startsWith('-s') ? argv[i].slice(2) : undefined;
    const record = spec === undefined ? undefined : findPciDevice(spec.split(',')[1] ?? '');
    const built = record?.alias !== undefined ? findPciDevice(record.alias) : record;
    if (built) loadPciModel(built).catch(() => { /* loadDeviceModels() reports it */ });
  }
}

/** Loads the models of the devices the config names (registry.ts), for
 * the constructor to build them: a run loads no other device's code. */
export async function loadDeviceModels(config: DeviceHostData['config']): Promise<void> {
  await loadPciModels(ConfigTree.fromJSON(config));
  trace(`vcpu 0: device models loaded: ${loadedPciModelNames().join(' ')}`);
}

export class DeviceHost {
  readonly bus = new LocalIoBus();
  private readonly timers: DeviceTimers;
  private readonly mailboxes: Mailbox[];
  private platform: Platform | undefined;
  private devices: Device[] = [];
  private memoryMap: DeviceMemoryMap | undefined;

  /** `bspRun` is vCPU 0's kvm_run mapping (it holds KVM's coalesced MMIO ring);
   * `bsp` puts vCPU 0 to sleep and wakes it (ACPI S3). */
  constructor(d: DeviceHostData, vcpuCount: number, doorbell: Doorbell, private readonly requestExit: (r: ExitRequest) => void,
    bspRun?: Mapping, bsp?: Pick<MachineControl, 'sleep' | 'wake'>) {
    this.timers = new DeviceTimers(d.timerSab);
    this.mailboxes = d.mailboxes.map((sab) => new Mailbox(sab));
    const vm = new Vm(null, d.vmFd);
    const memFd = fs.openSync(d.memoryPath, 'r+');
    const ram = mapGuestRam(memFd, d.layout);
    fs.closeSync(memFd);
    const regions = ramRegions(ram);
    const irq: InterruptSink = {
      setLevel: (gsi, high) => vm.irqLine(gsi, high),
      pulse: (gsi) => { vm.irqLine(gsi, true); vm.irqLine(gsi, false); },
      signalMsi: (address, data) => vm.signalMsi(address, data),
    };
    const machine: MachineControl = { requestExit: this.requestExit, vcpuCount, sleep: bsp?.sleep, wake: bsp?.wake };
    const streams = new Map<string, ByteStream>();
    const config = ConfigTree.fromJSON(d.config);
    // The VARS file's KVM slot belongs to this thread (bootvars.ts maps and
    // unmaps it as the CFI flash enters and leaves read-array mode).
    const bootvarsPath = d.bootromPath !== undefined ? config.get('lpc.bootvars') : undefined;
    // Device mappings share one slot allocator; only the platforms that
    // leave a range for devices see it as ctx.memoryMap.
    const deviceMaps = new DeviceMemoryMap(vm, ram[0].map, d.bootromPath, bootvarsPath, d.framebufferPath);
    const ringPage = bspRun ? vm.checkExtension(CAP.COALESCED_MMIO) : 0;
    if (ringPage > 0 && bspRun) {
      try { this.bus.attachCoalescedRing(new CoalescedMmioRing(bspRun.bytes, ringPage)); } catch { /* no ring page: writes exit */ }
    }
    const ctx: DeviceContext = {
      io: this.bus,
      irq,
      mem: new GuestMemory(regions),
      config,
      machine,
      timer: (callback) => this.timers.create(callback),
      hostPorts: hostPortLookup(d.hostPorts),
      kvm: kvmDoorbells(vm, { memoryPath: d.memoryPath, layout: d.layout, doorbell: doorbell.transfer }, this.bus, deviceMaps,
        ringPage > 0 && bspRun !== undefined),
      memoryMap: this.memoryMap = d.legacyWindow || bootvarsPath !== undefined || d.framebufferPath !== undefined
        ? deviceMaps : undefined,
      stream(key: string): ByteStream | undefined {
        const t = d.streams[key];
        if (!t) return undefined;
        let s = streams.get(key);
        if (!s) { s = attachUartStream(t); streams.set(key, s); }
        return s;
      },
    };
    trace('vcpu 0: device context');
    try {
      this.platform = buildPlatform(ctx, d.layout, { fwcfgFiles: d.fwcfgFiles });
      this.devices = this.platform.devices;
      trace('vcpu 0: platform built');
      // bhyve's MP table, SMBIOS and ACPI tables, written as bhyverun.c does
      // after init_pci: from the devices, pins and windows just built.
      // Through the memory file: ctx.mem makes its view of RAM on first use,
      // and nothing before the guest runs needs one (guest-memory.ts).
      const tables = buildFirmwareInMemory(config, d.layout, this.platform.asBuilt, { hostname: os.hostname(), smbiosImage: d.smbios });
      const fd = fs.openSync(d.memoryPath, 'r+');
      try {
        for (const region of tables) writeRamFile(fd, d.layout, region.gpa, region.bytes);
      } finally {
        fs.closeSync(fd);
      }
      trace('vcpu 0: firmware written');
    } catch (e) {
      // A device that cannot start (missing image, bad option) is the user's
      // to fix: one line, no vCPU prefix; anything else is a bug.
      this.requestExit({ kind: 'error', message: errorLine(e) });
      if (process.env.BHYVE_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    }
  }

  /** Opens now what the devices would open later (the sandbox forbids it then). */
  prepareForSandbox(): void {
    this.memoryMap?.mapFiles();
  }

  /** Work that arrived by kick, `requests` being DEVICE_REQUEST bits. */
  serve(requests: number): void {
    this.bus.flushCoalesced();
    for (const m of this.mailboxes) m.serve(this.bus);
    // Before the guest enables ACPI, bhyve has no SIGTERM handler: it dies.
    if (requests & DEVICE_REQUEST.POWER_BUTTON && !this.platform?.pm.pressPowerButton()) {
      this.requestExit({ kind: 'signal', signal: 'SIGTERM' });
    }
    if (requests & DEVICE_REQUEST.TIMERS) this.timers.runExpired();
    if (requests & DEVICE_REQUEST.POLL) for (const dev of this.devices) dev.poll?.();
  }

  /** bhyvectl --wakeup (QEMU's system_wakeup): wakes the guest from S3 as
   * QEMU does, with PWRBTN_STS and WAK_STS. False when it is not asleep. */
  wakeup(): boolean {
    const pm = this.platform?.pm;
    if (!pm?.sleeping) return false;
    pm.wakeEvent(PM1_PWRBTN_STS);
    return true;
  }

  /** Every device's counters (Device.stats), by device name. */
  deviceStats(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const dev of this.devices) {
      const s = dev.stats?.();
      if (s) out[dev.name] = s;
    }
    return out;
  }

  /** Releases host resources (image locks, sockets) at the end of the run. */
  close(): void {
    for (const dev of this.devices) {
      try { dev.close?.(); } catch { /* best effort at exit */ }
    }
  }
}

/** DeviceContext.kvm: ioeventfds and coalesced MMIO zones on this VM,
 * register pages the guest maps read-only, and what a device's helper
 * thread (virtio-blk iothread) needs to map RAM and ring this thread. */
function kvmDoorbells(vm: Vm, helper: HelperThreadData, bus: LocalIoBus, maps: DeviceMemoryMap, ring: boolean): KvmDoorbells | undefined {
  if (!vm.checkExtension(CAP.IOEVENTFD)) return undefined;
  const anyLength = vm.checkExtension(CAP.IOEVENTFD_ANY_LENGTH) !== 0;
  const readonlyMem = vm.checkExtension(CAP.READONLY_MEM) !== 0;
  let msiRoutes: MsiRoutes | undefined;
  let vfioDevice: number | undefined;
  return {
    ioeventfd(fd: number, addr: number, deassign = false): boolean {
      try {
        vm.ioeventfd({ fd, addr, len: anyLength ? 0 : 2, deassign });
        return true;
      } catch {
        return false;
      }
    },
    coalesce(addr: number, len: number, on: boolean): boolean {
      if (!ring) return false;
      try {
        vm.coalescedMmio(addr, len, on);
      } catch {
        return false;
      }
      // Writes buffered before a zone goes away still belong to the device.
      if (!on) bus.flushCoalesced();
      return true;
    },
    flushCoalesced: () => bus.flushCoalesced(),
    replayingCoalesced: () => bus.replaying,
    msiIrqfd(fd: number) {
      if (!vm.checkExtension(CAP.IRQFD)) return undefined;
      return (msiRoutes ??= new MsiRoutes(vm)).irqfd(fd);
    },
    intxIrqfd(fd: number, resampleFd: number, gsi: number) {
      try { vm.irqfdResample(fd, gsi, resampleFd); } catch { return undefined; }
      return { close: () => { try { vm.irqfdResample(fd, gsi, resampleFd, true); } catch { /* gone with the VM */ } } };
    },
    mapHostMemory(gpa: number, size: number, address: bigint): boolean {
      try { maps.mapHost(gpa, size, address, false); return true; } catch { return false; }
    },
    unmapHostMemory(gpa: number): void {
      maps.unmap(gpa);
    },
    vfioFile(fd: number) {
      try {
        vfioDevice ??= vm.createVfioDevice();
        Vm.vfioFile(vfioDevice, fd, true);
      } catch {
        return undefined;
      }
      const dev = vfioDevice;
      return { close: () => { try { Vm.vfioFile(dev, fd, false); } catch { /* gone with the VM */ } } };
    },
    registerPages(size: number): RegisterPages | undefined {
      if (!readonlyMem || size <= 0 || size % PAGE_SIZE) return undefined;
      let m: Mapping;
      // A memfd, so that a device's I/O threads can map the same pages.
      let fd: number | undefined;
      try {
        fd = memfd('device register pages', size);
        m = mmap(size, PROT_READ | PROT_WRITE, fd, 0, 'device register pages');
      } catch {
        if (fd !== undefined) { try { fs.closeSync(fd); } catch { /* closed */ } fd = undefined; }
        try { m = anonymousMapping(size, 'device register pages'); } catch { return undefined; }
      }
      let at: number | undefined;
      return {
        bytes: m.bytes,
        fd,
        map(gpa: number): boolean {
          if (at !== undefined) maps.unmap(at);
          at = undefined;
          try { maps.mapHost(gpa, size, m.address, true); } catch { return false; }
          at = gpa;
          return true;
        },
        unmap(): void {
          if (at !== undefined) maps.unmap(at);
          at = undefined;
        },
      };
    },
    helper,
  };
}

