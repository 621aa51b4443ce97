// Helpers for the interrupt-mode test guests (test/guests/README.md):
// ROM copies with the parameter and mode words patched, QEMU runs of a ROM,
// and bhyve runs that hold the guest at its end (MODE_HOLD) to read the
// device counters with bhyvectl --get-stats before letting it exit.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { BHYVE, ROOT, rom } from './bhyve.js';

export const BHYVECTL = path.join(ROOT, 'bin/bhyvectl');

/** Interrupt modes of the mode word at ROM offset 0xFFE4 (irq.h). */
export const MODE = { POLL: 0, MSIX: 1, MSI: 2, INTX: 3, EVENT_IDX: 0x100, HOLD: 0x200 } as const;

export { HAVE_QEMU } from './probes.js';

/** A copy of build/guests/NAME.rom in `dir` with the mode word (0xFFE4)
 * and the parameter (0xFFE0) of its last 64 KiB set. */
export function romWith(dir: string, name: string, mode: number, param = 0): string {
  const b = fs.readFileSync(rom(name));
  const tail = b.length - 0x10000; // a larger ROM (tcp.rom) ends with the 64 KiB one
  b.writeUInt32LE(param >>> 0, tail + 0xffe0);
  b.writeUInt32LE(mode >>> 0, tail + 0xffe4);
  const out = path.join(dir, `${name}-${mode.toString(16)}-${param.toString(16)}.rom`);
  fs.writeFileSync(out, b);
  return out;
}

/** QEMU's pc machine with the ROM as -bios, COM1 on stdout, isa-debug-exit. */
export function qemuArgs(romPath: string, devices: string[]): string[] {
  return [
    '-accel', 'kvm', '-accel', 'tcg', '-machine', 'pc', '-m', '256M', '-smp', '1',
    '-nodefaults', '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
    '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot', '-bios', romPath, ...devices,
  ];
}

export async function runQemu(romPath: string, devices: string[], prefix: string[] = [], timeout = 60_000): Promise<{ status: number; out: string }> {
  const argv = [...prefix, 'qemu-system-x86_64', ...qemuArgs(romPath, devices)];
  const r = await execa(argv[0], argv.slice(1), { reject: false, timeout, stdin: 'ignore', encoding: 'latin1', stripFinalNewline: false });
  return { status: r.exitCode ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** bhyvectl --get-stats counters of vCPU 0 as description -> value. */
export function parseStats(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    const i = line.lastIndexOf('\t');
    if (i < 0) continue;
    m.set(line.slice(0, i).trim(), Number(line.slice(i + 1)));
  }
  return m;
}

export interface HeldRun {
  status: number;
  out: string;
  /** bhyvectl --get-stats, read while the guest held. */
  stats: Map<string, number>;
}

/**
 * Runs bhyve with `args` (the ROM built with MODE.HOLD), waits for the
 * guest's "hold: waiting" line, reads bhyvectl --get-stats (and runs
 * `whileHeld` with the VM's runtime directory), then sends a byte on COM1
 * (the guest takes it by interrupt and exits).
 */
export async function runHeld(args: string[], name: string, o: {
  env?: Record<string, string>; prefix?: string[]; timeout?: number; whileHeld?: (vmDir: string) => void;
} = {}): Promise<HeldRun> {
  const rundir = path.join(ROOT, 'build', 'run');
  fs.mkdirSync(rundir, { recursive: true });
  const env = { BHYVE_RUNDIR: rundir, ...(o.env ?? {}) };
  const argv = [...(o.prefix ?? []), BHYVE, ...args];
  const child = execa(argv[0], argv.slice(1), {
    reject: false, timeout: o.timeout ?? 90_000, stdin: 'pipe', env, encoding: 'latin1', stripFinalNewline: false,
  });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
  child.stderr!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
  let stats = new Map<string, number>();
  const ended = (async () => { await child; return true; })();
  const held = (async () => {
    while (!out.includes('hold: waiting')) {
      if (await Promise.race([ended, new Promise<false>((r) => setTimeout(() => r(false), 50))])) return false;
    }
    return true;
  })();
  if (await held) {
    const s = await execa(BHYVECTL, [`--vm=${name}`, '--get-stats'], { reject: false, env, stdin: 'ignore', timeout: 30_000 });
    stats = parseStats(s.stdout);
    try {
      o.whileHeld?.(path.join(rundir, name));
    } finally {
      child.stdin!.write('q');
    }
  }
  const r = await child;
  return { status: r.exitCode ?? -1, out, stats };
}

/** The counter `what` of the device at slot `slot` (e.g. "virtio-blk@pci.0.3.0"). */
export function stat(stats: Map<string, number>, device: string, what: string): number {
  const v = stats.get(`${device} ${what}`);
  if (v === undefined) throw new Error(`no counter '${device} ${what}' in bhyvectl --get-stats (have: ${[...stats.keys()].join(', ')})`);
  return v;
}

export interface InteractiveRun {
  status: number;
  out: string;
  /** bhyvectl --get-stats at the guest's hold (empty without `vm`). */
  stats: Map<string, number>;
}

/**
 * Runs argv (bhyve or QEMU), waits until the guest prints `ready`, runs
 * `whenReady` (the host side of the exchange: connect a socket, inject
 * input, wait for the guest's answer). With `vm` (a bhyve run of a ROM
 * built with MODE.HOLD) then reads bhyvectl --get-stats at the guest's
 * hold and releases it with a byte on COM1.
 */
export async function runInteractive(argv: string[], o: {
  ready: string; whenReady: (output: () => string) => Promise<void>; vm?: string; timeout?: number;
}): Promise<InteractiveRun> {
  const rundir = path.join(ROOT, 'build', 'run');
  fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
  const env = { BHYVE_RUNDIR: rundir };
  const child = execa(argv[0], argv.slice(1), {
    reject: false, timeout: o.timeout ?? 150_000, stdin: 'pipe', env, encoding: 'latin1', stripFinalNewline: false,
  });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
  child.stderr!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
  const ended = (async () => { await child; return true; })();
  const until = async (s: string): Promise<boolean> => {
    while (!out.includes(s)) {
      if (await Promise.race([ended, new Promise<false>((r) => setTimeout(() => r(false), 50))])) return out.includes(s);
    }
    return true;
  };
  let stats = new Map<string, number>();
  if (await until(o.ready)) {
    await Promise.race([o.whenReady(() => out), ended]);
    if (o.vm !== undefined && await until('hold: waiting')) {
      const s = await execa(BHYVECTL, [`--vm=${o.vm}`, '--get-stats'], { reject: false, env, stdin: 'ignore', timeout: 30_000 });
      stats = parseStats(s.stdout);
      child.stdin!.write('q');
    }
  }
  const r = await child;
  return { status: r.exitCode ?? -1, out, stats };
}
