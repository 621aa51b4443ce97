// Fuzz target for bhyve's control socket (the protocol bhyvectl speaks):
// a real ControlServer on a UNIX socket with the real operation table
// (control-ops.ts) over a fake machine whose vCPU requests are served as
// the vCPU thread serves them (applyVcpuState / readVcpuState on a fake
// vCPU that encodes registers as KVM's structures). An operation is one
// client session: request lines that are valid, half-valid or garbage
// (wrong versions, unknown and prototype-named ops, odd cpu values,
// set-state updates of every shape), split across writes, pipelined, cut
// off, or too long; then the replies are read.
//
// Oracles: the server never throws (no uncaught exception or unhandled
// rejection in the process); every complete request line gets exactly one
// reply line, in order, each JSON with version 1 and ok true/false and a
// one-line error; a set-state update fails only with a user error
// (RangeError from the value checks), never a TypeError from its shape.

import * as net from 'node:net';
import { ConfigTree } from '../../../src/config/tree.js';
import { ControlServer } from '../../../src/vmm/control-socket.js';
import { controlHandlers, type ControlContext } from '../../../src/vmm/control-ops.js';
import { applyVcpuState, readVcpuState, type VcpuStateUpdate } from '../../../src/vmm/vcpu-state.js';
import { decodeSregs, encodeSregs, type Regs, type Sregs, type Vcpu } from '../../../src/sys/kvm.js';
import { REGS_ORDER, SIZEOF } from '../../../src/sys/kvm-abi.js';
import { InvariantError, type FuzzInstance, type FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';
import { scratchPath } from '../scratch.js';

/** A vCPU whose registers live in KVM-layout buffers (so a bad value
 * fails as it would in the ioctl's encoding). */
class FakeVcpu {
  private regs = new Uint8Array(SIZEOF.kvm_regs);
  private sregs = new Uint8Array(SIZEOF.kvm_sregs);
  private dregs = new Uint8Array(SIZEOF.kvm_debugregs);
  getRegs(): Regs {
    const v = new DataView(this.regs.buffer);
    const out = {} as Regs;
    REGS_ORDER.forEach((n, i) => { out[n] = v.getBigUint64(8 * i, true); });
    return out;
  }
  setRegs(r: Regs): void {
    const v = new DataView(this.regs.buffer);
    REGS_ORDER.forEach((n, i) => v.setBigUint64(8 * i, r[n], true));
  }
  getSregs(): Sregs { return decodeSregs(new DataView(this.sregs.buffer)); }
  setSregs(sr: Sregs): void { encodeSregs(new DataView(this.sregs.buffer), sr); }
  getDebugRegs(): bigint[] { const v = new DataView(this.dregs.buffer); return [0, 1, 2, 3, 4, 5].map((i) => v.getBigUint64(8 * i, true)); }
  setDebugRegs(values: bigint[]): void { const v = new DataView(this.dregs.buffer); values.forEach((x, i) => v.setBigUint64(8 * i, x, true)); }
  nmi(): void {}
}

let seq = 0;

class ControlFuzz implements FuzzInstance {
  private server!: ControlServer;
  private readonly sockPath: string;
  private readonly vcpus = [new FakeVcpu(), new FakeVcpu()];
  readonly escaped: unknown[] = [];
  private readonly onError = (e: unknown) => { this.escaped.push(e); };
  private replies = 0;
  private errorsOk = 0;
  finished: string[] = [];
  lastOp: string | undefined;

  constructor(private readonly r: Rng) {
    this.sockPath = scratchPath(`c${seq++}.sock`);
  }

  async start(): Promise<this> {
    const config = new ConfigTree();
    config.set('name', 'fuzz');
    const serve = (cpu: number, body: { op: string; update?: VcpuStateUpdate }): unknown => {
      const v = this.vcpus[cpu] as unknown as Vcpu;
      switch (body.op) {
        case 'get-state': return readVcpuState(v);
        case 'set-state':
          try {
            applyVcpuState(v, body.update as VcpuStateUpdate);
          } catch (e) {
            // The vCPU thread replies with the message; a RangeError is a
            // user error (a bad value), anything else a shape we did not check.
            if (!(e instanceof RangeError)) this.escaped.push(new InvariantError(`set-state ${JSON.stringify(body.update)?.slice(0, 200)}: ${(e as Error).name}: ${(e as Error).message}`));
            throw e;
          }
          return readVcpuState(v);
        case 'exit-counts': return { IO: 1 };
        case 'device-stats': return { 'virtio-rnd@pci.0.3.0': { 'msi-x messages': 0 } };
        default: return null;
      }
    };
    const ctx = {
      config,
      machine: { vcpus: this.vcpus, layout: { lowmem: 256 << 20, highmem: 0 }, topo: { sockets: 1, cores: 2, threads: 1, maxcpus: 2 }, bootrom: [] },
      control: { state: (i: number) => (i === 0 ? 1 : 0) },
      requester: { request: (cpu: number, body: { op: string }) => Promise.resolve().then(() => serve(cpu, body)) },
      stats: [undefined, undefined],
      finish: (r: { kind: string }) => { this.finished.push(r.kind); },
    } as unknown as ControlContext;
    process.on('uncaughtException', this.onError);
    process.on('unhandledRejection', this.onError);
    this.server = await ControlServer.listen(this.sockPath, controlHandlers(ctx));
    return this;
  }

  private value(): unknown {
    const r = this.r;
    return r.pick([0, 1, -1, 1.5, 2 ** 53, 'x', '', '0x10', null, true, [], {}, [1, 2], { a: 1 }, '18446744073709551616', '0xffffffffffffffff']);
  }

  private update(): unknown {
    const r = this.r;
    if (r.chance(0.1)) return this.value();
    const u: Record<string, unknown> = {};
    const hexes = ['0x0', '0x1000', '0xffffffffffffffff', '0x10000000000000000', '123', 'zz', '', ' 0x1 ', '-1'];
    if (r.chance(0.5)) u.regs = r.chance(0.9) ? { [r.pick([...REGS_ORDER, 'bogus', '__proto__', 'constructor'])]: r.chance(0.8) ? r.pick(hexes) : this.value() } : this.value();
    if (r.chance(0.4)) {
      u.segments = r.chance(0.9) ? {
        [r.pick(['cs', 'ds', 'tr', 'ldt', 'bogus', '__proto__'])]: r.chance(0.8)
          ? { [r.pick(['base', 'limit', 'selector', 'type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable', 'x'])]: r.chance(0.5) ? r.pick(hexes) : this.value() }
          : this.value(),
      } : this.value();
    }
    if (r.chance(0.2)) u[r.pick(['gdt', 'idt'])] = r.chance(0.8) ? { base: r.chance(0.7) ? r.pick(hexes) : this.value(), limit: this.value() } : this.value();
    if (r.chance(0.3)) u.control = r.chance(0.9) ? { [r.pick(['cr0', 'cr3', 'cr4', 'efer', 'apic_base', 'cr1'])]: r.chance(0.8) ? r.pick(hexes) : this.value() } : this.value();
    if (r.chance(0.3)) u.debug = r.chance(0.9) ? { [r.pick(['dr0', 'dr7', 'dr4'])]: r.chance(0.8) ? r.pick(hexes) : this.value() } : this.value();
    return u;
  }

  /** One request line. */
  private line(): string {
    const r = this.r;
    switch (r.below(12)) {
      case 0: return r.pick(['', ' ', 'null', '1', '"x"', '[]', '{', '{"version":1', 'true', '\u0000', '{"version":1,"op":"info"}{"x":1}']);
      case 1: return JSON.stringify({ version: r.pick([0, 2, '1', null, 1.0000001]), op: 'info' });
      case 2: return JSON.stringify({ version: 1, op: r.pick(['__proto__', 'constructor', 'toString', 'hasOwnProperty', '', 'INFO', 'run']) });
      case 3: return JSON.stringify({ version: 1, op: r.pick(['get-state', 'inject-nmi', 'get-stats']), cpu: this.value() });
      case 4: case 5: case 6: return JSON.stringify({ version: 1, op: 'set-state', cpu: r.chance(0.9) ? r.below(2) : this.value(), update: this.update() });
      case 7: return `{"version":1,"op":"info","pad":"${'x'.repeat(r.pick([10, 1000, 70_000]))}"}`;
      case 8: return JSON.stringify({ version: 1, op: r.pick(['force-reset', 'force-poweroff']) });
      default: return JSON.stringify({ version: 1, op: r.pick(['info', 'get-memmap', 'get-active-cpus', 'get-cpu-topology', 'get-state', 'get-stats', 'wakeup']), cpu: r.below(3) });
    }
  }

  async step(): Promise<void> {
    const r = this.r;
    const flood = r.chance(0.02); // many short requests pipelined in one write: reads split them anywhere
    const lines = flood
      ? Array.from({ length: r.range(100, 600) }, () => JSON.stringify({ version: 1, op: 'info', pad: 'x'.repeat(r.below(600)) }))
      : Array.from({ length: r.chance(0.8) ? 1 : r.range(2, 20) }, () => this.line());
    let payload = lines.map((l) => `${l}\n`).join('');
    const cut = r.chance(0.05);
    if (cut) payload = payload.slice(0, r.below(payload.length));
    const expected = cut ? payload.split('\n').length - 1 : lines.length;
    // The server refuses a request line over 64 KiB (and ends the session).
    const tooLong = payload.split('\n').some((l) => l.length > 64 * 1024);
    const sock = net.connect(this.sockPath);
    sock.setEncoding('utf8');
    let got = '';
    const done = new Promise<void>((resolve) => {
      sock.on('data', (d: string) => {
        got += d;
        if (!tooLong && got.split('\n').length - 1 >= expected) sock.end();
      });
      sock.on('close', () => resolve());
      sock.on('error', () => resolve());
    });
    await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    // Split across writes at random points.
    let at = 0;
    while (at < payload.length) {
      const n = r.chance(0.7) ? payload.length - at : r.range(1, payload.length - at);
      sock.write(payload.slice(at, at + n));
      at += n;
    }
    // A client may shut down its side once it has sent everything (as
    // `nc -N` does) and still expects every reply.
    const halfClose = expected > 0 && r.chance(0.02);
    this.lastOp = halfClose ? `${lines.length} requests, then the client half-closed` : undefined;
    if (expected === 0 || halfClose) sock.end();
    await done;
    if (this.escaped.length) {
      const e = this.escaped[0];
      throw e instanceof Error ? e : new Error(String(e));
    }
    const replies = got.split('\n').filter((l) => l !== '');
    if (tooLong) {
      if (!replies.some((l) => l.includes('request too long'))) throw new InvariantError(`a ${payload.length}-byte request got no "request too long" reply`);
      return;
    }
    if (replies.length !== expected) throw new InvariantError(`${expected} request lines (${payload.length} bytes), ${replies.length} replies; first lines ${JSON.stringify(lines.slice(0, 3).map((l) => l.slice(0, 80)))}, last reply ${replies[replies.length - 1]?.slice(0, 100)}`);
    for (const l of replies) {
      let rep: { version?: unknown; ok?: unknown; error?: unknown };
      try { rep = JSON.parse(l); } catch { throw new InvariantError(`reply is not JSON: ${l.slice(0, 200)}`); }
      if (rep.version !== 1 || typeof rep.ok !== 'boolean') throw new InvariantError(`malformed reply ${l.slice(0, 200)}`);
      if (!rep.ok && (typeof rep.error !== 'string' || rep.error.includes('\n'))) throw new InvariantError(`error reply without a one-line message: ${l.slice(0, 200)}`);
      this.replies++;
      if (!rep.ok) this.errorsOk++;
    }
  }

  stats(): Record<string, number> { return { replies: this.replies, 'error replies': this.errorsOk }; }

  close(): void {
    process.off('uncaughtException', this.onError);
    process.off('unhandledRejection', this.onError);
    this.server.close();
  }
}

export const CONTROL_SOCKET_TARGET: FuzzTarget = {
  name: 'control-socket',
  surface: 'control socket protocol (JSON lines: versions, ops, cpu values, set-state updates, pipelining, split and cut lines, 64 KiB limit)',
  create: (rng) => new ControlFuzz(rng).start(),
  instanceOps: 2000,
  mainThread: true,
};
