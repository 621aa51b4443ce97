// Helpers for tests that run the real bin/bhyve against real KVM.
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { KVM_UNUSABLE } from './probes.js';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const BHYVE = path.join(ROOT, 'bin/bhyve');
export const GUESTS = path.join(ROOT, 'build/guests');

/** Why tests that need /dev/kvm cannot run here, or undefined when they can. */
export function kvmUnavailable(): string | undefined {
  if (KVM_UNUSABLE) return KVM_UNUSABLE;
  if (!fs.existsSync(path.join(ROOT, 'dist/bundle/bhyve-main.js'))) return 'dist/ is not built: run npm run build';
  if (!fs.existsSync(path.join(GUESTS, 'exit-testdev.rom'))) return 'test guests are not built: run scripts/build-guests.sh';
  return undefined;
}

export function rom(name: string): string {
  return path.join(GUESTS, `${name}.rom`);
}

let seq = 0;
/** A VM name unique to this test process. */
export function vmName(tag: string): string {
  return `t${process.pid}-${tag}-${seq++}`;
}

export interface BhyveRunOptions {
  cpus?: number;
  mem?: string;
  extra?: string[];
  input?: string;
  env?: Record<string, string>;
  timeout?: number;
}

/** Standard command line: hostbridge, LPC with COM1 on stdio, pc-testdev, the ROM. */
export function bhyveArgs(romPath: string, name: string, o: BhyveRunOptions = {}): string[] {
  return [
    '-c', String(o.cpus ?? 1), '-m', o.mem ?? '64M',
    '-s', '0,hostbridge', '-s', '31,lpc',
    '-l', 'com1,stdio', '-l', 'pc-testdev', '-l', `bootrom,${romPath}`,
    '-o', 'x86.require_ept_rvi=false',
    ...(o.extra ?? []),
    name,
  ];
}

export function runBhyve(args: string[], o: BhyveRunOptions = {}): ResultPromise {
  const rundir = path.join(ROOT, 'build', 'run');
  // bhyve refuses a runtime directory that group or others may write (any umask).
  fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
  fs.chmodSync(rundir, 0o700);
  return execa(BHYVE, args, {
    reject: false,
    timeout: o.timeout ?? 30_000,
    input: o.input,
    stdin: o.input === undefined ? 'ignore' : undefined,
    env: { BHYVE_RUNDIR: rundir, ...(o.env ?? {}) },
    stripFinalNewline: false,
  });
}

/** A copy of bhyve's installed tree under `dir` (bin, dist, share and
 * package.json) whose node_modules is a link to this tree's (as pnpm and
 * `npm link` lay them out), and a runtime directory: the copy's bin/bhyve
 * and that directory. `brokenWorker` names a worker bundle of dist/bundle
 * made to throw while it loads (what an unreadable koffi.node does). */
export function installedCopy(dir: string, brokenWorker?: string): { bhyve: string; rundir: string } {
  const inst = path.join(dir, 'bhyve');
  fs.mkdirSync(inst);
  for (const d of ['bin', 'dist', 'share']) fs.cpSync(path.join(ROOT, d), path.join(inst, d), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(inst, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(inst, 'node_modules'));
  if (brokenWorker !== undefined) {
    const bundle = path.join(inst, 'dist', 'bundle', brokenWorker);
    fs.writeFileSync(`${bundle}.cjs`, "throw new Error('cannot load koffi.node: EACCES');\n");
    fs.rmSync(`${bundle}.cache`, { force: true });
  }
  const rundir = path.join(dir, 'run');
  fs.mkdirSync(rundir, { mode: 0o700 });
  return { bhyve: path.join(inst, 'bin', 'bhyve'), rundir };
}
