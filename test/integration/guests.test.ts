// The test boot ROMs (test/guests/*.S -> build/guests/*.rom) build from
// source, have the fixed layout the VMM and the benchmarks rely on, and do
// what their headers say under QEMU (the side-by-side peer), when QEMU is
// installed. Under QEMU the bhyve-only exits differ: port 0x404 is not a PM
// block (exit-poweroff falls back to status 5), 0xcf9/0x64 resets and triple
// faults end QEMU -no-reboot with status 0, and hlt just halts.

import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { HAVE_QEMU } from '../support/probes.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const GUESTS = join(ROOT, 'build', 'guests');
const ROMS = [
  'bench-exit', 'bench-exit-user', 'demo', 'echo', 'exit-halt', 'exit-kbdreset', 'exit-poweroff',
  'exit-reset', 'exit-testdev', 'exit-triplefault', 'smp',
];

const rom = (name: string): string => join(GUESTS, `${name}.rom`);

function qemu(name: string, opts: { smp?: number; input?: string; timeoutMs?: number; tcg?: boolean } = {}) {
  const r = spawnSync('qemu-system-x86_64', [
    ...(opts.tcg ? [] : ['-accel', 'kvm']), '-accel', 'tcg', '-machine', 'pc', '-m', '256M', '-smp', String(opts.smp ?? 1),
    '-nodefaults', '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
    '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot', '-bios', rom(name),
  ], { input: opts.input ?? '', encoding: 'latin1', timeout: opts.timeoutMs ?? 30_000 });
  return { status: r.status, out: r.stdout, timedOut: (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT' };
}

beforeAll(() => {
  execFileSync(join(ROOT, 'scripts', 'build-guests.sh'), { stdio: 'pipe' });
}, 60_000);

describe('test ROM images', () => {
  it.each(ROMS)('%s.rom is 64 KiB with a near jmp to offset 0 at the reset vector', (name) => {
    const b = readFileSync(rom(name));
    expect(b.length).toBe(65536);
    expect(b[0xfff0]).toBe(0xe9);
    expect((0xfff3 + b.readInt16LE(0xfff1)) & 0xffff).toBe(0);
  });

  it.each(['bench-exit', 'bench-exit-user'])('%s.rom carries its default exit count at offset 0xFFE0', (name) => {
    expect(readFileSync(rom(name)).readUInt32LE(0xffe0)).toBe(100000);
  });
});

describe.skipIf(!HAVE_QEMU)('test ROMs under QEMU', () => {
  it('exit-testdev prints hello and exits 33', () => {
    const r = qemu('exit-testdev');
    expect(r.out).toBe('hello from testdev rom\r\n');
    expect(r.status).toBe(33);
  });

  it('exit-halt prints and halts', () => {
    const r = qemu('exit-halt', { timeoutMs: 3000 });
    expect(r.out).toBe('halting\r\n');
    expect(r.timedOut).toBe(true); // still halted when killed
  });

  it.each([
    ['exit-reset', 'resetting\r\n'],
    ['exit-kbdreset', 'resetting via keyboard controller\r\n'],
    ['exit-triplefault', 'triple faulting\r\n'],
  ])('%s resets the machine (QEMU -no-reboot exits 0)', (name, text) => {
    const r = qemu(name);
    expect(r.out).toBe(text);
    expect(r.status).toBe(0);
  });

  it('exit-poweroff writes port 0x404, then falls back to status 5', () => {
    const r = qemu('exit-poweroff');
    expect(r.out).toBe('powering off\r\npoweroff failed\r\n');
    expect(r.status).toBe(5);
  });

  it('echo echoes until q', () => {
    const r = qemu('echo', { input: 'hello, world\nq' });
    expect(r.out).toBe('echo ready\r\nhello, world\n\r\nbye\r\n');
    expect(r.status).toBe(33);
  });

  it('smp brings up every AP', () => {
    const r = qemu('smp', { smp: 2 });
    expect(r.out).toMatch(/^BSP 0 up\r\nAP 1 up\r\nall 2 cpus up\r\n$/);
    expect(r.status).toBe(33);
  });

  it('demo reports vendor, hypervisor, cpus and memory', () => {
    const r = qemu('demo', { smp: 2 });
    expect(r.out).toMatch(/^bhyve-kvm demo guest\r\ncpu vendor: \w{12}\r\nhypervisor: .*\r\n/);
    expect(r.out).toContain('cpus: 2\r\n');
    expect(r.out).toContain('memory: 256 MiB\r\n');
    expect(r.out).toContain('powering off\r\npoweroff failed\r\n');
    expect(r.status).toBe(33);
  });

  it('bench-exit performs its exits and exits 33', () => {
    const r = qemu('bench-exit');
    expect(r.out).toBe('start\r\ndone\r\n');
    expect(r.status).toBe(33);
  });

  it('bench-exit-user performs its exits from ring 3 of long mode (TCG: fast everywhere)', () => {
    const r = qemu('bench-exit-user', { tcg: true });
    expect(r.out).toBe('start\r\ndone\r\n');
    expect(r.status).toBe(33);
  });
});
