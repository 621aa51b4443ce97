// bhyve -G against Debian's real gdb in batch mode: the mb-gdb Multiboot
// kernel (test/guests/kernels/mb-gdb.S) is loaded with bhyveload and run
// with `-G w<port>`, so it waits for the debugger before its first
// instruction; gdb, given the kernel's ELF with symbols, reads registers,
// stops at the symbol `tick`, steps, reads `counter`, writes `exit_code`,
// and detaches: the guest then finishes and bhyve exits with the status
// the written exit_code asks for (35 instead of the guest's own 33).
// The breakpoint is an int3 (`break`, Z0) where KVM runs guest kernel code
// natively; on a kvm_pvm host (no VT-x/SVM: CPL0 guest code is interpreted
// by KVM's instruction emulator, which cannot deliver a protected-mode int3)
// it is a debug-register breakpoint (`hbreak`, Z1).
// A second test speaks the protocol itself to a running 2-vCPU guest:
// the guest spins (its `hold` word set through M), 0x03 (Ctrl-C) stops both
// vCPUs with rip inside the spin loop, and after detach the guest exits.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BHYVE, GUESTS, ROOT, kvmUnavailable, rom } from '../support/bhyve.js';
import { encodePacket, PacketReader } from '../../src/vmm/gdb-packet.js';

const BHYVELOAD = path.join(ROOT, 'bin/bhyveload');
const ELF = path.join(ROOT, 'build/kernels/mb-gdb.elf');
const skipWhy = kvmUnavailable()
  ?? (spawnSync('sh', ['-c', 'command -v gcc && command -v ld'], { encoding: 'utf8' }).status === 0 ? undefined : 'gcc/binutils are not installed')
  ?? (spawnSync('sh', ['-c', 'command -v gdb'], { encoding: 'utf8' }).status === 0 ? undefined : 'gdb is not installed (apt-get install gdb)');

let tmp = '';
const env = (): Record<string, string> => ({ BHYVE_RUNDIR: path.join(tmp, 'run'), BHYVE_DEBUG: '' });

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

beforeAll(() => {
  if (skipWhy) return;
  const b = spawnSync('sh', [path.join(ROOT, 'scripts/build-kernels.sh')], { encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`scripts/build-kernels.sh failed: ${b.stderr}`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gdb-stub-'));
  fs.mkdirSync(path.join(tmp, 'host/boot'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'build/kernels/mb-gdb.bin'), path.join(tmp, 'host/boot/kernel'));
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const nm = (sym: string, elf = ELF): number => {
  const r = spawnSync('nm', [elf], { encoding: 'utf8' });
  const line = r.stdout.split('\n').find((l) => l.endsWith(` ${sym}`));
  return parseInt(line!.split(' ')[0], 16);
};

async function startHeld(name: string, port: number, extra: string[] = []) {
  const load = await execa(BHYVELOAD, ['-m', '64M', '-h', path.join(tmp, 'host'), '-e', 'kernel=/boot/kernel', name], { env: env(), reject: false });
  expect(load.exitCode).toBe(0);
  const bhyve = execa(BHYVE, [...extra, '-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc', '-l', 'pc-testdev',
    '-o', 'x86.require_ept_rvi=false', '-G', `w${port}`, name], { env: env(), reject: false, stdin: 'ignore', timeout: 100_000 });
  let stderr = '';
  bhyve.stderr?.on('data', (c: Buffer) => { stderr += c.toString(); });
  const end = Date.now() + 30_000;
  while (!stderr.includes('waiting for a debugger')) {
    if (Date.now() > end || bhyve.exitCode !== null) throw new Error(`bhyve did not wait for a debugger: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { bhyve, stderr: () => stderr };
}

/** A minimal protocol client: one reply per packet, acks skipped. */
class RspClient {
  private readonly reader = new PacketReader();
  private readonly replies: string[] = [];
  private wake: (() => void) | undefined;
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (b: Buffer) => {
      for (const e of this.reader.feed(b)) if (e.kind === 'packet') this.replies.push(e.payload.toString('latin1'));
      this.wake?.();
    });
  }
  static connect(port: number): Promise<RspClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new RspClient(s)));
      s.once('error', reject);
    });
  }
  async next(ms = 20_000): Promise<string> {
    const end = Date.now() + ms;
    while (this.replies.length === 0) {
      if (Date.now() > end) throw new Error('no reply from the stub');
      await new Promise<void>((r) => { this.wake = r; setTimeout(r, 100); });
    }
    return this.replies.shift()!;
  }
  ask(p: string): Promise<string> { this.sock.write(encodePacket(p)); return this.next(); }
}

const le32 = (v: number): string => Buffer.from(Uint32Array.of(v).buffer).toString('hex');

describe.skipIf(skipWhy !== undefined)(`bhyve -G with gdb${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 120_000 }, () => {
  it('registers, a breakpoint at a symbol, continue, step, memory read and write, detach; the guest then exits with the written status', async () => {
    const name = `gdb${process.pid}`;
    const port = await freePort();
    const { bhyve, stderr: err } = await startHeld(name, port);
    const pvm = fs.existsSync('/sys/module/kvm_pvm');
    const cmds = [
      'set pagination off',
      'set confirm off',
      'set architecture i386:x86-64',
      `target remote 127.0.0.1:${port}`,
      'printf "start rip=%lx\\n", $rip',
      'info threads',
      `${pvm ? 'hbreak' : 'break'} tick`,
      'continue',
      'printf "bp rip=%lx rcx=%lx\\n", $rip, $rcx',
      'continue',
      'printf "bp2 rip=%lx rcx=%lx\\n", $rip, $rcx',
      'stepi',
      'printf "step rip=%lx\\n", $rip',
      'printf "counter=%x\\n", *(int *)(long)&counter',
      'set var *(int *)(long)&exit_code = 0x11',
      'printf "exit_code=%x\\n", *(int *)(long)&exit_code',
      'printf "bad=%x\\n", *(int *)0x7ffff000000',
      'delete',
      'detach',
    ];
    const script = path.join(tmp, 'cmds');
    fs.writeFileSync(script, `${cmds.join('\n')}\n`);
    const gdb = await execa('gdb', ['-batch', '-nx', '-x', script, ELF], { reject: false, timeout: 60_000 });
    const out = `${gdb.stdout}\n${gdb.stderr}`;
    const r = await bhyve;
    const tick = nm('tick');
    expect(out).toContain(`start rip=${nm('entry').toString(16)}`);
    expect(out).toMatch(/Thread 1 .*entry/);
    expect(out).toContain(`bp rip=${tick.toString(16)} rcx=0`);
    expect(out).toContain(`bp2 rip=${tick.toString(16)} rcx=1`);
    expect(out).toContain(`step rip=${(tick + 1).toString(16)}`); // inc %ecx is 1 byte
    expect(out).toContain('counter=1');
    expect(out).toContain('exit_code=11');
    expect(out).toMatch(/Cannot access memory at address 0x7ffff000000/);
    expect(out).toContain('detached');
    expect(r.exitCode, `${out}\n${err()}`).toBe(35); // (0x11 << 1) | 1: the written exit_code
    await execa(path.join(ROOT, 'bin/bhyvectl'), [`--vm=${name}`, '--destroy'], { env: env(), reject: false });
  });

  it.each(['pool', 'thread'])('Ctrl-C stops a running 2-vCPU guest (vcpu.ap_model=%s) in its spin loop; memory written, detach, the guest exits', async (model) => {
    const name = `gdbc${model}${process.pid}`;
    const port = await freePort();
    const { bhyve, stderr } = await startHeld(name, port, ['-c', '2', '-o', `vcpu.ap_model=${model}`]);
    const c = await RspClient.connect(port);
    try {
      expect(await c.ask('?')).toBe('T05thread:01;');
      expect(await c.ask('qfThreadInfo')).toBe('m1,2');
      // The AP (held, waiting for INIT/SIPI) answers for its registers too.
      expect(await c.ask('Hg2')).toBe('OK');
      expect((await c.ask('g')).length).toBe(2 * (17 * 8 + 4 + 6 * 4));
      expect(await c.ask('Hg1')).toBe('OK');
      expect(await c.ask(`M${nm('hold').toString(16)},4:${le32(1)}`)).toBe('OK');
      c.sock.write(encodePacket('c'));
      await new Promise((r) => setTimeout(r, 1000)); // the guest runs into its spin loop
      expect(bhyve.exitCode).toBeNull();
      c.sock.write(Buffer.from([0x03]));
      expect(await c.next()).toMatch(/^T02thread:/);
      expect(await c.ask('Hg1')).toBe('OK');
      const rip = Buffer.from(await c.ask('p10'), 'hex').readBigUInt64LE();
      expect(Number(rip)).toBeGreaterThanOrEqual(nm('hold_loop'));
      expect(Number(rip)).toBeLessThan(nm('spin'));
      expect(await c.ask(`m${nm('counter').toString(16)},4`)).toBe(le32(3));
      expect(await c.ask('m7ffff000000,4')).toBe('E14');
      expect(await c.ask(`M${nm('hold').toString(16)},4:${le32(0)}`)).toBe('OK');
      expect(await c.ask('D')).toBe('OK');
      const r = await bhyve;
      expect(r.exitCode, stderr()).toBe(33);
    } finally {
      c.sock.destroy();
      bhyve.kill();
      await execa(path.join(ROOT, 'bin/bhyvectl'), [`--vm=${name}`, '--destroy'], { env: env(), reject: false });
    }
  });

  it.each(['pool', 'thread'])('a breakpoint in AP code stops on the AP\'s thread (smp.rom, -c 2, vcpu.ap_model=%s)', async (model) => {
    const name = `gdbs${model}${process.pid}`;
    const port = await freePort();
    const bhyve = execa(BHYVE, ['-c', '2', '-o', `vcpu.ap_model=${model}`, '-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc',
      '-l', 'com1,stdio', '-l', 'pc-testdev', '-l', `bootrom,${rom('smp')}`, '-o', 'x86.require_ept_rvi=false', '-G', `w${port}`, name],
    { env: env(), reject: false, stdin: 'ignore', timeout: 100_000 });
    let stderr = '';
    bhyve.stderr?.on('data', (c: Buffer) => { stderr += c.toString(); });
    const end = Date.now() + 30_000;
    while (!stderr.includes('waiting for a debugger')) {
      if (Date.now() > end || bhyve.exitCode !== null) throw new Error(`bhyve did not wait for a debugger: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // The 64 KiB ROM ends at 4 GiB; the APs run its ap32 in flat protected mode.
    const ap32 = 0xffff0000 + nm('ap32', path.join(GUESTS, 'smp.elf'));
    const script = path.join(tmp, `cmds-${model}`);
    fs.writeFileSync(script, [
      'set pagination off', 'set architecture i386:x86-64', `target remote 127.0.0.1:${port}`,
      `hbreak *0x${ap32.toString(16)}`, 'continue', 'printf "thread=%d rip=%lx\\n", $_thread, $rip',
      'delete', 'detach', ''].join('\n'));
    const gdb = await execa('gdb', ['-batch', '-nx', '-x', script], { reject: false, timeout: 60_000 });
    const r = await bhyve;
    const out = `${gdb.stdout}\n${gdb.stderr}`;
    expect(out).toContain(`thread=2 rip=${ap32.toString(16)}`);
    expect(r.stdout).toContain('all 2 cpus up');
    expect(r.exitCode, `${out}\n${stderr}`).toBe(33);
  });
});
