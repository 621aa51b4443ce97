// The gdb stub's commands (src/vmm/gdb-stub.ts) over a real TCP socket,
// against a fake VM: registers in memory, 1 MiB of guest RAM without
// paging, vCPU holds and KVM_SET_GUEST_DEBUG calls recorded.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { GUESTDBG } from '../../src/sys/kvm-abi.js';
import { encodePacket, PacketReader } from '../../src/vmm/gdb-packet.js';
import { GdbStub, type GdbTarget } from '../../src/vmm/gdb-stub.js';
import type { VcpuStateJson, VcpuStateUpdate } from '../../src/vmm/vcpu-state.js';

function fakeState(rip: number): VcpuStateJson {
  const seg = (selector: number) => ({ base: '0x0', limit: 0xffffffff, selector, type: 0, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
  const regs = Object.fromEntries(['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags']
    .map((r, i) => [r, r === 'rip' ? `0x${rip.toString(16)}` : r === 'rflags' ? '0x2' : `0x${(i + 1).toString(16)}`]));
  return {
    regs: regs as VcpuStateJson['regs'],
    segments: { cs: seg(0x10), ds: seg(0x18), es: seg(0x18), fs: seg(0x18), gs: seg(0x18), ss: seg(0x18), tr: seg(0), ldt: seg(0) },
    gdt: { base: '0x0', limit: 0 }, idt: { base: '0x0', limit: 0 },
    control: { cr0: '0x11', cr2: '0x0', cr3: '0x0', cr4: '0x0', cr8: '0x0', efer: '0x0', apic_base: '0xfee00900' },
    debug: { dr0: '0x0', dr1: '0x0', dr2: '0x0', dr3: '0x0', dr6: '0x0', dr7: '0x400' },
  };
}

class FakeVm implements GdbTarget {
  readonly vcpuCount = 2;
  readonly states = [fakeState(0x1000), fakeState(0x2000)];
  readonly memory = new Uint8Array(1 << 20);
  readonly held = [false, false];
  readonly guestDebug: Array<{ id: number; control: number; debugregs?: bigint[] }> = [];
  async getState(id: number): Promise<VcpuStateJson> { return structuredClone(this.states[id]); }
  async setState(id: number, up: VcpuStateUpdate): Promise<void> { Object.assign(this.states[id].regs, up.regs); }
  async setGuestDebug(id: number, control: number, debugregs?: bigint[]): Promise<void> { this.guestDebug.push({ id, control, debugregs }); }
  hold(id: number, held: boolean): void { this.held[id] = held; }
  readonly rom = new Uint8Array(4096).fill(0x90);
  ram(gpa: number) {
    if (gpa >= 0xfffff000) return { bytes: this.rom, offset: gpa - 0xfffff000, readonly: true };
    return gpa < this.memory.length ? { bytes: this.memory, offset: gpa } : undefined;
  }
}

class Client {
  private readonly reader = new PacketReader();
  private readonly replies: string[] = [];
  private waiter: (() => void) | undefined;
  constructor(readonly sock: net.Socket) {
    sock.on('data', (b: Buffer) => {
      for (const ev of this.reader.feed(b)) if (ev.kind === 'packet') this.replies.push(ev.payload.toString('latin1'));
      this.waiter?.();
    });
  }
  static connect(port: number): Promise<Client> {
    return new Promise((resolve) => { const s = net.connect(port, '127.0.0.1', () => resolve(new Client(s))); });
  }
  async next(): Promise<string> {
    while (this.replies.length === 0) await new Promise<void>((r) => { this.waiter = r; });
    return this.replies.shift()!;
  }
  async ask(p: string): Promise<string> { this.sock.write(encodePacket(p)); return this.next(); }
}

let stub: GdbStub | undefined;
const clients: Client[] = [];
afterEach(() => { for (const c of clients.splice(0)) c.sock.destroy(); stub?.close(); stub = undefined; });

async function setUp(): Promise<{ vm: FakeVm; c: Client }> {
  const vm = new FakeVm();
  stub = await GdbStub.listen('127.0.0.1', 0, vm, () => {});
  const c = await Client.connect(stub.port);
  clients.push(c);
  return { vm, c };
}

describe('gdb stub commands', () => {
  it('stops every vCPU on attach and reports it', async () => {
    const { vm, c } = await setUp();
    expect(await c.ask('?')).toBe('T05thread:01;');
    expect(vm.held).toEqual([true, true]);
    expect(await c.ask('qSupported:multiprocess+;swbreak+')).toContain('PacketSize=1000');
    expect(await c.ask('qXfer:features:read:target.xml:0,1000')).toMatch(/^l.*i386:x86-64/);
    expect(await c.ask('qfThreadInfo')).toBe('m1,2');
    expect(await c.ask('qsThreadInfo')).toBe('l');
    expect(await c.ask('T2')).toBe('OK');
    expect(await c.ask('T3')).toBe('E02');
    expect(await c.ask('vMustReplyEmpty')).toBe('');
  });

  it('reads and writes registers of the selected thread', async () => {
    const { vm, c } = await setUp();
    const g = await c.ask('g');
    expect(g.length).toBe(2 * (17 * 8 + 4 + 6 * 4));
    expect(g.slice(0, 16)).toBe('0100000000000000'); // rax
    expect(g.slice(16 * 16, 17 * 16)).toBe('0010000000000000'); // rip 0x1000
    expect(g.slice(17 * 16, 17 * 16 + 8)).toBe('02000000'); // eflags
    expect(g.slice(17 * 16 + 8, 17 * 16 + 16)).toBe('10000000'); // cs
    expect(await c.ask('Hg2')).toBe('OK');
    expect(await c.ask('p10')).toBe('0020000000000000'); // vCPU 1's rip
    expect(await c.ask('P10=3412000000000000')).toBe('OK');
    expect(vm.states[1].regs.rip).toBe('0x1234');
    expect(await c.ask('p18')).toBe('xxxxxxxxxxxxxxxxxxxx'); // st0: unavailable
    expect(await c.ask('P12=10000000')).toBe('OK'); // cs: the value it has
    expect(await c.ask('P12=08000000')).toBe('E00');
    expect(await c.ask('Hg9')).toBe('E02');
  });

  it('reads and writes memory; bad addresses answer E14', async () => {
    const { vm, c } = await setUp();
    vm.memory.set([0xde, 0xad, 0xbe, 0xef], 0x500);
    expect(await c.ask('m500,4')).toBe('deadbeef');
    expect(await c.ask('M500,2:0102')).toBe('OK');
    expect(Array.from(vm.memory.subarray(0x500, 0x504))).toEqual([1, 2, 0xbe, 0xef]);
    expect(await c.ask('m200000,4')).toBe('E14');
    expect(await c.ask('mffffe,4')).toBe('0000'); // partial: up to the end of RAM
    expect(await c.ask('Mffffe,4:01020304')).toBe('E14');
    expect(await c.ask('M500,2:01')).toBe('E00');
    expect(await c.ask('mzz,4')).toBe('E00');
    // The boot ROM reads, but is not written (nor given int3s).
    expect(await c.ask('mfffffff0,2')).toBe('9090');
    expect(await c.ask('Mfffffff0,1:cc')).toBe('E14');
    expect(await c.ask('Z0,fffffff0,1')).toBe('E14');
    expect(vm.rom[0xff0]).toBe(0x90);
  });

  it('inserts int3 breakpoints, resumes with guest debugging on, reports the stop, detaches', async () => {
    const { vm, c } = await setUp();
    vm.memory[0x1000] = 0x55;
    expect(await c.ask('Z0,1000,1')).toBe('OK');
    expect(vm.memory[0x1000]).toBe(0xcc);
    expect(await c.ask('Z0,300000,1')).toBe('E14');
    c.sock.write(encodePacket('c'));
    await new Promise((r) => setTimeout(r, 50));
    expect(vm.held).toEqual([false, false]);
    expect(vm.guestDebug.slice(-2).map((g) => g.control)).toEqual([GUESTDBG.ENABLE | GUESTDBG.USE_SW_BP, GUESTDBG.ENABLE | GUESTDBG.USE_SW_BP]);
    // vCPU 1 hits it (it holds itself); the others are held too.
    vm.held[1] = true;
    stub!.onDebugExit(1, 3);
    expect(await c.next()).toBe('T05thread:2;swbreak:;');
    expect(vm.held).toEqual([true, true]);
    // A step runs only the stopped vCPU, with SINGLESTEP.
    c.sock.write(encodePacket('s'));
    await new Promise((r) => setTimeout(r, 50));
    expect(vm.held).toEqual([true, false]);
    expect(vm.guestDebug.at(-1)).toMatchObject({ id: 1, control: GUESTDBG.ENABLE | GUESTDBG.USE_SW_BP | GUESTDBG.SINGLESTEP });
    stub!.onDebugExit(1, 1);
    expect(await c.next()).toBe('T05thread:2;');
    expect(await c.ask('Z1,2000,1')).toBe('OK');
    c.sock.write(encodePacket('c'));
    await new Promise((r) => setTimeout(r, 50));
    const last = vm.guestDebug.at(-1)!;
    expect(last.control & GUESTDBG.USE_HW_BP).toBeTruthy();
    expect(last.debugregs?.[0]).toBe(0x2000n);
    expect(last.debugregs?.[7]).toBe(0x402n);
    // Ctrl-C stops everything.
    c.sock.write(Buffer.from([0x03]));
    expect(await c.next()).toMatch(/^T02thread:/);
    expect(vm.held).toEqual([true, true]);
    expect(await c.ask('D')).toBe('OK');
    expect(vm.memory[0x1000]).toBe(0x55);
    expect(vm.held).toEqual([false, false]);
    expect(vm.guestDebug.slice(-2).map((g) => g.control)).toEqual([0, 0]);
  });

  it('answers - to a corrupt packet and serves one debugger at a time', async () => {
    const { c } = await setUp();
    const got: Buffer[] = [];
    c.sock.on('data', (b: Buffer) => got.push(b));
    c.sock.write('$g#00');
    await new Promise((r) => setTimeout(r, 50));
    expect(Buffer.concat(got).toString()).toBe('-');
    const second = net.connect(stub!.port, '127.0.0.1');
    const closed = await new Promise<boolean>((r) => { second.on('close', () => r(true)); second.on('error', () => r(true)); });
    expect(closed).toBe(true);
    expect(await c.ask('?')).toBe('T05thread:01;');
  });
});
