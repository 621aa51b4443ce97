// Exit dispatch driven by synthetic kvm_run pages: no /dev/kvm needed.
import { describe, expect, it } from 'vitest';
import type { AccessSize } from '../../src/devices/device.js';
import { dispatchExit, type ExitContext } from '../../src/vmm/exit-dispatch.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { EXIT, KVM_RUN_OFF, RUN_INTERNAL, RUN_IO, RUN_MMIO, RUN_MSR, RUN_SYSTEM_EVENT, SYSTEM_EVENT } from '../../src/sys/kvm-abi.js';

const E = KVM_RUN_OFF.exit;
const DATA = 0x800;

function ctxWith(bus: LocalIoBus, strictIo = false): ExitContext {
  return { vcpuId: 0, run: new DataView(new ArrayBuffer(4096)), bus, strictIo, rip: () => 0xfff0 };
}

function ioExit(ctx: ExitContext, out: boolean, port: number, size: number, count: number): void {
  const v = ctx.run;
  v.setUint32(KVM_RUN_OFF.exit_reason, EXIT.IO, true);
  v.setUint8(E + RUN_IO.direction, out ? 1 : 0);
  v.setUint8(E + RUN_IO.size, size);
  v.setUint16(E + RUN_IO.port, port, true);
  v.setUint32(E + RUN_IO.count, count, true);
  v.setBigUint64(E + RUN_IO.data_offset, BigInt(DATA), true);
}

class Recorder {
  writes: Array<[number, number, number]> = [];
  read(port: number, size: AccessSize): number { return size === 1 ? 0x5a : port; }
  write(port: number, size: AccessSize, value: number): void { this.writes.push([port, size, value]); }
}

describe('exit dispatch', () => {
  it('routes port writes, including rep outs, to the registered handler', () => {
    const bus = new LocalIoBus();
    const rec = new Recorder();
    bus.registerPorts('rec', 0x3f8, 8, rec);
    const ctx = ctxWith(bus);
    ioExit(ctx, true, 0x3f8, 1, 3);
    [0x41, 0x42, 0x43].forEach((b, i) => ctx.run.setUint8(DATA + i, b));
    expect(dispatchExit(EXIT.IO, ctx)).toBe('continue');
    expect(rec.writes).toEqual([[0x3f8, 1, 0x41], [0x3f8, 1, 0x42], [0x3f8, 1, 0x43]]);
  });

  it('fills port reads from the handler and all-ones when nothing decodes the port', () => {
    const bus = new LocalIoBus();
    bus.registerPorts('rec', 0x80, 1, new Recorder());
    const ctx = ctxWith(bus);
    ioExit(ctx, false, 0x80, 1, 1);
    dispatchExit(EXIT.IO, ctx);
    expect(ctx.run.getUint8(DATA)).toBe(0x5a);
    ioExit(ctx, false, 0x1234, 2, 1);
    dispatchExit(EXIT.IO, ctx);
    expect(ctx.run.getUint16(DATA, true)).toBe(0xffff);
    ioExit(ctx, false, 0x1234, 4, 1);
    dispatchExit(EXIT.IO, ctx);
    expect(ctx.run.getUint32(DATA, true)).toBe(0xffffffff);
  });

  it('ends the run on an unhandled port with x86.strictio', () => {
    const ctx = ctxWith(new LocalIoBus(), true);
    ioExit(ctx, false, 0x1234, 1, 1);
    const a = dispatchExit(EXIT.IO, ctx);
    expect(a).toMatchObject({ kind: 'error' });
    expect((a as { message: string }).message).toMatch(/0x1234.*rip 0xfff0/);
    ioExit(ctx, true, 0x1234, 1, 1);
    expect(dispatchExit(EXIT.IO, ctx)).toMatchObject({ kind: 'error' });
  });

  it('rejects port I/O whose data would lie outside kvm_run', () => {
    const ctx = ctxWith(new LocalIoBus());
    ioExit(ctx, true, 0x80, 4, 0x10000000);
    expect(dispatchExit(EXIT.IO, ctx)).toMatchObject({ kind: 'error' });
  });

  it('routes MMIO and reads all-ones from unclaimed addresses', () => {
    const bus = new LocalIoBus();
    const seen: number[][] = [];
    bus.registerMmio('m', 0xff000000, 0x10000, {
      read: (_a, data) => data.fill(0x11),
      write: (_a, data) => { seen.push([...data]); },
    });
    const ctx = ctxWith(bus);
    const v = ctx.run;
    v.setBigUint64(E + RUN_MMIO.phys_addr, 0xff000010n, true);
    v.setUint32(E + RUN_MMIO.len, 4, true);
    v.setUint8(E + RUN_MMIO.is_write, 1);
    v.setUint32(E + RUN_MMIO.data, 0xdeadbeef, true);
    dispatchExit(EXIT.MMIO, ctx);
    expect(seen).toEqual([[0xef, 0xbe, 0xad, 0xde]]);
    v.setUint8(E + RUN_MMIO.is_write, 0);
    dispatchExit(EXIT.MMIO, ctx);
    expect(v.getUint32(E + RUN_MMIO.data, true)).toBe(0x11111111);
    v.setBigUint64(E + RUN_MMIO.phys_addr, 0xe0000000n, true);
    v.setUint32(E + RUN_MMIO.len, 2, true);
    dispatchExit(EXIT.MMIO, ctx);
    expect(v.getUint16(E + RUN_MMIO.data, true)).toBe(0xffff);
  });

  it('hands MMIO above 4 GiB and of every length 1-8 to the device, on each vCPU page in turn', () => {
    const bus = new LocalIoBus();
    const seen: Array<[number, number[]]> = [];
    bus.registerMmio('high', 0x8_0000_0000, 0x1000, {
      read: (_a, data) => data.forEach((_, i) => { data[i] = 0xa0 + i; }),
      write: (a, data) => { seen.push([a, [...data]]); },
    });
    // Two vCPUs' pages, in turn: each context keeps views of its own page.
    const pages = [ctxWith(bus), ctxWith(bus)];
    for (let len = 1; len <= 8; len++) {
      for (const ctx of pages) {
        const v = ctx.run;
        v.setBigUint64(E + RUN_MMIO.phys_addr, 0x8_0000_0000n + BigInt(len), true);
        v.setUint32(E + RUN_MMIO.len, len, true);
        v.setUint8(E + RUN_MMIO.is_write, 1);
        for (let i = 0; i < 8; i++) v.setUint8(E + RUN_MMIO.data + i, len * 16 + i);
        expect(dispatchExit(EXIT.MMIO, ctx)).toBe('continue');
        v.setUint8(E + RUN_MMIO.is_write, 0);
        v.setBigUint64(E + RUN_MMIO.data, 0n, true);
        dispatchExit(EXIT.MMIO, ctx);
        const got = [...new Uint8Array(v.buffer, E + RUN_MMIO.data, 8)];
        expect(got).toEqual([...Array.from({ length: len }, (_, i) => 0xa0 + i), ...new Array(8 - len).fill(0)]);
      }
    }
    expect(seen).toHaveLength(16);
    seen.forEach(([addr, data], k) => {
      const len = (k >> 1) + 1;
      expect(addr).toBe(0x8_0000_0000 + len);
      expect(data).toEqual(Array.from({ length: len }, (_, i) => len * 16 + i));
    });
  });

  it('takes the port data offset from all 64 bits', () => {
    const ctx = ctxWith(new LocalIoBus());
    ioExit(ctx, true, 0x80, 1, 1);
    ctx.run.setBigUint64(E + RUN_IO.data_offset, 1n << 32n, true);
    expect(dispatchExit(EXIT.IO, ctx)).toMatchObject({ kind: 'error', message: expect.stringMatching(/outside kvm_run/) });
  });

  it('maps shutdown, system events and emulation failures to bhyve outcomes', () => {
    const ctx = ctxWith(new LocalIoBus());
    expect(dispatchExit(EXIT.SHUTDOWN, ctx)).toEqual({ kind: 'triplefault', vcpu: 0, rip: 0xfff0 });
    ctx.run.setUint32(E + RUN_SYSTEM_EVENT.type, SYSTEM_EVENT.RESET, true);
    expect(dispatchExit(EXIT.SYSTEM_EVENT, ctx)).toMatchObject({ kind: 'reset' });
    ctx.run.setUint32(E + RUN_SYSTEM_EVENT.type, SYSTEM_EVENT.SHUTDOWN, true);
    expect(dispatchExit(EXIT.SYSTEM_EVENT, ctx)).toMatchObject({ kind: 'poweroff' });
    ctx.run.setUint32(E + RUN_INTERNAL.suberror, 1, true);
    expect(dispatchExit(EXIT.INTERNAL_ERROR, ctx)).toMatchObject({ kind: 'error', message: expect.stringMatching(/emulation failed at rip 0xfff0/) });
  });

  it('answers unknown-MSR exits (x86.strictmsr=false) with zero', () => {
    const ctx = ctxWith(new LocalIoBus());
    ctx.run.setBigUint64(E + RUN_MSR.data, 0x1234n, true);
    ctx.run.setUint8(E + RUN_MSR.error, 1);
    expect(dispatchExit(EXIT.X86_RDMSR, ctx)).toBe('continue');
    expect(ctx.run.getBigUint64(E + RUN_MSR.data, true)).toBe(0n);
    expect(ctx.run.getUint8(E + RUN_MSR.error)).toBe(0);
  });

  it('reports exits it does not know with their name and the guest RIP', () => {
    const ctx = ctxWith(new LocalIoBus());
    expect(dispatchExit(EXIT.HYPERCALL, ctx)).toEqual({
      kind: 'error', message: 'vCPU 0: unhandled VM exit 3 (HYPERCALL) at rip 0xfff0',
    });
    expect(dispatchExit(99, ctx)).toMatchObject({ message: expect.stringMatching(/99 \(unknown\)/) });
  });
});
