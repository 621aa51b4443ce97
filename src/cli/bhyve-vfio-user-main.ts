// bhyve-vfio-user(8): serves a device model over vfio-user at a UNIX
// socket, for `bhyve -s S,passthru,vfio-user=SOCKET` (or any vfio-user
// client) to use: one client at a time, until it disconnects. The device
// models: test-dma (devices/vfio-user/test-dma-device.ts), the DMA engine
// the passthrough tests give a guest, or any of bhyve's own PCI models
// given as bhyve's -s takes them (-s virtio-blk,disk.img;
// vmm/served-pci-model.ts).
//
// The server loop is synchronous (blocking recvmsg): this process does
// nothing else, and a client's request is answered before the next.
//
// Once the socket listens and the model has opened its backends, the
// process enters the sandbox bhyve takes (vmm/sandbox/server-sandbox.ts);
// -o security.sandbox=false runs without, -o security.sandbox_log=true
// logs what the filter would refuse instead.

import fs from 'node:fs';
import { SocketWire } from '../devices/vfio-user/endpoint.js';
import { VfioUserServer, type ServedDevice } from '../devices/vfio-user/server.js';
import { TestDmaDevice } from '../devices/vfio-user/test-dma-device.js';
import { closeSocket, unixAccept, unixListen } from '../sys/unix-socket.js';
import { UserError, errorLine } from '../user-error.js';
import { ConfigTree } from '../config/tree.js';
import { enterSandbox } from '../vmm/sandbox/sandbox.js';
import { confinePool } from '../vmm/sandbox/pool-threads.js';
import { serverSandboxPlan } from '../vmm/sandbox/server-sandbox.js';

const PROG = 'bhyve-vfio-user';
const USAGE = `usage: ${PROG} [-1] [-o security.sandbox[_log]=bool] [-d device | -s emulation[,conf]] socket
       ${PROG} -d help
`;

/** The device models this command serves, by -d name. */
export const SERVED_DEVICES: Readonly<Record<string, { description: string; create(): ServedDevice }>> = {
  'test-dma': { description: 'DMA engine test device (BAR 0 registers, MSI-X, mmap-able BAR 4)', create: () => new TestDmaDevice() },
};

export async function bhyveVfioUserMain(args: string[]): Promise<number> {
  let device = 'test-dma';
  let slotSpec: string | undefined;
  let once = false;
  const options = new ConfigTree();
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-d') {
      const v = args[++i];
      if (v === undefined) { process.stderr.write(`${PROG}: option requires an argument -- d\n${USAGE}`); return 1; }
      device = v;
    } else if (a === '-s') {
      slotSpec = args[++i];
      if (slotSpec === undefined) { process.stderr.write(`${PROG}: option requires an argument -- s\n${USAGE}`); return 1; }
    } else if (a === '-1') {
      once = true;
    } else if (a === '-o') {
      const v = args[++i];
      if (v === undefined) { process.stderr.write(`${PROG}: option requires an argument -- o\n${USAGE}`); return 1; }
      const m = /^(security\.sandbox(?:_log)?)=(.*)$/.exec(v);
      if (!m) { process.stderr.write(`${PROG}: -o ${v}: only security.sandbox=BOOL and security.sandbox_log=BOOL are known\n`); return 1; }
      options.set(m[1], m[2]);
    } else if (a === '-h') {
      process.stderr.write(USAGE);
      return 0;
    } else if (a.startsWith('-') && a !== '-') {
      process.stderr.write(`${PROG}: illegal option -- ${a.slice(1)}\n${USAGE}`);
      return 1;
    } else {
      rest.push(a);
    }
  }
  if (device === 'help') {
    for (const [n, d] of Object.entries(SERVED_DEVICES)) process.stdout.write(`${n}\t${d.description}\n`);
    return 0;
  }
  if (rest.length !== 1) { process.stderr.write(USAGE); return 1; }
  const model = slotSpec === undefined ? SERVED_DEVICES[device] : undefined;
  if (slotSpec === undefined && !model) { process.stderr.write(`${PROG}: unknown device "${device}" (see ${PROG} -d help)\n`); return 1; }
  const path = rest[0];
  try {
    if (fs.existsSync(path)) throw new UserError(`${path} exists (remove it first)`);
    // Checked before anything opens (the booleans' spelling).
    serverSandboxPlan(options, path);
    let served: ServedDevice;
    let modelConfig: ConfigTree | undefined;
    if (slotSpec !== undefined) {
      const { ServedPciModel } = await import('../vmm/served-pci-model.js');
      const m = await ServedPciModel.open(slotSpec);
      served = m;
      modelConfig = m.config;
      device = slotSpec.split(',')[0];
    } else {
      served = model!.create();
    }
    const server = new VfioUserServer(served);
    const listener = unixListen(path);
    try {
      const plan = serverSandboxPlan(options, path, modelConfig);
      if (plan) await enterSandbox(plan, confinePool(plan), PROG);
      process.stderr.write(`${PROG}: serving ${device} at ${path}${plan ? ' (sandboxed)' : ''}\n`);
      do {
        const fd = unixAccept(listener);
        server.serve(new SocketWire(fd));
        const s = server.stats;
        process.stderr.write(`${PROG}: client gone: ${s.regionReads} region reads, ${s.regionWrites} region writes, `
          + `${s.dmaMapped} DMA windows mapped, ${s.dmaMessages} DMA messages, ${s.dmaBytes} DMA bytes\n`);
      } while (!once);
    } finally {
      closeSocket(listener);
      fs.rmSync(path, { force: true });
    }
    return 0;
  } catch (e) {
    process.stderr.write(`${PROG}: ${errorLine(e)}\n`);
    return 1;
  }
}
