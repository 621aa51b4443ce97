// passthru of a device served over vfio-user: bin/bhyve-vfio-user serves
// the test DMA engine in its own process; bhyve passes it through
// (-s 5,passthru,vfio-user=SOCKET) to dmatest.rom (test/guests/dmatest),
// which programs 16 copies between two of its buffers, takes each MSI-X
// interrupt (routed by KVM irqfd), checks the data and the completion
// record the device wrote in its mmap-able BAR 4 (a KVM memory slot over
// the server's memory), sees a masked vector held in the PBA and a copy
// outside guest memory refused; and bhyve's own virtio-blk model served by
// bhyve-vfio-user -s virtio-blk,IMAGE to virtio-blk.rom in another bhyve
// (MSI-X and INTx). QEMU 7.2 (Debian 12) has no vfio-user
// client (vfio-user-pci came in QEMU 10.1), so the QEMU run is registered
// only where its QEMU has one.
import { execFileSync } from 'node:child_process';
import { crc32 } from 'node:zlib';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GUESTS, bhyveArgs, kvmUnavailable, runBhyve, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, romWith, runHeld, runQemu, stat } from '../support/guest-rom.js';
import { startVfioUserServer } from '../support/vfio-user-server.js';
import { closeSocket, unixListen } from '../../src/sys/unix-socket.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'dmatest.rom')) ? undefined : 'dmatest.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping vfio-user passthrough guest tests: ${skip}`);

const qemuVfioUser = HAVE_QEMU && (() => {
  try { return execFileSync('qemu-system-x86_64', ['-device', 'help'], { encoding: 'utf8' }).includes('"vfio-user-pci"'); } catch { return false; }
})();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-user-guest-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const sock = (): string => path.join(tmp, `dma${n++}.sock`);
const DEV = 'passthru@pci.0.5.0';

function checkGuest(out: string): void {
  expect(out).toMatch(/dmatest: 1b36:00f0 at 00:05\.0, BAR0 [0-9a-f]+, BAR4 [0-9a-f]+, MSI-X 2 entries/);
  expect(out).toContain('dmatest: 16 copies checked, interrupts 16, checksum 88b37375');
  expect(out).toContain('dmatest: masked vector held pending, delivered on unmask');
  expect(out).toContain('dmatest: copy outside guest memory refused at f000000000');
  expect(out).toContain('dmatest: done');
}

describe.skipIf(skip !== undefined)('passthru of vfio-user devices: the test DMA engine (dmatest.rom), bhyve\'s virtio-blk (virtio-blk.rom)', () => {
  it('bhyve: copies checked after each MSI-X interrupt, BAR 4 mapped, DMA through the shared guest RAM file', async () => {
    const server = await startVfioUserServer(sock());
    const name = vmName('vfio-user-dma');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'dmatest', MODE.MSIX | MODE.HOLD), name, {
      extra: ['-s', `5,passthru,vfio-user=${server.socket}`],
    }), name, { timeout: 150_000 });
    expect(r.status, r.out).toBe(33);
    checkGuest(r.out);
    // Both vectors went to KVM irqfds; BAR 4 is a KVM slot; the server
    expect(stat(r.stats, DEV, 'msix vectors in kernel')).toBe(2);
    expect(stat(r.stats, DEV, 'mapped bar bytes')).toBe(4096);
    // mapped guest RAM: only the copy outside it was asked of bhyve by
    // message (DMA_WRITE), and refused.
    expect(stat(r.stats, DEV, 'vfio-user dma reads served')).toBe(0);
    expect(stat(r.stats, DEV, 'vfio-user dma writes served')).toBe(0);
    expect(stat(r.stats, DEV, 'vfio-user dma faults')).toBe(1);
    expect(stat(r.stats, DEV, 'vfio-user dma windows')).toBe(1);
    expect(stat(r.stats, DEV, 'resets')).toBe(0);
    const s = await server.done();
    expect(s.status, s.log).toBe(0);
    expect(s.log).toMatch(/client gone: \d+ region reads, \d+ region writes, 1 DMA windows mapped, 1 DMA messages/);
  }, 200_000);

  if (qemuVfioUser) it('QEMU (-device vfio-user-pci): the same guest, the same results', async () => {
    const server = await startVfioUserServer(sock());
    const r = await runQemu(romWith(tmp, 'dmatest', MODE.MSIX), [
      '-object', 'memory-backend-memfd,id=mem,size=256M,share=on', '-machine', 'memory-backend=mem',
      '-device', `{"driver":"vfio-user-pci","socket":{"path":"${server.socket}","type":"unix"}}`,
    ], [], 150_000);
    expect(r.status, r.out).toBe(33);
    checkGuest(r.out);
  }, 200_000);

  for (const [label, mode] of [['MSI-X', MODE.MSIX], ['INTx', MODE.INTX]] as const) {
    it(`bhyve's virtio-blk served by bhyve-vfio-user, used by the guest of another bhyve (${label})`, async () => {
      const img = path.join(tmp, `disk${n}.img`);
      fs.writeFileSync(img, '');
      fs.truncateSync(img, 8 << 20);
      const server = await startVfioUserServer(sock(), ['-1', '-s', `virtio-blk,${img}`]);
      const name = vmName(`vfio-user-blk-${label}`);
      const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-blk', mode | MODE.HOLD), name, {
        extra: ['-s', `5,passthru,vfio-user=${server.socket}`],
      }), name, { timeout: 150_000 });
      expect(r.status, r.out).toBe(33);
      expect(r.out).toMatch(/pci 00:05\.0 1af4:1001 class 010000 virtio-blk/);
      expect(r.out).toContain('virtio-blk: capacity 16384 sectors (8 MiB)');
      expect(r.out).toContain('virtio-blk: wrote 8192 sectors, read back OK, checksum 63d743bf');
      expect(r.out).toMatch(new RegExp(`virtio-blk: interrupts: ${label === 'MSI-X' ? 'msix' : 'intx'} queue vector [0-9a-f]+ [1-9]\\d*`));
      // The data is in the image the server wrote.
      expect(crc32(fs.readFileSync(img).subarray(0, 8192 * 512)).toString(16).padStart(8, '0')).toBe('63d743bf');
      if (label === 'MSI-X') expect(stat(r.stats, DEV, 'msix vectors in kernel')).toBe(2);
      const s = await server.done();
      expect(s.status, s.log).toBe(0);
      expect(s.log).toMatch(/1 DMA windows mapped, 0 DMA messages/);
    }, 200_000);
  }

  it('a server that is not there: one line, exit 4', async () => {
    const p = sock();
    closeSocket(unixListen(p)); // the file stays, nobody listens
    const name = vmName('vfio-user-refused');
    const r = await runBhyve(bhyveArgs(romWith(tmp, 'dmatest', MODE.MSIX), name, { extra: ['-s', `5,passthru,vfio-user=${p}`] }));
    const lines = r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('bhyve: warning:'));
    expect(lines).toEqual([expect.stringMatching(/^bhyve: passthru: vfio-user device at .*: connect .*: Connection refused$/)]);
    expect(r.exitCode).toBe(4);
  }, 60_000);

  it('a path that is not a socket: one line, exit 4 (before the VM exists)', async () => {
    const p = sock();
    fs.writeFileSync(p, '');
    const name = vmName('vfio-user-none');
    const r = await runBhyve(bhyveArgs(romWith(tmp, 'dmatest', MODE.MSIX), name, { extra: ['-s', `5,passthru,vfio-user=${p}`] }));
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toMatch(/^bhyve: passthru: vfio-user=.* is not a socket\n$/);
  }, 60_000);
});
