// A host event device for virtio-input tests: /dev/uinput would make one,
// but these machines' kernels are built without it (CONFIG_INPUT_UINPUT is
// off), so fuse-evdev-server.mjs serves one through FUSE: a file whose
// ioctls, reads, writes and poll behave as an evdev's. Needs root and
// /dev/fuse.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

export interface FakeEvdevDevice {
  name: string;
  /** bustype, vendor, product, version */
  id: [number, number, number, number];
  props?: number[];
  /** Codes by event type. */
  bits: Record<number, number[]>;
  /** min, max, fuzz, flat, resolution by axis. */
  abs?: Record<number, [number, number, number, number, number]>;
}

export interface FuseEvdev {
  /** The event device's path (open it as /dev/input/eventN). */
  readonly path: string;
  /** Events the reader wrote (type, code, value). */
  readonly writes: Array<[number, number, number]>;
  /** Whether the reader grabbed the device (EVIOCGRAB). */
  grabbed(): boolean;
  inject(events: Array<[number, number, number]>): void;
  close(): Promise<void>;
}

/** Why a FUSE evdev cannot be served here, or undefined when it can. */
export function fuseEvdevUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to mount a FUSE file system (the test evdev; the kernel has no uinput)';
  try {
    fs.accessSync('/dev/fuse', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return '/dev/fuse is missing (the test evdev is served through FUSE)';
  }
  return undefined;
}

export async function startFuseEvdev(dir: string, dev: FakeEvdevDevice): Promise<FuseEvdev> {
  const server = path.join(import.meta.dirname, 'fuse-evdev-server.mjs');
  const child: ChildProcess = spawn(process.execPath, [server, dir, JSON.stringify(dev)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const writes: Array<[number, number, number]> = [];
  let grab = false;
  const ready = new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`fuse-evdev server exited with ${code}`)));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = JSON.parse(line) as { ready?: string; write?: [number, number, number]; grab?: number };
      if (m.ready) resolve(m.ready);
      if (m.write) writes.push(m.write);
      if (m.grab) grab = true;
    });
  });
  const p = await ready;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    path: p,
    writes,
    grabbed: () => grab,
    inject(events) { child.stdin!.write(`${JSON.stringify({ events })}\n`); },
    async close() {
      child.stdin!.end(`${JSON.stringify({ quit: true })}\n`);
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
