// Assembly of the devices the device thread runs, from the bhyve_config(5)
// tree, in the order bhyve creates them (init_pci with the LPC devices that
// pci_lpc.c's lpc_init() brings up, then atkbdc, the ACPI PM registers and
// the RTC that bhyverun_machdep.c always adds).
//
//   - PCI configuration mechanism #1 (0xcf8/0xcfc), always, even with no
//     PCI function configured (bus 0 decodes the config ports regardless).
//   - each `pci.B.S.F` node by its `device`: hostbridge, amd_hostbridge, lpc.
//     Any other emulation is refused with "not supported yet: <name>".
//   - with an `lpc` function: COM1-COM4 (all four, as bhyve's lpc_init
//     registers every LPC UART; those without `lpc.comN.path` have no host
//     backend) and pc-testdev when `lpc.pc-testdev` is true.
//   - always: the i8042 controller, ACPI PM registers + reset register, RTC,
//     and bhyve's port 0x84 (post.c).
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
import { PCIM_CMD_BUSMASTEREN, PCIR_COMMAND } from './pci/config-space.js';
import { HostBridge } from './pci/hostbridge.js';
import { LpcBridge, type findHostIsaBridge } from './pci/lpc-bridge.js';
import { PciBus, PCI_BUSMAX, PCI_FUNCMAX, PCI_SLOTMAX } from './pci/pci-bus.js';
import type { PciFunction } from './pci/pci-function.js';
import { PirqRouter } from './pci/pirq.js';

export type { MemoryLayout } from './memory-layout.js';
export { memoryLayoutFor } from './memory-layout.js';

/** PCI emulations this module can build. */
export const PLATFORM_PCI_EMULATIONS = ['hostbridge', 'amd_hostbridge', 'lpc'] as const;

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
}

export interface PlatformOptions {
  /** Host ISA bridge lookup for `lpc.pcireg.*=host` (tests inject one). */
  hostIsaBridge?: typeof findHostIsaBridge;
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

  for (const { bus, slot, func, node } of configuredPciFunctions(ctx)) {
    const where = `${bus}:${slot}:${func}`;
    const emul = ctx.config.get(`${node}.device`);
    if (emul === undefined) throw new Error(`pci slot ${where}: missing "device" value (set ${node}.device)`);
    let fn: PciFunction & Device;
    switch (emul) {
      case 'hostbridge':
      case 'amd_hostbridge':
        fn = new HostBridge(ctx.config, node, bus, emul);
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
      default:
        throw new Error(`not supported yet: ${emul} (pci slot ${where})`);
    }
    if (enableBars) fn.cfg.set16(PCIR_COMMAND, fn.cfg.get16(PCIR_COMMAND) | PCIM_CMD_BUSMASTEREN);
    pci.attach(bus, slot, func, fn);
    devices.push(fn);
  }
  devices.push(...uarts);
  if (pctestdev) devices.push(pctestdev);

  const atkbdc = new AtKbdc(ctx);
  pirq.reserveIrq(KBD_DEV_IRQ);
  pirq.reserveIrq(AUX_DEV_IRQ);
  devices.push(atkbdc);

  const pm = new PowerManagement(ctx);
  pirq.useIrq(SCI_INT);
  devices.push(pm);

  const rtc = new Rtc(ctx, layout);
  devices.push(rtc);

  devices.push(new PostPort(ctx));

  return { devices, pci, pirq, pm, rtc, atkbdc, lpc, uarts, pctestdev };
}

/** Everything the device thread runs, built from ctx.config. */
export function createPlatformDevices(ctx: DeviceContext, layout: MemoryLayout): Device[] {
  return buildPlatform(ctx, layout).devices;
}
