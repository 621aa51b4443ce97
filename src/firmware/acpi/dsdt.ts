// The DSDT, encoded as AML directly (bhyve writes ASL and runs iasl; we
// need no compiler). Contents follow bhyve's acpi.c, pci_emul.c
// (pci_write_dsdt), pci_lpc.c, uart/rtc/atkbdc and qemu_fwcfg.c:
//
//   \_S3_            Package {1, 0}, with acpi_s3 only: SLP_TYP 1 is S3
//                    (suspend to RAM), QEMU's value; bhyve has no S3
//   \_S5_            Package {5, 0}: SLP_TYP 5 is soft-off at PM1a_CNT
//   \PICM, \_PIC     interrupt model chosen by the OS (0 PIC, 1 APIC)
//   \_SB.PC00        PCI root (PNP0A08, compatible PNP0A03), _BBN 0, _CRS
//                    with bus 0, the 0xcf8 config ports, the I/O ranges
//                    below and above them, the 32-bit MMIO hole and the
//                    64-bit window above RAM; _PRT from the INTx routes
//     .ISA           the LPC bridge: PIRQ registers in its config space,
//                    PIC, timer, RTC, keyboard/mouse, COM1-COM4 (PNP0501)
//                    when configured, motherboard resources (PNP0C02:
//                    ACPI ports, ELCR, ECAM window), fw_cfg (QEMU0002)
//                    with lpc.fwcfg=qemu, and PIRQ link devices LNKA-LNKH
//                    (PNP0C0F)
//     .HPET          PNP0103 at 0xfed00000

import {
  type Aml, arg, concat, createWordField, decrement, device, dword, dwordMemory, eisaId, elseOf, field,
  findSetRightBit, FIELD_ANY_ACC, ifOf, int, ioPort, irqLevelLowShared, irqNoFlags, lless, local, memory32Fixed,
  method, name, nameString, NULL_TARGET, operationRegion, packageOf, qwordMemory, ref, REGION_PCI_CONFIG,
  resourceTemplate, returnOf, scope, shiftLeft, store, string, and, wordBusNumber, wordIo,
} from './aml.js';
import {
  ADDRESS_HPET, IO_GPE0_BLK, IO_GPE0_LEN, PCI_ECFG_BUSES, PM1A_CNT_ADDR, PM1A_EVT_ADDR,
  IO_PMTMR, RESET_PORT, SMI_CMD,
} from './tables.js';
import type { IntxRoute, PciBusResources, UartDesc } from '../built-machine.js';

export interface DsdtOptions {
  /** What bus 0 decodes (bhyve's businfo windows); undefined when no
   * function sits on bus 0, which then decodes only the legacy I/O ports. */
  bus0?: PciBusResources;
  ecfgBase: number;
  /** The LPC bridge's slot/function on bus 0; no ISA devices without it. */
  lpc?: { slot: number; func: number };
  uarts: readonly UartDesc[];
  /** Describe the QEMU fw_cfg device (lpc.fwcfg=qemu). */
  fwcfg: boolean;
  /** PS/2 keyboard and mouse (bhyve's atkbdc always exists). */
  atkbdc: boolean;
  /** INTx pins in use on bus 0 (the _PRT of PC00). */
  intx: readonly IntxRoute[];
  /** Emit the PIRQ link devices LNKA-LNKH (needs lpc). */
  pirqLinks: boolean;
  /** Offer S3 (acpi_s3): \_S3 with SLP_TYP 1, QEMU's value. */
  s3?: boolean;
}

/** bhyve's pci_emul.c PCI_EMUL_IOBASE: where PCI I/O BARs start. */
const PCI_EMUL_IOBASE = 0x2000;

/** The PIRQ registers in LPC config space: PIRQA-D at 0x60, PIRQE-H at 0x68. */
const PIRQ_NAMES = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'];
/** IRQs 3-7, 9-12, 14-15 (pci_irq.c's permitted set). */
const PIRQ_PERMITTED = [3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15];

function hid(id: string): Aml {
  return name('_HID', eisaId(id));
}

function pirqLink(i: number): Aml {
  const l = PIRQ_NAMES[i];
  const reg = `PIR${l}`;
  const cb = `CB0${i + 1}`;
  const cir = `CIR${l}`;
  return device(`LNK${l}`,
    hid('PNP0C0F'),
    name('_UID', int(i + 1)),
    method('_STA', 0, false,
      ifOf(and(ref(reg), int(0x80)), returnOf(int(0x09))),
      elseOf(returnOf(int(0x0b)))),
    name('_PRS', resourceTemplate(irqLevelLowShared(...PIRQ_PERMITTED))),
    name(cb, resourceTemplate(irqLevelLowShared())),
    // bhyve puts CreateWordField (CB0n, 1, CIRn) at device scope. SeaBIOS's
    // DSDT parser (dsdt_parser.c) knows only Name, Scope, Method, Device,
    // OperationRegion, Field and a few other declarations there and gives
    // up on the rest of the device at a CreateWordField ("parse_termlist:
    // parse error"), so the field is created inside _CRS instead (over the
    // same named buffer, as QEMU's IQCR does), which makes _CRS Serialized.
    method('_CRS', 0, true,
      createWordField(ref(cb), int(1), cir),
      and(ref(reg), int(0x8f), local(0)),
      ifOf(lless(local(0), int(0x80)), shiftLeft(int(1), local(0), ref(cir))),
      elseOf(store(int(0), ref(cir))),
      returnOf(ref(cb))),
    method('_DIS', 0, false, store(int(0x80), ref(reg))),
    method('_SRS', 1, false,
      createWordField(arg(0), int(1), 'SIRA'),
      findSetRightBit(ref('SIRA'), local(0)),
      store(decrement(local(0)), ref(reg))),
  );
}

function isaDevices(o: DsdtOptions): Aml[] {
  const lpc = o.lpc!;
  const out: Aml[] = [
    name('_ADR', int((lpc.slot << 16) | lpc.func)),
    operationRegion('LPCR', REGION_PCI_CONFIG, 0, 0x100),
    field('LPCR', FIELD_ANY_ACC, [
      { offset: 0x60 }, { name: 'PIRA', bits: 8 }, { name: 'PIRB', bits: 8 }, { name: 'PIRC', bits: 8 }, { name: 'PIRD', bits: 8 },
      { offset: 0x68 }, { name: 'PIRE', bits: 8 }, { name: 'PIRF', bits: 8 }, { name: 'PIRG', bits: 8 }, { name: 'PIRH', bits: 8 },
    ]),
    device('PIC', hid('PNP0000'), name('_CRS', resourceTemplate(ioPort(0x20, 0x20, 1, 2), ioPort(0xa0, 0xa0, 1, 2), irqNoFlags(2)))),
    device('TIMR', hid('PNP0100'), name('_CRS', resourceTemplate(ioPort(0x40, 0x40, 1, 4), irqNoFlags(0)))),
    device('RTC', hid('PNP0B00'), name('_CRS', resourceTemplate(ioPort(0x70, 0x70, 1, 2), irqNoFlags(8)))),
  ];
  if (o.atkbdc) {
    out.push(
      device('KBD', hid('PNP0303'), name('_CRS', resourceTemplate(ioPort(0x60, 0x60, 1, 1), ioPort(0x64, 0x64, 1, 1), irqNoFlags(1)))),
      device('MOU', hid('PNP0F13'), name('_CRS', resourceTemplate(irqNoFlags(12)))),
    );
  }
  for (const u of o.uarts) {
    out.push(device(u.name, hid('PNP0501'), name('_UID', int(u.uid)),
      name('_CRS', resourceTemplate(ioPort(u.port, u.port, 1, 8), irqNoFlags(u.irq)))));
  }
  // Motherboard resources: what bhyve declares with SYSRES_IO/SYSRES_MEM.
  out.push(device('SIO', hid('PNP0C02'), name('_UID', int(0)), name('_CRS', resourceTemplate(
    ioPort(0x80, 0x80, 1, 1), // POST code port (post.c)
    ioPort(SMI_CMD, SMI_CMD, 1, 1),
    ioPort(PM1A_EVT_ADDR, PM1A_EVT_ADDR, 1, 4),
    ioPort(PM1A_CNT_ADDR, PM1A_CNT_ADDR, 1, 2),
    ioPort(IO_PMTMR, IO_PMTMR, 1, 4),
    ioPort(IO_GPE0_BLK, IO_GPE0_BLK, 1, IO_GPE0_LEN),
    ioPort(0x4d0, 0x4d0, 1, 2), // ELCR
    ioPort(RESET_PORT, RESET_PORT, 1, 1),
    memory32Fixed(o.ecfgBase, PCI_ECFG_BUSES * 1024 * 1024),
  ))));
  if (o.fwcfg) {
    out.push(device('FWCF', name('_HID', string('QEMU0002')), name('_STA', int(0x0b)),
      name('_CRS', resourceTemplate(ioPort(0x510, 0x510, 1, 0x0c)))));
  }
  if (o.pirqLinks) for (let i = 0; i < 8; i++) out.push(pirqLink(i));
  return out;
}

// bhyve's pci_bus_write_dsdt: when any pin is in use, PPRT (the PIRQ link
// devices, for the PIC model; entries only with an LPC bridge, which has
// the links), APRT (I/O APIC inputs) and a _PRT that picks by \PICM.
function prt(o: DsdtOptions): Aml[] {
  if (o.intx.length === 0) return [];
  const addr = (slot: number): Aml => dword(((slot << 16) | 0xffff) >>> 0);
  const pic = o.lpc && o.pirqLinks
    ? o.intx.map((r) => packageOf(addr(r.slot), int(r.pin - 1), nameString(`\\_SB.PC00.ISA.LNK${PIRQ_NAMES[r.pirqPin - 1]}`), int(0)))
    : [];
  const apic = o.intx.map((r) => packageOf(addr(r.slot), int(r.pin - 1), int(0), int(r.ioapicIrq)));
  return [
    name('PPRT', packageOf(...pic)),
    name('APRT', packageOf(...apic)),
    method('_PRT', 0, false, ifOf(ref('\\PICM'), returnOf(ref('APRT'))), elseOf(returnOf(ref('PPRT')))),
  ];
}

/** The DSDT's AML body (the definition block without its table header). */
export function buildDsdtAml(o: DsdtOptions): Uint8Array {
  // Bus 0 always decodes the config ports and the legacy I/O ranges; the
  // windows follow when functions sit on it.
  const b = o.bus0;
  const crs = resourceTemplate(
    wordBusNumber(0, 0),
    ioPort(0xcf8, 0xcf8, 1, 8),
    wordIo(0x0000, 0x0cf7),
    wordIo(0x0d00, PCI_EMUL_IOBASE - 1),
    ...(b ? [
      wordIo(b.io.base, b.io.limit - 1),
      dwordMemory(b.mem32.base, b.mem32.limit - 1),
      qwordMemory(b.mem64.base, b.mem64.limit - 1),
    ] : []),
  );
  const pc00: Aml[] = [
    hid('PNP0A08'),
    name('_CID', eisaId('PNP0A03')),
    name('_UID', int(0)),
    name('_SEG', int(0)),
    method('_BBN', 0, false, returnOf(int(0))),
    name('_CRS', crs),
    ...prt(o),
  ];
  if (o.lpc) pc00.push(device('ISA', ...isaDevices(o)));
  pc00.push(device('HPET', hid('PNP0103'), name('_UID', int(0)),
    name('_CRS', resourceTemplate(memory32Fixed(ADDRESS_HPET, 0x400)))));
  return concat(
    ...(o.s3 ? [name('_S3', packageOf(int(1), int(0)))] : []),
    name('_S5', packageOf(int(5), int(0))),
    name('PICM', int(0)),
    method('_PIC', 1, false, store(arg(0), ref('PICM'))),
    scope('_SB', device('PC00', ...pc00)),
  );
}

export { NULL_TARGET };
