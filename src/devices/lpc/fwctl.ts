// bhyve's firmware control interface (usr.sbin/bhyve/fwctl.c), the guest
// side of `lpc.fwcfg=bhyve`: bhyve's UEFI firmware (BhyveFwCtlLib) reads
// configuration nodes through it. As bhyve, it exists only when booting
// from a boot ROM.
//
//   0x510  16-bit write of 0: (re)start; the next four byte reads of 0x511
//          return the signature 'B' 'H' 'Y' 'V'.
//          32-bit writes: a request, word by word: its size in bytes (the
//          12-byte header included), the operation, a transaction id, then
//          size - 12 bytes of data in 4-byte words.
//   0x511  32-bit reads: the reply, word by word: its size (a 16-byte header
//          and the data rounded up to 4 bytes), the operation, the
//          transaction id, an errno, then the data (the last word zero-
//          padded).
//
// Operations: OP_GET (3) of a node name returns the node's length as a
// 64-bit size_t followed by its value; OP_GET_LEN (4) returns only the
// length; any other operation, an unknown node or a name longer than 80
// bytes return an errno (ENOENT, E2BIG) and no data. The node name matches
// as bhyve's strncmp(name, oid, bytes sent). Nodes: hw.ncpu (a 4-byte int,
// the vCPU count), as bhyve's fwctl.c.
//
// Reads out of turn return all-ones (0xff / 0xffffffff) and writes out of
// turn are dropped, as in fwctl.c; a request size below 12, which makes
// bhyve exit with status 4, is dropped here (the request starts over) so a
// guest cannot stop the VMM through it.

import type { AccessSize, Device, DeviceContext } from '../device.js';

export const FWCTL_OUT = 0x510;
export const FWCTL_IN = 0x511;
export const OP_NULL = 1;
export const OP_ECHO = 2;
export const OP_GET = 3;
export const OP_GET_LEN = 4;
export const OP_SET = 5;
export const FWCTL_ENOENT = 2;
export const FWCTL_E2BIG = 7;
/** fget_start's FGET_STRSZ: the longest name accepted. */
export const FGET_STRSZ = 80;
const SIGNATURE = [0x42, 0x48, 0x59, 0x56]; // "BHYV"
const REQ_HEADER = 12;
const RESP_HEADER = 16;

type State = 'identWait' | 'identSend' | 'req' | 'resp';

export interface FwctlNode {
  oid: string;
  data: Uint8Array;
}

export class Fwctl implements Device {
  readonly name = 'fwctl';
  private state: State = 'identWait';
  private identIdx = 0;
  // The request being received.
  private reqCount = 0;
  private reqSize = 0;
  private reqType = 0;
  private reqTxid = 0;
  private reqError = 0;
  private oidBuf = new Uint8Array(FGET_STRSZ + 4);
  private nameLen = 0;
  // The reply being sent.
  private respCount = 0;
  private respError = 0;
  private respData = new Uint8Array(0);
  private respOff = 0;

  constructor(ctx: DeviceContext, readonly nodes: readonly FwctlNode[]) {
    ctx.io.registerPorts('fwctl', FWCTL_OUT, 2, {
      read: (port, size) => this.read(port, size),
      write: (port, size, value) => this.write(port, size, value),
    });
  }

  private read(port: number, size: AccessSize): number {
    if (port !== FWCTL_IN && port !== FWCTL_OUT) return ones(size);
    if (size === 1) {
      if (this.state !== 'identSend') return 0xff;
      const v = SIGNATURE[this.identIdx++];
      if (this.identIdx >= SIGNATURE.length) this.state = 'req';
      return v;
    }
    if (size === 4) {
      if (this.state !== 'resp') return 0xffffffff;
      const v = this.responseWord();
      if (this.respCount > 3 && this.respOff >= this.respData.length) {
        this.resetRequest();
        this.state = 'req';
      }
      return v;
    }
    return 0xffff;
  }

  private write(port: number, size: AccessSize, value: number): void {
    // fwctl_rreg (0x511) is an input port only.
    if (port !== FWCTL_OUT) return;
    if (size === 2) {
      if ((value & 0xffff) === 0) {
        // The guest wants the signature: restart whatever was going on.
        this.state = 'identSend';
        this.identIdx = 0;
        this.resetRequest();
      }
      return;
    }
    if (size === 4 && this.state === 'req' && this.request(value >>> 0)) this.state = 'resp';
  }

  private resetRequest(): void {
    this.reqCount = 0;
    this.reqSize = 0;
    this.reqType = 0;
    this.reqTxid = 0;
    this.reqError = 0;
    this.nameLen = 0;
    this.oidBuf.fill(0);
    this.respCount = 0;
    this.respError = 0;
    this.respData = new Uint8Array(0);
    this.respOff = 0;
  }

  /** One request word; true when the request is complete. */
  private request(value: number): boolean {
    switch (this.reqCount) {
      case 0:
        if (value < REQ_HEADER) return false; // bhyve exits 4 ("msg size error")
        this.reqSize = value;
        this.reqCount = 1;
        return false;
      case 1:
        this.reqType = value;
        this.reqCount++;
        return false;
      case 2: {
        this.reqTxid = value;
        this.reqCount++;
        this.reqSize -= REQ_HEADER;
        const known = this.reqType === OP_GET || this.reqType === OP_GET_LEN;
        this.reqError = !known ? FWCTL_ENOENT : this.reqSize > FGET_STRSZ ? FWCTL_E2BIG : 0;
        if (this.reqSize === 0) { this.finishRequest(); return true; }
        return false;
      }
      default:
        this.reqSize = this.reqSize <= 4 ? 0 : this.reqSize - 4;
        if (this.reqError === 0 && this.nameLen + 4 <= this.oidBuf.length) {
          new DataView(this.oidBuf.buffer).setUint32(this.nameLen, value, true);
          this.nameLen += 4;
        }
        if (this.reqSize < 4) { this.finishRequest(); return true; }
        return false;
    }
  }

  private finishRequest(): void {
    this.respOff = 0;
    this.respData = new Uint8Array(0);
    if (this.reqError !== 0) { this.respError = this.reqError; return; }
    const node = this.locate();
    if (!node) { this.respError = FWCTL_ENOENT; return; }
    this.respError = 0;
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(node.data.length), true);
    if (this.reqType === OP_GET_LEN) {
      this.respData = len;
    } else {
      this.respData = new Uint8Array(8 + node.data.length);
      this.respData.set(len);
      this.respData.set(node.data, 8);
    }
  }

  /** ctl_locate: strncmp(name, oid, bytes received) == 0. */
  private locate(): FwctlNode | undefined {
    const n = this.nameLen;
    return this.nodes.find((node) => {
      const oid = Buffer.from(`${node.oid}\0`, 'latin1');
      for (let i = 0; i < n; i++) {
        const a = this.oidBuf[i];
        const b = i < oid.length ? oid[i] : 0;
        if (a !== b) return false;
        if (a === 0) return true;
      }
      return true;
    });
  }

  private responseWord(): number {
    let v = 0;
    switch (this.respCount) {
      case 0: v = RESP_HEADER + Math.ceil(this.respData.length / 4) * 4; this.respCount++; break;
      case 1: v = this.reqType; this.respCount++; break;
      case 2: v = this.reqTxid; this.respCount++; break;
      case 3: v = this.respError; this.respCount++; break;
      default: {
        for (let i = 0; i < 4 && this.respOff + i < this.respData.length; i++) v |= this.respData[this.respOff + i] << (8 * i);
        this.respOff += 4;
        break;
      }
    }
    return v >>> 0;
  }
}

function ones(size: AccessSize): number {
  return size === 1 ? 0xff : size === 2 ? 0xffff : 0xffffffff;
}

/** fwctl's nodes for this VM: hw.ncpu. */
export function fwctlNodes(ncpu: number): FwctlNode[] {
  const d = new Uint8Array(4);
  new DataView(d.buffer).setInt32(0, ncpu, true);
  return [{ oid: 'hw.ncpu', data: d }];
}

export function createFwctl(ctx: DeviceContext): Fwctl {
  return new Fwctl(ctx, fwctlNodes(ctx.machine.vcpuCount));
}
