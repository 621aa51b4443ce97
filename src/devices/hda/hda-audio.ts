// The host side of an hda stream, bhyve's audio.c on Linux: bhyve opens an
// OSS device (/dev/dsp) and sets its format with ioctls; here play= and
// rec= name a plain file or a FIFO of raw PCM, in the stream's format as
// the guest set it (sample size, channels and rate are the guest's; no
// header, no conversion), so audio is testable without a sound card:
//
//   play=PATH   the guest's output samples are appended to PATH (created
//               if missing, truncated when it is a regular file)
//   rec=PATH    the guest's input samples are read from PATH; a regular
//               file gives silence (zero bytes) after its end, a FIFO
//               with nothing to read holds the stream where it is (as
//               bhyve's blocking read of /dev/dsp does)
//
// Both are opened when the device is created, before the sandbox locks
// the process down; afterwards only read(2)/write(2) on the open
// descriptor happen. Writes to a FIFO are non-blocking: what the reader
// has not taken yet waits here and the stream does not fetch more until
// it is gone (the reader paces the stream, as /dev/dsp paces bhyve's).

import fs from 'node:fs';
import { fsPath } from '../../config/raw-argv.js';
import { UserError } from '../../user-error.js';

/** Output bytes kept while a FIFO's reader lags (then the stream waits). */
const MAX_PENDING = 256 * 1024;

function errnoOf(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** audio_params: what the codec's converter format says. */
export interface AudioParams {
  rate: number;
  /** Bytes per sample container (1, 2 or 4). */
  sampleBytes: number;
  channels: number;
}

export class PcmFile {
  private fd: number;
  private readonly fifo: boolean;
  private pending: Uint8Array = new Uint8Array(0);
  private eof = false;
  /** Bytes written to / read from the file. */
  bytes = 0;

  private constructor(readonly path: string, fd: number, fifo: boolean, readonly playback: boolean) {
    this.fd = fd;
    this.fifo = fifo;
  }

  /** audio_init(): opens PATH for playback (write) or recording (read).
   * Throws a UserError naming the file. */
  static open(path: string, playback: boolean): PcmFile {
    const { constants: C } = fs;
    const what = playback ? 'play' : 'rec';
    let fd: number;
    try {
      // O_NONBLOCK: a FIFO opens without waiting for its other end
      // (O_RDWR for playback, so that no reader yet is not ENXIO).
      fd = playback
        ? fs.openSync(fsPath(path), C.O_RDWR | C.O_CREAT | C.O_NONBLOCK, 0o644)
        : fs.openSync(fsPath(path), C.O_RDONLY | C.O_NONBLOCK);
    } catch (e) {
      const code = errnoOf(e);
      if (code === 'ENOENT') throw new UserError(`${what} file ${path} does not exist`);
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') throw new UserError(`${what} file ${path}: permission denied`);
      if (code === 'EISDIR') throw new UserError(`${what} file ${path} is a directory`);
      throw new UserError(`${what} file ${path}: ${e instanceof Error ? e.message : String(e)}`);
    }
    let fifo = false;
    try {
      const st = fs.fstatSync(fd);
      fifo = st.isFIFO();
      if (!fifo && !st.isFile() && !st.isCharacterDevice()) throw new UserError(`${what} file ${path} is neither a file nor a FIFO`);
      if (playback && st.isFile()) fs.ftruncateSync(fd, 0);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    return new PcmFile(path, fd, fifo, playback);
  }

  /** True while earlier output still waits for the FIFO's reader. */
  get blocked(): boolean {
    if (this.pending.length > 0) this.flush();
    return this.pending.length > 0;
  }

  /** audio_playback(): writes (or queues) the samples. */
  play(data: Uint8Array): void {
    if (this.fd < 0) return;
    if (this.pending.length > 0) {
      const both = new Uint8Array(Math.min(this.pending.length + data.length, MAX_PENDING));
      both.set(this.pending.subarray(0, both.length));
      both.set(data.subarray(0, both.length - this.pending.length), this.pending.length);
      this.pending = both;
      this.flush();
      return;
    }
    const n = this.writeSome(data);
    if (n < data.length) this.pending = data.slice(n, n + MAX_PENDING);
  }

  private flush(): void {
    const n = this.writeSome(this.pending);
    this.pending = this.pending.subarray(n);
  }

  private writeSome(data: Uint8Array): number {
    let off = 0;
    while (off < data.length) {
      try {
        const n = fs.writeSync(this.fd, data, off, data.length - off);
        if (n <= 0) break;
        off += n;
        this.bytes += n;
      } catch (e) {
        if (errnoOf(e) === 'EAGAIN') break;
        // A reader that went away (EPIPE) or a full disk: the samples are
        // dropped, as a sound card plays on regardless.
        return data.length;
      }
    }
    return off;
  }

  /** audio_record(): fills `buf` and returns the bytes that are samples;
   * past a regular file's end the rest is silence, a FIFO gives what it
   * has (possibly 0). */
  record(buf: Uint8Array): number {
    if (this.fd < 0) return 0;
    let off = 0;
    while (off < buf.length && !this.eof) {
      let n: number;
      try {
        n = fs.readSync(this.fd, buf, off, buf.length - off, null);
      } catch (e) {
        if (errnoOf(e) === 'EAGAIN') break;
        n = 0;
      }
      if (n <= 0) {
        // A FIFO without a writer reads as end of file until one comes.
        if (!this.fifo) this.eof = true;
        break;
      }
      off += n;
      this.bytes += n;
    }
    if (off < buf.length && this.eof) {
      buf.fill(0, off);
      return buf.length;
    }
    return off;
  }

  close(): void {
    if (this.fd < 0) return;
    if (this.pending.length > 0) this.flush();
    try { fs.closeSync(this.fd); } catch { /* already gone */ }
    this.fd = -1;
  }
}
