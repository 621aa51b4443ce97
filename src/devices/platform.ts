// Assembly of the devices the device thread runs, from the bhyve_config(5)
// tree, in the order bhyve creates them (init_pci with the LPC devices that
// pci_lpc.c's lpc_init() brings up, then atkbdc, the ACPI PM registers and
// the RTC that bhyverun_machdep.c always adds).
//
//   - PCI configuration mechanism #1 (0xcf8/0xcfc), always, even with no
//     PCI function configured (bus 0 decodes the config ports regardless).
//   - each `pci.B.S.F` node by its `device`: hostbridge, amd_hostbridge, lpc,
//     virtio-blk, virtio-rnd, virtio-net, virtio-console (virtio PCI
//     transport; net and console host backends from ctx.hostPort), MSI-X unless
//     virtio_msix=false). Any other emulation is refused with
//     "not supported yet: <name>".
//   - BARs placed as bhyve's init_pci does (bar-alloc.ts); with a boot ROM
//     (pci.enable_bars defaults to false then) they are assigned but not
//     decoded and bus mastering is off, left for the firmware to enable.
//   - INTx lines routed through the PIRQ router once the LPC devices, the
//     i8042 and the SCI have claimed their ISA IRQs (intx.ts).
//   - the ECAM window at 0xe0000000 (256 MiB, 1 MiB per bus).
//   - with an `lpc` function: COM1-COM4 (all four, as bhyve's lpc_init
//     registers every LPC UART; those without `lpc.comN.path` have no host
//     backend) and pc-testdev when `lpc.pc-testdev` is true.
//   - always: the i8042 controller, ACPI PM registers + reset register, RTC,
//     and bhyve's port 0x84 (post.c).
//
//   - with lpc.fwcfg=qemu (the QEMU personality, for SeaBIOS and OVMF built
//     for QEMU): the host bridge is QEMU's i440FX with PAM registers
//     (i440fx.ts) shadowing the legacy BIOS window 0xC0000-0xFFFFF through
//     ctx.memoryMap (pam.ts; at reset 0xE0000-0xFFFFF reads the boot ROM's
//     last 128 KiB); QEMU's fw_cfg device at 0x510/0x511 and DMA 0x514 with
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
// The in-kernel KVM irqchip and PIT own 0x20/0xa0, 0x4d0, 0x40-0x43 and
// 0x61; nothing here registers them.

import type { Device, DeviceContext } from './device.js';
import type { MemoryLayout } from './memory-layout.js';
import { createLpcUart, LPC_UART_RESOURCES, type LpcUartDevice, type LpcUartName } from './lpc/uart.js';
import { AtKbdc, AUX_DEV_IRQ, KBD_DEV_IRQ } from './lpc/atkbdc.js';
import { PowerManagement, SCI_INT } from './lpc/pm.js';
import { Rtc } from './lpc/rtc.js';
import { PcTestDev } from './lpc/pctestdev.js';
import { PostPort } from './lpc/post.js';
import { createBootVars } from './lpc/bootvars.js';
import { Hpet } from './lpc/hpet.js';
import { PCIM_CMD_BUSMASTEREN, PCIR_COMMAND } from './pci/config-space.js';
import { HostBridge } from './pci/hostbridge.js';
import { LpcBridge, type findHostIsaBridge } from './pci/lpc-bridge.js';
import { PciBus, PCI_BUSMAX, PCI_FUNCMAX, PCI_SLOTMAX } from './pci/pci-bus.js';
import type { PciFunction } from './pci/pci-function.js';
import { PirqRouter } from './pci/pirq.js';
import { PciResourceAllocator } from './pci/bar-alloc.js';
import { IntxRouter, type IntxRoute } from './pci/intx.js';
import { assignPciBars, PciEmulFunction } from './pci/pci-emul.js';
import { PCIM_CMD_MEMEN, PCIM_CMD_PORTEN } from './pci/config-space.js';
import { ConfigError } from '../config/tree.js';
import { VirtioPci, type VirtioPciTransport } from './virtio/virtio-pci.js';
import { BlockDeviceError, blockOptionsFromConfig, VirtioBlock } from './virtio/virtio-blk.js';
import { VirtioRnd } from './virtio/virtio-rnd.js';
import { createVirtioNet } from './virtio/virtio-net.js';
import { createVirtioConsole } from './virtio/virtio-console.js';
import type { VirtioDevice } from './virtio/virtio-device.js';
import { I440fxHostBridge } from './pci/i440fx.js';
import { PamShadow } from './pci/pam.js';
import { Piix4Pm, PIIX4_PM_FUNC } from './pci/piix4-pm.js';
import { createFwCfg, type FwCfg, type FwCfgFile } from '../firmware/fwcfg.js';
import { type BuiltMachine, buildFwCfgFiles, fwCfgUuid } from '../firmware/index.js';
import { DebugCon, DEBUGCON_PORT } from '../firmware/debugcon.js';
import { Fbuf } from './display/fbuf.js';
import fs from 'node:fs';

export type { MemoryLayout } from './memory-layout.js';
export { memoryLayoutFor } from './memory-layout.js';

/** PCI emulations this module can build. */
export const PLATFORM_PCI_EMULATIONS = ['hostbridge', 'amd_hostbridge', 'lpc', 'virtio-blk', 'virtio-rnd', 'virtio-net', 'virtio-console', 'fbuf'] as const;

/** PCI classes bhyve gives its virtio devices. */
const PCIC_STORAGE = 0x01;
const PCIC_CRYPTO = 0x10;
const PCIC_NETWORK = 0x02;
const PCIC_SIMPLECOMM = 0x07;

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

const UART_NAMES: readonly LpcUartName[] = ['com1', 'com2', 'com3', 'com4'];

function isDecimal(s: string): boolean {
  return /^(0|[1-9][0-9]*)$/.test(s);
}

/** The configured `pci.B.S.F` nodes in bus/slot/function order. */
export function configuredPciFunctions(ctx: Pick<DeviceContext, 'config'>): Array<{ bus: number; slot: number; func: number; node: string }> {
  const out: Array<{ bus: number; slot: number; func: number; node: string }> = [];
  const pci = ctx.config.getNode('pci');
  if (!pci) return out;
  const numericChildren = (m: Map<string, unknown>, max: number): Array<[number, Map<string, unknown>]> => {
    const r: Array<[number, Map<string, unknown>]> = [];
    for (const [k, v] of m) {
      if (!(v instanceof Map) || !isDecimal(k)) continue;
      const n = Number(k);
      if (n <= max) r.push([n, v as Map<string, unknown>]);
    }
    return r.sort((a, b) => a[0] - b[0]);
  };
  for (const [bus, busNode] of numericChildren(pci, PCI_BUSMAX)) {
    for (const [slot, slotNode] of numericChildren(busNode, PCI_SLOTMAX)) {
      for (const [func] of numericChildren(slotNode, PCI_FUNCMAX)) {
        out.push({ bus, slot, func, node: `pci.${bus}.${slot}.${func}` });
      }
    }
  }
  return out;
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

  let lpc: LpcBridge | undefined;
  const uarts: LpcUartDevice[] = [];
  let pctestdev: PcTestDev | undefined;
  const virtio: VirtioPci[] = [];
  const bootOrder: Platform['bootOrder'] = [];
  const msix = ctx.config.getBool('virtio_msix', true);
  const qemu = ctx.config.get('lpc.fwcfg') === 'qemu';
  pci.registerEcam(ctx);
  // The chipset's shadowing of 0xC0000-0xFFFFF, there before any CPU runs.
  let pam: PamShadow | undefined;
  if (qemu && ctx.memoryMap) {
    pam = new PamShadow(ctx.memoryMap, bootromSize(ctx.config.get('lpc.bootrom')));
    pam.register(ctx);
  }

  for (const { bus, slot, func, node } of configuredPciFunctions(ctx)) {
    const where = `${bus}:${slot}:${func}`;
    const emul = ctx.config.get(`${node}.device`);
    if (emul === undefined) throw new Error(`pci slot ${where}: missing "device" value (set ${node}.device)`);
    let fn: PciFunction & Device;
    switch (emul) {
      case 'hostbridge':
      case 'amd_hostbridge':
        fn = qemu ? new I440fxHostBridge(pam) : new HostBridge(ctx.config, node, bus, emul);
        break;
      case 'lpc':
        if (lpc) throw new Error(`pci slot ${where}: Only one LPC bridge is allowed.`);
        if (bus !== 0) throw new Error(`pci slot ${where}: LPC bridge can be present only on bus 0.`);
        // lpc_init(): the LPC devices come up with the bridge.
        for (const name of UART_NAMES) {
          pirq.reserveIrq(LPC_UART_RESOURCES[name].irq);
          const u = createLpcUart(ctx, name);
          uarts.push(u);
        }
        if (ctx.config.getBool('lpc.pc-testdev', false)) pctestdev = new PcTestDev(ctx);
        lpc = new LpcBridge(ctx.config, pirq, opts.hostIsaBridge);
        fn = lpc;
        break;
      case 'virtio-blk':
      case 'virtio-rnd':
      case 'virtio-net':
      case 'virtio-console': {
        const v = createVirtioFunction(ctx, emul, node, where, msix);
        virtio.push(v);
        fn = v;
        const bi = ctx.config.get(`${node}.bootindex`);
        if (bi !== undefined) {
          if (!/^[0-9]+$/.test(bi.trim())) throw new ConfigError(`Invalid bootindex ${bi} for ${emul}@${node}`);
          const n = Number(bi.trim());
          const taken = bootOrder.find((b) => b.bootindex === n);
          if (taken) throw new ConfigError(`Could not set bootindex ${n} for ${emul}@${node}. Bootindex already occupied by ${taken.name}`);
          bootOrder.push({ bootindex: n, bus, slot, func, name: `${emul}@${node}` });
        }
        break;
      }
      case 'fbuf':
        if (pci.functions().some((f) => f instanceof Fbuf)) throw new ConfigError('Only one frame buffer device is allowed.');
        fn = new Fbuf(ctx, node);
        break;
      default:
        throw new Error(`not supported yet: ${emul} (pci slot ${where})`);
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
    pci.attach(bus, slot, func, fn);
    devices.push(fn);
  }
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
  for (const f of pci.functions()) if (f instanceof Fbuf) f.attachKeyboard(atkbdc); // VNC keys
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
    bootOrder,
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
  if (debugcon) devices.push(debugcon);

  return {
    devices, pci, pirq, pm, rtc, atkbdc, lpc, uarts, pctestdev, virtio, intx, asBuilt, bootOrder, fwcfg, pam, piix4pm,
  };
}

/** Builds a virtio device model from its slot node and wraps it in the PCI
 * transport. Host-side failures (missing image, image in use) come out as
 * one line naming the device and the file. */
function createVirtioFunction(ctx: DeviceContext, emul: string, node: string, where: string, msix: boolean): VirtioPci {
  const t = ctx.config.get(`${node}.transport`) ?? 'transitional';
  if (t !== 'transitional' && t !== 'modern' && t !== 'legacy') {
    throw new ConfigError(`${emul}@${node}: invalid transport "${t}" (use legacy, modern or transitional)`);
  }
  const transport = t as VirtioPciTransport;
  let device: VirtioDevice;
  let classCode: number;
  if (emul === 'virtio-blk') {
    try {
      device = VirtioBlock.open(blockOptionsFromConfig(ctx.config, node));
    } catch (e) {
      if (e instanceof BlockDeviceError && !e.message.startsWith('virtio-blk')) {
        throw new BlockDeviceError(`virtio-blk at pci slot ${where}: ${e.message}`);
      }
      throw e;
    }
    classCode = PCIC_STORAGE;
  } else if (emul === 'virtio-net' || emul === 'virtio-console') {
    try {
      const [, slot, func] = where.split(':').map(Number);
      device = emul === 'virtio-net' ? createVirtioNet(ctx, node, slot, func) : createVirtioConsole(ctx, node);
    } catch (e) {
      if (e instanceof ConfigError) throw new ConfigError(`${emul} at pci slot ${where}: ${e.message}`);
      throw e;
    }
    classCode = emul === 'virtio-net' ? PCIC_NETWORK : PCIC_SIMPLECOMM;
  } else {
    device = new VirtioRnd();
    classCode = PCIC_CRYPTO;
  }
  try {
    return new VirtioPci(ctx, device, { emulation: emul, classCode, subclass: 0, msix, transport });
  } catch (e) {
    device.close?.();
    throw e;
  }
}

/** Everything the device thread runs, built from ctx.config. */
export function createPlatformDevices(ctx: DeviceContext, layout: MemoryLayout): Device[] {
  return buildPlatform(ctx, layout).devices;
}
