// bhyveload of the PVH and bzImage test kernels (test/guests/kernels/
// pvh-echo.S, bz-echo.S, built by scripts/build-kernels.sh), then bhyve runs
// them on real KVM: each prints on COM1 what its boot loader handed it (the
// command line, the initrd's size and first bytes, the memory map) and exits
// through pc-testdev with status 33; bhyvectl --destroy removes the VM.
// BHYVE_RUNDIR points into a temporary directory.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BHYVE, ROOT, kvmUnavailable } from '../support/bhyve.js';

const BHYVECTL = path.join(ROOT, 'bin/bhyvectl');
const BHYVELOAD = path.join(ROOT, 'bin/bhyveload');
const KERNELS = path.join(ROOT, 'build/kernels');
const skipWhy = kvmUnavailable()
  ?? (spawnSync('sh', ['-c', 'command -v as && command -v ld && command -v objcopy'], { encoding: 'utf8' }).status === 0
    ? undefined : 'GNU binutils (as, ld, objcopy) are not installed');

const M = 1024 * 1024;
const CMDLINE = 'console=ttyS0 root=/dev/vda answer=42 quoted="a b"';
// An initrd that is not a whole number of pages, with bytes a text dump would hide.
const INITRD = Buffer.from(Array.from({ length: 3 * 4096 + 77 }, (_, i) => (i * 2654435761 + 0x5a) >>> 24));

let tmp = '';
let rundir = '';
let host = '';
const env = (): Record<string, string> => ({ BHYVE_RUNDIR: rundir, BHYVE_DEBUG: '' });

async function tool(bin: string, args: string[], timeout = 30_000) {
  const r = await execa(bin, args, { reject: false, env: env(), stdin: 'ignore', timeout, stripFinalNewline: false });
  return {
    status: r.exitCode ?? -1, stdout: String(r.stdout),
    lines: String(r.stderr).split('\n').filter((l) => l !== '' && !/^bhyve: warning:/.test(l)),
  };
}

const hex64 = (v: number) => `0x${v.toString(16).padStart(16, '0')}`;
const firstBytes = (b: Buffer) => [...b.subarray(0, 16)].map((x) => ` ${x.toString(16).padStart(2, '0')}`).join('');
// What a 64 MiB guest must be told, written out (E820 type 1 RAM, 2
// reserved): conventional memory, the legacy VGA/BIOS hole, the rest.
const map = [
  { addr: 0x0, size: 0xa0000, type: 1 },
  { addr: 0xa0000, size: 0x60000, type: 2 },
  { addr: 0x100000, size: 0x3f00000, type: 1 },
];

beforeAll(() => {
  if (skipWhy) return;
  const b = spawnSync('sh', [path.join(ROOT, 'scripts/build-kernels.sh')], { encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`scripts/build-kernels.sh failed: ${b.stderr}`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyveload-kernels-'));
  rundir = path.join(tmp, 'run');
  host = path.join(tmp, 'host');
  fs.mkdirSync(path.join(host, 'boot'), { recursive: true });
  fs.copyFileSync(path.join(KERNELS, 'pvh-echo.elf'), path.join(host, 'boot/pvh-echo'));
  fs.copyFileSync(path.join(KERNELS, 'bz-echo.bzImage'), path.join(host, 'boot/vmlinuz'));
  fs.writeFileSync(path.join(host, 'boot/initrd.img'), INITRD);
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function loadAndRun(vm: string, kernel: string, rip: number): Promise<string> {
  const load = await tool(BHYVELOAD, ['-m', '64M', '-h', host, '-e', `kernel=${kernel}`, '-e', 'initrd=/boot/initrd.img',
    '-e', `cmdline=${CMDLINE}`, vm]);
  expect(load.lines).toEqual([]);
  expect(load.status).toBe(0);
  const r0 = await tool(BHYVECTL, [`--vm=${vm}`, '--get-rip']);
  expect(r0.stdout).toBe(`rip[0]\t\t${hex64(rip)}\n`);
  const run = await tool(BHYVE, ['-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc', '-l', 'com1,stdio', '-l', 'pc-testdev',
    '-o', 'x86.require_ept_rvi=false', vm], 60_000);
  expect(run.lines).toEqual([]);
  expect(run.status).toBe(33);
  const destroy = await tool(BHYVECTL, ['--destroy', `--vm=${vm}`]);
  expect(destroy.status).toBe(0);
  expect(fs.existsSync(path.join(rundir, vm))).toBe(false);
  return run.stdout;
}

describe.skipIf(skipWhy !== undefined)(`bhyveload of PVH and bzImage kernels, then bhyve${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 90_000 }, () => {
  it('a PVH kernel gets hvm_start_info: command line, the initrd as module 0, the memory map (exit 33)', async () => {
    const out = await loadAndRun('pvh', '/boot/pvh-echo', 0x100000);
    expect(out).toBe([
      'pvh-echo: magic ok version 1',
      `cmdline: ${CMDLINE}`,
      'modules: 1',
      `mod0: size=${INITRD.length} bytes:${firstBytes(INITRD)}`,
      `memmap: ${map.length}`,
      ...map.map((e, i) => `memmap[${i}]: ${hex64(e.addr)} ${hex64(e.size)} ${e.type}`),
      '',
    ].join('\n'));
  });

  it('a bzImage kernel gets boot_params at its 64-bit entry: header, cmd_line_ptr, ramdisk, e820 (exit 33)', async () => {
    const out = await loadAndRun('bz', '/boot/vmlinuz', 0x100200);
    // The initrd goes as high as initrd_addr_max and RAM below 4 GiB allow, page aligned.
    const image = Math.floor((64 * M - INITRD.length) / 4096) * 4096;
    expect(out).toBe([
      'bz-echo: 64-bit entry, boot_params at 0x0000000000007000',
      'hdr: HdrS version 0x020f loader 0xff',
      `cmdline: ${CMDLINE}`,
      `ramdisk: image=0x${image.toString(16).padStart(8, '0')} size=${INITRD.length}`,
      `initrd:${firstBytes(INITRD)}`,
      `e820: ${map.length}`,
      ...map.slice(0, 4).map((e, i) => `e820[${i}]: ${hex64(e.addr)} ${hex64(e.size)} ${e.type}`),
      '',
    ].join('\n'));
  });
});
