// The GDB Remote Serial Protocol's framing: `$payload#cs` packets with a
// modulo-256 checksum, `}`-escapes (byte XOR 0x20), run-length encoding
// (`X*n` repeats X n-29 more times), `+`/`-` acknowledgements and the bare
// 0x03 byte that asks the target to stop. The reader takes bytes as they
// come from the socket and hands out whole events; anything malformed is
// reported (the stub answers `-`) and never throws.

/** Largest payload we accept (we announce PacketSize=PACKET_SIZE). */
export const PACKET_SIZE = 4096;

export type PacketEvent =
  | { kind: 'packet'; payload: Buffer }
  | { kind: 'interrupt' }
  | { kind: 'ack' }
  | { kind: 'nak' }
  | { kind: 'bad'; why: string };

export function checksum(bytes: Uint8Array): number {
  let s = 0;
  for (const b of bytes) s = (s + b) & 0xff;
  return s;
}

const ESCAPED = new Set([0x23, 0x24, 0x7d, 0x2a]); // # $ } *

/** `$payload#cs`, with the bytes the framing uses escaped. */
export function encodePacket(payload: string | Uint8Array): Buffer {
  const raw = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : Buffer.from(payload);
  const body: number[] = [];
  for (const b of raw) {
    if (ESCAPED.has(b)) body.push(0x7d, b ^ 0x20);
    else body.push(b);
  }
  const bytes = Buffer.from(body);
  return Buffer.concat([Buffer.from('$'), bytes, Buffer.from(`#${checksum(bytes).toString(16).padStart(2, '0')}`)]);
}

/** Undoes escapes and run-length encoding; undefined if malformed. */
export function decodePayload(body: Uint8Array): Buffer | string {
  const out: number[] = [];
  for (let i = 0; i < body.length; i++) {
    const b = body[i];
    if (b === 0x7d) {
      if (i + 1 >= body.length) return 'escape at the end of the packet';
      out.push(body[++i] ^ 0x20);
    } else if (b === 0x2a) {
      if (out.length === 0) return 'run-length code with nothing to repeat';
      if (i + 1 >= body.length) return 'run-length code at the end of the packet';
      const n = body[++i] - 29;
      if (n < 3 || n > 97) return `bad run-length count ${n}`;
      if (out.length + n > PACKET_SIZE) return 'packet too long';
      const last = out[out.length - 1];
      for (let k = 0; k < n; k++) out.push(last);
    } else {
      out.push(b);
    }
    if (out.length > PACKET_SIZE) return 'packet too long';
  }
  return Buffer.from(out);
}

const hexDigit = (b: number): number => {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  return -1;
};

/** Incremental reader: feed() the socket's bytes, get the events back. */
export class PacketReader {
  private state: 'idle' | 'body' | 'cs1' | 'cs2' = 'idle';
  private body: number[] = [];
  private cs = 0;
  private overflow = false;

  feed(chunk: Uint8Array): PacketEvent[] {
    const events: PacketEvent[] = [];
    for (const b of chunk) {
      switch (this.state) {
        case 'idle':
          if (b === 0x24) { this.state = 'body'; this.body = []; this.overflow = false; }
          else if (b === 0x03) events.push({ kind: 'interrupt' });
          else if (b === 0x2b) events.push({ kind: 'ack' });
          else if (b === 0x2d) events.push({ kind: 'nak' });
          // Anything else between packets is noise: skipped.
          break;
        case 'body':
          if (b === 0x23) this.state = 'cs1';
          else if (b === 0x24) { this.body = []; this.overflow = false; events.push({ kind: 'bad', why: 'packet restarted before its end' }); }
          else if (this.body.length >= 2 * PACKET_SIZE) this.overflow = true;
          else this.body.push(b);
          break;
        case 'cs1': {
          const d = hexDigit(b);
          if (d < 0) { this.state = 'idle'; events.push({ kind: 'bad', why: 'bad checksum digit' }); break; }
          this.cs = d << 4;
          this.state = 'cs2';
          break;
        }
        case 'cs2': {
          this.state = 'idle';
          const d = hexDigit(b);
          if (d < 0) { events.push({ kind: 'bad', why: 'bad checksum digit' }); break; }
          const body = Uint8Array.from(this.body);
          if (this.overflow) { events.push({ kind: 'bad', why: 'packet too long' }); break; }
          if (checksum(body) !== (this.cs | d)) { events.push({ kind: 'bad', why: 'checksum mismatch' }); break; }
          const payload = decodePayload(body);
          if (typeof payload === 'string') events.push({ kind: 'bad', why: payload });
          else events.push({ kind: 'packet', payload });
          break;
        }
      }
    }
    return events;
  }
}

/** Hex helpers for the payloads. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export function fromHex(s: string): Buffer | undefined {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) return undefined;
  return Buffer.from(s, 'hex');
}

/** A little-endian register value of `bytes` bytes, as gdb wants it. */
export function regHex(v: bigint, bytes: number): string {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return b.toString('hex');
}

export function regFromHex(s: string): bigint {
  const b = Buffer.from(s, 'hex');
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  return v;
}
