// Reading a whole file named on the command line without trusting its
// size: /dev/zero or a huge file must not be read into memory until the
// process runs out (-k /dev/zero grew to 4 GB). Reads stop one byte past
// the bound. Pipes and FIFOs stay usable (bhyve -k <(...)), as bhyve's
// fopen(3) allows.

import fs from 'node:fs';

export class FileTooLargeError extends Error {}

/** The contents of `path`, or FileTooLargeError when it has more than
 * `max` bytes. Open/read errors are thrown as they come (errno codes). */
export function readBounded(path: string | Buffer, max: number): Buffer {
  const fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOCTTY);
  try {
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) throw Object.assign(new Error('Is a directory'), { code: 'EISDIR' });
    if (st.isFile() && st.size > max) throw new FileTooLargeError(`larger than ${max} bytes`);
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.alloc(Math.min(64 * 1024, max + 1 - total));
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      total += n;
      if (total > max) throw new FileTooLargeError(`larger than ${max} bytes`);
    }
    return Buffer.concat(chunks, total);
  } finally {
    fs.closeSync(fd);
  }
}
