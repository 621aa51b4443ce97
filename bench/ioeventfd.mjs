#!/usr/bin/env node
// What KVM_IOEVENTFD takes off a notify: a bare VM (no irqchip, 64 KiB of
// RAM) runs a real-mode loop of N guest writes, then HLT; each write is
// either a port write (`out dx, al` to 0xe0) or an MMIO write (`mov [0], ax`
// with DS at 0x20000, outside RAM: what a virtio notify is). Without an
// ioeventfd every write exits to us and we re-enter (KVM_RUN round trip);
// with one registered on that port/address, KVM completes the write in the
// kernel by signalling an eventfd and the guest runs on. The cost per write
// is the difference of two runs (N1, N2) over N2 - N1, so setup cancels.
// Median of REPS. Needs the build (dist/).
//
// Usage: node bench/ioeventfd.mjs [--n1 5000] [--n2 50000] [--reps 5] [--no-write]
// Writes the "ioeventfd" section of BENCHMARKS.md unless --no-write.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { hostInfo, mdTable, median, writeSection } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(path.join(ROOT, 'dist', p));
const { Kvm, Vcpu } = await dist('sys/kvm.js');
const { CAP, EXIT, TSS_ADDR } = await dist('sys/kvm-abi.js');
const { mmap, PROT_READ, PROT_WRITE } = await dist('sys/libc.js');
const { eventfd, eventfdRead, closeFd, EFD_NONBLOCK, EFD_CLOEXEC } = await dist('sys/eventfd.js');

const { values: opt } = parseArgs({
  options: {
    n1: { type: 'string', default: '5000' },
    n2: { type: 'string', default: '50000' },
    reps: { type: 'string', default: '5' },
    'no-write': { type: 'boolean', default: false },
  },
});
const n1 = Number(opt.n1);
const n2 = Number(opt.n2);
const reps = Number(opt.reps);
if (!(n2 > n1 && n1 >= 1 && n2 <= 0xffff && reps >= 1)) {
  console.error('ioeventfd: need 1 <= --n1 < --n2 <= 65535, --reps >= 1');
  process.exit(4);
}

const RAM = 64 * 1024;
const CODE = 0x1000;
const PORT = 0xe0;
const MMIO = 0x20000;

/** mov cx, n; [mov dx, PORT] ; l: out dx, al | mov [0], ax ; loop l ; hlt */
function code(kind, n) {
  const lo = n & 0xff;
  const hi = n >> 8;
  return kind === 'pio'
    ? [0xb9, lo, hi, 0xba, PORT & 0xff, PORT >> 8, 0xee, 0xe2, 0xfd, 0xf4]
    : [0xb9, lo, hi, 0xa3, 0x00, 0x00, 0xe2, 0xfb, 0xf4];
}

const kvm = Kvm.open();
const mmapSize = kvm.vcpuMmapSize();
const memPath = path.join(os.tmpdir(), `ioeventfd-bench-${process.pid}`);

/** One run: microseconds for the whole KVM_RUN sequence until HLT. */
function run(kind, n, useEventfd) {
  const vm = kvm.createVm();
  const fds = [vm.fd];
  try {
    vm.setTssAddr(TSS_ADDR);
    const mfd = fs.openSync(memPath, 'w+');
    fs.ftruncateSync(mfd, RAM);
    const mem = mmap(RAM, PROT_READ | PROT_WRITE, mfd, 0, 'bench RAM');
    fs.closeSync(mfd);
    mem.bytes.set(code(kind, n), CODE);
    vm.setMemoryRegion(0, 0, RAM, mem.address, false);
    let efd = -1;
    if (useEventfd) {
      efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      const anyLength = vm.checkExtension(CAP.IOEVENTFD_ANY_LENGTH) !== 0;
      vm.ioeventfd(kind === 'pio' ? { fd: efd, addr: PORT, len: 1, pio: true } : { fd: efd, addr: MMIO, len: anyLength ? 0 : 2 });
    }
    const vcpuFd = vm.createVcpu(0);
    fds.push(vcpuFd);
    const cpu = new Vcpu(vcpuFd, mmapSize, 0);
    const sr = cpu.getSregs();
    sr.cs = { ...sr.cs, base: 0n, selector: 0 };
    sr.ds = { ...sr.ds, base: BigInt(MMIO), selector: MMIO >> 4 };
    cpu.setSregs(sr);
    const regs = cpu.getRegs();
    regs.rip = BigInt(CODE);
    regs.rflags = 2n;
    cpu.setRegs(regs);
    let exits = 0;
    const t0 = process.hrtime.bigint();
    for (;;) {
      const r = cpu.enter();
      if (r < 0) throw new Error(`KVM_RUN: errno ${-r}`);
      const reason = cpu.exitReason;
      if (reason === EXIT.HLT) break;
      if (reason !== EXIT.IO && reason !== EXIT.MMIO) throw new Error(`unexpected exit ${reason}`);
      exits++;
    }
    const us = Number(process.hrtime.bigint() - t0) / 1000;
    let signalled = 0n;
    if (efd >= 0) { signalled = eventfdRead(efd); closeFd(efd); }
    cpu.run.unmap();
    mem.unmap();
    const handled = useEventfd ? Number(signalled) : exits;
    if (handled !== n) throw new Error(`${kind}${useEventfd ? ' + ioeventfd' : ''}: ${handled} writes seen, expected ${n}`);
    return us;
  } finally {
    for (const fd of fds.reverse()) fs.closeSync(fd);
  }
}

const rows = [];
const figures = {};
for (const kind of ['pio', 'mmio']) {
  for (const useEventfd of [false, true]) {
    const per = [];
    for (let i = 0; i < reps; i++) {
      const a = run(kind, n1, useEventfd);
      const b = run(kind, n2, useEventfd);
      per.push((b - a) / (n2 - n1));
    }
    const m = median(per);
    figures[`${kind}${useEventfd ? '+efd' : ''}`] = m;
    console.error(`ioeventfd: ${kind}${useEventfd ? ' with ioeventfd' : ', exit to userspace'}: ${m.toFixed(2)} us per guest write`);
  }
}
fs.rmSync(memPath, { force: true });
kvm.close();
for (const kind of ['pio', 'mmio']) {
  const ex = figures[kind];
  const ev = figures[`${kind}+efd`];
  rows.push([kind === 'pio' ? 'port write (out)' : 'MMIO write (virtio notify)', ex.toFixed(2), ev.toFixed(2), (ex - ev).toFixed(2)]);
}
const table = mdTable(['guest write', 'exit to userspace, us', 'KVM ioeventfd, us', 'saved per write, us'], rows);
console.log(table);

if (!opt['no-write']) {
  writeSection('ioeventfd', [
    '## KVM ioeventfd: a notify without the userspace round trip',
    '',
    '`node bench/ioeventfd.mjs` — a bare VM runs a real-mode loop of guest writes (a port write, or an MMIO write outside RAM as',
    'a virtio notify is) and we time the KVM_RUN sequence; with KVM_IOEVENTFD registered on that port/address the kernel completes',
    `the write by signalling an eventfd and never returns to us. Per-write cost from runs of ${n1} and ${n2} writes (setup cancels),`,
    `median of ${reps}. The loop runs at CPL0, which kvm_pvm interprets (~1-1.5 us per instruction): that part is in both columns.`,
    '',
    `Host: ${await hostInfo()}`,
    '',
    table,
  ].join('\n'));
  console.error('ioeventfd: wrote BENCHMARKS.md');
}
