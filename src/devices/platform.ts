// Assembly of the devices the device thread runs, from the bhyve_config(5)
// tree, in the order bhyve creates them (init_pci with the LPC devices that
// pci_lpc.c's lpc_init() brings up, then atkbdc, the ACPI PM registers and
// the RTC that bhyverun_machdep.c always adds).
//
//   - PCI configuration mechanism #1 (0xcf8/0xcfc), always, even with no
//     PCI function configured (bus 0 decodes the config ports regardless).
//   - each `pci.B.S.F` node by its `device`, built by that device's model
//     (devices/registry.ts, devices/pci-device.ts), which loadPciModels()
//     has loaded before (models load on demand; building stays
//     synchronous); a device without a model is refused with "not
//     supported yet: <name>". The LPC bridge
//     brings up COM1-COM4 and pc-testdev (lpc-bridge.ts).
//   - BARs placed as bhyve's init_pci does (bar-alloc.ts); with a boot ROM
//     (pci.enable_bars defaults to false then) they are assigned but not
//     decoded and bus mastering is off, left for the firmware to enable.
//   - INTx lines routed through the PIRQ router once the LPC devices, the
//     i8042 and the SCI have claimed their ISA IRQs (intx.ts).
//   - the ECAM window at 0xe0000000 (256 MiB, 1 MiB per bus).
//   - always: the i8042 controller, ACPI PM registers + reset register, RTC,
//     and bhyve's port 0x84 (post.c).
//
//   - with lpc.fwcfg=qemu (the QEMU personality, for SeaBIOS and OVMF built
//     for QEMU): the host bridge is QEMU's i440FX with PAM registers
//     (i440fx.ts) shadowing the legacy BIOS window 0xC0000-0xFFFFF through
//     ctx.memoryMap (pam.ts; at reset 0xE0000-0xFFFFF reads the boot ROM's
//     last 128 KiB) when there is a boot ROM (without one the window is
//     RAM holding bhyve's tables, machine.ts legacyWindowFor); QEMU's fw_cfg device at 0x510/0x511 and DMA 0x514 with
//     etc/e820, ACPI (with this platform's INTx routes), SMBIOS, bootorder
//     (this platform's boot order) and the -f user files; the CMOS boot
//     order and CPU count cells QEMU fills (0x3d/0x38 hard disk first,
//     0x5f); the optional debug console at 0x402 (lpc.debugcon.path);
//     QEMU's PIIX4 PM function (piix4-pm.ts) at function 3 of the LPC
//     bridge's slot (0:1.3, QEMU's address, with `-s 1,lpc`), whose PMBA
//     also decodes the ACPI PM block where the firmware puts it. It is left
//     out when there is no LPC bridge or the user's -s already uses that
//     function.
//
//   - with lpc.fwcfg=bhyve (the default) and a boot ROM: bhyve's fwctl at
//     0x510/0x511 (lpc/fwctl.ts).
//
// The in-kernel KVM irqchip and PIT own 0x20/0xa0, 0x4d0, 0x40-0x43 and
// 0x61; nothing here registers them.

import type { Device, DeviceContext } from './device.js';
import type { MemoryLayout } from '../sys/memory-map.js';
import type { LpcUartDevice } from './lpc/uart.js';
import { AtKbdc, AUX_DEV_IRQ, KBD_DEV_IRQ } from './lpc/atkbdc.js';
import { PM1_RTC_STS, PowerManagement, SCI_INT } from './lpc/pm.js';
import { Rtc } from './lpc/rtc.js';
import type { PcTestDev } from './lpc/pctestdev.js';
import { PostPort } from './lpc/post.js';
import { createBootVars } from './lpc/bootvars.js';
import { Hpet } from './lpc/hpet.js';
import { createFwctl } from './lpc/fwctl.js';
import { PCIM_CMD_BUSMASTEREN, PCIM_CMD_MEMEN, PCIM_CMD_PORTEN, PCIR_COMMAND } from './pci/config-space.js';
import type { LpcBridge, findHostIsaBridge } from './pci/lpc-bridge.js';
import { PciBus } from './pci/pci-bus.js';
import { PirqRouter } from './pci/pirq.js';
import { PciResourceAllocator } from './pci/bar-alloc.js';
import { IntxRouter, type IntxRoute } from './pci/intx.js';
import { assignPciBars, PciEmulFunction } from './pci/pci-emul.js';
import { ConfigError } from '../config/tree.js';
import { pciNodes } from '../config/pci-nodes.js';
import { isUserError, userErrorWithPrefix } from '../user-error.js';
import type { Chipset } from './pci-device.js';
import { findPciDevice, loadedPciModel } from './registry.js';
import { DmaSpaces } from './iommu/dma-space.js';
import { iommuEndpoints } from './iommu/iommu-config.js';
import type { VirtioPci } from './virtio/virtio-pci.js';
import { PamShadow } from './pci/pam.js';
import { Piix4Pm, PIIX4_PM_FUNC } from './pci/piix4-pm.js';
import { createFwCfg, type FwCfg, type FwCfgFile } from '../firmware/fwcfg.js';
import { type BuiltMachine, buildFwCfgFiles, fwCfgUuid } from '../firmware/index.js';
import { DebugCon, DEBUGCON_PORT } from '../firmware/debugcon.js';
import type { KeyboardSink, PointerSink } from './display/fbuf.js';
import type { PciFunction } from './pci/pci-function.js';
import fs from 'node:fs';
import { numaDomains, numaLayout, type NumaLayout } from '../firmware/numa.js';

/** The guest NUMA domains' layout (-n), checked again here as the device
 * thread sees the machine (bhyve-main checked them before the VM existed). */
function numaOf(ctx: DeviceContext, layout: MemoryLayout): NumaLayout | undefined {
  const domains = numaDomains(ctx.config, ctx.machine.vcpuCount, layout.lowmem + layout.highmem);
  return domains && numaLayout(domains, layout);
}


/** A function that takes VNC input (fbuf). */
interface VncInput {
  attachKeyboard(k: KeyboardSink): void;
  attachPointer(p: PointerSink): void;
}

/** A function with an absolute pointer for VNC (xhci with a tablet). */
interface TabletOwner {
  readonly tablet: PointerSink | undefined;
}

export interface Platform {
  /** Every device, in creation order (what createPlatformDevices returns). */
  devices: Device[];
  pci: PciBus;
  pirq: PirqRouter;
  pm: PowerManagement;
  rtc: Rtc;
  atkbdc: AtKbdc;
  lpc?: LpcBridge;
  uarts: LpcUartDevice[];
  pctestdev?: PcTestDev;
  /** The virtio functions, in bus/slot/function order. */
  virtio: VirtioPci[];
  /** Routed INTx pins (bhyve's pci_walk_lintr), for the ACPI _PRT and MP table. */
  intx: IntxRoute[];
  /** What the firmware tables describe (firmware/built-machine.ts). */
  asBuilt: BuiltMachine;
  /** Boot devices by bootindex (bhyve's fw_cfg "bootorder"). */
  bootOrder: Array<{ bootindex: number; bus: number; slot: number; func: number; name: string }>;
  /** QEMU fw_cfg (lpc.fwcfg=qemu). */
  fwcfg?: FwCfg;
  /** Shadowing of the legacy BIOS window (lpc.fwcfg=qemu with ctx.memoryMap). */
  pam?: PamShadow;
  /** QEMU's PIIX4 PM function (lpc.fwcfg=qemu with an LPC bridge). */
  piix4pm?: Piix4Pm;
}

export interface PlatformOptions {
  /** Host ISA bridge lookup for `lpc.pcireg.*=host` (tests inject one). */
  hostIsaBridge?: typeof findHostIsaBridge;
  /** `-f` fw_cfg user files (lpc.fwcfg=qemu), added after the standard ones. */
  fwcfgFiles?: readonly FwCfgFile[];
  /** Host name for the default SMBIOS UUID (defaults to os.hostname()). */
  hostname?: string;
}

/** CMOS cells QEMU's pc machine fills for SeaBIOS (hw/i386/pc.c). */
const CMOS_BOOTFLAG1 = 0x38; // bits 7-4: third boot device; bit 0: no floppy signature check
const CMOS_BOOTFLAG2 = 0x3d; // bits 7-4: second, 3-0: first boot device (1 fd, 2 hd, 3 cd, 4 net)
const CMOS_SMP_COUNT = 0x5f; // CPUs - 1

/** Size of the boot ROM file, 0 when none or unreadable (then no BIOS alias). */
function bootromSize(path: string | undefined): number {
  if (path === undefined) return 0;
  try {
    return fs.statSync(path).size;
  } catch {
    return 0;
  }
}

/** Builds the platform and returns it with handles on the devices the vmm
 * core talks to (pm.pressPowerButton on SIGTERM, the RTC for bhyvectl). */
export function buildPlatform(ctx: DeviceContext, layout: MemoryLayout, opts: PlatformOptions = {}): Platform {
  const devices: Device[] = [];
  const pci = new PciBus();
  pci.register(ctx);
  devices.push(pci);

  const pirq = new PirqRouter(ctx.irq);
  const bootrom = ctx.config.get('lpc.bootrom') !== undefined;
  const enableBars = ctx.config.getBool('pci.enable_bars', !bootrom);

  const virtio: VirtioPci[] = [];
  const bootOrder: Platform['bootOrder'] = [];
  const qemu = ctx.config.get('lpc.fwcfg') === 'qemu';
  pci.registerEcam(ctx);
  // The chipset's shadowing of 0xC0000-0xFFFFF, there before any CPU runs.
  let pam: PamShadow | undefined;
  if (qemu && bootrom && ctx.memoryMap) {
    pam = new PamShadow(ctx.memoryMap, bootromSize(ctx.config.get('lpc.bootrom')));
    pam.register(ctx);
  }
  const chipset: Chipset = {
    bus: pci, pirq, qemu, pam, msix: ctx.config.getBool('virtio_msix', true), hostIsaBridge: opts.hostIsaBridge,
    dma: new DmaSpaces(ctx.mem.ranges(), iommuEndpoints(ctx.config, findPciDevice)),
  };

  // bhyve's init_pci first pass: each function by its device's record.
  for (const s of pciNodes(ctx.config)) {
    const emul = ctx.config.get(`${s.node}.device`);
    if (emul === undefined) throw new ConfigError(`pci slot ${s.where}: missing "device" value (set ${s.node}.device)`);
    const record = findPciDevice(emul);
    if (!record) throw new ConfigError(`pci slot ${s.where}: unknown device "${emul}" (see bhyve -s help)`);
    if (!record.model) throw new ConfigError(`not supported yet: ${emul} (pci slot ${s.where})`);
    const model = loadedPciModel(record);
    if (!model) throw new Error(`${emul}: its model is not loaded (await loadPciModels(config) before buildPlatform)`);
    let fn;
    try {
      fn = model.create(ctx, s, chipset);
    } catch (e) {
      // A device that cannot start says which one, once.
      throw isUserError(e) && e.message.startsWith(emul) ? e : userErrorWithPrefix(e, `${emul} at pci slot ${s.where}: `);
    }
    // bhyve's virtio emulations are the virtio-* names, each a VirtioPci
    // (not imported here: it is model code, loaded with them).
    if (emul.startsWith('virtio-')) virtio.push(fn as VirtioPci);
    // The function's bootindex, and its ports' (ahci: blockif_add_boot_device per port).
    const ports = [...(ctx.config.getNode(`${s.node}.port`)?.keys() ?? [])].map((p) => `${s.node}.port.${p}.bootindex`);
    for (const bi of [`${s.node}.bootindex`, ...ports].map((k) => ctx.config.get(k))) {
      if (bi === undefined || !record.bootable) continue;
      if (!/^[0-9]+$/.test(bi.trim())) throw new ConfigError(`Invalid bootindex ${bi} for ${emul}@${s.node}`);
      const n = Number(bi.trim());
      const taken = bootOrder.find((b) => b.bootindex === n);
      if (taken) throw new ConfigError(`Could not set bootindex ${n} for ${emul}@${s.node}. Bootindex already occupied by ${taken.name}`);
      bootOrder.push({ bootindex: n, bus: s.bus, slot: s.slot, func: s.func, name: `${emul}@${s.node}` });
    }
    if (enableBars) {
      // pci_emul_init / pci_emul_alloc_bar: bus mastering, and decoding of
      // each space a BAR uses, on from the start without a boot ROM.
      let cmd = fn.cfg.get16(PCIR_COMMAND) | PCIM_CMD_BUSMASTEREN;
      if (fn instanceof PciEmulFunction) {
        for (const b of fn.declaredBars()) cmd |= b.kind === 'io' ? PCIM_CMD_PORTEN : PCIM_CMD_MEMEN;
      }
      fn.cfg.set16(PCIR_COMMAND, cmd);
    }
    pci.attach(s.bus, s.slot, s.func, fn);
    devices.push(fn);
  }
  const lpc = chipset.lpc;
  const uarts: LpcUartDevice[] = lpc?.uarts ?? [];
  const pctestdev: PcTestDev | undefined = lpc?.pctestdev;
  bootOrder.sort((a, b) => a.bootindex - b.bootindex);
  // QEMU's PIIX4_PM sits beside its ISA bridge (0:1.3); a user's function
  // there wins and the PIIX4 PM is then not added.
  let piix4pm: Piix4Pm | undefined;
  const lpcAt = lpc?.address;
  if (qemu && lpcAt && !pci.lookup(lpcAt.bus, lpcAt.slot, PIIX4_PM_FUNC)) {
    piix4pm = new Piix4Pm();
    pci.attach(lpcAt.bus, lpcAt.slot, PIIX4_PM_FUNC, piix4pm);
    devices.push(piix4pm);
  }
  const alloc = new PciResourceAllocator(layout);
  assignPciBars(pci.functions(), alloc, pci.buses());
  devices.push(...uarts);
  if (pctestdev) devices.push(pctestdev);

  const atkbdc = new AtKbdc(ctx);
  // VNC keys and pointer (fbuf) go to the i8042; with an xhci tablet,
  // pointer events go to it (absolute) instead of the PS/2 mouse. (Found
  // by what they offer: their classes are model code, loaded on demand.)
  const vncInput = pci.functions().filter((f): f is PciFunction & VncInput => 'attachKeyboard' in f && 'attachPointer' in f);
  for (const f of vncInput) f.attachKeyboard(atkbdc);
  const tablet = pci.functions().map((f) => (f as Partial<TabletOwner>).tablet).find((t) => t !== undefined);
  if (tablet) for (const f of vncInput) f.attachPointer(tablet);
  pirq.reserveIrq(KBD_DEV_IRQ);
  pirq.reserveIrq(AUX_DEV_IRQ);
  devices.push(atkbdc);

  // The debug console shares 0x402 with PM1a_EN (see debugcon.ts): catch
  // the PM block's registration and put the console over it.
  const debugconPath = ctx.config.get('lpc.debugcon.path');
  const debugcon = debugconPath === undefined ? undefined : new DebugCon(ctx, debugconPath, DEBUGCON_PORT, { register: false });
  let pmIo = ctx.io;
  if (debugcon) {
    const io = ctx.io;
    let claimed = false;
    pmIo = {
      registerPorts: (name, base, length, handler) => {
        if (!claimed && base <= DEBUGCON_PORT && DEBUGCON_PORT < base + length) {
          claimed = true;
          io.registerPorts(`${name}+debugcon`, base, length, debugcon.overPm(handler));
        } else {
          io.registerPorts(name, base, length, handler);
        }
      },
      registerMmio: (name, base, length, handler) => io.registerMmio(name, base, length, handler),
      unregisterPorts: (base) => io.unregisterPorts(base),
      unregisterMmio: (base) => io.unregisterMmio(base),
    };
  }
  const pm = new PowerManagement(pmIo === ctx.io ? ctx : { ...ctx, io: pmIo, stream: (k: string) => ctx.stream(k) });
  pirq.useIrq(SCI_INT);
  devices.push(pm);
  piix4pm?.bindPm(pm);

  const rtc = new Rtc(ctx, layout);
  rtc.onAlarm = () => pm.wakeEvent(PM1_RTC_STS); // an RTC alarm wakes from S3 (RTC_EN)
  devices.push(rtc);

  devices.push(new PostPort(ctx));
  // The UEFI VARS flash below the boot ROM (bootvars.ts); the HPET, which
  // bhyve always has (vmm.ko's vhpet; hpet.ts).
  const bootvars = createBootVars(ctx);
  if (bootvars) devices.push(bootvars);
  devices.push(new Hpet(ctx));

  // pci_lintr_route after every device reserved its ISA IRQs, then
  // lpc_pirq_routed.
  const intx = new IntxRouter(ctx.irq, pirq, bootrom).routeAll(pci);
  lpc?.pirqRouted();

  const asBuilt: BuiltMachine = {
    ncpu: ctx.machine.vcpuCount,
    pciBuses: pci.buses().map((bus) => ({ bus, ...alloc.busWindows(bus)! })),
    intx,
    lpc: lpc?.address && { slot: lpc.address.slot, func: lpc.address.func },
    uarts: uarts.map((u, i) => ({ name: u.name.toUpperCase(), port: u.base, irq: u.irqLine, uid: i + 1 })),
    fwcfg: qemu,
    s3: pm.s3,
    bootOrder,
    numa: numaOf(ctx, layout),
    iommu: chipset.dma?.iommuEndpoint === undefined ? undefined
      : { bdf: chipset.dma.iommuEndpoint, endpoints: chipset.dma.translatedEndpoints().map((e) => e.endpoint) },
  };
  let fwcfg: FwCfg | undefined;
  if (qemu) {
    const files = buildFwCfgFiles(ctx.config, layout, asBuilt, opts.fwcfgFiles ?? [], { hostname: opts.hostname });
    fwcfg = createFwCfg(ctx, files, { layout, uuid: fwCfgUuid(ctx.config) });
    devices.push(fwcfg);
    rtc.nvramWrite(CMOS_BOOTFLAG2, 0x12); // hard disk, then floppy (QEMU's default "cad")
    rtc.nvramWrite(CMOS_BOOTFLAG1, 0x30); // then CD-ROM
    rtc.nvramWrite(CMOS_SMP_COUNT, Math.max(0, ctx.machine.vcpuCount - 1));
  }
  // bhyve's own firmware interface at 0x510/0x511 (lpc.fwcfg=bhyve), only
  // for a boot ROM, as bhyve's fwctl_init().
  if (!qemu && bootrom) devices.push(createFwctl(ctx));
  if (debugcon) devices.push(debugcon);

  return {
    devices, pci, pirq, pm, rtc, atkbdc, lpc, uarts, pctestdev, virtio, intx, asBuilt, bootOrder, fwcfg, pam, piix4pm,
  };
}

/** Everything the device thread runs, built from ctx.config. */
export function createPlatformDevices(ctx: DeviceContext, layout: MemoryLayout): Device[] {
  return buildPlatform(ctx, layout).devices;
}
