import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BootromError, loadBootrom } from '../../src/vmm/bootrom.js';
import { buildCpuid } from '../../src/vmm/cpuid.js';
import { GuestMemory, GuestMemoryError } from '../../src/sys/guest-memory.js';
import type { CpuidEntry } from '../../src/sys/kvm.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { checkRequirements, detectPaging, type HostCapabilities } from '../../src/vmm/probe.js';
import { exitStatusOf, exitNotice } from '../../src/vmm/exit-status.js';
import { legacyWindowFor } from '../../src/vmm/machine.js';
import { ConfigTree } from '../../src/config/tree.js';

const M = 1024 * 1024;
const G = 1024 * M;

describe('memory layout', () => {
  it('keeps RAM below 3 GiB and puts the rest above 4 GiB, as bhyve does', () => {
    expect(computeLayout(256 * M)).toEqual({ lowmem: 256 * M, highmem: 0 });
    expect(computeLayout(3 * G)).toEqual({ lowmem: 3 * G, highmem: 0 });
    expect(computeLayout(8 * G)).toEqual({ lowmem: 3 * G, highmem: 5 * G });
    expect(() => computeLayout(0)).toThrow(/invalid guest memory size 0/);
  });
});

describe('guest memory', () => {
  const mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(4096) }, { gpa: 4 * G, bytes: new Uint8Array(4096) }]);
  it('reads and writes inside regions', () => {
    mem.writeU32(0x10, 0xdeadbeef);
    expect(mem.readU32(0x10)).toBe(0xdeadbeef);
    mem.writeU64(4 * G + 8, 0x1122334455667788n);
    expect(mem.readU64(4 * G + 8)).toBe(0x1122334455667788n);
    expect(mem.size).toBe(8192);
  });
  it('refuses addresses outside guest RAM, straddling regions, or absurd', () => {
    expect(() => mem.readU8(4096)).toThrow(GuestMemoryError);
    expect(() => mem.slice(4090, 8)).toThrow(GuestMemoryError);
    expect(() => mem.slice(-1, 1)).toThrow(GuestMemoryError);
    expect(() => mem.slice(0, 2 ** 60)).toThrow(GuestMemoryError);
    expect(mem.contains(4 * G, 4096)).toBe(true);
    expect(mem.contains(4 * G, 4097)).toBe(false);
  });
});

describe('boot ROM loading', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bootrom-'));
  const file = (name: string, size: number): string => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, Buffer.alloc(size));
    return p;
  };
  it('places the ROM so that it ends at 4 GiB and VARS right below it', () => {
    const segs = loadBootrom(file('rom', 2 * M), file('vars', 128 * 1024));
    expect(segs.map((s) => [s.kind, s.gpa, s.size])).toEqual([
      ['rom', 4 * G - 2 * M, 2 * M], ['vars', 4 * G - 2 * M - 128 * 1024, 128 * 1024],
    ]);
    for (const s of segs) fs.closeSync(s.fd);
  });
  it('names the file in every error', () => {
    expect(() => loadBootrom(path.join(dir, 'missing.fd'))).toThrow(/cannot open boot ROM '.*missing.fd': no such file/);
    expect(() => loadBootrom(file('odd', 1000))).toThrow(/'.*odd' is 1000 bytes, not a non-zero multiple/);
    expect(() => loadBootrom(file('empty', 0))).toThrow(BootromError);
    expect(() => loadBootrom(file('huge', 17 * M))).toThrow(/larger than the 16 MiB/);
    expect(() => loadBootrom(file('rom2', 15 * M), file('vars2', 2 * M))).toThrow(/exceed the 16 MiB/);
    expect(() => loadBootrom(dir)).toThrow(/not a regular file/);
  });
});

describe('CPUID', () => {
  const host: CpuidEntry[] = [
    { function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x756e6547, ecx: 0x6c65746e, edx: 0x49656e69 },
    { function: 1, index: 0, flags: 0, eax: 0x906ea, ebx: 0x00000800, ecx: 1 << 21, edx: 0 },
    { function: 0xb, index: 0, flags: 1, eax: 0, ebx: 0, ecx: 0, edx: 0 },
    { function: 0xb, index: 1, flags: 1, eax: 0, ebx: 0, ecx: 0, edx: 0 },
    { function: 0x40000000, index: 0, flags: 0, eax: 0x40000001, ebx: 0x4b4d564b, ecx: 0x564b4d56, edx: 0x4d },
  ];
  const leaf = (es: CpuidEntry[], f: number, i = 0): CpuidEntry => es.find((e) => e.function === f && e.index === i)!;
  it("carries bhyve's signature and the hypervisor bit", () => {
    const es = buildCpuid(host, 0, { sockets: 1, cores: 1, threads: 1 }, false);
    const h = leaf(es, 0x40000000);
    const text = [h.ebx, h.ecx, h.edx].map((r) => String.fromCharCode(r & 0xff, (r >> 8) & 0xff, (r >> 16) & 0xff, r >>> 24)).join('');
    expect(text).toBe('bhyve bhyve ');
    expect(es.filter((e) => e.function === 0x40000000)).toHaveLength(1);
    expect(leaf(es, 1).ecx >>> 31).toBe(1);
    expect(leaf(es, 1).ecx & (1 << 21)).toBe(0);
  });
  it('reports the APIC ID and a topology matching -c', () => {
    const es = buildCpuid(host, 3, { sockets: 1, cores: 2, threads: 2 }, true);
    expect(leaf(es, 1).ebx >>> 24).toBe(3);
    expect((leaf(es, 1).ebx >> 16) & 0xff).toBe(4);
    expect(leaf(es, 1).edx & (1 << 28)).not.toBe(0);
    expect(leaf(es, 1).ecx & (1 << 21)).not.toBe(0);
    expect(leaf(es, 0xb, 0)).toMatchObject({ eax: 1, ebx: 2, edx: 3 });
    expect(leaf(es, 0xb, 1)).toMatchObject({ eax: 2, ebx: 4, edx: 3 });
  });
});

describe('host requirements', () => {
  const caps: HostCapabilities = {
    apiVersion: 12, modules: ['kvm_pvm'], paging: 'none', irqchip: true, pit2: true, readonlyMemory: true,
    immediateExit: true, signalMsi: true, ioeventfd: true, irqfd: true, userSpaceMsr: true, binaryStats: true,
    maxVcpus: 8, iommu: false, vfio: false,
  };
  it('refuses a host without EPT/RVI unless overridden, naming the override', () => {
    expect(() => checkRequirements(caps, true)).toThrow(/no EPT or RVI.*kvm_pvm.*-o x86\.require_ept_rvi=false/);
    expect(checkRequirements(caps, false)).toEqual([expect.stringMatching(/^warning: running without EPT\/RVI/)]);
    expect(checkRequirements({ ...caps, paging: 'ept' }, true)).toEqual([]);
  });
  it('names missing KVM features', () => {
    expect(() => checkRequirements({ ...caps, paging: 'ept', irqchip: false }, true)).toThrow(/in-kernel irqchip/);
    expect(() => checkRequirements({ ...caps, apiVersion: 11 }, false)).toThrow(/API version 11/);
  });
  it('reads the paging mode from kvm_intel/kvm_amd parameters', () => {
    expect(detectPaging((m, p) => (m === 'kvm_intel' && p === 'ept' ? 'Y' : undefined))).toBe('ept');
    expect(detectPaging((m, p) => (m === 'kvm_amd' && p === 'npt' ? '1' : undefined))).toBe('rvi');
    expect(detectPaging((m) => (m === 'kvm_intel' ? 'N' : undefined))).toBe('none');
  });
});

describe('exit status', () => {
  it('follows bhyve(8)', () => {
    expect(exitStatusOf({ kind: 'reset', why: '' })).toBe(0);
    expect(exitStatusOf({ kind: 'poweroff', why: '' })).toBe(1);
    expect(exitStatusOf({ kind: 'halt', why: '' })).toBe(2);
    expect(exitStatusOf({ kind: 'triplefault', vcpu: 0 })).toBe(3);
    expect(exitStatusOf({ kind: 'error', message: '' })).toBe(4);
    expect(exitStatusOf({ kind: 'testdev', value: 0x10 })).toBe(33);
  });

  it('says on stderr which of a triple fault and a pc-testdev exit gave a status bhyve also uses', () => {
    expect(exitNotice({ kind: 'triplefault', vcpu: 1, rip: 0xfff0 })).toBe('triple fault on vCPU 1 at rip 0xfff0 (exit status 3)');
    expect(exitNotice({ kind: 'testdev', value: 1 })).toBe('pc-testdev exit: the guest wrote 0x1 to port 0xf4 (exit status 3, not a triple fault)');
    expect(exitNotice({ kind: 'testdev', value: 0x81 })).toMatch(/wrote 0x81 .*exit status 3, not a triple fault/);
    expect(exitNotice({ kind: 'testdev', value: 0 })).toMatch(/wrote 0x0 .*exit status 1, not a power-off/);
    expect(exitNotice({ kind: 'testdev', value: 0x10 })).toBeUndefined();
    expect(exitNotice({ kind: 'poweroff', why: 'x' })).toBeUndefined();
    expect(exitNotice({ kind: 'reset', why: 'x' })).toBeUndefined();
  });
});

describe('legacy BIOS window', () => {
  it('is left to the i440FX PAM model only with lpc.fwcfg=qemu and a boot ROM', () => {
    const layout = { lowmem: 64 * 1024 * 1024, highmem: 0 };
    const cfg = (kv: Record<string, string>) => {
      const c = new ConfigTree();
      for (const [k, v] of Object.entries(kv)) c.set(k, v);
      return c;
    };
    expect(legacyWindowFor(cfg({ 'lpc.fwcfg': 'qemu', 'lpc.bootrom': '/x.rom' }), layout)).toBe(true);
    // No ROM (bhyveload): RAM, holding the tables the guest looks for.
    expect(legacyWindowFor(cfg({ 'lpc.fwcfg': 'qemu' }), layout)).toBe(false);
    expect(legacyWindowFor(cfg({ 'lpc.bootrom': '/x.rom' }), layout)).toBe(false);
  });
});
