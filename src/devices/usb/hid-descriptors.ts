// The USB tablet's descriptors, byte for byte as bhyve's usb_mouse.c
// declares them: device (USB 3.0, vendor 0xFB5D product 0x0001), one
// configuration with one HID boot-mouse interface and its interrupt IN
// endpoint 1 (8 bytes, bInterval 10) plus the SuperSpeed companion, the
// BOS with the SuperSpeed capability, the strings, and the HID report
// descriptor: 3 buttons, absolute X and Y in 0..0x7fff, a relative wheel.

import { UDESC } from './usb-device.js';

export const TABLET_VENDOR = 0xfb5d;
export const TABLET_PRODUCT = 0x0001;
/** The interrupt IN endpoint number (bhyve's UMOUSE_INTR_ENDPT). */
export const TABLET_INTR_EP = 1;
/** Size of one input report: buttons, X, Y (16 bits each), wheel. */
export const TABLET_REPORT_SIZE = 6;
/** The logical range of X and Y is 0..TABLET_MAX - 1 (bhyve's MOUSE_MAX_X). */
export const TABLET_MAX = 0x8000;

export const TABLET_REPORT_DESCRIPTOR = Uint8Array.from([
  0x05, 0x01, //   USAGE_PAGE (Generic Desktop)
  0x09, 0x02, //   USAGE (Mouse)
  0xa1, 0x01, //   COLLECTION (Application)
  0x09, 0x01, //     USAGE (Pointer)
  0xa1, 0x00, //     COLLECTION (Physical)
  0x05, 0x09, //       USAGE_PAGE (Button)
  0x19, 0x01, //       USAGE_MINIMUM (Button 1)
  0x29, 0x03, //       USAGE_MAXIMUM (Button 3)
  0x15, 0x00, //       LOGICAL_MINIMUM (0)
  0x25, 0x01, //       LOGICAL_MAXIMUM (1)
  0x75, 0x01, //       REPORT_SIZE (1)
  0x95, 0x03, //       REPORT_COUNT (3)
  0x81, 0x02, //       INPUT (Data,Var,Abs): 3 buttons
  0x75, 0x05, //       REPORT_SIZE (5)
  0x95, 0x01, //       REPORT_COUNT (1)
  0x81, 0x03, //       INPUT (Cnst,Var,Abs): padding
  0x05, 0x01, //       USAGE_PAGE (Generic Desktop)
  0x09, 0x30, //       USAGE (X)
  0x09, 0x31, //       USAGE (Y)
  0x35, 0x00, //       PHYSICAL_MINIMUM (0)
  0x46, 0xff, 0x7f, // PHYSICAL_MAXIMUM (0x7fff)
  0x15, 0x00, //       LOGICAL_MINIMUM (0)
  0x26, 0xff, 0x7f, // LOGICAL_MAXIMUM (0x7fff)
  0x75, 0x10, //       REPORT_SIZE (16)
  0x95, 0x02, //       REPORT_COUNT (2)
  0x81, 0x02, //       INPUT (Data,Var,Abs)
  0x05, 0x01, //       USAGE_PAGE (Generic Desktop)
  0x09, 0x38, //       USAGE (Wheel)
  0x35, 0x00, //       PHYSICAL_MINIMUM (0)
  0x45, 0x00, //       PHYSICAL_MAXIMUM (0)
  0x15, 0x81, //       LOGICAL_MINIMUM (-127)
  0x25, 0x7f, //       LOGICAL_MAXIMUM (127)
  0x75, 0x08, //       REPORT_SIZE (8)
  0x95, 0x01, //       REPORT_COUNT (1)
  0x81, 0x06, //       INPUT (Data,Var,Rel)
  0xc0, //           END_COLLECTION
  0xc0, //         END_COLLECTION
]);

// String descriptor indexes (bhyve's UMSTR_*).
export const STR_MANUFACTURER = 1;
export const STR_PRODUCT = 2;
export const STR_SERIAL = 3;
export const STR_CONFIG = 4;
/** Index 0 is the language list (0x0409, US English). */
export const TABLET_STRINGS = ['', 'BHYVE', 'HID Tablet', '01', 'HID Tablet Device'];

export const TABLET_DEVICE_DESCRIPTOR = Uint8Array.from([
  18, UDESC.DEVICE,
  0x00, 0x03, // bcdUSB 3.0
  0, 0, 0, // class, subclass, protocol: per interface
  8, // bMaxPacketSize0
  TABLET_VENDOR & 0xff, TABLET_VENDOR >> 8,
  TABLET_PRODUCT & 0xff, TABLET_PRODUCT >> 8,
  0, 0, // bcdDevice
  STR_MANUFACTURER, STR_PRODUCT, STR_SERIAL,
  1, // bNumConfigurations
]);

const CONFIG_LENGTH = 9 + 9 + 9 + 7 + 6;
export const TABLET_CONFIG_VALUE = 1;

export const TABLET_CONFIG_DESCRIPTOR = Uint8Array.from([
  // configuration
  9, UDESC.CONFIG, CONFIG_LENGTH, 0, 1 /* interfaces */, TABLET_CONFIG_VALUE, STR_CONFIG,
  0x80 | 0x20 /* bus powered, remote wakeup */, 0 /* bMaxPower */,
  // interface 0: HID, boot subclass, mouse protocol
  9, UDESC.INTERFACE, 0, 0, 1 /* endpoints */, 0x03, 0x01, 0x02, 0,
  // HID descriptor (bcdHID bytes as bhyve writes them)
  9, UDESC.HID, 0x01, 0x10, 0 /* country */, 1, UDESC.REPORT, TABLET_REPORT_DESCRIPTOR.length, 0,
  // endpoint 1 IN, interrupt, 8 bytes, bInterval 10
  7, UDESC.ENDPOINT, 0x80 | TABLET_INTR_EP, 0x03, 8, 0, 0x0a,
  // SuperSpeed endpoint companion
  6, UDESC.ENDPOINT_SS_COMP, 0, 0, 0, 0,
]);

/** The HID descriptor alone (GET_DESCRIPTOR HID on the interface). */
export const TABLET_HID_DESCRIPTOR = TABLET_CONFIG_DESCRIPTOR.slice(18, 27);

export const TABLET_BOS_DESCRIPTOR = Uint8Array.from([
  5, UDESC.BOS, 15, 0, 1,
  // SuperSpeed USB device capability
  10, UDESC.DEVICE_CAPABILITY, 3, 0, 0x08, 0x00, 3, 0x0a, 0x20, 0x00,
]);

/** String descriptor `index` (UTF-16LE), or undefined past the last one. */
export function tabletString(index: number): Uint8Array | undefined {
  if (index === 0) return Uint8Array.from([4, UDESC.STRING, 0x09, 0x04]);
  const s = TABLET_STRINGS[index];
  if (s === undefined) return undefined;
  const d = new Uint8Array(2 + 2 * s.length);
  d[0] = d.length;
  d[1] = UDESC.STRING;
  for (let i = 0; i < s.length; i++) d[2 + 2 * i] = s.charCodeAt(i);
  return d;
}
