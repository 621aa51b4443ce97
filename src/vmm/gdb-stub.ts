// bhyve's -G debug server (usr.sbin/bhyve/gdb.c): the GDB Remote Serial
// Protocol on a TCP port, one debugger at a time, all-stop. vCPUs are the
// debugger's threads (thread id = vCPU + 1). The stub runs on the main
// thread: registers and KVM_SET_GUEST_DEBUG go to each vCPU's own thread as
// requests (vcpu-requests.ts, as bhyvectl's --get-* do); guest memory is
// read from our mapping of guest RAM after a walk of the guest's page
// tables. A stopped vCPU is "held" (VcpuControl.setDebugHold) and parks
// outside KVM_RUN; a breakpoint or single step exits as KVM_EXIT_DEBUG and
// the vCPU holds itself and tells us (vcpu-thread.ts).

import net from 'node:net';
import { GUESTDBG } from '../sys/kvm-abi.js';
import { encodePacket, fromHex, PACKET_SIZE, PacketReader, regFromHex, regHex, toHex } from './gdb-packet.js';
import type { VcpuStateJson, VcpuStateUpdate } from './vcpu-state.js';

/** What the stub needs from the VM. */
export interface GdbTarget {
  readonly vcpuCount: number;
  getState(id: number): Promise<VcpuStateJson>;
  setState(id: number, update: VcpuStateUpdate): Promise<void>;
  /** KVM_SET_GUEST_DEBUG; debugregs are dr0-dr7 for USE_HW_BP. */
  setGuestDebug(id: number, control: number, debugregs?: bigint[]): Promise<void>;
  /** Hold vCPU `id` out of the guest (and kick it) or let it run. */
  hold(id: number, held: boolean): void;
  /** Guest-physical memory: the bytes at `gpa` up to the end of their
   * chunk (RAM, or the boot ROM, read-only: our mapping of it is too). */
  ram(gpa: number): { bytes: Uint8Array; offset: number; readonly?: boolean } | undefined;
}

/** gdb's amd64 register numbers 0-23: the general registers, rip, eflags
 * and the segment selectors (the rest, FPU/SSE, are reported unavailable). */
const GPRS = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip'] as const;
const EFLAGS = 17;
const SEGS = ['cs', 'ss', 'ds', 'es', 'fs', 'gs'] as const;
const NREGS = 24;
/** Sizes of gdb's amd64 registers after gs: st0-7, the x87 control
 * registers, xmm0-15, mxcsr. */
function otherRegSize(n: number): number {
  if (n < 32) return 10;
  if (n < 40) return 4;
  if (n < 56) return 16;
  return n === 56 ? 4 : 8;
}

const TARGET_XML = '<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">'
  + '<target version="1.0"><architecture>i386:x86-64</architecture></target>';

const SIGINT = 2;
const SIGTRAP = 5;
const PAGE = 4096;

/** Linear to guest-physical through the vCPU's page tables; undefined if
 * not mapped. `read64` reads guest-physical memory. */
export function translate(linear: bigint, state: Pick<VcpuStateJson, 'control'>,
  read64: (gpa: bigint, bytes: 4 | 8) => bigint | undefined): bigint | undefined {
  const cr0 = BigInt(state.control.cr0);
  const cr3 = BigInt(state.control.cr3);
  const cr4 = BigInt(state.control.cr4);
  const efer = BigInt(state.control.efer);
  if ((cr0 & (1n << 31n)) === 0n) return linear;
  const ADDR = 0x000ffffffffff000n;
  const present = (e: bigint | undefined): e is bigint => e !== undefined && (e & 1n) === 1n;
  const large = (e: bigint): boolean => (e & 0x80n) !== 0n;
  if ((efer & (1n << 10n)) !== 0n) { // long mode: 4 or 5 levels
    const levels = (cr4 & (1n << 12n)) !== 0n ? 5 : 4;
    let table = cr3 & ADDR;
    for (let level = levels; level >= 1; level--) {
      const shift = BigInt(12 + 9 * (level - 1));
      const e = read64(table + ((linear >> shift) & 0x1ffn) * 8n, 8);
      if (!present(e)) return undefined;
      if (level === 1 || ((level === 2 || level === 3) && large(e))) {
        const mask = (1n << shift) - 1n;
        return ((e & ADDR) & ~mask) | (linear & mask);
      }
      table = e & ADDR;
    }
    return undefined;
  }
  const lin = linear & 0xffffffffn;
  if ((cr4 & (1n << 5n)) !== 0n) { // PAE: 3 levels
    const pdpte = read64((cr3 & 0xffffffe0n) + ((lin >> 30n) & 3n) * 8n, 8);
    if (!present(pdpte)) return undefined;
    const pde = read64((pdpte & ADDR) + ((lin >> 21n) & 0x1ffn) * 8n, 8);
    if (!present(pde)) return undefined;
    if (large(pde)) return ((pde & ADDR) & ~0x1fffffn) | (lin & 0x1fffffn);
    const pte = read64((pde & ADDR) + ((lin >> 12n) & 0x1ffn) * 8n, 8);
    if (!present(pte)) return undefined;
    return (pte & ADDR) | (lin & 0xfffn);
  }
  const pde = read64((cr3 & 0xfffff000n) + (lin >> 22n) * 4n, 4);
  if (!present(pde)) return undefined;
  if (large(pde) && (cr4 & (1n << 4n)) !== 0n) return ((pde & 0xffc00000n) | ((pde & 0x1fe000n) << 19n)) | (lin & 0x3fffffn);
  const pte = read64((pde & 0xfffff000n) + ((lin >> 12n) & 0x3ffn) * 4n, 4);
  if (!present(pte)) return undefined;
  return (pte & 0xfffff000n) | (lin & 0xfffn);
}

export class GdbStub {
  private client: net.Socket | undefined;
  private readonly reader = new PacketReader();
  private queue: Promise<void> = Promise.resolve();
  private noAck = false;
  /** All vCPUs are held (the debugger sees a stopped target). */
  private stopped = false;
  private lastStop = `T${SIGTRAP.toString(16).padStart(2, '0')}thread:01;`;
  private gThread = 0;
  private cThread = 0;
  private readonly breakpoints = new Map<bigint, { gpa: bigint; orig: number }>();
  /** Z1: instruction breakpoints in dr0-dr3 (linear addresses). */
  private readonly hwBreakpoints: Array<bigint | undefined> = [undefined, undefined, undefined, undefined];
  private attachedResolve!: () => void;
  /** Settles when the first debugger has attached (-G w). */
  readonly attached = new Promise<void>((r) => { this.attachedResolve = r; });

  private constructor(private readonly server: net.Server, private readonly target: GdbTarget,
    private readonly log: (m: string) => void) {
    server.on('connection', (s) => this.onConnection(s));
  }

  /** Opens the listening socket (before the sandbox goes up). */
  static listen(address: string, port: number, target: GdbTarget, log: (m: string) => void): Promise<GdbStub> {
    return new Promise((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen({ host: address, port, exclusive: true }, () => {
        server.off('error', reject);
        server.on('error', (e) => log(`gdb: ${e.message}`));
        server.unref();
        resolve(new GdbStub(server, target, log));
      });
    });
  }

  get port(): number { return (this.server.address() as net.AddressInfo).port; }

  /** -G w: hold every vCPU before the guest's first instruction. */
  holdAtStart(): void {
    this.stopped = true;
    for (let i = 0; i < this.target.vcpuCount; i++) this.target.hold(i, true);
  }

  close(): void {
    this.client?.destroy();
    this.server.close();
  }

  /** A vCPU took KVM_EXIT_DEBUG (it already holds itself). */
  onDebugExit(id: number, exception: number, dr6 = 0n): void {
    if (!this.client) { this.target.hold(id, false); return; }
    if (this.stopped) return; // another vCPU's event won: this one re-runs later
    this.stopAll();
    this.gThread = this.cThread = id;
    const why = exception === 3 ? 'swbreak:;' : (dr6 & 0xfn) !== 0n ? 'hwbreak:;' : '';
    this.lastStop = `T${SIGTRAP.toString(16).padStart(2, '0')}thread:${(id + 1).toString(16)};${why}`;
    this.send(this.lastStop);
  }

  private stopAll(): void {
    this.stopped = true;
    for (let i = 0; i < this.target.vcpuCount; i++) this.target.hold(i, true);
  }

  private onConnection(s: net.Socket): void {
    if (this.client) { s.destroy(); return; } // one debugger at a time, as bhyve
    this.client = s;
    s.setNoDelay(true);
    this.noAck = false;
    // The debugger expects a stopped target when it attaches.
    if (!this.stopped) {
      this.stopAll();
      this.lastStop = `T${SIGTRAP.toString(16).padStart(2, '0')}thread:01;`;
    }
    this.attachedResolve();
    s.on('data', (chunk: Buffer) => {
      for (const ev of this.reader.feed(chunk)) {
        if (ev.kind === 'interrupt') this.enqueue(async () => this.interrupt());
        else if (ev.kind === 'bad') { if (!this.noAck) s.write('-'); }
        else if (ev.kind === 'packet') {
          if (!this.noAck) s.write('+');
          const text = ev.payload.toString('latin1');
          this.enqueue(async () => this.command(text));
        }
      }
    });
    s.on('error', () => { /* reset by peer: handled on close */ });
    s.on('close', () => {
      if (this.client !== s) return;
      this.client = undefined;
      // A debugger that goes away without D detaches all the same.
      this.enqueue(async () => { if (this.stopped || this.breakpoints.size) await this.detach(); });
    });
  }

  private enqueue(f: () => Promise<void>): void {
    this.queue = this.queue.then(f).catch((e: unknown) => {
      this.log(`gdb: ${(e as Error).message}`);
      this.send('E01');
    });
  }

  private send(payload: string): void {
    this.client?.write(encodePacket(payload));
  }

  private async interrupt(): Promise<void> {
    if (this.stopped) return;
    this.stopAll();
    this.lastStop = `T${SIGINT.toString(16).padStart(2, '0')}thread:${(this.cThread + 1).toString(16)};`;
    this.send(this.lastStop);
  }

  /** A thread id from the debugger: -1/0 mean all/any. */
  private threadOf(s: string): number | undefined {
    if (s === '-1' || s === '0') return 0;
    const n = parseInt(s, 16);
    if (!/^[0-9a-f]+$/i.test(s) || n < 1 || n > this.target.vcpuCount) return undefined;
    return n - 1;
  }

  private async command(p: string): Promise<void> {
    const reply = await this.answer(p);
    if (reply !== null) this.send(reply);
  }

  /** The reply to one packet; null when the reply comes later (c, s). */
  private async answer(p: string): Promise<string | null> {
    const c = p[0];
    if (p.startsWith('qSupported')) return `PacketSize=${PACKET_SIZE.toString(16)};qXfer:features:read+;swbreak+;hwbreak+;QStartNoAckMode+`;
    if (p === 'QStartNoAckMode') { this.send('OK'); this.noAck = true; return null; }
    if (p.startsWith('qXfer:features:read:target.xml:')) {
      const [off, len] = p.slice('qXfer:features:read:target.xml:'.length).split(',').map((x) => parseInt(x, 16));
      if (!Number.isFinite(off) || !Number.isFinite(len)) return 'E00';
      const part = TARGET_XML.slice(off, off + len);
      return (off + len >= TARGET_XML.length ? 'l' : 'm') + part;
    }
    if (p.startsWith('qXfer:')) return 'E00';
    if (p === 'qAttached') return '1';
    if (p === 'qC') return `QC${(this.gThread + 1).toString(16)}`;
    if (p === 'qfThreadInfo') return `m${Array.from({ length: this.target.vcpuCount }, (_, i) => (i + 1).toString(16)).join(',')}`;
    if (p === 'qsThreadInfo') return 'l';
    if (p.startsWith('qThreadExtraInfo,')) {
      const t = this.threadOf(p.slice(17));
      return t === undefined ? 'E02' : toHex(Buffer.from(`vCPU ${t}`));
    }
    if (p === '?') return this.lastStop;
    if (c === 'H') {
      const t = this.threadOf(p.slice(2));
      if (t === undefined) return 'E02';
      if (p[1] === 'g') this.gThread = t;
      else if (p[1] === 'c') this.cThread = t;
      else return '';
      return 'OK';
    }
    if (c === 'T') return this.threadOf(p.slice(1)) === undefined ? 'E02' : 'OK';
    if (c === 'g') return this.readRegisters();
    if (c === 'G') return this.writeRegisters(p.slice(1));
    if (c === 'p') return this.readRegister(parseInt(p.slice(1), 16));
    if (c === 'P') return this.writeRegister(p.slice(1));
    if (c === 'm') return this.readMemory(p.slice(1));
    if (c === 'M') return this.writeMemory(p.slice(1));
    if (p.startsWith('Z0,')) return this.insertBreakpoint(p.slice(3));
    if (p.startsWith('z0,')) return this.removeBreakpoint(p.slice(3));
    if (p.startsWith('Z1,') || p.startsWith('z1,')) return this.hwBreakpoint(p[0] === 'Z', p.slice(3));
    if (c === 'c') { await this.resume(false); return null; }
    if (c === 's') { await this.resume(true); return null; }
    if (c === 'D') { await this.detach(); this.send('OK'); this.client?.end(); return null; }
    if (c === 'k') { await this.detach(); this.client?.destroy(); return null; }
    return ''; // not supported: gdb falls back (X -> M, vCont -> Hc + c/s, Z1...)
  }

  private async readRegisters(): Promise<string> {
    const st = await this.target.getState(this.gThread);
    let out = '';
    for (const r of GPRS) out += regHex(BigInt(st.regs[r]), 8);
    out += regHex(BigInt(st.regs.rflags), 4);
    for (const s of SEGS) out += regHex(BigInt(st.segments[s].selector), 4);
    return out;
  }

  private async readRegister(n: number): Promise<string> {
    if (!Number.isInteger(n) || n < 0) return 'E00';
    if (n >= NREGS) return 'xx'.repeat(otherRegSize(n));
    const st = await this.target.getState(this.gThread);
    if (n < EFLAGS) return regHex(BigInt(st.regs[GPRS[n]]), 8);
    if (n === EFLAGS) return regHex(BigInt(st.regs.rflags), 4);
    return regHex(BigInt(st.segments[SEGS[n - EFLAGS - 1]].selector), 4);
  }

  private updateFor(n: number, v: bigint): VcpuStateUpdate | undefined {
    if (n < EFLAGS) return { regs: { [GPRS[n]]: `0x${v.toString(16)}` } };
    if (n === EFLAGS) return { regs: { rflags: `0x${v.toString(16)}` } };
    // Segment selectors alone cannot be loaded without their descriptors:
    // writes of the value they already have are accepted, others refused.
    return undefined;
  }

  private async writeRegister(arg: string): Promise<string> {
    const [ns, hex] = arg.split('=');
    const n = parseInt(ns, 16);
    if (!Number.isInteger(n) || hex === undefined || fromHex(hex) === undefined) return 'E00';
    if (n >= NREGS) return 'E00';
    const v = regFromHex(hex);
    const up = this.updateFor(n, v);
    if (!up) {
      const st = await this.target.getState(this.gThread);
      return BigInt(st.segments[SEGS[n - EFLAGS - 1]].selector) === v ? 'OK' : 'E00';
    }
    await this.target.setState(this.gThread, up);
    return 'OK';
  }

  private async writeRegisters(hex: string): Promise<string> {
    const b = fromHex(hex);
    if (!b || b.length < 17 * 8 + 4) return 'E00';
    const regs: Record<string, string> = {};
    GPRS.forEach((r, i) => { regs[r] = `0x${b.readBigUInt64LE(8 * i).toString(16)}`; });
    regs.rflags = `0x${b.readUInt32LE(17 * 8).toString(16)}`;
    await this.target.setState(this.gThread, { regs });
    return 'OK';
  }

  private readPhys(gpa: bigint, n: number, write = false): Uint8Array | undefined {
    if (gpa > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
    const r = this.target.ram(Number(gpa));
    if (!r || r.offset + n > r.bytes.length || (write && r.readonly)) return undefined;
    return r.bytes.subarray(r.offset, r.offset + n);
  }

  private async translator(): Promise<(lin: bigint) => bigint | undefined> {
    const st = await this.target.getState(this.gThread);
    return (lin) => translate(lin, st, (gpa, bytes) => {
      const b = this.readPhys(gpa, bytes);
      if (!b) return undefined;
      const v = new DataView(b.buffer, b.byteOffset, bytes);
      return bytes === 8 ? v.getBigUint64(0, true) : BigInt(v.getUint32(0, true));
    });
  }

  /** `addr,len` in hex; undefined if malformed. */
  private static range(s: string): { addr: bigint; len: number } | undefined {
    const m = /^([0-9a-fA-F]{1,16}),([0-9a-fA-F]{1,8})$/.exec(s);
    if (!m) return undefined;
    return { addr: BigInt(`0x${m[1]}`), len: parseInt(m[2], 16) };
  }

  /** The guest bytes at linear [addr, addr+len), page by page, up to the
   * first unmapped page. */
  private async guestSpans(addr: bigint, len: number, write = false): Promise<Uint8Array[]> {
    const tr = await this.translator();
    const spans: Uint8Array[] = [];
    let lin = addr;
    let left = len;
    while (left > 0) {
      const inPage = Math.min(left, PAGE - Number(lin & 0xfffn));
      const gpa = tr(lin);
      const b = gpa === undefined ? undefined : this.readPhys(gpa, inPage, write);
      if (!b) break;
      spans.push(b);
      lin += BigInt(inPage);
      left -= inPage;
    }
    return spans;
  }

  private async readMemory(arg: string): Promise<string> {
    const r = GdbStub.range(arg);
    if (!r || r.len > PACKET_SIZE / 2) return 'E00';
    if (r.len === 0) return '';
    const spans = await this.guestSpans(r.addr, r.len);
    if (spans.length === 0) return 'E14'; // EFAULT, as bhyve
    return spans.map(toHex).join('');
  }

  private async writeMemory(arg: string): Promise<string> {
    const colon = arg.indexOf(':');
    const r = colon < 0 ? undefined : GdbStub.range(arg.slice(0, colon));
    const data = colon < 0 ? undefined : fromHex(arg.slice(colon + 1));
    if (!r || !data || data.length !== r.len) return 'E00';
    const spans = await this.guestSpans(r.addr, r.len, true);
    if (spans.reduce((n, s) => n + s.length, 0) !== r.len) return 'E14';
    let off = 0;
    for (const s of spans) { s.set(data.subarray(off, off + s.length)); off += s.length; }
    return 'OK';
  }

  private async insertBreakpoint(arg: string): Promise<string> {
    const m = /^([0-9a-fA-F]{1,16}),[0-9a-fA-F]+$/.exec(arg);
    if (!m) return 'E00';
    const addr = BigInt(`0x${m[1]}`);
    if (this.breakpoints.has(addr)) return 'OK';
    const gpa = (await this.translator())(addr);
    const b = gpa === undefined ? undefined : this.readPhys(gpa, 1, true);
    if (gpa === undefined || !b) return 'E14'; // unmapped, or ROM: use Z1 there
    this.breakpoints.set(addr, { gpa, orig: b[0] });
    b[0] = 0xcc; // int3: KVM_GUESTDBG_USE_SW_BP turns its #BP into an exit
    return 'OK';
  }

  private async removeBreakpoint(arg: string): Promise<string> {
    const m = /^([0-9a-fA-F]{1,16}),[0-9a-fA-F]+$/.exec(arg);
    if (!m) return 'E00';
    const addr = BigInt(`0x${m[1]}`);
    const bp = this.breakpoints.get(addr);
    if (!bp) return 'OK';
    this.breakpoints.delete(addr);
    const b = this.readPhys(bp.gpa, 1);
    if (b) b[0] = bp.orig;
    return 'OK';
  }

  private hwBreakpoint(insert: boolean, arg: string): string {
    const m = /^([0-9a-fA-F]{1,16}),[0-9a-fA-F]+$/.exec(arg);
    if (!m) return 'E00';
    const addr = BigInt(`0x${m[1]}`);
    const at = this.hwBreakpoints.indexOf(addr);
    if (!insert) { if (at >= 0) this.hwBreakpoints[at] = undefined; return 'OK'; }
    if (at >= 0) return 'OK';
    const free = this.hwBreakpoints.indexOf(undefined);
    if (free < 0) return 'E28'; // ENOSPC: four debug registers
    this.hwBreakpoints[free] = addr;
    return 'OK';
  }

  /** dr0-dr7 for the Z1 breakpoints: execute breakpoints, global-enabled. */
  private debugRegs(): bigint[] {
    let dr7 = 0x400n;
    const regs = this.hwBreakpoints.map((a, i) => {
      if (a === undefined) return 0n;
      dr7 |= 2n << BigInt(2 * i); // Gn; R/Wn = LENn = 0: instruction fetch
      return a;
    });
    return [...regs, 0n, 0n, 0n, dr7];
  }

  /** c / s: every vCPU runs on, or only the stepping one for one instruction. */
  private async resume(step: boolean): Promise<void> {
    if (!this.stopped) return;
    const stepper = this.cThread;
    const hw = this.hwBreakpoints.some((a) => a !== undefined);
    const base = GUESTDBG.ENABLE | GUESTDBG.USE_SW_BP | (hw ? GUESTDBG.USE_HW_BP : 0);
    const dr = hw ? this.debugRegs() : [];
    for (let i = 0; i < this.target.vcpuCount; i++) {
      await this.target.setGuestDebug(i, step && i === stepper ? base | GUESTDBG.SINGLESTEP : base, dr);
    }
    this.stopped = false;
    if (step) this.target.hold(stepper, false);
    else for (let i = 0; i < this.target.vcpuCount; i++) this.target.hold(i, false);
  }

  /** D, or the debugger went away: breakpoints out, debug exits off, run. */
  private async detach(): Promise<void> {
    for (const addr of [...this.breakpoints.keys()]) await this.removeBreakpoint(addr.toString(16) + ',1');
    this.hwBreakpoints.fill(undefined);
    for (let i = 0; i < this.target.vcpuCount; i++) await this.target.setGuestDebug(i, 0);
    this.stopped = false;
    for (let i = 0; i < this.target.vcpuCount; i++) this.target.hold(i, false);
  }
}
