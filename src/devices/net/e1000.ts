// e1000: bhyve's pci_e82545.c, an Intel 82545EM gigabit NIC (8086:100f,
// subsystem 8086:1008), on any network backend (net-backend.ts: a tap or
// slirp). What the guest sees, as in bhyve:
//   - BAR 0: 128 KiB of 32-bit registers (4-byte accesses only), BAR 1: a
//     64 KiB flash window that reads 0, BAR 2: 8 I/O ports, IOADDR at 0 and
//     IODATA at 4, an indirect window on the registers;
//   - the EEPROM behind EECD, bit-banged Microwire (3-bit opcodes, 6-bit
//     addresses, 64 words): the MAC, the PCI ids and the 0xBABA checksum;
//     MDIC reads of an M88E1011 PHY whose link is up and autonegotiated;
//   - link always up at 1000 Mb/s full duplex (STATUS.LU). bhyve never
//     changes the link, so LSC (link status change) is raised only through
//     ICS, as Linux's e1000 driver does at open to start its watchdog;
//   - interrupts through INTx only (bhyve implements no MSI for it): the
//     cause register ICR (read clears it), IMS/IMC to mask, ICS to set
//     causes, and ITR throttling as bhyve does it: after an assert, no new
//     assert for (ITR + 3905) / 3906 ms (ITR counts 256 ns units; 250 after
//     reset, so 1 ms), then the held causes are asserted at once;
//   - one transmit and one receive descriptor ring. TX takes legacy
//     descriptors, and context + data descriptors (IP/TCP/UDP checksum
//     insertion, TCP/UDP segmentation (TSO) with the header the driver
//     gives, VLAN tag insertion), writes DD back into descriptors with RS
//     and raises TXDW and TXQE; it runs synchronously when the guest
//     writes TDT (bhyve hands it to a TX thread). RX fills legacy receive
//     descriptors with buffers of RCTL's size (several for a long frame),
//     pads short frames to 60 bytes, counts 4 CRC bytes unless SECRC, drops
//     frames of VLANs not in the filter (RCTL.VFE), writes length and
//     status (DD, EOP, IXSM, PIF) back, and raises RXT0 (+SRPD for small
//     frames) and RXDMT0 when the free descriptors fall under RCTL.RDMTS.
// Departures from bhyve, where bhyve would crash or lose frames:
//   - a guest address outside RAM, a ring that is not in RAM, a head or
//     tail beyond the ring, a frame of descriptors of mixed types (bhyve
//     asserts), more than 64 segments, a frame longer than 64 KiB, a TSO
//     header longer than the frame or an MSS of 0 (bhyve loops forever):
//     the frame is dropped (its descriptors are completed) or the ring
//     left alone, never a host crash;
//   - when the ring has no room for a frame, the frame waits in the
//     backend (the kernel's queue for a tap) until the guest gives
//     descriptors (RDT), as hardware's FIFO would; bhyve discards it.
// Statistics registers count as on hardware (clear on read); bhyve's
// always read 0.

import type { ConfigTree } from '../../config/tree.js';
import { ConfigError } from '../../config/tree.js';
import type { DeviceContext, DeviceTimer } from '../device.js';
import type { PciDeviceModel } from '../pci-device.js';
// The MAC (the record checks it; importable from here).
import { e1000OptionsFromConfig } from './e1000-record.js';
export { e1000OptionsFromConfig };
import { PciEmulFunction } from '../pci/pci-emul.js';
import { attachNetBackend, type NetPort } from './net-backend.js';
import { GuestMemoryError } from '../../sys/guest-memory.js';

export const E82545_VENDOR_ID_INTEL = 0x8086;
export const E82545_DEV_ID_82545EM_COPPER = 0x100f;
export const E82545_SUBDEV_ID = 0x1008;
const E82545_REVISION_4 = 4;

export const BAR_REGISTER_LEN = 128 * 1024;
export const BAR_FLASH_LEN = 64 * 1024;
export const BAR_IO_LEN = 8;
const IO_REGISTER_MAX = 0x1ffff;

/** Register offsets (e1000_regs.h). */
export const R = {
  CTRL: 0x0000, CTRL_DUP: 0x0004, STATUS: 0x0008, EECD: 0x0010, CTRL_EXT: 0x0018, MDIC: 0x0020,
  FCAL: 0x0028, FCAH: 0x002c, FCT: 0x0030, VET: 0x0038,
  ICR: 0x00c0, ITR: 0x00c4, ICS: 0x00c8, IMS: 0x00d0, IMC: 0x00d8,
  RCTL: 0x0100, FCTTV: 0x0170, TXCW: 0x0178, TCTL: 0x0400, TIPG: 0x0410, AIT: 0x0458,
  LEDCTL: 0x0e00, PBA: 0x1000, FCRTL: 0x2160, FCRTH: 0x2168,
  RDBAL: 0x2800, RDBAH: 0x2804, RDLEN: 0x2808, RDH: 0x2810, RDT: 0x2818, RDTR: 0x2820, RXDCTL: 0x2828, RADV: 0x282c,
  RSRPD: 0x2c00,
  TDBAL: 0x3800, TDBAH: 0x3804, TDLEN: 0x3808, TDH: 0x3810, TDT: 0x3818, TIDV: 0x3820, TXDCTL: 0x3828, TADV: 0x382c,
  RXCSUM: 0x5000, MTA: 0x5200, RA: 0x5400, VFTA: 0x5600, MANC: 0x5820,
  // statistics
  MPC: 0x4010, PRC64: 0x405c, GPRC: 0x4074, BPRC: 0x4078, MPRC: 0x407c, GPTC: 0x4080,
  GORCL: 0x4088, GORCH: 0x408c, GOTCL: 0x4090, GOTCH: 0x4094, ROC: 0x40ac, TORL: 0x40c0, TORH: 0x40c4,
  TOTL: 0x40c8, TOTH: 0x40cc, TPR: 0x40d0, TPT: 0x40d4, PTC64: 0x40d8, MPTC: 0x40f0, BPTC: 0x40f4, TSCTC: 0x40f8,
} as const;

/** Interrupt causes (ICR bits). */
export const ICR = { TXDW: 1 << 0, TXQE: 1 << 1, LSC: 1 << 2, RXDMT0: 1 << 4, RXO: 1 << 6, RXT0: 1 << 7, SRPD: 1 << 16 } as const;

export const CTRL_RST = 0x04000000;
export const CTRL_VME = 0x40000000;
export const STATUS_FD = 0x1;
export const STATUS_LU = 0x2;
export const STATUS_SPEED_1000 = 0x80;

export const RCTL_EN = 0x2;
export const RCTL_LPE = 0x20;
export const RCTL_LBM_TCVR = 0xc0;
export const RCTL_VFE = 0x00040000;
export const RCTL_BSEX = 0x02000000;
export const RCTL_SECRC = 0x04000000;
export const RCTL_SZ_MASK = 0x00030000;
export const TCTL_EN = 0x2;

export const EECD_SK = 0x1;
export const EECD_CS = 0x2;
export const EECD_DI = 0x4;
export const EECD_DO = 0x8;
export const EECD_REQ = 0x40;
export const EECD_GNT = 0x80;
export const EECD_PRES = 0x100;
const EECD_FWE_EN = 0x20;

export const MDIC_OP_WRITE = 0x04000000;
export const MDIC_OP_READ = 0x08000000;
export const MDIC_READY = 0x10000000;
const MDIC_ERROR = 0x40000000;
const MDIC_DEST = 0x80000000;

/** TX descriptor command bits (in the descriptor's second dword). */
export const TXD = {
  EOP: 0x01000000, IFCS: 0x02000000, IC: 0x04000000, RS: 0x08000000, DEXT: 0x20000000, VLE: 0x40000000,
  TSE: 0x04000000, // data descriptor (DEXT)
  DTYP_D: 0x00100000, STAT_DD: 0x1, POPTS_IXSM: 0x01, POPTS_TXSM: 0x02,
} as const;
/** Context descriptor command bits. */
export const TXC = { TCP: 0x01000000, IP: 0x02000000, TSE: 0x04000000 } as const;
const TXD_TYPE_MASK = TXD.DEXT | 0x00f00000;
const TYP_L = 0;
const TYP_C = TXD.DEXT;
const TYP_D = TXD.DEXT | TXD.DTYP_D;

/** RX descriptor status bits. */
export const RXD = { DD: 0x01, EOP: 0x02, IXSM: 0x04, PIF: 0x80 } as const;

/** EEPROM words (e1000_defines.h NVM_*). */
const NVM_MAC_ADDR = 0x00;
const NVM_SUB_DEV_ID = 0x0b;
const NVM_SUB_VEN_ID = 0x0c;
const NVM_DEV_ID = 0x0d;
const NVM_VEN_ID = 0x0e;
const NVM_CHECKSUM_REG = 0x3f;
const NVM_SUM = 0xbaba;
export const NVM_EEPROM_SIZE = 64;
const NVM_OPCODE_BITS = 3;
const NVM_ADDR_BITS = 6;
const NVM_DATA_BITS = 16;
const NVM_OPADDR_BITS = NVM_OPCODE_BITS + NVM_ADDR_BITS;
const NVM_ADDR_MASK = (1 << NVM_ADDR_BITS) - 1;
const NVM_OPCODE_MASK = ((1 << NVM_OPCODE_BITS) - 1) << NVM_ADDR_BITS;
export const NVM_OPCODE_READ = 0x6 << NVM_ADDR_BITS;
export const NVM_OPCODE_WRITE = 0x5 << NVM_ADDR_BITS;
const enum NvmMode { OPADDR, DATAIN, DATAOUT }

/** PHY (MII) registers and the M88E1011's answers. */
const PHY_STATUS = 1;
const PHY_ID1 = 2;
const PHY_ID2 = 3;
const PHY_AUTONEG_ADV = 4;
const PHY_LP_ABILITY = 5;
const PHY_1000T_STATUS = 0x0a;
const M88E1011_I_PHY_ID = 0x01410c20;

/** bhyve's I82545_MAX_TXSEGS: more data descriptors in a frame are dropped. */
export const MAX_TXSEGS = 64;
/** Largest frame (or TSO segment) sent to the backend, as virtio-net's. */
export const MAX_FRAME = 65536 + 64;
const ETHER_ADDR_LEN = 6;
const ETHER_VLAN_ENCAP_LEN = 4;
const ETHER_MIN_NOCRC = 60;
const ETHER_CRC_LEN = 4;
const TSO_MAX_HDRLEN = 240;

/** Received-frame buffer sizes from RCTL (e82545_bufsz). */
export function rxBufferSize(rctl: number): number {
  const bsex = (rctl & RCTL_BSEX) !== 0;
  switch ((rctl & RCTL_SZ_MASK) >>> 16) {
    case 0: return bsex ? 256 : 2048; // BSEX with size 0 is forbidden: bhyve's 256
    case 1: return bsex ? 16384 : 1024;
    case 2: return bsex ? 8192 : 512;
    default: return bsex ? 4096 : 256;
  }
}

/** One's complement sum of data[start, end) as big-endian words, folded. */
function csumAdd(sum: number, data: Uint8Array, start: number, end: number): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (i < end) sum += data[i] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** Checksum insertion (bhyve's ck_info): the one's complement of the sum
 * of bytes [start, end] (end 0: to the end of the frame) stored at off. */
interface CkInfo { valid: boolean; start: number; off: number; end: number }

function insertChecksum(frame: Uint8Array, len: number, ck: CkInfo): void {
  if (ck.off + 2 > len || ck.start >= len) return; // nothing there to sum or store into
  const end = ck.end !== 0 ? Math.min(ck.end + 1, len) : len;
  const sum = end > ck.start ? csumAdd(0, frame, ck.start, end) : 0;
  const v = ~sum & 0xffff;
  frame[ck.off] = v >>> 8;
  frame[ck.off + 1] = v & 0xff;
}

export interface E1000Options {
  mac: Uint8Array;
}

/** The model. Accesses come from BAR 0 and the I/O window in BAR 2; the
 * backend's frames arrive through poll(). */
export class E1000 extends PciEmulFunction {
  readonly mac: Uint8Array;
  private readonly port: NetPort | undefined;
  private readonly mem: DeviceContext['mem'];
  private readonly itrTimer: DeviceTimer;
  private itrRunning = false;
  /** Frames came in while the ITR interval held them (see above). */
  private rxHeld = false;

  // general
  private CTRL = 0; private FCAL = 0; private FCAH = 0; private FCT = 0; private VET = 0; private FCTTV = 0;
  private LEDCTL = 0; private PBA = 0;
  // interrupts
  private irqAsserted = false;
  private ICR_ = 0; private ITR_ = 0; private ICS_ = 0; private IMS_ = 0; private IMC_ = 0;
  // transmit
  private readonly txctx = new Uint8Array(16);
  private readonly ctxDv = new DataView(this.txctx.buffer);
  private txEnabled = false;
  private TXCW = 0; private TCTL = 0; private TIPG = 0; private AIT = 0;
  private TDBAL = 0; private TDBAH = 0; private TDLEN = 0; private TDH = 0; private TDT = 0;
  private TIDV = 0; private TXDCTL = 0; private TADV = 0;
  // filters
  private readonly uni: Array<{ valid: boolean; addrsel: number; eth: Uint8Array }> = [];
  private readonly fmcast = new Uint32Array(128);
  private readonly fvlan = new Uint32Array(128);
  // receive
  private rxEnabled = false;
  private rxLoopback = false;
  private RCTL = 0; private FCRTL = 0; private FCRTH = 0;
  private RDBAL = 0; private RDBAH = 0; private RDLEN = 0; private RDH = 0; private RDT = 0;
  private RDTR = 0; private RXDCTL = 0; private RADV = 0; private RSRPD = 0; private RXCSUM = 0;
  // I/O window, MDIC, EEPROM
  private ioAddr = 0;
  private mdiControl = 0;
  private eepromControl = 0;
  private nvmData = 0;
  private nvmOpaddr = 0;
  private nvmBits = 0;
  private nvmMode = NvmMode.OPADDR;
  readonly eeprom = new Uint16Array(NVM_EEPROM_SIZE);

  /** Hardware statistics registers 0x4000-0x40ff (clear on read). */
  private readonly hwStats = new Float64Array(64);
  /** Counters for bhyvectl --get-stats and tests. */
  readonly counts = {
    txFrames: 0, txBytes: 0, txDropped: 0, txTsoSegments: 0, rxFrames: 0, rxBytes: 0, rxVlanDropped: 0,
    rxDiscarded: 0, dmaErrors: 0, interrupts: 0,
  };

  // scratch
  private readonly frame = new Uint8Array(MAX_FRAME + ETHER_VLAN_ENCAP_LEN);
  private readonly seg = new Uint8Array(MAX_FRAME);
  private readonly views: Uint8Array[] = [];
  private readonly desc = new Uint8Array(16);
  /** The transmit ring in guest memory, while txRun runs. */
  private txRing: Uint8Array = new Uint8Array(0);
  private txRingDv: DataView = new DataView(new ArrayBuffer(0));
  private readonly ck: [CkInfo, CkInfo] = [{ valid: false, start: 0, off: 0, end: 0 }, { valid: false, start: 0, off: 0, end: 0 }];
  private readonly one: Uint8Array[] = [new Uint8Array(0)];
  private readonly descDv = new DataView(this.desc.buffer);

  constructor(ctx: DeviceContext, opts: E1000Options, port: NetPort | undefined) {
    super('e1000', ctx);
    this.mac = Uint8Array.from(opts.mac);
    this.port = port;
    this.mem = ctx.mem;
    for (let i = 0; i < 16; i++) this.uni.push({ valid: false, addrsel: 0, eth: new Uint8Array(6) });
    this.itrTimer = ctx.timer(() => this.itrFired());
    this.cfg.setIdentity({
      vendor: E82545_VENDOR_ID_INTEL, device: E82545_DEV_ID_82545EM_COPPER, classCode: 0x02, subclass: 0x00,
      subVendor: E82545_VENDOR_ID_INTEL, subDevice: E82545_SUBDEV_ID,
    });
    this.cfg.set8(0x3d, 1); // PCIR_INTPIN: INTA#
    this.requestIntx();
    this.allocBar(0, 'mem32', BAR_REGISTER_LEN, {
      read: (off, size) => (size === 4 ? this.readRegister(off) : 0),
      write: (off, size, v) => { if (size === 4) this.writeRegister(off, v >>> 0); },
    });
    this.allocBar(1, 'mem32', BAR_FLASH_LEN, { read: () => 0, write: () => undefined });
    this.allocBar(2, 'io', BAR_IO_LEN, { read: (off, size) => this.ioRead(off, size), write: (off, size, v) => this.ioWrite(off, size, v >>> 0) });
    this.hwReset(false);
  }

  // ---- BAR 2: the I/O window ----

  private ioRead(off: number, size: number): number {
    if (off === 0) return size === 4 ? this.ioAddr : 0;
    if (off === 4) return this.ioAddr <= IO_REGISTER_MAX ? this.readRegister(this.ioAddr) : 0;
    return 0;
  }

  private ioWrite(off: number, size: number, v: number): void {
    if (size !== 4) return;
    if (off === 0) this.ioAddr = v;
    else if (off === 4 && this.ioAddr <= IO_REGISTER_MAX) this.writeRegister(this.ioAddr, v);
  }

  // ---- EEPROM (Microwire) and PHY ----

  private initEeprom(): void {
    const e = this.eeprom;
    const m = this.mac;
    e[NVM_MAC_ADDR] = m[0] | (m[1] << 8);
    e[NVM_MAC_ADDR + 1] = m[2] | (m[3] << 8);
    e[NVM_MAC_ADDR + 2] = m[4] | (m[5] << 8);
    e[NVM_SUB_DEV_ID] = E82545_SUBDEV_ID;
    e[NVM_SUB_VEN_ID] = E82545_VENDOR_ID_INTEL;
    e[NVM_DEV_ID] = E82545_DEV_ID_82545EM_COPPER;
    e[NVM_VEN_ID] = E82545_VENDOR_ID_INTEL;
    let sum = 0;
    for (let i = 0; i < NVM_CHECKSUM_REG; i++) sum += e[i];
    e[NVM_CHECKSUM_REG] = (NVM_SUM - sum) & 0xffff;
  }

  private nvmRestart(): void {
    this.nvmOpaddr = 0;
    this.nvmMode = NvmMode.OPADDR;
    this.nvmBits = NVM_OPADDR_BITS;
  }

  /** One rising SK edge with CS set (e82545_eecd_strobe). */
  private eecdStrobe(): void {
    if (this.nvmBits === 0) return;
    this.nvmBits--;
    const di = (this.eepromControl & EECD_DI) !== 0 ? 1 : 0;
    if (this.nvmMode === NvmMode.DATAOUT) {
      if (this.nvmData & 0x8000) this.eepromControl |= EECD_DO;
      else this.eepromControl &= ~EECD_DO;
      this.nvmData = (this.nvmData << 1) & 0xffff;
      if (this.nvmBits === 0) this.nvmRestart();
    } else if (this.nvmMode === NvmMode.DATAIN) {
      this.nvmData = ((this.nvmData << 1) | di) & 0xffff;
      if (this.nvmBits === 0) {
        const op = this.nvmOpaddr & NVM_OPCODE_MASK;
        const addr = this.nvmOpaddr & NVM_ADDR_MASK;
        if (op === NVM_OPCODE_WRITE && addr < NVM_EEPROM_SIZE) this.eeprom[addr] = this.nvmData;
        this.nvmRestart();
      }
    } else {
      this.nvmOpaddr = ((this.nvmOpaddr << 1) | di) & 0xffff;
      if (this.nvmBits === 0) {
        const op = this.nvmOpaddr & NVM_OPCODE_MASK;
        if (op === NVM_OPCODE_READ) {
          const addr = this.nvmOpaddr & NVM_ADDR_MASK;
          this.nvmMode = NvmMode.DATAOUT;
          this.nvmBits = NVM_DATA_BITS;
          this.nvmData = addr < NVM_EEPROM_SIZE ? this.eeprom[addr] : 0;
        } else if (op === NVM_OPCODE_WRITE) {
          this.nvmMode = NvmMode.DATAIN;
          this.nvmBits = NVM_DATA_BITS;
          this.nvmData = 0;
        } else {
          // EWEN (write enable, NVM_OPCODE_EWEN) and unknown opcodes: back
          // to opcode mode.
          this.nvmRestart();
        }
      }
    }
  }

  private readMdi(reg: number): number {
    switch (reg) {
      case PHY_STATUS: return 0x0004 | 0x0008 | 0x0020; // link up, autoneg capable, autoneg complete
      case PHY_AUTONEG_ADV: return 0x0001; // selector field
      case PHY_LP_ABILITY: return 0;
      case PHY_1000T_STATUS: return 0x0800 | 0x1000 | 0x2000; // LP FD caps, remote and local RX OK
      case PHY_ID1: return (M88E1011_I_PHY_ID >>> 16) & 0xffff;
      case PHY_ID2: return (M88E1011_I_PHY_ID | E82545_REVISION_4) & 0xffff;
      default: return 0;
    }
  }

  // ---- interrupts ----

  private lintrAssert(): void {
    this.irqAsserted = true;
    this.counts.interrupts++;
    this.intxAssert();
    if (this.ITR_ !== 0) {
      // ITR counts 256 ns units; bhyve rounds up to whole milliseconds.
      const ms = Math.floor((this.ITR_ + 3905) / 3906);
      this.itrRunning = true;
      this.itrTimer.armAt(this.itrTimer.now() + BigInt(ms) * 1_000_000n);
    }
  }

  /** The throttling interval ended (bhyve's e82545_itr_callback, a
   * periodic mevent timer: it stays armed while it finds work). */
  private itrFired(): void {
    if (this.rxHeld) {
      // (itrRunning still set: receive() only raises causes, asserted below)
      this.rxHeld = false;
      this.receive();
    }
    const pending = this.ICR_ & this.IMS_;
    if (pending !== 0 && !this.irqAsserted) {
      this.lintrAssert();
    } else {
      this.itrRunning = false;
    }
  }

  /** e82545_icr_assert: an interrupt only for new, unmasked causes, when
   * none is pending and the throttle is not running. */
  private icrAssert(bits: number): void {
    const fresh = bits & ~this.ICR_ & this.IMS_;
    this.ICR_ = (this.ICR_ | bits) >>> 0;
    if (fresh !== 0 && !this.itrRunning && !this.irqAsserted) this.lintrAssert();
  }

  private imsChange(bits: number): void {
    const fresh = bits & this.ICR_ & ~this.IMS_;
    this.IMS_ = (this.IMS_ | bits) >>> 0;
    if (fresh !== 0 && !this.itrRunning && !this.irqAsserted) this.lintrAssert();
  }

  private icrDeassert(bits: number): void {
    this.ICR_ = (this.ICR_ & ~bits) >>> 0;
    if (this.irqAsserted && (this.ICR_ & this.IMS_) === 0) {
      this.intxDeassert();
      this.irqAsserted = false;
    }
  }

  /** Interrupt cause register, for tests. */
  get icr(): number { return this.ICR_; }
  get intxAsserted(): boolean { return this.irqAsserted; }

  // ---- reset ----

  private hwReset(drvr: boolean): void {
    this.rxEnabled = false;
    this.txEnabled = false;
    if (this.irqAsserted) this.intxDeassert();
    this.irqAsserted = false;
    this.itrTimer.cancel();
    this.itrRunning = false;
    this.rxHeld = false;
    if (!drvr) {
      this.FCAL = 0; this.FCAH = 0; this.FCT = 0; this.VET = 0; this.FCTTV = 0;
    }
    this.LEDCTL = 0x07061302;
    this.PBA = 0x00100030;
    this.nvmRestart();
    this.eepromControl = EECD_PRES | EECD_FWE_EN;
    this.initEeprom();
    this.ICR_ = 0; this.ITR_ = 250; this.ICS_ = 0; this.IMS_ = 0; this.IMC_ = 0;
    if (!drvr) {
      this.fvlan.fill(0);
      this.fmcast.fill(0);
      for (const u of this.uni) { u.valid = false; u.addrsel = 0; u.eth.fill(0); }
      this.uni[0].valid = true;
      this.uni[0].eth.set(this.mac);
      this.RDBAL = 0; this.RDBAH = 0;
      this.TDBAL = 0; this.TDBAH = 0; this.TIPG = 0; this.AIT = 0; this.TIDV = 0; this.TADV = 0;
    } else {
      for (const u of this.uni) u.valid = false;
    }
    this.RCTL = 0; this.FCRTL = 0; this.FCRTH = 0; this.RDLEN = 0; this.RDH = 0; this.RDT = 0; this.RDTR = 0;
    this.RXDCTL = (1 << 24) | (1 << 16);
    this.RADV = 0; this.RXCSUM = 0;
    this.rxLoopback = false;
    this.TXCW = 0; this.TCTL = 0; this.TDLEN = 0; this.TDT = 0; this.TDH = 0; this.TXDCTL = 0;
    this.txctx.fill(0);
  }

  // ---- registers ----

  readRegister(off: number): number {
    if (off & 3) return 0;
    switch (off) {
      case R.CTRL: return this.CTRL;
      case R.STATUS: return STATUS_FD | STATUS_LU | STATUS_SPEED_1000;
      case R.FCAL: return this.FCAL;
      case R.FCAH: return this.FCAH;
      case R.FCT: return this.FCT;
      case R.VET: return this.VET;
      case R.FCTTV: return this.FCTTV;
      case R.LEDCTL: return this.LEDCTL;
      case R.PBA: return this.PBA;
      case R.ICR: {
        const v = this.ICR_;
        this.icrDeassert(0xffffffff);
        return v;
      }
      case R.ITR: return this.ITR_;
      case R.IMS: return this.IMS_;
      case R.ICS: case R.IMC: return 0; // write-only
      case R.RCTL: return this.RCTL;
      case R.FCRTL: return this.FCRTL;
      case R.FCRTH: return this.FCRTH;
      case R.RDBAL: return this.RDBAL;
      case R.RDBAH: return this.RDBAH;
      case R.RDLEN: return this.RDLEN;
      case R.RDH: return this.RDH;
      case R.RDT: return this.RDT;
      case R.RDTR: return this.RDTR;
      case R.RXDCTL: return this.RXDCTL;
      case R.RADV: return this.RADV;
      case R.RSRPD: return this.RSRPD;
      case R.RXCSUM: return this.RXCSUM;
      case R.TXCW: return this.TXCW;
      case R.TCTL: return this.TCTL;
      case R.TIPG: return this.TIPG;
      case R.AIT: return this.AIT;
      case R.TDBAL: return this.TDBAL;
      case R.TDBAH: return this.TDBAH;
      case R.TDLEN: return this.TDLEN;
      case R.TDH: return this.TDH;
      case R.TDT: return this.TDT;
      case R.TIDV: return this.TIDV;
      case R.TXDCTL: return this.TXDCTL;
      case R.TADV: return this.TADV;
      case R.EECD: return this.eepromControl;
      case R.MDIC: return this.mdiControl;
      case R.MANC: return 0;
      default: break;
    }
    if (off >= R.RA && off < R.RA + 16 * 8) return this.readRa((off - R.RA) >> 2);
    if (off >= R.MTA && off < R.MTA + 128 * 4) return this.fmcast[(off - R.MTA) >> 2];
    if (off >= R.VFTA && off < R.VFTA + 128 * 4) return this.fvlan[(off - R.VFTA) >> 2];
    if (off >= 0x4000 && off < 0x4100) {
      // Statistics: clear on read; the high halves of 64-bit counters
      // read after their low halves.
      const i = (off - 0x4000) >> 2;
      const v = this.hwStats[i];
      this.hwStats[i] = 0;
      return v >>> 0;
    }
    return 0;
  }

  private readRa(reg: number): number {
    const u = this.uni[reg >> 1];
    const e = u.eth;
    if (reg & 1) return ((u.valid ? 0x80000000 : 0) | (u.addrsel << 16) | (e[5] << 8) | e[4]) >>> 0;
    return ((e[3] << 24) | (e[2] << 16) | (e[1] << 8) | e[0]) >>> 0;
  }

  private writeRa(reg: number, v: number): void {
    const u = this.uni[reg >> 1];
    if (reg & 1) {
      u.valid = (v & 0x80000000) !== 0;
      u.addrsel = (v >>> 16) & 3;
      u.eth[5] = (v >>> 8) & 0xff;
      u.eth[4] = v & 0xff;
    } else {
      u.eth[3] = v >>> 24; u.eth[2] = (v >>> 16) & 0xff; u.eth[1] = (v >>> 8) & 0xff; u.eth[0] = v & 0xff;
    }
  }

  writeRegister(off: number, v: number): void {
    if (off & 3) return;
    v >>>= 0;
    switch (off) {
      case R.CTRL: case R.CTRL_DUP:
        this.CTRL = (v & ~CTRL_RST) >>> 0;
        if (v & CTRL_RST) this.hwReset(true);
        return;
      case R.FCAL: this.FCAL = v; return;
      case R.FCAH: this.FCAH = v & 0xffff; return;
      case R.FCT: this.FCT = v & 0xffff; return;
      case R.VET: this.VET = v & 0xffff; return;
      case R.FCTTV: this.FCTTV = v & 0xffff; return;
      case R.LEDCTL: this.LEDCTL = (v & ~0x30303000) >>> 0; return;
      case R.PBA: this.PBA = v & 0x0000ff80; return;
      case R.ICR: this.icrDeassert(v); return;
      case R.ITR: this.ITR_ = v; return;
      case R.ICS: this.ICS_ = v; this.icrAssert(v); return;
      case R.IMS: this.imsChange(v); return;
      case R.IMC:
        this.IMC_ = v;
        this.IMS_ = (this.IMS_ & ~v) >>> 0;
        if (this.rxHeld && (v & ICR.RXT0)) { this.rxHeld = false; this.receive(); } // the driver polls now
        return;
      case R.RCTL: this.rxCtl(v); return;
      case R.FCRTL: this.FCRTL = v & 0xfff8; return;
      case R.FCRTH: this.FCRTH = v & 0xfff8; return;
      case R.RDBAL: this.RDBAL = (v & ~0xf) >>> 0; return;
      case R.RDBAH: this.RDBAH = v; return; // bhyve asserts RX is off
      case R.RDLEN: this.RDLEN = v & 0x000fff80; return;
      case R.RDH: this.RDH = v & 0xffff; return;
      case R.RDT:
        this.RDT = v & 0xffff;
        // New descriptors: frames waiting in the backend can come in.
        this.receive();
        return;
      case R.RDTR: this.RDTR = v & 0xffff; return;
      case R.RXDCTL: this.RXDCTL = (v & ~0xfec0c0c0) >>> 0; return;
      case R.RADV: this.RADV = v & 0xffff; return;
      case R.RSRPD: this.RSRPD = v & 0xfff; return;
      case R.RXCSUM: this.RXCSUM = v & 0x7ff; return;
      case R.TXCW: this.TXCW = (v & ~0x3fff0000) >>> 0; return;
      case R.TCTL: this.txCtl(v); return;
      case R.TIPG: this.TIPG = v; return;
      case R.AIT: this.AIT = v & 0xffff; return;
      case R.TDBAL: this.TDBAL = (v & ~0xf) >>> 0; return;
      case R.TDBAH: this.TDBAH = v; return;
      case R.TDLEN: this.TDLEN = v & 0x000fff80; return;
      case R.TDH: this.TDH = v & 0xffff; return;
      case R.TDT:
        this.TDT = v & 0xffff;
        if (this.txEnabled) this.txRun();
        return;
      case R.TIDV: this.TIDV = v & 0xffff; return;
      case R.TXDCTL: this.TXDCTL = (v & ~0xc0c0c0) >>> 0; return;
      case R.TADV: this.TADV = v & 0xffff; return;
      case R.EECD: {
        // Edge-triggered: a rising SK with CS set clocks one bit.
        const strobe = (this.eepromControl & EECD_SK) === 0 && (v & EECD_SK) !== 0;
        const mask = EECD_SK | EECD_CS | EECD_DI | EECD_REQ;
        this.eepromControl = ((this.eepromControl & ~mask) | (v & mask)) >>> 0;
        if (v & EECD_REQ) this.eepromControl |= EECD_GNT;
        else this.eepromControl &= ~EECD_GNT;
        if (strobe && (this.eepromControl & EECD_CS)) this.eecdStrobe();
        return;
      }
      case R.MDIC: {
        const reg = (v >>> 16) & 0x1f;
        this.mdiControl = (v & ~(MDIC_ERROR | MDIC_DEST)) >>> 0;
        if (v & MDIC_READY) return;
        const op = v & 0x0c000000;
        if (op === MDIC_OP_READ) {
          this.mdiControl = ((this.mdiControl & ~0xffff) | this.readMdi(reg)) >>> 0;
        } else if (op !== MDIC_OP_WRITE) {
          return;
        }
        // READY; bhyve raises no interrupt for MDIC_IE (0x20000000).
        this.mdiControl = (this.mdiControl | MDIC_READY) >>> 0;
        return;
      }
      default: break;
    }
    if (off >= R.RA && off < R.RA + 16 * 8) { this.writeRa((off - R.RA) >> 2, v); return; }
    if (off >= R.MTA && off < R.MTA + 128 * 4) { this.fmcast[(off - R.MTA) >> 2] = v; return; }
    if (off >= R.VFTA && off < R.VFTA + 128 * 4) { this.fvlan[(off - R.VFTA) >> 2] = v; return; }
  }

  private rxCtl(v: number): void {
    const on = (v & RCTL_EN) !== 0;
    this.RCTL = (v & ~0xf9204c01) >>> 0;
    if (on !== this.rxEnabled) {
      this.rxEnabled = on;
      this.rxLoopback = on && (this.RCTL & RCTL_LBM_TCVR) !== 0;
      if (on) this.receive();
    }
  }

  private txCtl(v: number): void {
    const on = (v & TCTL_EN) !== 0;
    if (on !== this.txEnabled) {
      this.txEnabled = on;
    }
    this.TCTL = (v & ~0xfe800005) >>> 0;
    if (on && this.TDH !== this.TDT) this.txRun();
  }

  private stat(off: number, n = 1): void {
    const i = (off - 0x4000) >> 2;
    this.hwStats[i] = (this.hwStats[i] + n) % 0x100000000;
  }

  private stat64(lo: number, n: number): void {
    const i = (lo - 0x4000) >> 2;
    const v = this.hwStats[i] + this.hwStats[i + 1] * 0x100000000 + n;
    this.hwStats[i] = v % 0x100000000;
    this.hwStats[i + 1] = Math.floor(v / 0x100000000) % 0x100000000;
  }

  private static sizeIndex(len: number): number {
    if (len <= 64) return 0;
    if (len >= 1024) return 5;
    return 31 - Math.clz32(len) - 5; // 65..127 -> 1, ..., 512..1023 -> 4
  }

  // ---- transmit ----

  /** e82545_tx_run: every complete frame between TDH and TDT (bhyve's TX
   * thread loops until TDH reaches TDT; we run on the TDT write). */
  private txRun(): void {
    const size = this.TDLEN / 16;
    if (size === 0 || this.TDH >= size || this.TDT >= size) return; // no ring, or the guest's indexes are out of it
    const base = this.TDBAH * 0x100000000 + this.TDBAL;
    if (!this.mem.contains(base, this.TDLEN)) { this.counts.dmaErrors++; return; }
    const ring = this.mem.slice(base, this.TDLEN);
    this.txRing = ring;
    this.txRingDv = new DataView(ring.buffer, ring.byteOffset, ring.length);
    let head = this.TDH;
    let writeback = false;
    let progressed = false;
    while (this.txEnabled && head !== this.TDT) {
      const r = this.transmitOne(base, head, this.TDT, size);
      if (r.used === 0) break; // a frame without EOP yet: wait for more
      writeback ||= r.writeback;
      head = r.head;
      progressed = true;
    }
    this.TDH = head;
    let cause = 0;
    if (writeback) cause |= ICR.TXDW;
    if (progressed && this.TDH === this.TDT) cause |= ICR.TXQE;
    if (cause) this.icrAssert(cause);
  }

  private loadDesc(_base: number, idx: number): void {
    this.desc.set(this.txRing.subarray(idx * 16, idx * 16 + 16));
  }

  /** One frame (or a context descriptor) from `head`. Returns the new
   * head and the descriptors consumed (0: the frame is not complete). */
  /** transmitOne's answer (one object, reused: a frame costs no allocation). */
  private readonly txResult = { head: 0, used: 0, writeback: false };

  private txDone(head: number, used: number, writeback: boolean): { head: number; used: number; writeback: boolean } {
    const r = this.txResult;
    r.head = head; r.used = used; r.writeback = writeback;
    return r;
  }

  private transmitOne(base: number, head: number, tail: number, size: number): { head: number; used: number; writeback: boolean } {
    const dv = this.descDv;
    const frame = this.frame;
    const ohead = head;
    const cdv = this.ctxDv;
    const ck = this.ck;
    for (const c of ck) { c.valid = false; c.start = 0; c.off = 0; c.end = 0; }
    let ntype = -1;
    let tlen = 0;
    let segs = 0;
    let tso = false;
    let bad = false;
    let lastLower = 0;
    let lastSpecial = 0;
    let ndesc = 0;
    for (;;) {
      if (head === tail) return this.txDone(ohead, 0, false);
      this.loadDesc(base, head);
      ndesc++;
      const lower = dv.getUint32(8, true);
      const dtype = (lower & TXD.DEXT) ? (lower & TXD_TYPE_MASK) >>> 0 : TYP_L;
      if (ntype < 0) {
        if (dtype === TYP_C) {
          // A context descriptor: saved for the data descriptors after it.
          this.txctx.set(this.desc);
          head = (head + 1) % size;
          return this.txDone(head, 1, this.completeTx(base, ohead, head, size));
        }
        if (dtype !== TYP_L && dtype !== TYP_D) bad = true; // unknown type: the frame is dropped
        ntype = dtype;
        if (dtype === TYP_L) ck[0].start = this.desc[13]; // css
      } else if (dtype !== ntype) {
        bad = true; // bhyve asserts; we drop the frame
      }
      let len = dtype === TYP_L ? dv.getUint16(8, true) : lower & 0xfffff;
      if (len > 0) {
        if ((lower & TXD.EOP) !== 0 && (lower & TXD.IFCS) === 0) len = Math.max(0, len - 2);
        segs++;
        if (!bad && segs <= MAX_TXSEGS && tlen + len <= MAX_FRAME) {
          const addr = dv.getUint32(0, true) + dv.getUint32(4, true) * 0x100000000;
          try {
            this.views.length = 0;
            this.mem.slices(addr, len, this.views);
            let at = tlen;
            for (const v of this.views) { frame.set(v, at); at += v.length; }
          } catch (e) {
            if (!(e instanceof GuestMemoryError)) throw e;
            this.counts.dmaErrors++;
            bad = true;
          }
        } else {
          bad = true;
        }
        tlen += len;
      }
      if (lower & TXD.EOP) {
        lastLower = lower;
        lastSpecial = dv.getUint16(14, true);
        if (dtype === TYP_L) {
          if (lower & TXD.IC) { ck[0].valid = true; ck[0].off = this.desc[10]; ck[0].end = 0; }
        } else if (dtype === TYP_D) {
          const popts = this.desc[13];
          const c = this.txctx;
          if (lower & TXD.TSE) tso = true;
          if (popts & TXD.POPTS_IXSM) ck[0].valid = true;
          if ((popts & TXD.POPTS_IXSM) || tso) { ck[0].start = c[0]; ck[0].off = c[1]; ck[0].end = cdv.getUint16(2, true); }
          if (popts & TXD.POPTS_TXSM) ck[1].valid = true;
          if ((popts & TXD.POPTS_TXSM) || tso) { ck[1].start = c[4]; ck[1].off = c[5]; ck[1].end = cdv.getUint16(6, true); }
        }
        break;
      }
      head = (head + 1) % size;
      if (ndesc >= size) { bad = true; break; } // went round the whole ring without EOP
    }
    head = (head + 1) % size;
    const used = ndesc;
    if (bad || segs > MAX_TXSEGS) {
      this.counts.txDropped++;
    } else {
      this.sendFrame(tlen, ck, tso, lastLower, lastSpecial);
    }
    return this.txDone(head, used, this.completeTx(base, ohead, head, size));
  }

  /** Sets DD in every descriptor of [from, to) that asked for a report (RS). */
  private completeTx(_base: number, from: number, to: number, size: number): boolean {
    let wb = false;
    const dv = this.txRingDv;
    for (let h = from; h !== to; h = (h + 1) % size) {
      const a = h * 16;
      if (dv.getUint32(a + 8, true) & TXD.RS) {
        dv.setUint32(a + 12, (dv.getUint32(a + 12, true) | TXD.STAT_DD) >>> 0, true);
        wb = true;
      }
    }
    return wb;
  }

  /** A frame gathered in this.frame[0, tlen): VLAN insertion, checksums,
   * segmentation, then the backend. */
  private sendFrame(tlen: number, ck: [CkInfo, CkInfo], tso: boolean, lower: number, special: number): void {
    const frame = this.frame;
    let len = tlen;
    let vlen = 0;
    if ((this.CTRL & CTRL_VME) && (lower & TXD.VLE) && len >= ETHER_ADDR_LEN * 2) {
      // Insert the 802.1Q tag after the addresses; offsets move with it.
      frame.copyWithin(ETHER_ADDR_LEN * 2 + ETHER_VLAN_ENCAP_LEN, ETHER_ADDR_LEN * 2, len);
      frame[12] = this.VET >>> 8; frame[13] = this.VET & 0xff;
      frame[14] = special >>> 8; frame[15] = special & 0xff;
      len += ETHER_VLAN_ENCAP_LEN;
      vlen = ETHER_VLAN_ENCAP_LEN;
      for (const c of ck) {
        c.start += ETHER_VLAN_ENCAP_LEN;
        c.off += ETHER_VLAN_ENCAP_LEN;
        if (c.end !== 0) c.end += ETHER_VLAN_ENCAP_LEN;
      }
    }
    if (!tso) {
      if (len > MAX_FRAME) { this.counts.txDropped++; return; }
      if (ck[0].valid) insertChecksum(frame, len, ck[0]);
      if (ck[1].valid) insertChecksum(frame, len, ck[1]);
      this.toBackend(frame.subarray(0, len));
      return;
    }
    this.segment(frame, len, ck, vlen);
  }

  /** TCP/UDP segmentation as bhyve's TSO path: the header the driver gave
   * (context hdr_len) is copied in front of each MSS-sized piece of the
   * payload; IPv4 length and id, IPv6 payload length, TCP sequence and
   * FIN/PSH, UDP length and the checksums are fixed up per segment. */
  private segment(frame: Uint8Array, len: number, ck: [CkInfo, CkInfo], vlen: number): void {
    const c = this.txctx;
    const cdv = this.ctxDv;
    const cmd = cdv.getUint32(8, true);
    if (c[13] > TSO_MAX_HDRLEN) { this.counts.txDropped++; return; }
    const hdrlen = c[13] + vlen; // the header grew by an inserted VLAN tag
    const mss = cdv.getUint16(14, true);
    const tcp = (cmd & TXC.TCP) !== 0;
    const drop = (): void => { this.counts.txDropped++; };
    if (hdrlen > len || mss === 0) { drop(); return; }
    if (hdrlen < ck[0].start + 6 || hdrlen < ck[0].off + 2) { drop(); return; }
    if (tcp ? (hdrlen < ck[1].start + 14 || (ck[1].valid && hdrlen < ck[1].off + 2)) : hdrlen < ck[1].start + 8) { drop(); return; }
    const paylen = Math.min(cmd & 0xfffff, len - hdrlen);
    if (hdrlen + Math.min(mss, paylen) > MAX_FRAME) { drop(); return; }
    const hdr = frame; // the header is rewritten in place, the payload follows it
    const ipStart = ck[0].start;
    const l4Start = ck[1].start;
    const ipid = (hdr[ipStart + 4] << 8) | hdr[ipStart + 5];
    const tcpseq = tcp ? ((hdr[l4Start + 4] << 24) | (hdr[l4Start + 5] << 16) | (hdr[l4Start + 6] << 8) | hdr[l4Start + 7]) >>> 0 : 0;
    const ipcs = (hdr[ck[0].off] << 8) | hdr[ck[0].off + 1];
    const tcpcs = ck[1].valid ? (hdr[ck[1].off] << 8) | hdr[ck[1].off + 1] : 0;
    const seg = this.seg;
    const put16 = (o: number, v: number): void => { seg[o] = (v >>> 8) & 0xff; seg[o + 1] = v & 0xff; };
    let left = paylen;
    let segNo = 0;
    while (left > 0) {
      const now = Math.min(left, mss);
      seg.set(hdr.subarray(0, hdrlen), 0);
      const payOff = hdrlen + (paylen - left);
      seg.set(frame.subarray(payOff, payOff + now), hdrlen);
      const slen = hdrlen + now;
      if (cmd & TXC.IP) {
        put16(ipStart + 2, hdrlen - ipStart + now);
        put16(ipStart + 4, (ipid + segNo) & 0xffff);
      } else {
        put16(ipStart + 4, hdrlen - ipStart - 40 + now);
      }
      let tcpsum = tcpcs + (hdrlen - l4Start + now);
      while (tcpsum > 0xffff) tcpsum = (tcpsum & 0xffff) + (tcpsum >>> 16);
      if (tcp) {
        const s = (tcpseq + paylen - left) >>> 0;
        seg[l4Start + 4] = s >>> 24; seg[l4Start + 5] = (s >>> 16) & 0xff; seg[l4Start + 6] = (s >>> 8) & 0xff; seg[l4Start + 7] = s & 0xff;
        if (now < left) seg[l4Start + 13] &= ~(0x01 | 0x08); // FIN, PSH only on the last segment
      } else {
        put16(l4Start + 4, hdrlen - l4Start + now);
      }
      if (ck[0].valid) {
        put16(ck[0].off, ipcs);
        insertChecksum(seg, slen, ck[0]);
      }
      if (ck[1].valid) {
        put16(ck[1].off, tcpsum);
        insertChecksum(seg, slen, ck[1]);
      }
      this.counts.txTsoSegments++;
      this.toBackend(seg.subarray(0, slen));
      left -= now;
      segNo++;
    }
    this.stat(R.TSCTC);
  }

  private toBackend(f: Uint8Array): void {
    this.stat(R.GPTC);
    this.stat(R.TPT);
    this.stat64(R.GOTCL, f.length);
    this.stat64(R.TOTL, f.length);
    this.stat(R.PTC64 + 4 * E1000.sizeIndex(f.length));
    if (f[0] === 0xff && f[1] === 0xff && f[2] === 0xff && f[3] === 0xff && f[4] === 0xff && f[5] === 0xff) this.stat(R.BPTC);
    else if (f[0] & 1) this.stat(R.MPTC);
    this.one[0] = f;
    if (this.port && this.port.send(this.one)) {
      this.counts.txFrames++;
      this.counts.txBytes += f.length;
    } else {
      this.counts.txDropped++;
    }
  }

  // ---- receive ----

  /** Host frames may have arrived. While the ITR interval holds the
   * receive interrupt, they wait for its end (itrFired). */
  poll(): void {
    if (this.itrRunning && (this.IMS_ & ICR.RXT0) !== 0 && this.ITR_ !== 0) {
      this.rxHeld = true;
      return;
    }
    this.receive();
  }

  /** e82545_rx_callback: frames from the backend into the receive ring. */
  private receive(): void {
    const port = this.port;
    if (!port) return;
    if (!this.rxEnabled || this.rxLoopback) {
      // bhyve discards what arrives while receive is off.
      let n = 0;
      while (port.peek() !== null && n++ < 1024) { port.consume(); this.counts.rxDiscarded++; }
      return;
    }
    const size = this.RDLEN / 16;
    if (size === 0 || this.RDH >= size || this.RDT >= size) return;
    const base = this.RDBAH * 0x100000000 + this.RDBAL;
    if (!this.mem.contains(base, this.RDLEN)) { this.counts.dmaErrors++; return; }
    const ringBytes = this.mem.slice(base, this.RDLEN);
    const ring = new DataView(ringBytes.buffer, ringBytes.byteOffset, ringBytes.length);
    const bufsz = rxBufferSize(this.RCTL);
    const maxpktsz = (this.RCTL & RCTL_LPE) ? 16384 : 1522;
    const maxpktdesc = Math.ceil(maxpktsz / bufsz);
    let head = this.RDH;
    let left = (size + this.RDT - head) % size;
    let cause = 0;
    for (;;) {
      const f = port.peek();
      if (f === null) break;
      let len = Math.max(f.length, ETHER_MIN_NOCRC);
      if (!(this.RCTL & RCTL_SECRC)) len += ETHER_CRC_LEN; // CRC bytes (zeros) counted in
      if (len > maxpktdesc * bufsz) {
        // Longer than the buffers bhyve offers a frame (LPE off: 1522 bytes).
        port.consume();
        this.stat(R.ROC);
        continue;
      }
      const n = Math.ceil(len / bufsz);
      if (left < n) {
        // No room: the frame waits in the backend for descriptors (RDT).
        this.stat(R.MPC);
        break;
      }
      if ((this.RCTL & RCTL_VFE) && f.length >= 16 && ((f[12] << 8) | f[13]) === this.VET) {
        const tag = ((f[14] << 8) | f[15]) & 0x0fff;
        if ((this.fvlan[tag >> 5] & (1 << (tag & 31))) === 0) {
          port.consume();
          this.counts.rxVlanDropped++;
          continue;
        }
      }
      // The buffers, all checked before any is written (a buffer may run
      // across two chunks of guest RAM: several views).
      const dsts = this.views;
      dsts.length = 0;
      let ok = true;
      for (let i = 0, pos = 0; i < n; i++, pos += bufsz) {
        const d = ((head + i) % size) * 16;
        const addr = ring.getUint32(d, true) + ring.getUint32(d + 4, true) * 0x100000000;
        try {
          this.mem.slices(addr, Math.min(bufsz, len - pos), dsts);
        } catch (e) {
          if (!(e instanceof GuestMemoryError)) throw e;
          ok = false;
          break;
        }
      }
      port.consume();
      if (!ok) {
        // A buffer outside guest RAM: the frame is lost, the ring untouched.
        this.counts.dmaErrors++;
        continue;
      }
      for (let i = 0, pos = 0; i < dsts.length; pos += dsts[i].length, i++) {
        const dst = dsts[i];
        const fromFrame = Math.max(0, Math.min(dst.length, f.length - pos));
        if (fromFrame > 0) dst.set(f.subarray(pos, pos + fromFrame));
        if (fromFrame < dst.length) dst.fill(0, fromFrame); // padding and CRC
      }
      for (let i = 0, pos = 0; i < n; i++, pos += bufsz) {
        const d = ((head + i) % size) * 16;
        const last = i === n - 1;
        ring.setUint16(d + 8, Math.min(bufsz, len - pos), true);
        ring.setUint16(d + 10, 0, true); // csum
        ring.setUint8(d + 13, 0); // errors
        ring.setUint16(d + 14, 0, true); // special
        ring.setUint8(d + 12, last ? (RXD.PIF | RXD.IXSM | RXD.EOP | RXD.DD) : RXD.DD);
      }
      head = (head + n) % size;
      left -= n;
      this.counts.rxFrames++;
      this.counts.rxBytes += f.length;
      this.stat(R.GPRC);
      this.stat(R.TPR);
      this.stat64(R.GORCL, len);
      this.stat64(R.TORL, len);
      this.stat(R.PRC64 + 4 * E1000.sizeIndex(len));
      if (f[0] === 0xff && f[1] === 0xff && f[2] === 0xff && f[3] === 0xff && f[4] === 0xff && f[5] === 0xff) this.stat(R.BPRC);
      else if (f[0] & 1) this.stat(R.MPRC);
      cause |= len <= this.RSRPD ? (ICR.SRPD | ICR.RXT0) : ICR.RXT0;
    }
    this.RDH = head;
    // RDMTS: free descriptors under 1/2, 1/4 or 1/8 of the ring.
    left = (size + this.RDT - head) % size;
    if (cause !== 0 && left < (size >> (((this.RCTL >>> 8) & 3) + 1))) cause |= ICR.RXDMT0;
    if (cause !== 0) this.icrAssert(cause);
  }

  // ---- device ----

  reset(): void {
    this.hwReset(false);
    this.resetInterrupts();
  }

  stats(): Record<string, number> {
    return { 'intx interrupts': this.counts.interrupts, ...this.counts };
  }
}

/** Builds the model of slot `node` with the backend the main thread opened. */
export function createE1000(ctx: DeviceContext, node: string, slot: number, func: number): E1000 {
  const opts = e1000OptionsFromConfig(ctx.config, node, slot, func);
  let port: NetPort | undefined;
  if (ctx.config.get(`${node}.backend`) !== undefined && ctx.hostPorts) {
    const t = ctx.hostPorts.net(node);
    if (t === undefined) throw new ConfigError(`e1000 at ${node}: its backend was not opened`);
    port = attachNetBackend(t);
  }
  return new E1000(ctx, opts, port);
}

/** The emulation of its record (e1000-record.ts). */
export const e1000Model: PciDeviceModel = {
  create: (ctx, s) => createE1000(ctx, s.node, s.slot, s.func),
};
