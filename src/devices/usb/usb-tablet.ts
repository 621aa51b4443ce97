// bhyve's USB tablet (usb_mouse.c, `slot.N.device=tablet`): a HID mouse
// with absolute coordinates. VNC pointer events (from fbuf's RFB server)
// become its 6-byte input report: buttons (left, right, middle), X and Y
// scaled from the screen to 0..0x7fff as bhyve scales them
// (0x8000 * x / width), and the wheel (RFB buttons 4 and 5). Only the
// latest report is kept: the interrupt endpoint NAKs until the pointer
// moves or a button changes, then hands the report to the next IN
// transfer.

import {
  TABLET_BOS_DESCRIPTOR, TABLET_CONFIG_DESCRIPTOR, TABLET_CONFIG_VALUE, TABLET_DEVICE_DESCRIPTOR,
  TABLET_HID_DESCRIPTOR, TABLET_INTR_EP, TABLET_MAX, TABLET_REPORT_DESCRIPTOR, TABLET_REPORT_SIZE, tabletString,
} from './hid-descriptors.js';
import { UDESC, UR, UT, type ControlResult, type SetupPacket, type UsbDevice } from './usb-device.js';

// HID class requests.
const HID_GET_REPORT = 0x01;
const HID_GET_IDLE = 0x02;
const HID_GET_PROTOCOL = 0x03;
const HID_SET_REPORT = 0x09;
const HID_SET_IDLE = 0x0a;
const HID_SET_PROTOCOL = 0x0b;
const REPORT_TYPE_INPUT = 1;
const UF_DEVICE_REMOTE_WAKEUP = 1;

/** The controller sends at most wLength bytes of `data`. */
const ok = (data?: Uint8Array, _max = 0): ControlResult => ({ status: 'ok', data });
const STALL: ControlResult = { status: 'stall' };

export class UsbTablet implements UsbDevice {
  readonly name = 'tablet';
  /** bhyve's ue_usbver 3 and ue_usbspeed USB_SPEED_HIGH. */
  readonly usbVersion = 3 as const;
  readonly speed = 3;
  wake?: (ep: number) => void;
  readonly report = new Uint8Array(TABLET_REPORT_SIZE);
  private newData = false;
  idle = 0;
  /** 1 = report protocol (bhyve's default), 0 = boot protocol. */
  protocol = 1;
  private remoteWakeup = false;
  configuration = 0;
  /** Reports handed to the guest, pointer events taken. */
  readonly counts = { reports: 0, events: 0 };

  /** A VNC pointer event: RFB button mask and position on a screen of
   * width x height (umouse_event). */
  pointerEvent(buttons: number, x: number, y: number, width: number, height: number): void {
    const r = this.report;
    r[0] = (buttons & 0x01 ? 0x01 : 0) | (buttons & 0x02 ? 0x04 : 0) | (buttons & 0x04 ? 0x02 : 0);
    const z = buttons & 0x08 ? 1 : buttons & 0x10 ? -1 : 0;
    const sx = scale(x, width);
    const sy = scale(y, height);
    r[1] = sx & 0xff; r[2] = sx >> 8;
    r[3] = sy & 0xff; r[4] = sy >> 8;
    r[5] = z & 0xff;
    this.newData = true;
    this.counts.events++;
    this.wake?.(TABLET_INTR_EP);
  }

  reset(): void {
    this.newData = false;
  }

  interruptIn(ep: number, max: number): Uint8Array | 'nak' | 'stall' {
    if (ep !== TABLET_INTR_EP) return 'stall';
    if (!this.newData) return 'nak';
    this.newData = false;
    this.counts.reports++;
    return this.report; // the controller copies at most `max` bytes
  }

  control(s: SetupPacket, _out?: Uint8Array): ControlResult {
    const len = s.wLength;
    switch ((s.bRequest << 8) | s.bmRequestType) {
      case (UR.GET_CONFIG << 8) | UT.READ_DEVICE:
        return ok(Uint8Array.of(this.configuration), len);
      case (UR.GET_DESCRIPTOR << 8) | UT.READ_DEVICE: {
        const type = s.wValue >> 8;
        const index = s.wValue & 0xff;
        if (type === UDESC.DEVICE) return index === 0 ? ok(TABLET_DEVICE_DESCRIPTOR, len) : STALL;
        if (type === UDESC.CONFIG) return index === 0 ? ok(TABLET_CONFIG_DESCRIPTOR, len) : STALL;
        if (type === UDESC.BOS) return ok(TABLET_BOS_DESCRIPTOR, len);
        if (type === UDESC.STRING) {
          const d = tabletString(index);
          return d ? ok(d, len) : STALL;
        }
        return STALL;
      }
      case (UR.GET_DESCRIPTOR << 8) | UT.READ_INTERFACE: {
        const type = s.wValue >> 8;
        if (s.wIndex !== 0) return STALL;
        if (type === UDESC.REPORT) return ok(TABLET_REPORT_DESCRIPTOR, len);
        if (type === UDESC.HID) return ok(TABLET_HID_DESCRIPTOR, len);
        return STALL;
      }
      case (UR.GET_INTERFACE << 8) | UT.READ_INTERFACE:
        return s.wIndex === 0 ? ok(Uint8Array.of(0), len) : STALL;
      case (UR.GET_STATUS << 8) | UT.READ_DEVICE:
        return ok(Uint8Array.of(this.remoteWakeup ? 2 : 0, 0), len);
      case (UR.GET_STATUS << 8) | UT.READ_INTERFACE:
      case (UR.GET_STATUS << 8) | UT.READ_ENDPOINT:
        return ok(Uint8Array.of(0, 0), len);
      case (UR.SET_ADDRESS << 8) | UT.WRITE_DEVICE:
      case (UR.SET_DESCRIPTOR << 8) | UT.WRITE_DEVICE:
      case (UR.SET_INTERFACE << 8) | UT.WRITE_INTERFACE:
      case (UR.SET_ISOCH_DELAY << 8) | UT.WRITE_DEVICE:
      case (UR.SET_SEL << 8) | UT.WRITE_DEVICE:
      case (UR.SYNCH_FRAME << 8) | UT.WRITE_ENDPOINT:
        return ok();
      case (UR.SET_CONFIG << 8) | UT.WRITE_DEVICE:
        if ((s.wValue & 0xff) !== 0 && (s.wValue & 0xff) !== TABLET_CONFIG_VALUE) return STALL;
        this.configuration = s.wValue & 0xff;
        return ok();
      case (UR.CLEAR_FEATURE << 8) | UT.WRITE_DEVICE:
        if (s.wValue === UF_DEVICE_REMOTE_WAKEUP) this.remoteWakeup = false;
        return ok();
      case (UR.SET_FEATURE << 8) | UT.WRITE_DEVICE:
        if (s.wValue === UF_DEVICE_REMOTE_WAKEUP) this.remoteWakeup = true;
        return ok();
      // HID class requests
      case (HID_GET_REPORT << 8) | UT.READ_CLASS_INTERFACE:
        if (s.wValue >> 8 !== REPORT_TYPE_INPUT || len < TABLET_REPORT_SIZE) return STALL;
        return ok(this.report, len);
      case (HID_GET_IDLE << 8) | UT.READ_CLASS_INTERFACE:
        return ok(Uint8Array.of(this.idle), len);
      case (HID_GET_PROTOCOL << 8) | UT.READ_CLASS_INTERFACE:
        return ok(Uint8Array.of(this.protocol), len);
      case (HID_SET_REPORT << 8) | UT.WRITE_CLASS_INTERFACE:
        return ok();
      case (HID_SET_IDLE << 8) | UT.WRITE_CLASS_INTERFACE:
        this.idle = s.wValue >> 8;
        return ok();
      case (HID_SET_PROTOCOL << 8) | UT.WRITE_CLASS_INTERFACE:
        this.protocol = s.wValue & 0xff;
        return ok();
      default:
        return STALL;
    }
  }
}

/** bhyve's MOUSE_MAX_X * x / width, kept inside the logical range when a
 * client sends a position past the screen's edge. */
function scale(v: number, size: number): number {
  if (size <= 0) return 0;
  return Math.min(TABLET_MAX - 1, Math.floor((TABLET_MAX * Math.min(v, size - 1)) / size));
}

