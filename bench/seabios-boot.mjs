#!/usr/bin/env node
// Real firmware boot: SeaBIOS (Debian's /usr/share/seabios/bios.bin) boots
// a virtio-blk disk whose boot sector (test/guests/bootsector, built by
// scripts/build-bootsector.sh) prints "boot sector running" on COM1 and
// exits through isa-debug-exit / pc-testdev with status 33. Measured on
// bhyve-kvm (lpc.fwcfg=qemu: i440FX, fw_cfg) and on QEMU's pc machine with
// the same firmware and the same disk image, alternating runs:
//   - wall time from spawning the VMM until the boot sector's exit,
//   - time until "boot sector running" arrived on the VMM's stdout.
// Each figure is the median of REPS runs.
//
// Usage: node bench/seabios-boot.mjs [--reps 3] [--only bhyve|qemu] [--no-write]
// Writes the "seabios-boot" section of BENCHMARKS.md (unless --no-write).
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  ROOT, GUESTS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK,
} from './lib.mjs';

const SEABIOS = process.env.SEABIOS ?? '/usr/share/seabios/bios.bin';
const BHYVE_BIN = process.env.BHYVE_BIN ?? join(ROOT, 'bin', 'bhyve');
const MARKER = 'boot sector running';

const { values: opt } = parseArgs({
  options: {
    reps: { type: 'string', default: '3' },
    only: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
  },
});
const reps = Number(opt.reps);
if (!(reps >= 1)) {
  console.error('seabios-boot: need --reps >= 1');
  process.exit(4);
}
if (!existsSync(SEABIOS)) {
  console.error(`seabios-boot: ${SEABIOS} is missing (apt-get install seabios)`);
  process.exit(4);
}
try {
  await execa(join(ROOT, 'scripts', 'build-bootsector.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
} catch (e) {
  console.error(`seabios-boot: scripts/build-bootsector.sh failed (${e.shortMessage ?? e.message})`);
  process.exit(4);
}
const disk = join(GUESTS, 'bootsector.img');

let vmSeq = 0;
const VMMS = {
  bhyve: {
    label: 'bhyve-kvm (node bin/bhyve, lpc.fwcfg=qemu)',
    argv(img) {
      this.lastVm = `bench-sb-${process.pid}-${++vmSeq}`;
      return [process.execPath, [
        BHYVE_BIN, '-m', '256M', '-s', '0,hostbridge', '-s', '1,lpc', '-s', `2,virtio-blk,${img}`,
        '-l', 'com1,stdio', '-l', 'pc-testdev', '-l', `bootrom,${SEABIOS},fwcfg=qemu`,
        '-o', 'x86.require_ept_rvi=false', this.lastVm,
      ]];
    },
    async cleanup() {
      const ctl = join(ROOT, 'bin', 'bhyvectl');
      if (this.lastVm && existsSync(ctl)) {
        await execa(process.execPath, [ctl, '--destroy', `--vm=${this.lastVm}`], { reject: false, stdio: 'ignore' });
      }
    },
    available() { return existsSync(join(ROOT, 'dist/cli/bhyve-main.js')) ? null : 'dist/ is not built: run npm run build'; },
  },
  qemu: {
    label: 'QEMU (qemu-system-x86_64 -accel kvm -machine pc)',
    argv(img) {
      return ['qemu-system-x86_64', [
        '-accel', 'kvm', '-machine', 'pc', '-smp', '1', '-m', '256M', '-nodefaults', '-display', 'none',
        '-monitor', 'none', '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot',
        '-bios', SEABIOS, '-drive', `file=${img},if=none,format=raw,id=d0`, '-device', 'virtio-blk-pci,drive=d0',
      ]];
    },
    async cleanup() {},
    available() { return null; },
  },
};

const keys = Object.keys(VMMS).filter((k) => !opt.only || opt.only === k);
const results = Object.fromEntries(keys.map((k) => [k, { wall: [], marker: [], failed: null, skipped: VMMS[k].available() }]));
for (let i = 0; i < reps; i++) {
  for (const key of keys) {
    const res = results[key];
    if (res.skipped || res.failed) continue;
    const r = await runVmm(VMMS[key], disk, { marker: MARKER, timeoutMs: 120_000 });
    if (r.code !== TESTDEV_OK || r.firstMs === null) {
      res.failed = describeFailure(r, TESTDEV_OK);
      console.error(`seabios-boot: ${key}: ${res.failed}`);
      continue;
    }
    res.wall.push(r.wallMs);
    res.marker.push(r.firstMs);
    console.error(`seabios-boot: ${key} run ${i + 1}: boot sector ran at ${r.firstMs.toFixed(0)} ms, exit at ${r.wallMs.toFixed(0)} ms`);
  }
}

const rows = [];
const notes = [];
for (const key of keys) {
  const res = results[key];
  const vmm = VMMS[key];
  if (res.skipped) { notes.push(`${vmm.label}: skipped (${res.skipped}).`); continue; }
  if (res.failed) { notes.push(`${vmm.label}: failed (${res.failed}).`); continue; }
  rows.push([vmm.label, `${(median(res.marker) / 1000).toFixed(2)} s`, `${(median(res.wall) / 1000).toFixed(2)} s`,
    res.wall.map((w) => (w / 1000).toFixed(2)).join(', ')]);
}
const table = mdTable(['VMM', 'until "boot sector running"', 'until exit (33)', 'runs (s, to exit)'], rows);
const body = `## SeaBIOS boot of a virtio-blk disk (bench/seabios-boot.mjs)

${await hostInfo()}. Median of ${reps} alternating runs each.
SeaBIOS ${SEABIOS} (the same file for both), 256 MiB, one vCPU; the disk is
build/guests/bootsector.img (boot sector from test/guests/bootsector) on
virtio-blk at slot 2. Times from spawning the VMM. On this host SeaBIOS's
32-bit code runs at CPL0 and is interpreted by KVM's instruction emulator,
which dominates both columns: in both VMMs the stretch from SeaBIOS's
e820 dump to INT 19h (where it clears low memory) takes 2.5-4.5 s.

${table}
${notes.length ? `\n${notes.join('\n')}\n` : ''}`;
console.log(body);
if (!opt['no-write']) console.error(`seabios-boot: wrote ${writeSection('seabios-boot', body)}`);
