// Host side of virtio-input (bhyve's pci_virtio_input.c): the evdev device
// named by the slot's `path`, split across our two threads as the tap is
// (net-backend.ts):
//   main thread   openInputBackend(): opens the device O_RDWR|O_NONBLOCK,
//                 checks that it is an evdev (EVIOCGVERSION) and grabs it
//                 (EVIOCGRAB), as bhyve's pci_vtinput_init; then the fd
//                 waker (../fd-waker.ts) kicks the device thread when it
//                 becomes readable after the device thread read it dry.
//   device thread attachInputBackend(transfer): an EvdevHost that reads
//                 events, answers the config-space questions with EVIOCG*
//                 ioctls when the guest asks them (as bhyve does, at run
//                 time: the sandbox allows ioctl, read and write on an open
//                 descriptor) and writes the guest's status events back.
// The descriptor is opened before the sandbox goes up and closed by the
// main thread after the device thread stopped.

import * as fs from 'node:fs';
import { UserError } from '../../user-error.js';
import type { ConfigTree } from '../../config/tree.js';
import { readFd } from '../../sys/tap.js';
import { armFdWaker, startFdWaker } from '../fd-waker.js';
import {
  INPUT_EVENT_SIZE, decodeEvents, encodeEvent, evdevAbs, evdevBits, evdevGrab, evdevId, evdevName, evdevProps,
  evdevVersion, type AbsInfo, type InputEvent, type InputId,
} from '../../sys/evdev.js';

const EAGAIN = 11;
/** Events read per read(2). */
const READ_EVENTS = 64;

export class InputBackendError extends UserError { override readonly name: string = 'InputBackendError'; }

export interface InputBackendTransfer {
  /** The evdev descriptor (process-wide), read, written and asked by the device thread. */
  fd: number;
  path: string;
  /** The fd waker's flags (fd-waker.ts), shared with the main thread. */
  wake: SharedArrayBuffer;
}

export interface InputBackendHost {
  readonly transfer: InputBackendTransfer;
  close(): Promise<void>;
}

/** What the device model asks of the host device (tests provide fakes). */
export interface EvdevHost {
  /** The events waiting now (none: the waker is armed). */
  readEvents(): InputEvent[];
  /** Writes one event to the device (an LED from the guest). False when refused. */
  write(ev: InputEvent): boolean;
  name(): Uint8Array | undefined;
  id(): InputId | undefined;
  /** Fills `out` with the property bitmap; false when the device refuses. */
  props(out: Uint8Array): boolean;
  /** Fills `out` with the code bitmap of event type `type`; false on refusal. */
  bits(type: number, out: Uint8Array): boolean;
  abs(axis: number): AbsInfo | undefined;
}

/** Opens the evdev of the virtio-input slot `node` (main thread). */
export function openInputBackend(config: ConfigTree, node: string, kick: () => void): InputBackendHost {
  const path = config.get(`${node}.path`);
  if (path === undefined) throw new InputBackendError('missing path (use virtio-input,/dev/input/eventN)');
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such device' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (e as Error).message;
    throw new InputBackendError(`failed to open ${path}: ${why}`);
  }
  if (evdevVersion(fd) === undefined) {
    fs.closeSync(fd);
    throw new InputBackendError(`${path} is no evdev (use an event device such as /dev/input/event0)`);
  }
  if (!evdevGrab(fd)) {
    fs.closeSync(fd);
    throw new InputBackendError(`failed to grab ${path} (another program holds it)`);
  }
  return startInputWaker(fd, path, kick);
}

function startInputWaker(fd: number, path: string, kick: () => void): InputBackendHost {
  const waker = startFdWaker(fd, kick);
  return { transfer: { fd, path, wake: waker.wake }, close: () => waker.close() };
}

/** The device thread's EvdevHost for a transfer. */
export function attachInputBackend(t: InputBackendTransfer): EvdevHost & { readonly readErrors: number } {
  const ctl = new Int32Array(t.wake);
  const fd = t.fd;
  const buf = new Uint8Array(READ_EVENTS * INPUT_EVENT_SIZE);
  let readErrors = 0;
  const arm = (): void => armFdWaker(ctl);
  return {
    readEvents(): InputEvent[] {
      const out: InputEvent[] = [];
      for (;;) {
        const n = readFd(fd, buf);
        if (n <= 0) {
          if (n < 0 && n !== -EAGAIN) readErrors++;
          arm();
          return out;
        }
        decodeEvents(buf.subarray(0, n - (n % INPUT_EVENT_SIZE)), out);
        if (n < buf.length) { arm(); return out; }
      }
    },
    write(ev: InputEvent): boolean {
      try {
        fs.writeSync(fd, encodeEvent(ev, BigInt(Date.now()) * 1000n));
        return true;
      } catch {
        return false;
      }
    },
    name: () => evdevName(fd),
    id: () => evdevId(fd),
    props: (out) => evdevProps(fd, out),
    bits: (type, out) => evdevBits(fd, type, out),
    abs: (axis) => evdevAbs(fd, axis),
    get readErrors() { return readErrors; },
  };
}
