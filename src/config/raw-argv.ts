// File names that are not UTF-8. Node decodes argv as UTF-8 and replaces
// each invalid byte with U+FFFD, so such a name is lost before our code
// runs, and a string path is encoded back to UTF-8 by fs. Here a word of
// the command line is taken from /proc/self/cmdline instead, each byte that
// is not part of valid UTF-8 kept as the lone surrogate U+DC80..U+DCFF (as
// Python's surrogateescape does); the string travels through the config tree
// and to worker threads unchanged, and fsPath() turns it back into the
// original bytes at the file system call.

import fs from 'node:fs';

const ESCAPE_BASE = 0xdc00;

/** Bytes -> string: valid UTF-8 decoded, other bytes escaped. */
export function decodeBytes(b: Uint8Array): string {
  let out = '';
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    const len = c < 0x80 ? 1 : (c >> 5) === 0x6 ? 2 : (c >> 4) === 0xe ? 3 : (c >> 3) === 0x1e ? 4 : 0;
    if (len > 0 && i + len <= b.length) {
      const seq = b.subarray(i, i + len);
      const text = Buffer.from(seq).toString('utf8');
      // Valid (and shortest-form) exactly when it survives a round trip.
      if (!text.includes('\ufffd') && Buffer.from(text, 'utf8').equals(Buffer.from(seq))) {
        out += text;
        i += len;
        continue;
      }
    }
    out += String.fromCharCode(ESCAPE_BASE + c);
    i++;
  }
  return out;
}

const ESCAPED = /[\udc80-\udcff]/;

/** A path for fs: the string itself, or its original bytes when it holds
 * escaped bytes. */
export function fsPath(s: string): string | Buffer {
  if (!ESCAPED.test(s)) return s;
  const parts: Buffer[] = [];
  let run = '';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0xdc80 && cp <= 0xdcff) {
      if (run) { parts.push(Buffer.from(run, 'utf8')); run = ''; }
      parts.push(Buffer.of(cp - ESCAPE_BASE));
    } else {
      run += ch;
    }
  }
  if (run) parts.push(Buffer.from(run, 'utf8'));
  return Buffer.concat(parts);
}

/** `argv` (the words after the script) with every word that Node decoded
 * lossily replaced by its exact bytes from /proc/self/cmdline. */
export function rawArgv(argv: readonly string[], cmdline?: Buffer): string[] {
  if (!argv.some((a) => a.includes('\ufffd'))) return [...argv];
  let raw: Buffer;
  try { raw = cmdline ?? fs.readFileSync('/proc/self/cmdline'); } catch { return [...argv]; }
  const words: Buffer[] = [];
  for (let start = 0; start < raw.length;) {
    let end = raw.indexOf(0, start);
    if (end < 0) end = raw.length;
    words.push(raw.subarray(start, end));
    start = end + 1;
  }
  const tail = words.slice(words.length - argv.length);
  if (tail.length !== argv.length) return [...argv];
  // Node and Buffer may replace a bad sequence with a different number of U+FFFD.
  const norm = (s: string): string => s.replace(/\ufffd+/g, '\ufffd');
  return argv.map((a, i) => (norm(tail[i].toString('utf8')) === norm(a) ? decodeBytes(tail[i]) : a));
}
