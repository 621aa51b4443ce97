// The i8042 keyboard controller at 0x60 (data) and 0x64 (status/command):
// the controller half of bhyve's amd64/atkbdc.c, enough for firmware and OS
// probes and for the classic reset through command 0xfe.
//
// bhyve's atkbdc.c also hosts a PS/2 keyboard (ps2kbd.c) and a PS/2 mouse
// (ps2mouse.c) fed by the fbuf/VNC console. Here the keyboard answers its
// commands as ps2kbd.c does (0xff reset: ACK + BAT success 0xaa; 0xf2
// identify: ACK + 0xab 0x83; 0xee echo; 0xed/0xf0/0xf3 take a parameter;
// 0xf4/0xf5 enable/disable scanning; everything else is ACKed), so that
// firmware finds a keyboard without waiting out its timeouts (SeaBIOS
// waits a second). Keys come from fbuf's VNC clients (keyEvent): scancode
// set 2, translated to set 1 when the command byte's translation bit is
// set, as the i8042 does.
// The PS/2 mouse (ps2mouse.ts) takes the bytes sent with 0xd4 and VNC pointer
// events (pointerEvent), its bytes go out on the aux channel (IRQ 12); one
// output FIFO holds keyboard and mouse bytes alike. Controller commands work
// as in bhyve: 0x20-0x3f / 0x60-0x7f read/write controller RAM (byte 0 is
// the command byte), 0xaa self-test answers 0x55, 0xa9/0xab port tests
// answer 0, 0xc0/0xd0 read the input/output port, 0xd1 writes the output
// port, 0xd2/0xd3 echo a byte back as keyboard/mouse data, 0xa7/0xa8/0xad/
// 0xae disable/enable the ports, 0xfe pulses the reset line.
//
// Difference from bhyve: bhyve starts with command byte 0 and so with the
// system flag clear; we start with the system flag set (command byte 0x04,
// status bit 2), as a controller is after POST, which some probes expect.
// Controller answers raise IRQ 1 when the command byte enables it, as bhyve
// pulses it.

import type { AccessSize, Device, DeviceContext } from '../device.js';
import { scancodeBytes } from '../display/ps2-keymap.js';
import { Ps2Mouse } from './ps2mouse.js';

export const KBD_DATA_PORT = 0x60;
export const KBD_STS_CTL_PORT = 0x64;
export const KBD_DEV_IRQ = 1;
export const AUX_DEV_IRQ = 12;

export const KBDC_SET_COMMAND_BYTE = 0x60;
export const KBDC_GET_COMMAND_BYTE = 0x20;
export const KBDC_DISABLE_AUX_PORT = 0xa7;
export const KBDC_ENABLE_AUX_PORT = 0xa8;
export const KBDC_TEST_AUX_PORT = 0xa9;
export const KBDC_TEST_CTRL = 0xaa;
export const KBDC_TEST_KBD_PORT = 0xab;
export const KBDC_DISABLE_KBD_PORT = 0xad;
export const KBDC_ENABLE_KBD_PORT = 0xae;
export const KBDC_READ_INPORT = 0xc0;
export const KBDC_READ_OUTPORT = 0xd0;
export const KBDC_WRITE_OUTPORT = 0xd1;
export const KBDC_WRITE_KBD_OUTBUF = 0xd2;
export const KBDC_WRITE_AUX_OUTBUF = 0xd3;
export const KBDC_WRITE_TO_AUX = 0xd4;
export const KBDC_RESET = 0xfe;

export const KBD_TRANSLATION = 0x40;
export const KBD_DISABLE_AUX_PORT = 0x20;
export const KBD_DISABLE_KBD_PORT = 0x10;
export const KBD_SYS_FLAG_BIT = 0x04;
export const KBD_ENABLE_AUX_INT = 0x02;
export const KBD_ENABLE_KBD_INT = 0x01;

export const KBDS_KBD_BUFFER_FULL = 0x01;
export const KBDS_INPUT_BUFFER_FULL = 0x02;
export const KBDS_SYS_FLAG = 0x04;
export const KBDS_CTRL_FLAG = 0x08;
export const KBDS_AUX_BUFFER_FULL = 0x20;

export const KBDO_KBD_OUTFULL = 0x10;
export const KBDO_AUX_OUTFULL = 0x20;

const RAMSZ = 32;
const FIFOSZ = 15;

function ones(size: number): number {
  return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
}

export class AtKbdc implements Device {
  readonly name = 'atkbdc';
  status = 0;
  outport = 0;
  readonly ram = new Uint8Array(RAMSZ);
  private curcmd = 0;
  /** A pending controller answer, or undefined. */
  private ctrlbyte: number | undefined;
  /** Bytes queued as keyboard data (only 0xd2/0xd3 put any here). */
  private readonly fifo: number[] = [];
  private auxData = false;
  /** A keyboard command waiting for its parameter byte, or 0. */
  private kbdCmd = 0;
  /** The keyboard sends keys (0xf4 enables, 0xf5 disables, reset enables). */
  private scanning = true;
  /** Keys dropped because the output buffer was full or scanning was off. */
  keysDropped = 0;
  readonly mouse = new Ps2Mouse((b) => this.queue(b, true), () => FIFOSZ - this.fifo.length);

  constructor(private readonly ctx: DeviceContext) {
    this.reset();
    ctx.io.registerPorts('atkbdc-data', KBD_DATA_PORT, 1, {
      read: (_p, size) => (size === 1 ? this.dataRead() : ones(size)),
      write: (_p, size, value) => { if (size === 1) this.dataWrite(value & 0xff); },
    });
    ctx.io.registerPorts('atkbdc-ctl', KBD_STS_CTL_PORT, 1, {
      read: (_p, size: AccessSize) => (size === 1 ? this.status : ones(size)),
      write: (_p, size, value) => { if (size === 1) this.command(value & 0xff); },
    });
  }

  reset(): void {
    this.ram.fill(0);
    this.ram[0] = KBD_SYS_FLAG_BIT;
    this.status = KBDS_SYS_FLAG;
    this.outport = 0;
    this.curcmd = 0;
    this.ctrlbyte = undefined;
    this.fifo.length = 0;
    this.auxData = false;
    this.kbdCmd = 0;
    this.scanning = true;
    this.mouse?.reset();
  }

  /** A VNC pointer event (RFB button mask, absolute position) for the mouse. */
  pointerEvent(buttons: number, x: number, y: number): void {
    this.mouse.pointer(buttons, x, y);
  }

  /** A key went down or up (`qnum`: set-1 code, bit 7 for an E0 prefix; ps2-keymap.ts). */
  keyEvent(qnum: number, down: boolean): void {
    const set = (this.ram[0] & KBD_TRANSLATION) !== 0 ? 1 : 2;
    const bytes = scancodeBytes(qnum, down, set);
    if (bytes.length === 0) return;
    if (!this.scanning || this.fifo.length + bytes.length > FIFOSZ) { this.keysDropped++; return; }
    for (const b of bytes) this.queue(b, false);
  }

  private queue(val: number, aux: boolean): void {
    if (this.fifo.length >= FIFOSZ) return;
    this.fifo.push(val);
    this.auxData = aux;
    this.status |= KBDS_KBD_BUFFER_FULL | (aux ? KBDS_AUX_BUFFER_FULL : 0);
    this.outport |= aux ? KBDO_AUX_OUTFULL : KBDO_KBD_OUTFULL;
    this.interrupt(aux);
  }

  private interrupt(aux: boolean): void {
    if (aux) {
      if ((this.ram[0] & KBD_ENABLE_AUX_INT) !== 0) this.ctx.irq.pulse(AUX_DEV_IRQ);
    } else if ((this.ram[0] & KBD_ENABLE_KBD_INT) !== 0) {
      this.ctx.irq.pulse(KBD_DEV_IRQ);
    }
  }

  private dataRead(): number {
    this.curcmd = 0;
    let v = 0;
    if (this.ctrlbyte !== undefined) {
      v = this.ctrlbyte;
      this.ctrlbyte = undefined;
    } else if (this.fifo.length > 0) {
      v = this.fifo.shift() as number;
    }
    if (this.fifo.length === 0) {
      this.status &= ~(KBDS_KBD_BUFFER_FULL | KBDS_AUX_BUFFER_FULL);
      this.outport &= ~(KBDO_KBD_OUTFULL | KBDO_AUX_OUTFULL);
    } else {
      this.interrupt(this.auxData);
    }
    this.status &= ~KBDS_CTRL_FLAG;
    return v;
  }

  private dataWrite(val: number): void {
    if ((this.status & KBDS_CTRL_FLAG) !== 0) {
      switch (this.curcmd) {
        case KBDC_SET_COMMAND_BYTE:
          this.ram[0] = val;
          if ((val & KBD_SYS_FLAG_BIT) !== 0) this.status |= KBDS_SYS_FLAG;
          else this.status &= ~KBDS_SYS_FLAG;
          break;
        case KBDC_WRITE_OUTPORT:
          this.outport = val;
          break;
        case KBDC_WRITE_KBD_OUTBUF:
          this.queue(val, false);
          break;
        case KBDC_WRITE_AUX_OUTBUF:
          this.queue(val, true);
          break;
        case KBDC_WRITE_TO_AUX:
          this.mouse.write(val);
          break;
        default:
          if (this.curcmd >= 0x61 && this.curcmd <= 0x7f) this.ram[(this.curcmd - 0x60) & 0x1f] = val;
          break;
      }
      this.curcmd = 0;
      this.status &= ~KBDS_CTRL_FLAG;
      return;
    }
    this.keyboardWrite(val);
  }

  /** A byte for the keyboard: ps2kbd_write()'s answers. */
  private keyboardWrite(val: number): void {
    const ACK = 0xfa;
    if (this.kbdCmd !== 0) {
      const cmd = this.kbdCmd;
      this.kbdCmd = 0;
      this.queue(ACK, false);
      if (cmd === 0xf0 && val === 0) this.queue(0x02, false); // current scancode set
      return;
    }
    switch (val) {
      case 0xff: // reset and self-test
        this.fifo.length = 0;
        this.scanning = true;
        this.queue(ACK, false);
        this.queue(0xaa, false);
        break;
      case 0xf2: // identify
        this.queue(ACK, false);
        this.queue(0xab, false);
        this.queue(0x83, false);
        break;
      case 0xee: // echo
        this.queue(0xee, false);
        break;
      case 0xf4: // enable scanning
      case 0xf5: // disable scanning
        this.scanning = val === 0xf4;
        this.queue(ACK, false);
        break;
      case 0xed: // set LEDs
      case 0xf0: // scancode set
      case 0xf3: // typematic rate
        this.kbdCmd = val;
        this.queue(ACK, false);
        break;
      default:
        this.queue(ACK, false);
        break;
    }
  }

  private command(cmd: number): void {
    this.curcmd = 0;
    this.status |= KBDS_CTRL_FLAG;
    this.ctrlbyte = undefined;
    switch (cmd) {
      case KBDC_GET_COMMAND_BYTE:
        this.ctrlbyte = this.ram[0];
        break;
      case KBDC_TEST_CTRL:
        this.ctrlbyte = 0x55;
        break;
      case KBDC_TEST_AUX_PORT:
      case KBDC_TEST_KBD_PORT:
      case KBDC_READ_INPORT:
        this.ctrlbyte = 0;
        break;
      case KBDC_READ_OUTPORT:
        this.ctrlbyte = this.outport;
        break;
      case KBDC_SET_COMMAND_BYTE:
      case KBDC_WRITE_OUTPORT:
      case KBDC_WRITE_KBD_OUTBUF:
      case KBDC_WRITE_AUX_OUTBUF:
      case KBDC_WRITE_TO_AUX:
        this.curcmd = cmd;
        break;
      case KBDC_DISABLE_KBD_PORT:
        this.ram[0] |= KBD_DISABLE_KBD_PORT;
        break;
      case KBDC_ENABLE_KBD_PORT:
        this.ram[0] &= ~KBD_DISABLE_KBD_PORT;
        break;
      case KBDC_DISABLE_AUX_PORT:
        this.ram[0] |= KBD_DISABLE_AUX_PORT;
        break;
      case KBDC_ENABLE_AUX_PORT:
        this.ram[0] &= ~KBD_DISABLE_AUX_PORT;
        break;
      case KBDC_RESET:
        this.ctx.machine.requestExit({ kind: 'reset', why: 'guest pulsed the reset line through the keyboard controller (0xfe to port 0x64)' });
        break;
      default:
        if (cmd >= 0x21 && cmd <= 0x3f) this.ctrlbyte = this.ram[(cmd - 0x20) & 0x1f];
        break;
    }
    if (this.ctrlbyte !== undefined) {
      this.status |= KBDS_KBD_BUFFER_FULL;
      this.status &= ~KBDS_AUX_BUFFER_FULL;
      this.interrupt(false);
    }
  }
}

export function createAtKbdc(ctx: DeviceContext): AtKbdc {
  return new AtKbdc(ctx);
}
