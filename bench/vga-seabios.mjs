#!/usr/bin/env node
// The cost of a VGA BIOS on fbuf's vga=on VGA, against QEMU's standard VGA:
// SeaBIOS (Debian's bios.bin) boots the virtio-blk disk of
// bench/seabios-boot.mjs (its boot sector prints on COM1 and exits with
// 33), once without a display and once with a VGA whose BIOS SeaBIOS runs:
//   bhyve-kvm  -s 3,fbuf,vga=on plus Debian's vgabios-isavga.bin as the
//              fw_cfg file vgaroms/ (bhyve.8);
//   QEMU       -vga std (its PCI ROM: vgabios-stdvga.bin).
// The VGA BIOS sets text mode 3 (registers, DAC, the font into plane 2,
// clearing the screen) and SeaBIOS prints its boot messages through it;
// both VMMs let KVM queue the VGA memory writes (coalesced MMIO).
// Each figure is the median of REPS alternating runs: wall time from
// spawning the VMM until "boot sector running" on COM1.
//
// Usage: node bench/vga-seabios.mjs [--reps 3] [--no-write]
// Writes the "vga-seabios" section of BENCHMARKS.md (unless --no-write).
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, GUESTS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK } from './lib.mjs';

const SEABIOS = '/usr/share/seabios/bios.bin';
const VGABIOS = '/usr/share/seabios/vgabios-isavga.bin';
const BHYVE_BIN = process.env.BHYVE_BIN ?? join(ROOT, 'bin', 'bhyve');
const MARKER = 'boot sector running';

const { values: opt } = parseArgs({
  options: { reps: { type: 'string', default: '3' }, 'no-write': { type: 'boolean', default: false } },
});
const reps = Number(opt.reps);
for (const f of [SEABIOS, VGABIOS]) {
  if (!existsSync(f)) { console.error(`vga-seabios: ${f} is missing (apt-get install seabios)`); process.exit(4); }
}
await execa(join(ROOT, 'scripts', 'build-bootsector.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
const disk = join(GUESTS, 'bootsector.img');

let vmSeq = 0;
function bhyve(vga) {
  return {
    label: vga ? 'bhyve-kvm, fbuf vga=on + vgabios-isavga (fw_cfg vgaroms/)' : 'bhyve-kvm, no display',
    argv(img) {
      this.lastVm = `bench-vga-${process.pid}-${++vmSeq}`;
      return [process.execPath, [
        BHYVE_BIN, '-m', '256M', '-s', '0,hostbridge', '-s', '1,lpc', '-s', `2,virtio-blk,${img}`,
        ...(vga ? ['-s', '3,fbuf,tcp=127.0.0.1:0,vga=on', '-f', `vgaroms/vgabios-isavga.bin,file=${VGABIOS}`] : []),
        '-l', 'com1,stdio', '-l', 'pc-testdev', '-l', `bootrom,${SEABIOS},fwcfg=qemu`,
        '-o', 'x86.require_ept_rvi=false', this.lastVm,
      ]];
    },
    async cleanup() {
      await execa(process.execPath, [join(ROOT, 'bin', 'bhyvectl'), '--destroy', `--vm=${this.lastVm}`], { reject: false, stdio: 'ignore' });
    },
  };
}
function qemu(vga) {
  return {
    label: vga ? 'QEMU, -vga std (vgabios-stdvga)' : 'QEMU, no display',
    argv(img) {
      return ['qemu-system-x86_64', [
        '-accel', 'kvm', '-machine', 'pc', '-smp', '1', '-m', '256M', '-nodefaults', '-display', 'none',
        '-monitor', 'none', '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot',
        ...(vga ? ['-vga', 'std', '-vnc', '127.0.0.1:0,to=99'] : []),
        '-bios', SEABIOS, '-drive', `file=${img},if=none,format=raw,id=d0`, '-device', 'virtio-blk-pci,drive=d0',
      ]];
    },
    async cleanup() {},
  };
}

const configs = { 'bhyve-none': bhyve(false), 'bhyve-vga': bhyve(true), 'qemu-none': qemu(false), 'qemu-vga': qemu(true) };
const results = Object.fromEntries(Object.keys(configs).map((k) => [k, { times: [], failed: null }]));
for (let i = 0; i < reps; i++) {
  for (const [key, vmm] of Object.entries(configs)) {
    const res = results[key];
    if (res.failed) continue;
    const r = await runVmm(vmm, disk, { marker: MARKER, timeoutMs: 180_000 });
    if (r.code !== TESTDEV_OK || r.firstMs === null) { res.failed = describeFailure(r, TESTDEV_OK); console.error(`vga-seabios: ${key}: ${res.failed}`); continue; }
    res.times.push(r.firstMs);
    console.error(`vga-seabios: ${key} run ${i + 1}: boot sector at ${(r.firstMs / 1000).toFixed(2)} s`);
  }
}
const med = (k) => (results[k].times.length ? median(results[k].times) / 1000 : NaN);
const rows = Object.entries(configs).map(([k, v]) => [v.label, results[k].failed ? `failed: ${results[k].failed}` : `${med(k).toFixed(2)} s`,
  results[k].times.map((t) => (t / 1000).toFixed(2)).join(', ')]);
const cost = (k) => med(`${k}-vga`) - med(`${k}-none`);
const spread = () => Math.max(...Object.values(results).map((r) => (r.times.length ? (Math.max(...r.times) - Math.min(...r.times)) / 1000 : 0)));
const body = `## A VGA BIOS on the VGA: SeaBIOS to its boot sector (bench/vga-seabios.mjs)

${await hostInfo()}. Median of ${reps} alternating runs each, wall time from spawning the VMM
until the boot sector's "boot sector running" on COM1. SeaBIOS (${SEABIOS}) boots
build/guests/bootsector.img on virtio-blk, without a display and with a VGA whose BIOS it runs
(text mode 3 set, the font loaded into plane 2, the screen cleared and SeaBIOS's messages
printed through it; writes into the VGA's memory queued in KVM's coalesced MMIO ring by both VMMs).

${mdTable(['VMM and display', 'until "boot sector running"', 'runs'], rows)}

What the VGA BIOS adds: bhyve-kvm ${cost('bhyve').toFixed(2)} s, QEMU ${cost('qemu').toFixed(2)} s
(medians; the runs of one configuration spread over up to ${spread().toFixed(1)} s on this host, shared with
other work, so read these differences against that spread).
An fbuf run to "No bootable device" (no disk) writes 37,126 bytes into the VGA's memory (the
font, screen clears and scrolls, each character; bhyvectl --get-stats). Like QEMU's VGA, fbuf
registers the window for KVM's coalesced MMIO, so the writes queue in a ring and vCPU 0 applies
them at its next exit: 120 MMIO exits for that run (20,742 when every write left the guest).
`;
console.log(body);
if (!opt['no-write']) console.error(`vga-seabios: wrote ${writeSection('vga-seabios', body)}`);
