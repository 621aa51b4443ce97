// What the virtio I/O thread unit tests (net-iothread.test.ts,
// blk-iothread.test.ts) share: the compiled worker (dist/, so a suite
// skips before `npm run build`), a scratch folder cleaned up after the
// file, guest RAM in a file the test maps and the worker maps again (as
// the VM's memory file), the helper data a worker gets, and a wait.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';
import type { HelperThreadData } from '../../src/devices/device.js';
import { mmap, PROT_READ, PROT_WRITE } from '../../src/sys/libc.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The compiled worker `dist/devices/virtio/<name>.js`; `present` is false
 * before `npm run build`. */
export function compiledWorker(name: string): { url: URL; present: boolean } {
  const js = path.join(root, 'dist/devices/virtio', `${name}.js`);
  return { url: new URL(`file://${js}`), present: fs.existsSync(js) };
}

/** A scratch folder and what to undo after the test file (in reverse). */
export class IothreadScratch {
  readonly dir: string;
  private readonly undo: Array<() => void> = [];
  private seq = 0;

  constructor(prefix: string) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    afterAll(() => {
      for (const u of this.undo.reverse()) { try { u(); } catch { /* best effort */ } }
      fs.rmSync(this.dir, { recursive: true, force: true });
    });
  }

  /** Runs `fn` after the test file. */
  defer(fn: () => void): void { this.undo.push(fn); }

  /** A new file name in the folder. */
  file(stem: string): string { return path.join(this.dir, `${stem}${this.seq++}`); }

  /** `size` bytes of guest RAM in a new file, mapped here. */
  guestRam(size: number): { memoryPath: string; bytes: Uint8Array } {
    const memoryPath = this.file('mem');
    fs.writeFileSync(memoryPath, Buffer.alloc(0));
    fs.truncateSync(memoryPath, size);
    const fd = fs.openSync(memoryPath, 'r+');
    const map = mmap(size, PROT_READ | PROT_WRITE, fd, 0, 'test RAM');
    fs.closeSync(fd);
    this.defer(() => map.unmap());
    return { memoryPath, bytes: map.bytes };
  }
}

/** A worker's helper data for `size` bytes of RAM at `memoryPath` (low
 * memory only; a doorbell no one rings: the tests' workers run noKick). */
export function workerHelper(memoryPath: string, size: number): HelperThreadData {
  return {
    memoryPath, layout: { lowmem: size, highmem: 0 },
    doorbell: { sab: new SharedArrayBuffer(8), vcpuFd: -1, mmapSize: 0 },
  };
}

/** Waits (letting the event loop run) until `cond` holds. */
export async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
