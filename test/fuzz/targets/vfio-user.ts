// Fuzz target for the vfio-user server (src/devices/vfio-user/server.ts,
// protocol.ts): a VfioUserServer serving the test DMA engine, fed one
// client message per operation over a loopback wire: every command with
// well-formed, edge and garbage payloads (region indices and offsets past
// the end, counts beyond the transfer limit, capability JSON of every
// shape, DMA windows overlapping or past their file, irq sets with the
// wrong number of eventfds, flags that do not exist), sometimes before
// VERSION, sometimes with descriptors (eventfds, a memfd) attached; and
// doorbell writes that make the device DMA through whatever is mapped.
//
// Oracles: nothing but an error reply comes back for a bad request (an
// exception out of the server is a crash); the server still answers a
// VERSION and a register read afterwards; the device never touches memory
// outside the windows (the client's memory past the window stays intact).

import { Endpoint, loopbackWires, VfioUserError } from '../../../src/devices/vfio-user/endpoint.js';
import * as P from '../../../src/devices/vfio-user/protocol.js';
import { VfioUserServer } from '../../../src/devices/vfio-user/server.js';
import { REG, TestDmaDevice } from '../../../src/devices/vfio-user/test-dma-device.js';
import { closeFd, eventfd, EFD_CLOEXEC, EFD_NONBLOCK } from '../../../src/sys/eventfd.js';
import { memfd } from '../../../src/sys/memfd.js';
import { IRQ_SET_FLAG } from '../../../src/sys/vfio-abi.js';
import { InvariantError, type FuzzInstance, type FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';

const MEM = 64 * 1024;
const GUARD = 0xa5;

class VfioUserFuzz implements FuzzInstance {
  private readonly server: VfioUserServer;
  private readonly client: Endpoint;
  /** The client's memory behind message DMA: [0, MEM) allowed, a guard after it. */
  private readonly mem = new Uint8Array(2 * MEM).fill(GUARD, MEM);
  private readonly efds = [eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)];
  private readonly file = memfd('fuzz-window', MEM);
  private readonly counts = { ok: 0, errors: 0, doorbells: 0 };
  lastOp: string | undefined;

  constructor(private readonly r: Rng) {
    const [a, b] = loopbackWires();
    this.server = new VfioUserServer(new TestDmaDevice());
    const sep = this.server.connect(b);
    this.client = new Endpoint(a, (m) => {
      // The device's DMA by messages: only [0, MEM) exists.
      const acc = P.decodeDmaAccess(m.payload, m.command === P.CMD.DMA_WRITE);
      if (acc.address + acc.count > MEM) throw new VfioUserError(m.command, 14);
      if (m.command === P.CMD.DMA_WRITE) { this.mem.set(acc.data!, acc.address); return { payload: P.encodeDmaAccess({ address: acc.address, count: acc.count }) }; }
      return { payload: P.encodeDmaAccess({ ...acc, data: this.mem.slice(acc.address, acc.address + acc.count) }) };
    });
    a.peerEndpoint = sep;
    b.peerEndpoint = this.client;
    if (r.chance(0.9)) this.call(P.CMD.VERSION, P.encodeVersion({ major: 0, minor: 1, capabilities: {} }));
  }

  private call(cmd: number, payload: Uint8Array, fds: number[] = []): void {
    try {
      this.client.call(cmd, payload, fds);
      this.counts.ok++;
    } catch (e) {
      if (!(e instanceof VfioUserError)) throw e;
      this.counts.errors++;
    }
  }

  private num(): number {
    const r = this.r;
    return r.pick([0, 1, 4, 8, 16, 0x1000, MEM - 4, MEM, MEM + 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, r.u32(), r.below(MEM)]);
  }

  private versionPayload(): Uint8Array {
    const r = this.r;
    const caps = r.pick<unknown>([{}, { max_msg_fds: this.num() }, { max_data_xfer_size: r.pick([0, 1, 4096, 2 ** 40]) }, [], 'x', null, { pgsizes: -1 }]);
    const text = r.pick([JSON.stringify({ capabilities: caps }), '{', '', '{"capabilities":', JSON.stringify(caps)]);
    const j = Buffer.from(text + (r.chance(0.8) ? '\0' : ''));
    const b = new Uint8Array(4 + j.length);
    new DataView(b.buffer).setUint16(0, r.pick([0, 0, 1, 0xffff]), true);
    new DataView(b.buffer).setUint16(2, r.pick([0, 1, 2, 0xffff]), true);
    b.set(j, 4);
    return r.chance(0.1) ? b.subarray(0, r.below(4)) : b;
  }

  step(): void {
    const r = this.r;
    const cut = (b: Uint8Array): Uint8Array => (r.chance(0.1) ? b.subarray(0, r.below(b.length + 1)) : b);
    const op = r.below(11);
    switch (op) {
      case 0: this.lastOp = 'VERSION'; this.call(P.CMD.VERSION, this.versionPayload()); break;
      case 1: {
        this.lastOp = 'REGION_READ';
        this.call(P.CMD.REGION_READ, cut(P.encodeRegionAccess({ offset: this.num(), region: r.pick([0, 2, 4, 7, 1, 9, r.u32()]), count: r.pick([1, 2, 4, 8, 256, 4096, r.u32()]) })));
        break;
      }
      case 2: {
        this.lastOp = 'REGION_WRITE';
        const count = r.pick([1, 2, 4, 8, 64]);
        const data = r.bytes(r.chance(0.9) ? count : r.below(80));
        const p = P.encodeRegionAccess({ offset: r.chance(0.6) ? r.pick(Object.values(REG)) : this.num(), region: r.pick([0, 0, 0, 2, 4, 7, 3, r.u32()]), count, data });
        this.call(P.CMD.REGION_WRITE, cut(p));
        break;
      }
      case 3: {
        this.lastOp = 'DMA_MAP';
        const withFd = r.chance(0.4);
        this.call(P.CMD.DMA_MAP, cut(P.encodeDmaMap({ flags: r.below(4), offset: withFd ? r.pick([0, 0x1000, MEM, this.num()]) : 0, address: this.num(), size: this.num() })), withFd ? [this.file] : []);
        break;
      }
      case 4: this.lastOp = 'DMA_UNMAP'; this.call(P.CMD.DMA_UNMAP, cut(P.encodeDmaUnmap(this.num(), this.num()))); break;
      case 5: {
        this.lastOp = 'SET_IRQS';
        const count = r.pick([0, 1, 2, 3, r.u32()]);
        const fds = r.chance(0.5) ? this.efds.slice(0, r.below(3)) : [];
        const flags = r.chance(0.7) ? r.pick([IRQ_SET_FLAG.DATA_EVENTFD, IRQ_SET_FLAG.DATA_NONE, IRQ_SET_FLAG.DATA_BOOL]) | r.pick([IRQ_SET_FLAG.ACTION_TRIGGER, IRQ_SET_FLAG.ACTION_MASK, IRQ_SET_FLAG.ACTION_UNMASK]) : r.u32();
        this.call(P.CMD.DEVICE_SET_IRQS, cut(P.encodeIrqSet({ flags, index: r.pick([0, 1, 2, 3, 4, 5, r.u32()]), start: r.pick([0, 1, 2, r.u32()]), count, data: r.chance(0.3) ? r.bytes(r.below(8)) : undefined })), fds);
        break;
      }
      case 6: this.lastOp = 'GET_REGION_INFO'; this.call(P.CMD.DEVICE_GET_REGION_INFO, cut(P.encodeRegionInfoRequest(r.pick([0, 4, 7, 8, 9, r.u32()]), r.pick([0, 16, 32, 256])))); break;
      case 7: {
        this.lastOp = 'GET_IRQ_INFO/GET_INFO/RESET';
        const b = new Uint8Array(16);
        new DataView(b.buffer).setUint32(8, r.pick([0, 2, 4, 5, r.u32()]), true);
        this.call(r.pick([P.CMD.DEVICE_GET_IRQ_INFO, P.CMD.DEVICE_GET_INFO, P.CMD.DEVICE_RESET]), cut(b));
        break;
      }
      case 8: this.lastOp = 'garbage'; this.call(r.pick([r.below(20), r.u32() & 0xffff]), r.bytes(r.below(64))); break;
      default: {
        // A copy: registers then the doorbell.
        this.lastOp = 'doorbell';
        this.counts.doorbells++;
        const w = (o: number, v: number) => this.call(P.CMD.REGION_WRITE, P.encodeRegionAccess({ offset: o, region: 0, count: 4, data: Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24) }));
        w(REG.SRC, r.below(2 * MEM)); w(REG.DST, r.below(2 * MEM)); w(REG.LEN, r.pick([0, 1, 16, 4096, MEM, 2 * 1024 * 1024]));
        w(REG.VECTOR, r.below(4)); w(REG.DOORBELL, 1);
      }
    }
  }

  check(): void {
    for (let i = MEM; i < 2 * MEM; i++) if (this.mem[i] !== GUARD) throw new InvariantError(`DMA wrote client memory at 0x${i.toString(16)}, outside every window`);
    try {
      this.client.call(P.CMD.VERSION, P.encodeVersion({ major: 0, minor: 1, capabilities: {} }));
      const m = this.client.call(P.CMD.REGION_READ, P.encodeRegionAccess({ offset: 0, region: 0, count: 4 }));
      if (new DataView(m.payload.buffer, m.payload.byteOffset + 16, 4).getUint32(0, true) !== 0x31414d44) throw new InvariantError('ID register lost');
    } catch (e) {
      if (e instanceof InvariantError) throw e;
      throw new InvariantError(`server no longer answers: ${(e as Error).message}`);
    }
  }

  close(): void {
    this.server.disconnect();
    for (const f of this.efds) closeFd(f);
    closeFd(this.file);
  }

  stats(): Record<string, number> { return { ...this.counts }; }
}

export const VFIO_USER_TARGET: FuzzTarget = {
  name: 'vfio-user',
  surface: 'vfio-user server: every client command, hostile payloads and descriptors, DMA by the test DMA engine',
  create: (r) => new VfioUserFuzz(r),
  instanceOps: 2000,
};
