// Ethernet/IPv4/UDP/TCP/DHCP frames built and parsed by hand, for tests
// that play a guest on a NIC backend (slirp) or check a NIC's frames.

export const BCAST = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export function ip4(s: string): Uint8Array {
  return Uint8Array.from(s.split('.').map(Number));
}

export function ipStr(b: Uint8Array, off = 0): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

function sum16(data: Uint8Array, start = 0, end = data.length, init = 0): number {
  let s = init;
  for (let i = start; i + 1 < end; i += 2) s += (data[i] << 8) | data[i + 1];
  if ((end - start) & 1) s += data[end - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** The Internet checksum of data[start, end). */
export function inetChecksum(data: Uint8Array, start = 0, end = data.length, init = 0): number {
  return ~sum16(data, start, end, init) & 0xffff;
}

export function ether(dst: Uint8Array, src: Uint8Array, type: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(payload, 14);
  return f;
}

export function ipv4(src: Uint8Array, dst: Uint8Array, proto: number, payload: Uint8Array, id = 1): Uint8Array {
  const p = new Uint8Array(20 + payload.length);
  const dv = new DataView(p.buffer);
  p[0] = 0x45;
  dv.setUint16(2, p.length);
  dv.setUint16(4, id);
  p[8] = 64;
  p[9] = proto;
  p.set(src, 12);
  p.set(dst, 16);
  dv.setUint16(10, inetChecksum(p, 0, 20));
  p.set(payload, 20);
  return p;
}

function pseudo(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  const ph = new Uint8Array(12);
  ph.set(src, 0);
  ph.set(dst, 4);
  ph[9] = proto;
  ph[10] = len >> 8;
  ph[11] = len & 0xff;
  return sum16(ph);
}

export function udp(src: Uint8Array, dst: Uint8Array, sport: number, dport: number, data: Uint8Array): Uint8Array {
  const u = new Uint8Array(8 + data.length);
  const dv = new DataView(u.buffer);
  dv.setUint16(0, sport);
  dv.setUint16(2, dport);
  dv.setUint16(4, u.length);
  u.set(data, 8);
  const c = inetChecksum(u, 0, u.length, pseudo(src, dst, 17, u.length));
  dv.setUint16(6, c === 0 ? 0xffff : c);
  return u;
}

export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

export function tcp(src: Uint8Array, dst: Uint8Array, sport: number, dport: number, seq: number, ack: number, flags: number, data = new Uint8Array(0)): Uint8Array {
  const t = new Uint8Array(20 + data.length);
  const dv = new DataView(t.buffer);
  dv.setUint16(0, sport);
  dv.setUint16(2, dport);
  dv.setUint32(4, seq >>> 0);
  dv.setUint32(8, ack >>> 0);
  t[12] = 5 << 4;
  t[13] = flags;
  dv.setUint16(14, 65535);
  t.set(data, 20);
  dv.setUint16(16, inetChecksum(t, 0, t.length, pseudo(src, dst, 6, t.length)));
  return t;
}

/** A DHCP DISCOVER (type 1) or REQUEST (type 3) from `mac`. */
export function dhcp(mac: Uint8Array, type: 1 | 3, xid: number, requested?: Uint8Array, server?: Uint8Array): Uint8Array {
  const b = new Uint8Array(240 + 32);
  const dv = new DataView(b.buffer);
  b[0] = 1; // BOOTREQUEST
  b[1] = 1;
  b[2] = 6;
  dv.setUint32(4, xid);
  dv.setUint16(10, 0x8000); // broadcast
  b.set(mac, 28);
  dv.setUint32(236, 0x63825363);
  let o = 240;
  b[o++] = 53; b[o++] = 1; b[o++] = type;
  if (requested) { b[o++] = 50; b[o++] = 4; b.set(requested, o); o += 4; }
  if (server) { b[o++] = 54; b[o++] = 4; b.set(server, o); o += 4; }
  b[o++] = 255;
  return b.subarray(0, o);
}

export interface Parsed {
  dst: Uint8Array; src: Uint8Array; type: number;
  ip?: { src: string; dst: string; proto: number; payload: Uint8Array; header: Uint8Array };
  udp?: { sport: number; dport: number; data: Uint8Array };
  tcp?: { sport: number; dport: number; seq: number; ack: number; flags: number; data: Uint8Array };
}

export function parse(f: Uint8Array): Parsed {
  const dv = new DataView(f.buffer, f.byteOffset, f.length);
  const p: Parsed = { dst: f.slice(0, 6), src: f.slice(6, 12), type: dv.getUint16(12) };
  if (p.type !== 0x0800 || f.length < 34) return p;
  const ihl = (f[14] & 15) * 4;
  const total = dv.getUint16(16);
  const ipEnd = Math.min(f.length, 14 + total);
  const payload = f.subarray(14 + ihl, ipEnd);
  p.ip = { src: ipStr(f, 26), dst: ipStr(f, 30), proto: f[23], payload, header: f.subarray(14, 14 + ihl) };
  const pv = new DataView(payload.buffer, payload.byteOffset, payload.length);
  if (f[23] === 17 && payload.length >= 8) p.udp = { sport: pv.getUint16(0), dport: pv.getUint16(2), data: payload.subarray(8) };
  if (f[23] === 6 && payload.length >= 20) {
    const off = (payload[12] >> 4) * 4;
    p.tcp = { sport: pv.getUint16(0), dport: pv.getUint16(2), seq: pv.getUint32(4), ack: pv.getUint32(8), flags: payload[13], data: payload.subarray(off) };
  }
  return p;
}

/** DHCP options of a reply's UDP data, by code. */
export function dhcpOptions(d: Uint8Array): Map<number, Uint8Array> {
  const m = new Map<number, Uint8Array>();
  let o = 240;
  while (o < d.length && d[o] !== 255) {
    if (d[o] === 0) { o++; continue; }
    m.set(d[o], d.subarray(o + 2, o + 2 + d[o + 1]));
    o += 2 + d[o + 1];
  }
  return m;
}
