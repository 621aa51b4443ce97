// Fuzz target for bhyve's -G debug server (src/vmm/gdb-stub.ts and its
// framing, gdb-packet.ts): a real GdbStub on a TCP port over a fake VM
// (two vCPUs whose registers are JSON state, 256 KiB of guest RAM filled
// with random bytes, paging on or off with CR3 anywhere, so the page walk
// runs over garbage tables). An operation is one debugger session: packets
// of every command with valid, edge and garbage arguments, bad checksums,
// escapes and run-length codes, raw noise, 0x03 interrupts, split across
// writes; breakpoint and single-step exits arrive from the "vCPUs" while it
// runs; then the session asks `?` and hangs up.
//
// Oracles: nothing escapes the stub (uncaught exception or rejection); the
// stub still answers the final `?` with a stop reply; once the debugger is
// gone every vCPU runs again with guest debugging off, and every int3 the
// session planted is gone (RAM equals what the session wrote through M/G).

import * as net from 'node:net';
import { encodePacket, PacketReader } from '../../../src/vmm/gdb-packet.js';
import { GdbStub, type GdbTarget } from '../../../src/vmm/gdb-stub.js';
import type { VcpuStateJson, VcpuStateUpdate } from '../../../src/vmm/vcpu-state.js';
import { InvariantError, type FuzzInstance, type FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';

const RAM = 256 * 1024;

function state(r: Rng): VcpuStateJson {
  const h = (): string => `0x${(BigInt(r.u32()) << 32n | BigInt(r.u32())).toString(16)}`;
  const seg = () => ({ base: '0x0', limit: 0xffffffff, selector: r.below(0x10000), type: 0, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
  const regs = Object.fromEntries(['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'].map((n) => [n, h()]));
  const paging = r.chance(0.6);
  const cr4 = r.pick([0, 0x10, 0x20, 0x1020]);
  return {
    regs: regs as VcpuStateJson['regs'],
    segments: { cs: seg(), ds: seg(), es: seg(), fs: seg(), gs: seg(), ss: seg(), tr: seg(), ldt: seg() },
    gdt: { base: '0x0', limit: 0 }, idt: { base: '0x0', limit: 0 },
    control: { cr0: paging ? '0x80000011' : '0x11', cr2: '0x0', cr3: `0x${(r.chance(0.8) ? r.below(RAM) : r.u32()).toString(16)}`,
      cr4: `0x${cr4.toString(16)}`, cr8: '0x0', efer: r.chance(0.5) ? '0x500' : '0x0', apic_base: '0xfee00900' },
    debug: { dr0: '0x0', dr1: '0x0', dr2: '0x0', dr3: '0x0', dr6: '0x0', dr7: '0x400' },
  };
}

class FakeVm implements GdbTarget {
  readonly vcpuCount = 2;
  readonly states: VcpuStateJson[];
  readonly memory: Uint8Array;
  readonly held = [false, false];
  readonly debug = [0, 0];
  constructor(r: Rng) {
    this.states = [state(r), state(r)];
    this.memory = r.bytes(RAM);
  }
  async getState(id: number): Promise<VcpuStateJson> { return structuredClone(this.states[id]); }
  async setState(id: number, up: VcpuStateUpdate): Promise<void> { Object.assign(this.states[id].regs, up.regs); }
  async setGuestDebug(id: number, control: number): Promise<void> { this.debug[id] = control; }
  hold(id: number, held: boolean): void { this.held[id] = held; }
  ram(gpa: number) { return gpa >= 0 && gpa < RAM ? { bytes: this.memory, offset: gpa } : undefined; }
}

const hex = (n: number | bigint): string => n.toString(16);

class GdbFuzz implements FuzzInstance {
  private stub!: GdbStub;
  private readonly vm: FakeVm;
  readonly escaped: unknown[] = [];
  private readonly onError = (e: unknown) => { this.escaped.push(e); };
  private sessions = 0;
  private packets = 0;
  lastOp: string | undefined;

  constructor(private readonly r: Rng) { this.vm = new FakeVm(r); }

  async start(): Promise<this> {
    process.on('uncaughtException', this.onError);
    process.on('unhandledRejection', this.onError);
    this.stub = await GdbStub.listen('127.0.0.1', 0, this.vm, () => {});
    return this;
  }

  private addr(): string {
    const r = this.r;
    return hex(r.pick([r.below(RAM), r.u32(), 0, RAM - 1, RAM, 0xfffff000, (BigInt(r.u32()) << 32n) | BigInt(r.u32())]));
  }

  private command(): string {
    const r = this.r;
    const len = (): string => hex(r.pick([0, 1, 4, r.below(64), r.below(5000), 0xffffffff]));
    const data = (n: number): string => Buffer.from(r.bytes(Math.min(n, 2048))).toString('hex');
    switch (r.below(22)) {
      case 0: return 'g';
      case 1: return `G${data(r.pick([0, 8, 164, 200]))}`;
      case 2: return `p${hex(r.below(80))}`;
      case 3: return `P${hex(r.below(80))}=${data(r.pick([0, 4, 8, 10, 16]))}`;
      case 4: return `m${this.addr()},${len()}`;
      case 5: { const n = r.below(32); return `M${this.addr()},${hex(n)}:${data(r.chance(0.8) ? n : r.below(32))}`; }
      case 6: return `Z0,${this.addr()},1`;
      case 7: return `z0,${this.addr()},1`;
      case 8: return `${r.pick(['Z1', 'z1'])},${this.addr()},1`;
      case 9: return r.pick(['c', 's', `c${this.addr()}`]);
      case 10: return `H${r.pick(['g', 'c', 'x'])}${r.pick(['0', '-1', '1', '2', '3', 'zz', ''])}`;
      case 11: return `T${r.pick(['1', '2', '9', ''])}`;
      case 12: return r.pick(['qfThreadInfo', 'qsThreadInfo', 'qC', 'qAttached', '?', 'QStartNoAckMode', 'vCont?', 'vMustReplyEmpty']);
      case 13: return `qXfer:features:read:target.xml:${hex(r.below(300))},${hex(r.below(300))}`;
      case 14: return `qXfer:features:read:${r.pick(['target.xml:', 'x:', 'target.xml:zz,1', 'target.xml:1'])}`;
      case 15: return `qThreadExtraInfo,${r.pick(['1', '2', '5', 'x'])}`;
      case 16: return 'qSupported:multiprocess+;swbreak+;hwbreak+';
      case 17: return Buffer.from(r.bytes(r.below(40))).toString('latin1');
      case 18: return `m${r.pick(['', ',', 'x,1', '1,', ',1', '1,1,1'])}`;
      case 19: return `M${r.pick(['', '1,1', '1,1:', '1,2:zz', ':'])}`;
      case 20: return `Z0,${r.pick(['', 'x', '1'])}`;
      default: return 'D';
    }
  }

  private wire(cmd: string): Buffer {
    const r = this.r;
    const good = encodePacket(cmd);
    switch (r.below(12)) {
      case 0: { const b = Buffer.from(good); b[b.length - 1] ^= 1; return b; } // bad checksum
      case 1: return Buffer.from(r.bytes(r.below(20))); // noise
      case 2: return Buffer.from([0x03]);
      case 3: return Buffer.from(r.pick(['+', '-', '$', '#', '}', '*', '$#00', '$}#7d', '$a*#8b']));
      case 4: return Buffer.concat([Buffer.from('$'), Buffer.alloc(r.below(10000), 0x61), Buffer.from('#00')]);
      default: return good;
    }
  }

  async step(): Promise<void> {
    this.sessions++;
    const ram0 = Uint8Array.from(this.vm.memory);
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(this.stub.port, '127.0.0.1', () => resolve(s));
      s.once('error', reject);
    });
    const reader = new PacketReader();
    const replies: string[] = [];
    sock.on('data', (b: Buffer) => { for (const e of reader.feed(b)) if (e.kind === 'packet') replies.push(e.payload.toString('latin1')); });
    sock.on('error', () => {});
    const ops: string[] = [];
    const n = this.r.range(1, 30);
    for (let i = 0; i < n; i++) {
      const cmd = this.command();
      ops.push(cmd.slice(0, 40));
      const bytes = this.wire(cmd);
      this.packets++;
      // Split anywhere.
      const cut = this.r.below(bytes.length + 1);
      sock.write(bytes.subarray(0, cut));
      if (this.r.chance(0.3)) await new Promise((res) => setImmediate(res));
      sock.write(bytes.subarray(cut));
      if (this.r.chance(0.2)) this.stub.onDebugExit(this.r.below(2), this.r.pick([1, 3, 0]), BigInt(this.r.below(16)));
      if (this.r.chance(0.3)) await new Promise((res) => setTimeout(res, 1));
    }
    this.lastOp = ops.join(' | ');
    // Still in step: a stop query gets a stop reply (after an interrupt if running).
    sock.write(Buffer.concat([encodePacket('QStartNoAckMode'), Buffer.from([0x03]), encodePacket('?')]));
    const end = Date.now() + 5000;
    while (!replies.some((x) => /^T0[25]thread:/.test(x)) && sock.writable && !sock.destroyed) {
      if (Date.now() > end) throw new InvariantError(`no stop reply to '?' after: ${this.lastOp}`);
      await new Promise((res) => setTimeout(res, 2));
      if (replies.includes('OK') && ops.at(-1) === 'D') break;
    }
    sock.destroy();
    // The stub detaches when the debugger goes: wait for it.
    const end2 = Date.now() + 5000;
    while (this.vm.held.some(Boolean) || this.vm.debug.some(Boolean)) {
      if (Date.now() > end2) throw new InvariantError(`vCPUs still held (${this.vm.held}) or debug on (${this.vm.debug}) after the debugger left`);
      await new Promise((res) => setTimeout(res, 2));
    }
    // No int3 left behind: any 0xCC that differs from before came from an M write.
    for (let i = 0; i < RAM; i++) {
      if (this.vm.memory[i] === 0xcc && ram0[i] !== 0xcc && !this.lastOp.includes('M')) throw new InvariantError(`an int3 stayed at 0x${hex(i)}`);
    }
    if (this.escaped.length) throw this.escaped[0];
  }

  stats(): Record<string, number> { return { sessions: this.sessions, packets: this.packets }; }

  close(): void {
    process.off('uncaughtException', this.onError);
    process.off('unhandledRejection', this.onError);
    this.stub.close();
  }
}

export const GDB_STUB_TARGET: FuzzTarget = {
  name: 'gdb-stub',
  surface: 'the -G GDB remote protocol server: framing (checksums, escapes, run-length, noise, 0x03), every command with edge and garbage arguments, page walks over random tables, debug exits while running, sessions cut anywhere',
  create: (rng) => new GdbFuzz(rng).start(),
  instanceOps: 200,
  mainThread: true,
};
