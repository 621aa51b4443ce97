// Linux evdev (linux/input.h) on an open /dev/input/eventN descriptor: the
// EVIOCG* questions virtio-input answers its config space from, the grab,
// and the 24-byte struct input_event records read(2) and write(2) carry.

import { ioctl, SysError } from './libc.js';

const IOC_WRITE = 1;
const IOC_READ = 2;
const E = 0x45; // 'E'

function ioc(dir: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (E << 8) | nr) >>> 0;
}

export const EVIOCGVERSION = ioc(IOC_READ, 0x01, 4);
export const EVIOCGID = ioc(IOC_READ, 0x02, 8);
export const EVIOCGNAME = (len: number): number => ioc(IOC_READ, 0x06, len);
export const EVIOCGPROP = (len: number): number => ioc(IOC_READ, 0x09, len);
export const EVIOCGBIT = (type: number, len: number): number => ioc(IOC_READ, 0x20 + type, len);
export const EVIOCGABS = (axis: number): number => ioc(IOC_READ, 0x40 + axis, 24);
export const EVIOCGRAB = ioc(IOC_WRITE, 0x90, 4);

/** struct input_event on x86-64: struct timeval (2 x 8), type, code, value. */
export const INPUT_EVENT_SIZE = 24;

export const EV_SYN = 0x00;
export const EV_KEY = 0x01;
export const EV_REL = 0x02;
export const EV_ABS = 0x03;
export const EV_MSC = 0x04;
export const EV_SW = 0x05;
export const EV_LED = 0x11;
export const KEY_CNT = 0x300;
export const REL_CNT = 0x10;
export const ABS_CNT = 0x40;
export const MSC_CNT = 0x08;
export const SW_CNT = 0x11;
export const LED_CNT = 0x10;
export const INPUT_PROP_CNT = 0x20;

export interface InputEvent { type: number; code: number; value: number }
export interface InputId { bustype: number; vendor: number; product: number; version: number }
export interface AbsInfo { value: number; min: number; max: number; fuzz: number; flat: number; res: number }

/** One ioctl that fills `buf`; false when the device refused it. */
function query(fd: number, req: number, buf: Uint8Array): boolean {
  try {
    ioctl(fd, req, buf, 'evdev ioctl');
    return true;
  } catch (e) {
    if (e instanceof SysError) return false;
    throw e;
  }
}

/** The evdev protocol version, or undefined when `fd` is not an evdev. */
export function evdevVersion(fd: number): number | undefined {
  const b = new Uint8Array(4);
  return query(fd, EVIOCGVERSION, b) ? new DataView(b.buffer).getInt32(0, true) : undefined;
}

/** EVIOCGRAB: exclusive access (other readers of the device get nothing).
 * Linux takes any non-null argument as "grab"; a pointer to the int 1 also
 * serves servers that read the argument as _IOW says (FUSE, CUSE). */
export function evdevGrab(fd: number): boolean {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, 1, true);
  return query(fd, EVIOCGRAB, b);
}

export function evdevName(fd: number, max = 127): Uint8Array | undefined {
  const b = new Uint8Array(max + 1);
  if (!query(fd, EVIOCGNAME(max), b)) return undefined;
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? max : nul);
}

export function evdevId(fd: number): InputId | undefined {
  const b = new Uint8Array(8);
  if (!query(fd, EVIOCGID, b)) return undefined;
  const dv = new DataView(b.buffer);
  return { bustype: dv.getUint16(0, true), vendor: dv.getUint16(2, true), product: dv.getUint16(4, true), version: dv.getUint16(6, true) };
}

/** EVIOCGBIT(type) (type 0: the event types) into `out`; false on refusal. */
export function evdevBits(fd: number, type: number, out: Uint8Array): boolean {
  out.fill(0);
  return query(fd, EVIOCGBIT(type, out.length), out);
}

export function evdevProps(fd: number, out: Uint8Array): boolean {
  out.fill(0);
  return query(fd, EVIOCGPROP(out.length), out);
}

export function evdevAbs(fd: number, axis: number): AbsInfo | undefined {
  const b = new Uint8Array(24);
  if (!query(fd, EVIOCGABS(axis), b)) return undefined;
  const dv = new DataView(b.buffer);
  return {
    value: dv.getInt32(0, true), min: dv.getInt32(4, true), max: dv.getInt32(8, true),
    fuzz: dv.getInt32(12, true), flat: dv.getInt32(16, true), res: dv.getInt32(20, true),
  };
}

/** Decodes the input_event records in `bytes` (a whole number of them). */
export function decodeEvents(bytes: Uint8Array, out: InputEvent[] = []): InputEvent[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let o = 0; o + INPUT_EVENT_SIZE <= bytes.length; o += INPUT_EVENT_SIZE) {
    out.push({ type: dv.getUint16(o + 16, true), code: dv.getUint16(o + 18, true), value: dv.getInt32(o + 20, true) });
  }
  return out;
}

/** One input_event record stamped with the current time. */
export function encodeEvent(ev: InputEvent, nowUs: bigint): Uint8Array {
  const b = new Uint8Array(INPUT_EVENT_SIZE);
  const dv = new DataView(b.buffer);
  dv.setBigInt64(0, nowUs / 1_000_000n, true);
  dv.setBigInt64(8, nowUs % 1_000_000n, true);
  dv.setUint16(16, ev.type, true);
  dv.setUint16(18, ev.code, true);
  dv.setInt32(20, ev.value, true);
  return b;
}
