// A Linux event device (evdev) served from user space through FUSE, for
// hosts whose kernel has no uinput (CONFIG_INPUT_UINPUT off, as on these
// machines): mounts a FUSE file system with one regular file, "event0",
// whose open/read/write/poll/ioctl behave as /dev/input/eventN's do for the
// calls virtio-input makes: EVIOCGVERSION, EVIOCGID, EVIOCGNAME,
// EVIOCGPROP, EVIOCGBIT, EVIOCGABS, EVIOCGRAB; reads return the queued
// struct input_event records (EAGAIN when none and O_NONBLOCK), poll(2)
// reports them (FUSE_NOTIFY_POLL wakes a waiting poller), writes are the
// records the reader sends back (LEDs).
//
// Run as root: node fuse-evdev-server.mjs MOUNTDIR 'DEVICE-JSON'
//   DEVICE-JSON: { name, id: [bus, vendor, product, version], props: [codes],
//                  bits: { "<type>": [codes] }, abs: { "<axis>": [min, max, fuzz, flat, res] } }
// Control on stdin, one JSON object a line: {"events": [[type, code, value], ...]}
// queues events; {"quit": true} unmounts and exits. Reports on stdout, one
// JSON object a line: {"ready": PATH}, {"open": FLAGS}, {"grab": 1},
// {"ioctl": CMD}, {"write": [type, code, value]}.
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import readline from 'node:readline';

const [dir, deviceJson] = process.argv.slice(2);
const dev = JSON.parse(deviceJson);
const report = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

const OP = { LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, OPEN: 14, READ: 15, WRITE: 16, STATFS: 17, RELEASE: 18,
  FSYNC: 20, GETXATTR: 22, LISTXATTR: 23, FLUSH: 25, INIT: 26, OPENDIR: 27, READDIR: 28, RELEASEDIR: 29, ACCESS: 34,
  INTERRUPT: 36, DESTROY: 38, IOCTL: 39, POLL: 40, BATCH_FORGET: 42 };
const ENOENT = 2, EAGAIN = 11, EINVAL = 22, ENOTTY = 25, ENOSYS = 38;
const O_NONBLOCK = 0o4000;
const FILE_INO = 2;
const EVENT_SIZE = 24;

const fuse = fs.openSync('/dev/fuse', 'r+');
fs.mkdirSync(dir, { recursive: true });
const m = spawnSync('mount', ['-t', 'fuse', '-o', `fd=3,rootmode=40000,user_id=0,group_id=0`, 'fuse-evdev', dir],
  { stdio: ['ignore', 'inherit', 'inherit', fuse] });
if (m.status !== 0) { process.stderr.write('fuse-evdev: mount failed\n'); process.exit(2); }

/** Queued input_event records not read yet. */
let queued = Buffer.alloc(0);
/** Pollers waiting for data (FUSE poll handles). */
const pollers = new Set();
/** Blocking reads waiting for data: [unique, size]. */
const waitingReads = [];

function reply(unique, error, payload = Buffer.alloc(0)) {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(16 + payload.length, 0);
  h.writeInt32LE(error ? -error : 0, 4);
  h.writeBigUInt64LE(unique, 8);
  try { fs.writeSync(fuse, Buffer.concat([h, payload])); } catch { /* request interrupted or unmounted */ }
}

function notifyPoll(kh) {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(24, 0);
  b.writeInt32LE(1, 4); // FUSE_NOTIFY_POLL
  b.writeBigUInt64LE(0n, 8);
  b.writeBigUInt64LE(kh, 16);
  try { fs.writeSync(fuse, b); } catch { /* gone */ }
}

function attr(ino) {
  const a = Buffer.alloc(88);
  a.writeBigUInt64LE(BigInt(ino), 0);
  a.writeUInt32LE(ino === 1 ? 0o40755 : 0o100600, 60);
  a.writeUInt32LE(1, 64); // nlink
  a.writeUInt32LE(4096, 80); // blksize
  return a;
}

function takeEvents(max) {
  const n = Math.min(queued.length, Math.floor(max / EVENT_SIZE) * EVENT_SIZE);
  const out = queued.subarray(0, n);
  queued = queued.subarray(n);
  return Buffer.from(out);
}

function bitmap(codes, size) {
  const b = Buffer.alloc(size);
  for (const c of codes ?? []) if (c >> 3 < size) b[c >> 3] |= 1 << (c & 7);
  return b;
}

function ioctl(cmd, outSize) {
  const type = (cmd >>> 8) & 0xff, nr = cmd & 0xff;
  if (type !== 0x45) return [ENOTTY];
  if (nr === 0x01) { const b = Buffer.alloc(4); b.writeInt32LE(0x010001, 0); return [0, b]; }
  if (nr === 0x02) { const b = Buffer.alloc(8); dev.id.forEach((v, i) => b.writeUInt16LE(v, 2 * i)); return [0, b]; }
  if (nr === 0x06) {
    const s = Buffer.concat([Buffer.from(dev.name), Buffer.alloc(1)]).subarray(0, outSize);
    return [s.length, s];
  }
  if (nr === 0x09) return [outSize, bitmap(dev.props, outSize)];
  if (nr >= 0x20 && nr < 0x40) {
    const t = nr - 0x20;
    const codes = t === 0 ? [0, ...Object.keys(dev.bits).map(Number)] : dev.bits[String(t)];
    return [outSize, bitmap(codes, outSize)];
  }
  if (nr >= 0x40 && nr < 0x80) {
    const a = dev.abs?.[String(nr - 0x40)];
    if (!a) return [EINVAL];
    const b = Buffer.alloc(24);
    [0, ...a].forEach((v, i) => b.writeInt32LE(v, 4 * i));
    return [0, b];
  }
  if (nr === 0x90) { report({ grab: 1 }); return [0]; }
  return [EINVAL];
}

function serve(req) {
  const len = req.readUInt32LE(0), opcode = req.readUInt32LE(4), unique = req.readBigUInt64LE(8);
  const nodeid = Number(req.readBigUInt64LE(16));
  const body = req.subarray(40, len);
  switch (opcode) {
    case OP.INIT: {
      const o = Buffer.alloc(64);
      o.writeUInt32LE(7, 0);
      o.writeUInt32LE(31, 4);
      o.writeUInt32LE(0, 8); // max_readahead
      o.writeUInt32LE(0, 12); // flags
      o.writeUInt16LE(16, 16);
      o.writeUInt16LE(12, 18);
      o.writeUInt32LE(4096, 20); // max_write
      o.writeUInt32LE(1, 24); // time_gran
      return reply(unique, 0, o);
    }
    case OP.LOOKUP: {
      const name = body.subarray(0, body.indexOf(0)).toString();
      if (nodeid !== 1 || name !== 'event0') return reply(unique, ENOENT);
      const e = Buffer.alloc(40);
      e.writeBigUInt64LE(BigInt(FILE_INO), 0);
      return reply(unique, 0, Buffer.concat([e, attr(FILE_INO)]));
    }
    case OP.GETATTR: case OP.SETATTR:
      return reply(unique, 0, Buffer.concat([Buffer.alloc(16), attr(nodeid)]));
    case OP.OPEN: {
      report({ open: body.readUInt32LE(0) });
      const o = Buffer.alloc(16);
      o.writeUInt32LE(1 | 4, 8); // FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE
      return reply(unique, 0, o);
    }
    case OP.READ: {
      const size = body.readUInt32LE(16), flags = body.readUInt32LE(32);
      if (queued.length >= EVENT_SIZE) return reply(unique, 0, takeEvents(size));
      if (flags & O_NONBLOCK) return reply(unique, EAGAIN);
      waitingReads.push([unique, size]);
      return undefined;
    }
    case OP.WRITE: {
      const size = body.readUInt32LE(16);
      const data = body.subarray(40, 40 + size);
      for (let o = 0; o + EVENT_SIZE <= data.length; o += EVENT_SIZE) {
        report({ write: [data.readUInt16LE(o + 16), data.readUInt16LE(o + 18), data.readInt32LE(o + 20)] });
      }
      const w = Buffer.alloc(8);
      w.writeUInt32LE(size, 0);
      return reply(unique, 0, w);
    }
    case OP.IOCTL: {
      const cmd = body.readUInt32LE(12), outSize = body.readUInt32LE(28);
      report({ ioctl: cmd });
      const [res, out] = ioctl(cmd, outSize);
      if (out === undefined && res > 0) return reply(unique, res);
      const o = Buffer.alloc(16);
      o.writeInt32LE(out === undefined ? 0 : res, 0);
      return reply(unique, 0, Buffer.concat([o, (out ?? Buffer.alloc(0)).subarray(0, outSize)]));
    }
    case OP.POLL: {
      const kh = body.readBigUInt64LE(8), flags = body.readUInt32LE(16);
      if (flags & 1) pollers.add(kh);
      const o = Buffer.alloc(8);
      o.writeUInt32LE(queued.length >= EVENT_SIZE ? 1 : 0, 0); // POLLIN
      return reply(unique, 0, o);
    }
    case OP.FLUSH: case OP.RELEASE: case OP.FSYNC: case OP.ACCESS: case OP.RELEASEDIR:
      return reply(unique, 0);
    case OP.FORGET: case OP.BATCH_FORGET: case OP.INTERRUPT:
      return undefined;
    case OP.DESTROY:
      return reply(unique, 0);
    default:
      return reply(unique, ENOSYS);
  }
}

function dataArrived() {
  while (waitingReads.length && queued.length >= EVENT_SIZE) {
    const [unique, size] = waitingReads.shift();
    reply(unique, 0, takeEvents(size));
  }
  for (const kh of pollers) notifyPoll(kh);
  pollers.clear();
}

let quitting = false;
function quit() {
  if (quitting) return;
  quitting = true;
  spawnSync('umount', ['-l', dir], { stdio: 'ignore' });
  try { fs.closeSync(fuse); } catch { /* closed */ }
  process.exit(0);
}

const buf = Buffer.alloc(128 * 1024);
function readLoop() {
  fs.read(fuse, buf, 0, buf.length, null, (err, n) => {
    if (err) {
      if (err.code === 'EINTR' || err.code === 'EAGAIN') return readLoop();
      if (!quitting) quit(); // ENODEV: unmounted
      return;
    }
    try { serve(Buffer.from(buf.subarray(0, n))); } catch (e) { process.stderr.write(`fuse-evdev: ${e.stack}\n`); }
    readLoop();
  });
}
readLoop();

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const c = JSON.parse(line);
  if (c.events) {
    const recs = c.events.map(([type, code, value]) => {
      const r = Buffer.alloc(EVENT_SIZE);
      const us = BigInt(Date.now()) * 1000n;
      r.writeBigInt64LE(us / 1000000n, 0);
      r.writeBigInt64LE(us % 1000000n, 8);
      r.writeUInt16LE(type, 16);
      r.writeUInt16LE(code, 18);
      r.writeInt32LE(value, 20);
      return r;
    });
    queued = Buffer.concat([queued, ...recs]);
    dataArrived();
  }
  if (c.quit) quit();
}).on('close', quit);
process.on('SIGTERM', quit);
report({ ready: `${dir}/event0` });
