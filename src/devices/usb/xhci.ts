// The USB 3 host controller, bhyve's pci_xhci.c (xHCI 1.0): PCI 8086:1E31,
// class 0C/03/30, one MSI message and INTx, registers in 32-bit BAR 0 laid
// out as bhyve lays them: capability registers at 0, operational at 0x20,
// eight port register sets at 0x420 (ports 1-4 USB 3, 5-8 USB 2), the
// doorbell array at 0x4a0 (slots 0-64), the runtime registers at 0xcc0
// (MFINDEX and one interrupter) and two Supported Protocol capabilities
// at 0xd00. 64 device slots, 32-byte contexts, one event ring segment.
//
//   -s 5,xhci,tablet          (slot.1.device=tablet; slots count from 1)
//
// Devices sit in the slot their configuration names (Enable Slot hands
// out those slot IDs, as bhyve does) and on the first free root hub port
// of their USB version. Commands: Enable / Disable Slot, Address Device
// (with BSR), Configure Endpoint (and deconfigure), Evaluate Context,
// Reset / Stop Endpoint, Set TR Dequeue Pointer, Reset Device, No Op (and
// bhyve's silent successes for Force Event, Negotiate Bandwidth, Set LTV,
// Get Port Bandwidth, Force Header). Transfers: control transfers on
// endpoint 0 (setup, data and status stages, event data TRBs) and
// interrupt IN transfers, which the device NAKs until it has a report.
// Everything runs on the thread that rang the doorbell (or delivered the
// pointer event) and completes before it returns.
//
// Hostile guests: every TRB, context and buffer address goes through the
// bounds-checked guest memory; an access outside guest RAM is a host
// system error (USBSTS.HSE, the controller halts). Rings are walked with a
// budget per doorbell and a limit on consecutive link TRBs: a ring of links
// that never reaches a TRB is a host controller error (USBSTS.HCE); a TD
// that never ends or holds the wrong TRBs completes with a TRB Error and
// halts its endpoint. A full event ring gets the Event Ring Full event and
// then drops events (counted), as the spec says.

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import { GuestMemoryError } from '../../sys/guest-memory.js';
import type { Device, DeviceContext } from '../device.js';
import type { PciDeviceModel } from '../pci-device.js';
import { PciEmulFunction } from '../pci/pci-emul.js';
import {
  CC, CMD_HCRST, CMD_INTE, CMD_RS, CRCR_CA, CRCR_CRR, CRCR_CS, CRCR_RCS, CTX_SIZE, DEVICE_CTX_SIZE, EP_DISABLED, EP_ERROR,
  EP_HALTED, EP_RUNNING, EP_STOPPED, ERDP_EHB, IMAN_IE, IMAN_IP, INPUT_CTX_SIZE, PLS_POLLING, PLS_RESUME, PLS_RX_DETECT,
  PLS_U0, PS_CAS, PS_CCS, PS_CEC, PS_CSC, PS_DR, PS_LWS, PS_OCA, PS_OCC, PS_PEC, PS_PED, PS_PIC_MASK, PS_PLC, PS_PLS_MASK,
  PS_PLS_SHIFT, PS_PP, PS_PR, PS_PRC, PS_SPEED_MASK, PS_SPEED_SHIFT, PS_WPR, PS_WRC, SLOT_ADDRESSED, SLOT_CONFIGURED,
  SLOT_DEFAULT, SLOT_ENABLED, STS_CNR, STS_EINT, STS_HCE, STS_HCH, STS_HSE, STS_PCD, STS_RSS, STS_SRE, STS_SSS, TRB,
  TRB_BSR, TRB_CHAIN, TRB_CYCLE, TRB_DC, TRB_ED, TRB_IDT, TRB_IOC, TRB_ISP, TRB_SIZE, TRB_TC, trbEp, trbSlot, trbType,
} from './xhci-constants.js';
import type { SetupPacket, UsbDevice } from './usb-device.js';
import { UsbTablet } from './usb-tablet.js';

export const XHCI_VENDOR = 0x8086;
export const XHCI_DEVICE = 0x1e31;
// Its record's limits and slot list (xhci-record.ts), importable from here.
import { parseXhciSlots, XHCI_MAX_DEVS, XHCI_MAX_SLOTS, type XhciSlotConfig } from './xhci-record.js';
export { parseXhciSlots, XHCI_MAX_DEVS, XHCI_MAX_SLOTS, type XhciSlotConfig };
const USB3_PORT_START = 1;
const USB2_PORT_START = XHCI_MAX_DEVS / 2 + 1;
const CAPLEN = 0x20;
const PORTREGS = 0x400; // from the operational base
export const XHCI_DBOFF = CAPLEN + PORTREGS + XHCI_MAX_DEVS * 16; // 0x4a0
export const XHCI_RTSOFF = XHCI_DBOFF + (XHCI_MAX_SLOTS + 1) * 32; // 0xcc0
export const XHCI_REGSEND = XHCI_RTSOFF + 0x20 + 32; // 0xd00: the xECP list
const XECP_SIZE = 4 * 32;
const PCI_USBREV = 0x60;
const XHCI_ID_PROTOCOLS = 2;

const HCSPARAMS1 = XHCI_MAX_SLOTS | (1 << 8) | (XHCI_MAX_DEVS << 24);
const HCSPARAMS2 = 0x04; // IST 4, ERST Max 0 (one segment), no scratchpads
const HCCPARAMS1 = 1 /* AC64 */ | (1 << 7) /* NSS */ | (1 << 9) /* SPC */ | (1 << 12) /* MaxPSASize */ | ((XHCI_REGSEND / 4) << 16);
const HCCPARAMS2 = 1 /* U3C */ | (1 << 4) /* LEC */;

/** TRBs one doorbell may take from a ring before it yields to the guest. */
const RING_BUDGET = 4096;
/** Link TRBs in a row before a ring counts as a loop. */
const MAX_LINKS = 64;
/** TRBs one TD may hold. */
const MAX_TD_TRBS = 256;
/** Largest transfer one TRB may describe (the 17-bit length field). */
const MAX_TRB_LEN = 0x1ffff;

interface Ring { addr: number; ccs: number; }
interface Endpoint { state: number; type: number; ring: Ring; }
interface Slot {
  dev: UsbDevice;
  port: number;
  /** -1 disabled, else the slot context state (SLOT_ENABLED...). */
  state: number;
  /** The output device context in guest memory, once addressed. */
  ctx: number | undefined;
  eps: Array<Endpoint | undefined>;
}
interface Trb { addr: number; lo: number; hi: number; dw2: number; dw3: number; }
interface EventRing { base: number; size: number; }

/** The guest asked for something outside guest RAM, or looped forever. */
class HostError extends Error {
  constructor(readonly kind: 'system' | 'controller') { super(kind); }
}

export class XhciController extends PciEmulFunction implements Device {
  private usbcmd = 0;
  private usbsts = STS_HCH;
  private dnctrl = 0;
  private crcrLo = 0;
  private crcrHi = 0;
  private cr: Ring = { addr: 0, ccs: 1 };
  private dcbaapLo = 0;
  private dcbaapHi = 0;
  private config = 0;
  // interrupter 0
  private iman = 0;
  private imod = 0;
  private erstsz = 0;
  private erstbaLo = 0;
  private erstbaHi = 0;
  private erdpLo = 0;
  private erdpHi = 0;
  private er: EventRing | undefined;
  private erEnq = 0;
  private erPcs = 1;
  private intxUp = false;

  readonly portsc = new Uint32Array(XHCI_MAX_DEVS + 1);
  private readonly portpmsc = new Uint32Array(XHCI_MAX_DEVS + 1);
  private readonly porthlpmc = new Uint32Array(XHCI_MAX_DEVS + 1);
  /** Device on each port (1-based). */
  private readonly ports: Array<UsbDevice | undefined> = new Array(XHCI_MAX_DEVS + 1).fill(undefined);
  private readonly slots: Array<Slot | undefined> = new Array(XHCI_MAX_SLOTS + 1).fill(undefined);
  readonly devices: UsbDevice[] = [];

  readonly counts = {
    commands: 0, controlTransfers: 0, interruptTransfers: 0, stalls: 0, trbErrors: 0, events: 0, eventsLost: 0,
    hostSystemErrors: 0, hostControllerErrors: 0, doorbells: 0,
  };

  constructor(ctx: DeviceContext, slots: readonly XhciSlotConfig[]) {
    super('xhci', ctx);
    let usb2 = USB2_PORT_START;
    let usb3 = USB3_PORT_START;
    for (const s of slots) {
      const dev = createUsbDevice(s.device);
      const port = dev.usbVersion === 2 ? usb2++ : usb3++;
      this.ports[port] = dev;
      this.slots[s.slot] = { dev, port, state: -1, ctx: undefined, eps: [] };
      dev.wake = (ep) => this.deviceWake(s.slot, ep);
      this.devices.push(dev);
    }
    this.cfg.setIdentity({ vendor: XHCI_VENDOR, device: XHCI_DEVICE, classCode: 0x0c, subclass: 0x03, progIf: 0x30 });
    this.cfg.set8(PCI_USBREV, 0x30);
    this.addMsiCap(1);
    this.allocBar(0, 'mem32', XHCI_REGSEND + XECP_SIZE, {
      read: (off, size) => this.barRead(off, size),
      write: (off, size, value) => this.regWriteAt(off, size, value),
    });
    this.requestIntx();
    this.controllerReset();
  }

  /** The tablet, if one is attached (VNC pointer events go to it). */
  get tablet(): UsbTablet | undefined {
    return this.devices.find((d): d is UsbTablet => d instanceof UsbTablet);
  }

  // ---- reset ----

  /** HCRST and power-on: registers to their defaults, slots disabled,
   * ports as pci_xhci_init_port leaves them. */
  private controllerReset(): void {
    this.lowerIntx();
    this.usbcmd = 0;
    this.usbsts = STS_HCH;
    this.dnctrl = 0;
    this.crcrLo = this.crcrHi = 0;
    this.cr = { addr: 0, ccs: 1 };
    this.dcbaapLo = this.dcbaapHi = 0;
    this.config = 0;
    this.iman = this.imod = this.erstsz = 0;
    this.erstbaLo = this.erstbaHi = this.erdpLo = this.erdpHi = 0;
    this.er = undefined;
    this.erEnq = 0;
    this.erPcs = 1;
    for (const s of this.slots) {
      if (!s) continue;
      s.state = -1;
      s.ctx = undefined;
      s.eps = [];
    }
    const any = this.devices.length > 0;
    for (let p = 1; p <= XHCI_MAX_DEVS; p++) {
      this.portpmsc[p] = this.porthlpmc[p] = 0;
      const dev = this.ports[p];
      if (dev) {
        this.portsc[p] = PS_CCS | PS_PP | (dev.speed << PS_SPEED_SHIFT)
          | (dev.usbVersion === 2 ? PLS_POLLING << PS_PLS_SHIFT : (PLS_U0 << PS_PLS_SHIFT) | PS_PED);
      } else {
        this.portsc[p] = any ? (PLS_RX_DETECT << PS_PLS_SHIFT) | PS_PP : 0;
      }
    }
  }

  reset(): void {
    this.controllerReset();
    this.resetInterrupts();
  }

  // ---- errors ----

  private halt(): void {
    this.usbcmd &= ~CMD_RS;
    this.usbsts |= STS_HCH;
  }

  /** Runs `fn`; a guest address outside RAM becomes HSE, a loop HCE. */
  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (e instanceof GuestMemoryError || (e instanceof HostError && e.kind === 'system')) {
        this.counts.hostSystemErrors++;
        this.usbsts |= STS_HSE;
        this.halt();
      } else if (e instanceof HostError) {
        this.counts.hostControllerErrors++;
        this.usbsts |= STS_HCE;
        this.halt();
      } else {
        throw e;
      }
    }
  }

  private get halted(): boolean { return (this.usbsts & STS_HCH) !== 0; }

  // ---- guest memory ----

  private readTrb(addr: number): Trb {
    const m = this.ctx.mem;
    if (!m.contains(addr, TRB_SIZE)) throw new GuestMemoryError(addr, TRB_SIZE);
    return { addr, lo: m.readU32(addr), hi: m.readU32(addr + 4), dw2: m.readU32(addr + 8), dw3: m.readU32(addr + 12) };
  }

  private u64(lo: number, hi: number): number { return hi * 0x100000000 + (lo >>> 0); }

  // ---- registers ----

  private barRead(off: number, size: 1 | 2 | 4): number {
    const v = this.regRead(off & ~3) >>> ((off & 3) * 8);
    return size === 4 ? v >>> 0 : v & (size === 2 ? 0xffff : 0xff);
  }

  private regRead(off: number): number {
    if (off < CAPLEN) {
      switch (off) {
        case 0x00: return CAPLEN | (0x0100 << 16);
        case 0x04: return HCSPARAMS1;
        case 0x08: return HCSPARAMS2;
        case 0x0c: return 0;
        case 0x10: return HCCPARAMS1;
        case 0x14: return XHCI_DBOFF;
        case 0x18: return XHCI_RTSOFF;
        case 0x1c: return HCCPARAMS2;
        default: return 0;
      }
    }
    if (off < XHCI_DBOFF) {
      const o = off - CAPLEN;
      switch (o) {
        case 0x00: return this.usbcmd;
        case 0x04: return this.usbsts;
        case 0x08: return 1; // 4 KiB pages
        case 0x14: return this.dnctrl;
        case 0x18: return this.crcrLo & CRCR_CRR; // the ring pointer reads as 0
        case 0x1c: return 0;
        case 0x30: return this.dcbaapLo;
        case 0x34: return this.dcbaapHi;
        case 0x38: return this.config;
        default:
          if (o < PORTREGS) return 0;
          return this.portRead(o - PORTREGS);
      }
    }
    if (off < XHCI_RTSOFF) return 0; // doorbells read as 0
    if (off < XHCI_REGSEND) {
      const o = off - XHCI_RTSOFF;
      if (o === 0) return this.halted ? 0 : Number((process.hrtime.bigint() / 125000n) & 0x3fffn);
      switch (o - 0x20) {
        case 0x00: return this.iman;
        case 0x04: return this.imod;
        case 0x08: return this.erstsz;
        case 0x10: return this.erstbaLo;
        case 0x14: return this.erstbaHi;
        case 0x18: return this.erdpLo;
        case 0x1c: return this.erdpHi;
        default: return 0;
      }
    }
    return this.xecpRead(off - XHCI_REGSEND);
  }

  /** Two Supported Protocol capabilities: USB 2 on ports 5-8, USB 3 on 1-4. */
  private xecpRead(o: number): number {
    switch (o) {
      case 0: return (0x02 << 24) | (4 << 8) | XHCI_ID_PROTOCOLS;
      case 4: return 0x20425355; // "USB "
      case 8: return ((XHCI_MAX_DEVS / 2) << 8) | USB2_PORT_START;
      case 16: return (0x03 << 24) | XHCI_ID_PROTOCOLS;
      case 20: return 0x20425355;
      case 24: return ((XHCI_MAX_DEVS / 2) << 8) | USB3_PORT_START;
      default: return 0;
    }
  }

  private portRead(o: number): number {
    const port = (o >> 4) + 1;
    if (port > XHCI_MAX_DEVS) return 3 << PS_SPEED_SHIFT;
    switch (o & 0xf) {
      case 0: return this.portsc[port];
      case 4: return this.portpmsc[port];
      case 8: return 0;
      default: return this.porthlpmc[port];
    }
  }

  private regWriteAt(off: number, size: 1 | 2 | 4, value: number): void {
    // The registers are dword registers; drivers write them whole.
    if (size !== 4 || (off & 3) !== 0) return;
    value >>>= 0;
    if (off < CAPLEN) return; // read-only
    if (off < XHCI_DBOFF) this.opWrite(off - CAPLEN, value);
    else if (off < XHCI_RTSOFF) this.doorbell((off - XHCI_DBOFF) >> 2, value);
    else if (off < XHCI_REGSEND) this.runtimeWrite(off - XHCI_RTSOFF, value);
  }

  private opWrite(o: number, value: number): void {
    switch (o) {
      case 0x00: this.usbcmdWrite(value & 0x3f0f); return;
      case 0x04:
        this.usbsts &= ~(value & (STS_HSE | STS_EINT | STS_PCD | STS_SSS | STS_RSS | STS_SRE | STS_CNR));
        return;
      case 0x14: this.dnctrl = value & 0xffff; return;
      case 0x18:
        // While the ring runs only CS/CA may change; it never runs between
        // two guest accesses here (commands complete inside the doorbell).
        this.crcrLo = value & (0xffffffc0 | CRCR_RCS | CRCR_CS | CRCR_CA);
        this.cr = { addr: this.u64(this.crcrLo & ~0x3f, this.crcrHi), ccs: this.crcrLo & CRCR_RCS };
        return;
      case 0x1c:
        this.crcrHi = value;
        this.cr = { addr: this.u64(this.crcrLo & ~0x3f, this.crcrHi), ccs: this.crcrLo & CRCR_RCS };
        return;
      case 0x30: this.dcbaapLo = value & 0xffffffc0; return;
      case 0x34: this.dcbaapHi = value; return;
      case 0x38: this.config = value & 0x3ff; return;
      default:
        if (o >= PORTREGS) this.guarded(() => this.portWrite(o - PORTREGS, value));
    }
  }

  /** pci_xhci_usbcmd_write(). */
  private usbcmdWrite(cmd: number): void {
    if (cmd & CMD_HCRST) {
      this.controllerReset();
      return;
    }
    const wasRunning = (this.usbcmd & CMD_RS) !== 0;
    this.usbcmd = cmd & ~(0x300); // CSS / CRS (save / restore) are not kept
    if (cmd & CMD_RS) {
      if (this.usbsts & (STS_HSE | STS_HCE)) { this.halt(); return; } // needs a reset first
      this.usbsts &= ~STS_HCH;
      if (!wasRunning) {
        this.usbsts |= STS_PCD;
        // Queue a port status change for every device, as a controller
        // that has just started detects them.
        let any = false;
        this.guarded(() => {
          for (let p = 1; p <= XHCI_MAX_DEVS; p++) {
            const dev = this.ports[p];
            if (!dev) continue;
            let sc = (this.portsc[p] | PS_CSC | PS_CCS) & ~PS_PLS_MASK;
            sc |= (dev.usbVersion === 2 ? PLS_POLLING : PLS_U0) << PS_PLS_SHIFT;
            this.portsc[p] = sc;
            if (!this.portEvent(p)) break;
            any = true;
          }
        });
        if (any) this.raiseInterrupt();
      }
    } else {
      this.usbsts |= STS_HCH;
      this.usbsts &= ~STS_PCD;
    }
    this.updateIntx();
  }

  /** pci_xhci_portregs_write(). */
  private portWrite(o: number, value: number): void {
    const port = (o >> 4) + 1;
    if (port > XHCI_MAX_DEVS) return;
    switch (o & 0xf) {
      case 0: {
        if (value & (PS_PR | PS_WPR)) { this.portReset(port, (value & PS_WPR) !== 0); return; }
        let sc = this.portsc[port];
        if ((sc & PS_PP) === 0) return;
        const oldPls = (sc & PS_PLS_MASK) >>> PS_PLS_SHIFT;
        const newPls = (value & PS_PLS_MASK) >>> PS_PLS_SHIFT;
        sc &= PS_PED | PS_PLS_MASK | PS_SPEED_MASK | PS_PIC_MASK;
        if (this.ports[port]) sc |= PS_CCS;
        sc |= value & ~(PS_OCA | PS_PR | PS_PED | PS_PLS_MASK | PS_SPEED_MASK | PS_PIC_MASK | PS_LWS | PS_DR | PS_WPR
          | PS_CSC | PS_PEC | PS_WRC | PS_OCC | PS_PRC | PS_PLC | PS_CEC | PS_CAS);
        // Change bits: write 1 to clear.
        sc |= this.portsc[port] & (PS_CSC | PS_PEC | PS_WRC | PS_OCC | PS_PRC | PS_PLC | PS_CEC);
        sc &= ~(value & (PS_CSC | PS_PEC | PS_WRC | PS_OCC | PS_PRC | PS_PLC | PS_CEC | PS_CAS));
        // Writing PED = 1 disables a USB 2 port.
        if ((value & PS_PED) && this.ports[port]?.usbVersion === 2) sc &= ~PS_PED;
        if (value & PS_LWS && (newPls === 0 || newPls === 3) && oldPls !== newPls) {
          sc = (sc & ~PS_PLS_MASK) | (newPls << PS_PLS_SHIFT) | PS_PLC;
          this.portsc[port] = sc >>> 0;
          if (oldPls !== 0 && newPls === 0 && this.portEvent(port)) this.raiseInterrupt();
          return;
        }
        this.portsc[port] = sc >>> 0;
        return;
      }
      case 4: this.portpmsc[port] = value; return;
      case 8: return; // PORTLI is read-only
      default: this.porthlpmc[port] = value;
    }
  }

  /** pci_xhci_reset_port(): the device is reset and the port enabled at its speed. */
  private portReset(port: number, warm: boolean): void {
    const dev = this.ports[port];
    if (!dev) return;
    let sc = this.portsc[port] & ~(PS_PLS_MASK | PS_PR | PS_SPEED_MASK);
    sc |= PS_PED | (dev.speed << PS_SPEED_SHIFT) | (PLS_U0 << PS_PLS_SHIFT);
    if (warm && dev.usbVersion === 3) sc |= PS_WRC;
    dev.reset();
    const changed = (sc & PS_PRC) === 0;
    this.portsc[port] = (sc | PS_PRC) >>> 0;
    if (changed && this.portEvent(port)) this.raiseInterrupt();
  }

  private runtimeWrite(o: number, value: number): void {
    if (o < 0x20) return; // MFINDEX is read-only
    switch (o - 0x20) {
      case 0x00: {
        if (value & IMAN_IP) this.iman &= ~IMAN_IP;
        this.iman = (value & IMAN_IE) | (this.iman & IMAN_IP);
        this.updateIntx();
        return;
      }
      case 0x04: this.imod = value; return;
      case 0x08: this.erstsz = value & 0xffff; return;
      case 0x10: this.erstbaLo = value & ~0x3f; return;
      case 0x14:
        this.erstbaHi = value;
        this.guarded(() => this.loadErst());
        return;
      case 0x18: {
        // EHB: write 1 to clear; DESI and the pointer as written.
        const ehb = value & ERDP_EHB ? 0 : this.erdpLo & ERDP_EHB;
        this.erdpLo = ((value & ~0xf) | (value & 0x7) | ehb) >>> 0;
        if (value & ERDP_EHB) this.eventsStillPending();
        return;
      }
      case 0x1c:
        this.erdpHi = value;
        return;
      default:
    }
  }

  /** Writing ERSTBA makes the controller read the segment table: one
   * segment (ERST Max 0) of 16 to 4096 TRBs inside guest RAM. */
  private loadErst(): void {
    this.er = undefined;
    this.erEnq = 0;
    this.erPcs = 1;
    if (this.erstsz === 0) return;
    const m = this.ctx.mem;
    const at = this.u64(this.erstbaLo, this.erstbaHi);
    if (!m.contains(at, 16)) throw new GuestMemoryError(at, 16);
    const base = this.u64(m.readU32(at) & ~0x3f, m.readU32(at + 4));
    const size = m.readU32(at + 8) & 0xffff;
    if (size < 16 || size > 4096) throw new HostError('controller');
    if (!m.contains(base, size * TRB_SIZE)) throw new GuestMemoryError(base, size * TRB_SIZE);
    this.er = { base, size };
  }

  // ---- events and interrupts ----

  /** The event ring's dequeue index from ERDP, or -1 when it points
   * outside the segment. */
  private erDequeue(er: EventRing): number {
    const p = this.u64(this.erdpLo & ~0xf, this.erdpHi);
    const i = (p - er.base) / TRB_SIZE;
    return Number.isInteger(i) && i >= 0 && i < er.size ? i : -1;
  }

  /** Writes one event TRB (the cycle bit last). False when it could not:
   * no event ring, or the ring is full (then the Event Ring Full error
   * takes the last free entry). */
  private postEvent(lo: number, hi: number, dw2: number, dw3: number): boolean {
    const er = this.er;
    if (!er) { this.counts.eventsLost++; return false; }
    const deq = this.erDequeue(er);
    if (deq < 0) throw new HostError('controller');
    const free = (deq - this.erEnq - 1 + er.size) % er.size;
    if (free === 0) { this.counts.eventsLost++; return false; }
    if (free === 1) {
      this.writeEvent(er, 0, 0, CC.EVENT_RING_FULL << 24, TRB.EVENT_HOST_CTRL << 10);
      this.counts.eventsLost++;
      this.raiseInterrupt();
      return false;
    }
    this.writeEvent(er, lo, hi, dw2, dw3);
    return true;
  }

  private writeEvent(er: EventRing, lo: number, hi: number, dw2: number, dw3: number): void {
    const m = this.ctx.mem;
    const at = er.base + this.erEnq * TRB_SIZE;
    m.writeU32(at, lo >>> 0);
    m.writeU32(at + 4, hi >>> 0);
    m.writeU32(at + 8, dw2 >>> 0);
    m.writeU32(at + 12, ((dw3 & ~TRB_CYCLE) | this.erPcs) >>> 0);
    this.counts.events++;
    if (++this.erEnq === er.size) { this.erEnq = 0; this.erPcs ^= 1; }
  }

  private portEvent(port: number): boolean {
    return this.postEvent(port << 24, 0, CC.SUCCESS << 24, TRB.EVENT_PORT_STS_CHANGE << 10);
  }

  /** Event handler busy, interrupt pending, and the interrupt itself when
   * the driver enabled it; nothing new while EHB is still set (the driver
   * has not taken the earlier events yet). */
  private raiseInterrupt(): void {
    this.usbsts |= STS_EINT;
    if (this.erdpLo & ERDP_EHB) return;
    this.erdpLo |= ERDP_EHB;
    this.iman |= IMAN_IP;
    if ((this.usbcmd & CMD_INTE) && (this.iman & IMAN_IE)) {
      if (this.msiEnabledNow()) this.generateMsi(0);
    }
    this.updateIntx();
  }

  /** The driver cleared EHB: events past its new dequeue pointer still
   * want an interrupt. */
  private eventsStillPending(): void {
    const er = this.er;
    if (!er) return;
    const deq = this.erDequeue(er);
    if (deq >= 0 && deq !== this.erEnq) this.raiseInterrupt();
  }

  /** INTx is a level: IP while the driver enabled interrupts. */
  private updateIntx(): void {
    const level = (this.iman & IMAN_IP) !== 0 && (this.iman & IMAN_IE) !== 0 && (this.usbcmd & CMD_INTE) !== 0 && !this.msiEnabledNow();
    if (level && !this.intxUp) { this.intxUp = true; this.intxAssert(); }
    else if (!level) this.lowerIntx();
  }

  private lowerIntx(): void {
    if (this.intxUp) { this.intxUp = false; this.intxDeassert(); }
  }

  // ---- doorbells ----

  private doorbell(target: number, value: number): void {
    if (this.halted || target > XHCI_MAX_SLOTS) return;
    this.counts.doorbells++;
    if (target === 0) {
      if (value === 0) this.guarded(() => this.runCommands());
      return;
    }
    const epid = value & 0xff;
    const stream = value >>> 16;
    if (epid < 1 || epid > 31 || stream !== 0) return;
    const slot = this.slots[target];
    if (!slot || slot.state < SLOT_DEFAULT) return;
    const ep = slot.eps[epid];
    if (!ep || ep.state === EP_DISABLED || ep.state === EP_HALTED || ep.state === EP_ERROR) return;
    ep.state = EP_RUNNING;
    this.guarded(() => this.runEndpoint(target, slot, epid, ep));
  }

  /** A device has interrupt data: run the endpoint if the driver has it running. */
  private deviceWake(slotId: number, ep: number): void {
    const slot = this.slots[slotId];
    const epid = ep * 2 + 1;
    const e = slot?.eps[epid];
    if (!slot || !e || e.state !== EP_RUNNING || this.halted) return;
    const p = slot.port;
    // A suspended link (U3) resumes and tells the driver.
    if (((this.portsc[p] & PS_PLS_MASK) >>> PS_PLS_SHIFT) === 3) {
      this.portsc[p] = ((this.portsc[p] & ~PS_PLS_MASK) | (PLS_RESUME << PS_PLS_SHIFT) | PS_PLC) >>> 0;
      this.guarded(() => { if (this.portEvent(p)) this.raiseInterrupt(); });
      return;
    }
    this.guarded(() => this.runEndpoint(slotId, slot, epid, e));
  }

  // ---- command ring ----

  private runCommands(): void {
    let links = 0;
    for (let budget = RING_BUDGET; budget > 0;) {
      const t = this.readTrb(this.cr.addr);
      if ((t.dw3 & TRB_CYCLE) !== this.cr.ccs) break;
      const type = trbType(t.dw3);
      if (type === TRB.LINK) {
        if (++links > MAX_LINKS) throw new HostError('controller');
        if (t.dw3 & TRB_TC) this.cr.ccs ^= 1;
        this.cr.addr = this.u64(t.lo & ~0xf, t.hi);
        continue;
      }
      links = 0;
      budget--;
      this.counts.commands++;
      let slot = trbSlot(t.dw3);
      let cc: number;
      switch (type) {
        case TRB.ENABLE_SLOT: [cc, slot] = this.enableSlot(); break;
        case TRB.DISABLE_SLOT: cc = this.disableSlot(slot); break;
        case TRB.ADDRESS_DEVICE: cc = this.addressDevice(slot, t); break;
        case TRB.CONFIGURE_EP: cc = this.configureEndpoint(slot, t); break;
        case TRB.EVALUATE_CTX: cc = this.evaluateContext(slot, t); break;
        case TRB.RESET_EP: cc = this.resetEndpoint(slot, t); break;
        case TRB.STOP_EP: cc = this.stopEndpoint(slot, t); break;
        case TRB.SET_TR_DEQUEUE: cc = this.setTrDequeue(slot, t); break;
        case TRB.RESET_DEVICE: cc = this.resetDevice(slot); break;
        case TRB.FORCE_EVENT: case TRB.NEGOTIATE_BW: case TRB.SET_LATENCY_TOL: case TRB.GET_PORT_BW:
        case TRB.FORCE_HEADER: case TRB.NOOP_CMD:
          cc = CC.SUCCESS; break;
        default: cc = CC.TRB; break;
      }
      const done = this.postEvent(t.addr, t.addr / 0x100000000, cc << 24, (TRB.EVENT_CMD_COMPLETE << 10) | (slot << 24));
      this.cr.addr += TRB_SIZE;
      if (done) this.raiseInterrupt();
    }
  }

  private slotOf(id: number): Slot | undefined {
    const s = id >= 1 && id <= XHCI_MAX_SLOTS ? this.slots[id] : undefined;
    return s && s.state >= SLOT_ENABLED ? s : undefined;
  }

  private enableSlot(): [number, number] {
    for (let i = 1; i <= XHCI_MAX_SLOTS; i++) {
      const s = this.slots[i];
      if (s && s.state < 0) {
        s.state = SLOT_ENABLED;
        s.ctx = undefined;
        s.eps = [];
        return [CC.SUCCESS, i];
      }
    }
    return [CC.NO_SLOTS, 0];
  }

  private disableSlot(id: number): number {
    const s = this.slotOf(id);
    if (!s) return CC.SLOT_NOT_ENABLED;
    s.state = -1;
    s.ctx = undefined;
    s.eps = [];
    return CC.SUCCESS;
  }

  /** DCBAA[slot]: the output device context, 64-byte aligned, or 0. */
  private outputContext(id: number): number {
    const m = this.ctx.mem;
    const at = this.u64(this.dcbaapLo, this.dcbaapHi) + 8 * id;
    if (!m.contains(at, 8)) throw new GuestMemoryError(at, 8);
    const p = this.u64(m.readU32(at) & ~0x3f, m.readU32(at + 4));
    if (p !== 0 && !m.contains(p, DEVICE_CTX_SIZE)) throw new GuestMemoryError(p, DEVICE_CTX_SIZE);
    return p;
  }

  /** The input context the command TRB points at, whole inside RAM. */
  private inputContext(t: Trb): number {
    const p = this.u64(t.lo & ~0xf, t.hi);
    if (!this.ctx.mem.contains(p, INPUT_CTX_SIZE)) throw new GuestMemoryError(p, INPUT_CTX_SIZE);
    return p;
  }

  private copyCtx(from: number, to: number): void {
    this.ctx.mem.write(to, this.ctx.mem.read(from, CTX_SIZE));
  }

  private setSlotCtx(s: Slot, state: number, address: number, entries?: number): void {
    const m = this.ctx.mem;
    const at = s.ctx!;
    m.writeU32(at + 12, ((state << 27) | address) >>> 0);
    if (entries !== undefined) m.writeU32(at, ((m.readU32(at) & ~(0x1f << 27)) | (entries << 27)) >>> 0);
  }

  /** Mirrors an endpoint's state and dequeue pointer into the output context. */
  private syncEpCtx(s: Slot, epid: number): void {
    const ep = s.eps[epid];
    if (s.ctx === undefined) return;
    const m = this.ctx.mem;
    const at = s.ctx + epid * CTX_SIZE;
    const state = ep ? ep.state : EP_DISABLED;
    m.writeU32(at, ((m.readU32(at) & ~7) | state) >>> 0);
    if (ep) {
      m.writeU32(at + 8, ((ep.ring.addr % 0x100000000) | ep.ring.ccs) >>> 0);
      m.writeU32(at + 12, Math.floor(ep.ring.addr / 0x100000000) >>> 0);
    }
  }

  /** An endpoint context's ring: TR dequeue pointer and DCS (0 when none). */
  private ringOf(ctxAt: number): Ring {
    const m = this.ctx.mem;
    const lo = m.readU32(ctxAt + 8);
    return { addr: this.u64(lo & ~0xf, m.readU32(ctxAt + 12)), ccs: lo & 1 };
  }

  private addressDevice(id: number, t: Trb): number {
    const s = this.slotOf(id);
    if (!s) return CC.SLOT_NOT_ENABLED;
    const bsr = (t.dw3 & TRB_BSR) !== 0;
    if (s.state > SLOT_DEFAULT || (s.state === SLOT_DEFAULT && bsr)) return CC.CONTEXT_STATE;
    const m = this.ctx.mem;
    const input = this.inputContext(t);
    // Address Device adds the slot and endpoint 0 and drops nothing.
    if (m.readU32(input) !== 0 || (m.readU32(input + 4) & 3) !== 3) return CC.TRB;
    const ep0 = input + 2 * CTX_SIZE;
    const ring = this.ringOf(ep0);
    if (((m.readU32(ep0 + 4) >>> 3) & 7) !== 4 || ring.addr === 0) return CC.PARAMETER;
    const out = this.outputContext(id);
    if (out === 0) return CC.CONTEXT_STATE;
    s.ctx = out;
    this.copyCtx(input + CTX_SIZE, out);
    this.copyCtx(ep0, out + CTX_SIZE);
    s.dev.reset();
    s.state = bsr ? SLOT_DEFAULT : SLOT_ADDRESSED;
    this.setSlotCtx(s, s.state, bsr ? 0 : id);
    s.eps = [];
    s.eps[1] = { state: EP_RUNNING, type: 4, ring };
    this.syncEpCtx(s, 1);
    return CC.SUCCESS;
  }

  private configureEndpoint(id: number, t: Trb): number {
    const s = this.slotOf(id);
    if (!s) return CC.SLOT_NOT_ENABLED;
    if (s.state < SLOT_ADDRESSED || s.ctx === undefined) return CC.CONTEXT_STATE;
    if (t.dw3 & TRB_DC) {
      for (let i = 2; i <= 31; i++) { s.eps[i] = undefined; this.syncEpCtx(s, i); }
      s.state = SLOT_ADDRESSED;
      this.setSlotCtx(s, SLOT_ADDRESSED, id, 1);
      return CC.SUCCESS;
    }
    const m = this.ctx.mem;
    const input = this.inputContext(t);
    const drop = m.readU32(input);
    const add = m.readU32(input + 4);
    if ((drop & 3) !== 0 || (add & 2) !== 0) return CC.TRB;
    // Check every added endpoint before changing anything.
    for (let i = 2; i <= 31; i++) {
      if (!(add & (1 << i))) continue;
      const at = input + (i + 1) * CTX_SIZE;
      const type = (m.readU32(at + 4) >>> 3) & 7;
      const streams = (m.readU32(at) >>> 10) & 0x1f;
      if (type === 0 || streams !== 0 || this.ringOf(at).addr === 0) return CC.PARAMETER;
    }
    for (let i = 2; i <= 31; i++) {
      if ((drop >>> 0) & (1 << i)) { s.eps[i] = undefined; this.syncEpCtx(s, i); }
      if ((add >>> 0) & (1 << i)) {
        const at = input + (i + 1) * CTX_SIZE;
        this.copyCtx(at, s.ctx + i * CTX_SIZE);
        s.eps[i] = { state: EP_RUNNING, type: (m.readU32(at + 4) >>> 3) & 7, ring: this.ringOf(at) };
        this.syncEpCtx(s, i);
      }
    }
    const entries = (m.readU32(input + CTX_SIZE) >>> 27) & 0x1f;
    s.state = SLOT_CONFIGURED;
    this.setSlotCtx(s, SLOT_CONFIGURED, id, entries);
    return CC.SUCCESS;
  }

  private evaluateContext(id: number, t: Trb): number {
    const s = this.slotOf(id);
    if (!s) return CC.SLOT_NOT_ENABLED;
    if (s.state < SLOT_DEFAULT || s.ctx === undefined) return CC.CONTEXT_STATE;
    const m = this.ctx.mem;
    const input = this.inputContext(t);
    const add = m.readU32(input + 4);
    if (m.readU32(input) !== 0 || (add & 3) === 0) return CC.TRB;
    const out = s.ctx;
    if (add & 1) {
      // max exit latency, interrupter target
      const isl = input + CTX_SIZE;
      m.writeU32(out + 4, ((m.readU32(out + 4) & ~0xffff) | (m.readU32(isl + 4) & 0xffff)) >>> 0);
      m.writeU32(out + 8, ((m.readU32(out + 8) & ~(0x3ff << 22)) | (m.readU32(isl + 8) & (0x3ff << 22))) >>> 0);
    }
    if (add & 2) {
      // endpoint 0's max packet size
      const iep = input + 2 * CTX_SIZE;
      const oep = out + CTX_SIZE;
      m.writeU32(oep + 4, ((m.readU32(oep + 4) & 0xffff) | (m.readU32(iep + 4) & 0xffff0000)) >>> 0);
    }
    return CC.SUCCESS;
  }

  private endpointOf(id: number, t: Trb): [number, Slot?, Endpoint?, number?] {
    const s = this.slotOf(id);
    if (!s) return [CC.SLOT_NOT_ENABLED];
    const epid = trbEp(t.dw3);
    if (epid < 1 || epid > 31) return [CC.TRB];
    const ep = s.eps[epid];
    if (!ep || ep.state === EP_DISABLED) return [CC.EP_NOT_ENABLED];
    return [CC.SUCCESS, s, ep, epid];
  }

  /** Reset Endpoint: a halted endpoint becomes stopped. */
  private resetEndpoint(id: number, t: Trb): number {
    const [cc, s, ep, epid] = this.endpointOf(id, t);
    if (cc !== CC.SUCCESS) return cc;
    if (ep!.state !== EP_HALTED) return CC.CONTEXT_STATE;
    ep!.state = EP_STOPPED;
    s!.dev.reset();
    this.syncEpCtx(s!, epid!);
    return CC.SUCCESS;
  }

  private stopEndpoint(id: number, t: Trb): number {
    const [cc, s, ep, epid] = this.endpointOf(id, t);
    if (cc !== CC.SUCCESS) return cc;
    if (ep!.state !== EP_RUNNING) return CC.CONTEXT_STATE;
    ep!.state = EP_STOPPED;
    this.syncEpCtx(s!, epid!);
    return CC.SUCCESS;
  }

  private setTrDequeue(id: number, t: Trb): number {
    const [cc, s, ep, epid] = this.endpointOf(id, t);
    if (cc !== CC.SUCCESS) return cc;
    if (ep!.state !== EP_STOPPED && ep!.state !== EP_ERROR) return CC.CONTEXT_STATE;
    if ((t.dw2 >>> 16) !== 0) return CC.INVALID_STREAM_TYPE;
    const addr = this.u64(t.lo & ~0xf, t.hi);
    if (addr === 0) return CC.PARAMETER;
    ep!.ring = { addr, ccs: t.lo & 1 };
    ep!.state = EP_STOPPED;
    this.syncEpCtx(s!, epid!);
    return CC.SUCCESS;
  }

  /** Reset Device: back to the default state, endpoint 0 only. */
  private resetDevice(id: number): number {
    const s = this.slotOf(id);
    if (!s) return CC.SLOT_NOT_ENABLED;
    if (s.state < SLOT_ADDRESSED || s.ctx === undefined) return CC.CONTEXT_STATE;
    for (let i = 2; i <= 31; i++) { s.eps[i] = undefined; this.syncEpCtx(s, i); }
    s.state = SLOT_DEFAULT;
    this.setSlotCtx(s, SLOT_DEFAULT, 0, 1);
    s.dev.reset();
    return CC.SUCCESS;
  }

  // ---- transfer rings ----

  /** Takes the TD at the ring's dequeue pointer: its TRBs, or 'empty' when
   * the driver has not written it (all) yet. Link TRBs are followed and not
   * returned. `control`: the TD runs until a status stage that does not
   * chain; otherwise until a TRB that does not chain. */
  private takeTd(ring: Ring, control: boolean): { trbs: Trb[]; next: Ring } | 'empty' | 'error' {
    const trbs: Trb[] = [];
    let addr = ring.addr;
    let ccs = ring.ccs;
    let links = 0;
    let sawStatus = false;
    for (;;) {
      const t = this.readTrb(addr);
      if ((t.dw3 & TRB_CYCLE) !== ccs) return 'empty';
      if (trbType(t.dw3) === TRB.LINK) {
        if (++links > MAX_LINKS) return 'error';
        if (t.dw3 & TRB_TC) ccs ^= 1;
        addr = this.u64(t.lo & ~0xf, t.hi);
        continue;
      }
      links = 0;
      trbs.push(t);
      addr += TRB_SIZE;
      if (trbs.length > MAX_TD_TRBS) return 'error';
      const type = trbType(t.dw3);
      const chain = (t.dw3 & TRB_CHAIN) !== 0;
      if (control) {
        if (type === TRB.STATUS_STAGE) sawStatus = true;
        if ((sawStatus || trbs.length === 1 && type !== TRB.SETUP_STAGE) && !chain) break;
      } else if (!chain) {
        break;
      }
    }
    return { trbs, next: { addr, ccs } };
  }

  private runEndpoint(slotId: number, s: Slot, epid: number, ep: Endpoint): void {
    for (let budget = RING_BUDGET; budget > 0 && ep.state === EP_RUNNING && !this.halted;) {
      const td = this.takeTd(ep.ring, epid === 1);
      if (td === 'empty') return;
      if (td === 'error') {
        // A TD that never ends: TRB Error on the TRB at the dequeue pointer.
        this.counts.trbErrors++;
        ep.state = EP_HALTED;
        this.syncEpCtx(s, epid);
        if (this.transferEvent(ep.ring.addr, 0, CC.TRB, slotId, epid)) this.raiseInterrupt();
        return;
      }
      budget -= td.trbs.length;
      const done = epid === 1 ? this.controlTd(slotId, s, ep, td.trbs) : this.dataTd(slotId, s, epid, ep, td.trbs);
      if (!done) return; // NAK: the TD stays at the dequeue pointer
      // The output context's dequeue pointer is only valid once the
      // endpoint stops or halts (xHCI 4.6.9): no write per TD here.
      if (ep.state === EP_RUNNING) ep.ring = td.next;
    }
  }

  private transferEvent(trbAddr: number, residual: number, cc: number, slotId: number, epid: number, ed = false): boolean {
    return this.postEvent(trbAddr, trbAddr / 0x100000000, ((cc << 24) | (residual & 0xffffff)) >>> 0,
      (TRB.EVENT_TRANSFER << 10) | (epid << 16) | (slotId << 24) | (ed ? TRB_ED : 0));
  }

  /** Events for a finished TD: one per TRB with IOC, or with ISP when that
   * TRB came short; event data TRBs report the bytes moved since the last
   * one. `moved[i]` is what TRB i transferred, `cc` the TD's outcome and
   * `failAt` the TRB it ended on when it did not succeed. */
  private tdEvents(slotId: number, epid: number, trbs: Trb[], lens: number[], moved: number[], cc: number, failAt: number): void {
    let edtla = 0;
    let interrupt = false;
    for (let i = 0; i < trbs.length; i++) {
      const t = trbs[i];
      if (failAt >= 0 && i > failAt) break;
      const type = trbType(t.dw3);
      if (type === TRB.EVENT_DATA) {
        if (t.dw3 & TRB_IOC) {
          if (!this.postEvent(t.lo, t.hi, ((cc === CC.SHORT_PACKET ? CC.SUCCESS : cc) << 24 | (edtla & 0xffffff)) >>> 0,
            (TRB.EVENT_TRANSFER << 10) | (epid << 16) | (slotId << 24) | TRB_ED)) break;
          interrupt = true;
        }
        edtla = 0;
        continue;
      }
      edtla += moved[i];
      const residual = lens[i] - moved[i];
      let code: number = CC.SUCCESS;
      if (i === failAt) code = cc;
      else if (residual > 0 && type !== TRB.SETUP_STAGE && type !== TRB.STATUS_STAGE) code = CC.SHORT_PACKET;
      const want = (t.dw3 & TRB_IOC) !== 0 || (code === CC.SHORT_PACKET && (t.dw3 & TRB_ISP) !== 0) || i === failAt;
      if (!want) continue;
      if (!this.transferEvent(t.addr, residual, code, slotId, epid)) break;
      interrupt = true;
    }
    if (interrupt) this.raiseInterrupt();
  }

  /** A control TD on endpoint 0: setup, data, status. Returns true when done. */
  private controlTd(slotId: number, s: Slot, ep: Endpoint, trbs: Trb[]): boolean {
    const m = this.ctx.mem;
    const lens = trbs.map(() => 0);
    const moved = trbs.map(() => 0);
    const first = trbs[0];
    const fail = (at: number, cc: number, halt: boolean): boolean => {
      if (halt) { ep.state = EP_HALTED; this.syncEpCtx(s, 1); }
      if (cc === CC.STALL) this.counts.stalls++; else this.counts.trbErrors++;
      this.tdEvents(slotId, 1, trbs, lens, moved, cc, at);
      return true;
    };
    if (trbType(first.dw3) === TRB.NOOP) { this.tdEvents(slotId, 1, trbs, lens, moved, CC.SUCCESS, -1); return true; }
    if (trbType(first.dw3) !== TRB.SETUP_STAGE || !(first.dw3 & TRB_IDT) || (first.dw2 & MAX_TRB_LEN) !== 8) {
      return fail(0, CC.TRB, true);
    }
    const setup: SetupPacket = {
      bmRequestType: first.lo & 0xff, bRequest: (first.lo >>> 8) & 0xff, wValue: first.lo >>> 16,
      wIndex: first.hi & 0xffff, wLength: first.hi >>> 16,
    };
    const isIn = (setup.bmRequestType & 0x80) !== 0;
    // The data stage: a Data Stage TRB and the Normal TRBs chained to it.
    const data: number[] = [];
    let status = -1;
    for (let i = 1; i < trbs.length; i++) {
      const type = trbType(trbs[i].dw3);
      if (type === TRB.DATA_STAGE || (type === TRB.NORMAL && data.length > 0)) {
        if (status >= 0 || (type === TRB.DATA_STAGE && data.length > 0)) return fail(i, CC.TRB, true);
        lens[i] = trbs[i].dw2 & MAX_TRB_LEN;
        data.push(i);
      } else if (type === TRB.STATUS_STAGE) {
        status = i;
      } else if (type !== TRB.EVENT_DATA && type !== TRB.NOOP) {
        return fail(i, CC.TRB, true);
      }
    }
    if (status < 0) return fail(trbs.length - 1, CC.TRB, true);
    this.counts.controlTransfers++;
    // Buffers: immediate data lives in the TRB itself.
    const bufAt = (i: number): number => (trbs[i].dw3 & TRB_IDT ? -1 : this.u64(trbs[i].lo, trbs[i].hi));
    let out: Uint8Array | undefined;
    if (!isIn && data.length > 0) {
      const parts: Uint8Array[] = [];
      for (const i of data) {
        const a = bufAt(i);
        if (a < 0) {
          const imm = new Uint8Array(8);
          new DataView(imm.buffer).setUint32(0, trbs[i].lo, true);
          new DataView(imm.buffer).setUint32(4, trbs[i].hi, true);
          parts.push(imm.subarray(0, Math.min(8, lens[i])));
        } else {
          parts.push(m.read(a, lens[i]));
        }
        moved[i] = lens[i];
      }
      out = concat(parts).subarray(0, setup.wLength);
    }
    const r = s.dev.control(setup, out);
    if (r.status === 'stall') return fail(data.length > 0 ? data[0] : status, CC.STALL, true);
    if (isIn && r.data) {
      let off = 0;
      const total = Math.min(r.data.length, setup.wLength);
      for (const i of data) {
        const n = Math.min(lens[i], total - off);
        if (n > 0) {
          const a = bufAt(i);
          if (a < 0) return fail(i, CC.TRB, true);
          this.copyOut(a, r.data, off, n);
          off += n;
          moved[i] = n;
        }
      }
    }
    this.tdEvents(slotId, 1, trbs, lens, moved, CC.SUCCESS, -1);
    return true;
  }

  /** A TD on an interrupt (or bulk) endpoint. False when the device NAKs. */
  private dataTd(slotId: number, s: Slot, epid: number, ep: Endpoint, trbs: Trb[]): boolean {
    const lens = trbs.map((t) => (trbType(t.dw3) === TRB.NORMAL ? t.dw2 & MAX_TRB_LEN : 0));
    const moved = trbs.map(() => 0);
    for (let i = 0; i < trbs.length; i++) {
      const type = trbType(trbs[i].dw3);
      if (type !== TRB.NORMAL && type !== TRB.EVENT_DATA && type !== TRB.NOOP) {
        ep.state = EP_HALTED;
        this.syncEpCtx(s, epid);
        this.counts.trbErrors++;
        this.tdEvents(slotId, epid, trbs, lens, moved, CC.TRB, i);
        return true;
      }
    }
    const total = lens.reduce((a, b) => a + b, 0);
    const isIn = (epid & 1) === 1;
    const r = isIn ? s.dev.interruptIn(epid >> 1, total) : 'stall';
    if (r === 'nak') return false;
    if (r === 'stall') {
      ep.state = EP_HALTED;
      this.syncEpCtx(s, epid);
      this.counts.stalls++;
      this.tdEvents(slotId, epid, trbs, lens, moved, CC.STALL, Math.max(0, lens.findIndex((l) => l > 0)));
      return true;
    }
    this.counts.interruptTransfers++;
    let off = 0;
    const len = Math.min(r.length, total);
    for (let i = 0; i < trbs.length; i++) {
      const n = Math.min(lens[i], len - off);
      if (n <= 0) continue;
      if (trbs[i].dw3 & TRB_IDT) continue; // no immediate data on IN
      this.copyOut(this.u64(trbs[i].lo, trbs[i].hi), r, off, n);
      off += n;
      moved[i] = n;
    }
    this.tdEvents(slotId, epid, trbs, lens, moved, CC.SUCCESS, -1);
    return true;
  }

  /** `n` bytes of `src` from `off` into guest memory at `addr` (one view, no copy of the source). */
  private copyOut(addr: number, src: Uint8Array, off: number, n: number): void {
    const dst = this.ctx.mem.slice(addr, n);
    for (let k = 0; k < n; k++) dst[k] = src[off + k];
  }

  stats(): Record<string, number> {
    const c = this.interruptCounts;
    const t = this.tablet;
    return {
      'msi messages': c.msi, 'intx assertions': c.intx, ...this.counts,
      ...(t ? { 'tablet pointer events': t.counts.events, 'tablet reports': t.counts.reports } : {}),
    };
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** bhyve's usb_emu_finddev(): the USB device models. */
const USB_DEVICES: Record<string, () => UsbDevice> = {
  tablet: () => new UsbTablet(),
};

function createUsbDevice(name: string): UsbDevice {
  const make = USB_DEVICES[name];
  if (!make) throw new ConfigError(`xhci: unknown USB device model "${name}" (supported: tablet)`);
  return make();
}

/** The emulation of its record (xhci-record.ts). */
export const xhciModel: PciDeviceModel = {
  create: (ctx, s, chipset) => {
    if (chipset.bus.functions().some((f) => f instanceof XhciController)) throw new ConfigError('pci_xhci controller already defined (only one is allowed)');
    return new XhciController(ctx, parseXhciSlots(ctx.config, s.node));
  },
};
