// Guest NUMA domains (-n, bhyve's calc_mem_affinity / set_vcpu_affinities):
// the domains read from the config and checked against the guest, the split
// of guest memory between them across the 4 GiB hole, and the SRAT and SLIT
// that describe it (built in memory and for fw_cfg, decoded by iasl -d).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { initConfig, parseNumaOption } from '../../src/config/bhyve-args.js';
import { ConfigTree } from '../../src/config/tree.js';
import { validateForStart } from '../../src/devices/registry.js';
import { numaDomains, numaLayout, type NumaLayout } from '../../src/firmware/numa.js';
import { buildSlit, buildSrat } from '../../src/firmware/acpi/numa-tables.js';
import { buildAcpiForFwCfg, buildAcpiInMemory, type AcpiPlatform } from '../../src/firmware/acpi/index.js';
import { BHYVE_HPET_CAPABILITIES, PCI_ECFG_BASE } from '../../src/firmware/acpi/tables.js';
import { computeLayout } from '../../src/sys/memory-map.js';

const MiB = 1024 * 1024, GiB = 1024 * MiB;

function config(...opts: string[]): ConfigTree {
  const c = new ConfigTree();
  for (const o of opts) parseNumaOption(c, o);
  return c;
}

describe('NUMA domains from the configuration', () => {
  it('reads sizes and vCPU sets, checked against the guest', () => {
    const d = numaDomains(config('id=0,size=32M,cpus=0', 'id=1,size=32M,cpus=1-2'), 3, 64 * MiB);
    expect(d).toEqual([{ id: 0, size: 32 * MiB, cpus: [0] }, { id: 1, size: 32 * MiB, cpus: [1, 2] }]);
    expect(numaDomains(new ConfigTree(), 2, 64 * MiB)).toBeUndefined();
  });

  it('shares the memory out evenly when a size is missing, with bhyve\'s warning', () => {
    const warnings: string[] = [];
    const d = numaDomains(config('id=0,cpus=0', 'id=1,cpus=1', 'id=2,cpus=2'), 3, 100 * MiB, (m) => warnings.push(m))!;
    expect(warnings).toEqual(['At least one domain memory size was not specified, distributing total VM memory size across all domains']);
    expect(d.map((x) => x.size)).toEqual([32 * MiB, 32 * MiB, 36 * MiB]);
  });

  it('refuses what cannot describe the guest, with one line each', () => {
    const bad: Array<[string[], number, RegExp]> = [
      [['id=0,size=32M,cpus=0', 'id=2,size=32M,cpus=1'], 2, /NUMA domain 1 is missing/],
      [['id=0,size=32M'], 1, /Missing CPU set for domain 0/],
      [['id=0,size=32M,cpus=0-1', 'id=1,size=32M,cpus=1'], 2, /vCPU 1 is in NUMA domains 0 and 1/],
      [['id=0,size=64M,cpus=0-2'], 2, /vCPU 2 does not exist \(the guest has 2\)/],
      [['id=0,size=32M,cpus=0'], 2, /not the guest memory size/],
      [['id=0,size=32M,cpus=0', 'id=1,size=16M,cpus=1'], 2, /add up to 50331648 bytes/],
      [['id=0,size=64M,cpus=0'], 2, /vCPU 1 is in no NUMA domain/],
      [['id=0,size=lots,cpus=0'], 1, /invalid memsize for domain 0: 'lots'/],
      [['id=0,size=64M,cpus=x'], 1, /invalid CPU set for NUMA domain 0/],
      [['id=0,size=64M,cpus=0,domain_policy=prefer:0'], 1, /domain_policy .* not supported on Linux/],
    ];
    for (const [opts, ncpus, re] of bad) expect(() => numaDomains(config(...opts), ncpus, 64 * MiB), opts.join(' ')).toThrow(re);
    const nine = config(...Array.from({ length: 9 }, (_, i) => `id=${i},cpus=${i}`));
    expect(() => numaDomains(nine, 9, 9 * 64 * MiB)).toThrow(/at most 8/);
  });

  it('is checked before the VM exists (bhyve exits with one line), and needs ACPI', () => {
    const c = initConfig();
    c.set('cpus', '2');
    c.set('memory.size', '64M');
    parseNumaOption(c, 'id=0,size=32M,cpus=0');
    parseNumaOption(c, 'id=1,size=32M,cpus=1');
    expect(() => validateForStart(c)).not.toThrow();
    c.set('domains.1.size', '16M');
    expect(() => validateForStart(c)).toThrow(/add up to/);
    c.set('domains.1.size', '32M');
    c.set('acpi_tables', 'false');
    expect(() => validateForStart(c)).toThrow(/NUMA emulation requires ACPI/);
  });

  it('hands memory out lowest address first, a domain across the 4 GiB hole getting two ranges', () => {
    const layout = computeLayout(5 * GiB); // 3 GiB low, 2 GiB high
    const l = numaLayout(numaDomains(config('id=0,size=2G,cpus=0', 'id=1,size=2G,cpus=1', 'id=2,size=1G,cpus=2'), 3, 5 * GiB)!, layout);
    expect(l.memory).toEqual([
      { domain: 0, base: 0, length: 2 * GiB },
      { domain: 1, base: 2 * GiB, length: GiB },
      { domain: 1, base: 4 * GiB, length: GiB },
      { domain: 2, base: 5 * GiB, length: GiB },
    ]);
  });
});

function numaPlatform(numa: NumaLayout | undefined, ncpu: number): AcpiPlatform {
  return {
    ncpu, hpetCapabilities: BHYVE_HPET_CAPABILITIES, ecfgBase: PCI_ECFG_BASE, uarts: [], fwcfg: false, atkbdc: true,
    intx: [], pirqLinks: false, numa,
  } as unknown as AcpiPlatform;
}

/** Two domains, vCPUs interleaved (a list with commas: -o domains.N.cpus=, as -n splits at commas). */
const TWO = (() => {
  const c = config('id=0,size=2G', 'id=1,size=2G');
  c.set('domains.0.cpus', '0,2');
  c.set('domains.1.cpus', '1,3');
  return numaLayout(numaDomains(c, 4, 4 * GiB)!, computeLayout(4 * GiB));
})();

describe('SRAT and SLIT', () => {
  it('list every vCPU and memory range with its domain, and the distances', () => {
    const srat = buildSrat(TWO, 4).bytes;
    const dv = new DataView(srat.buffer, srat.byteOffset);
    expect(Buffer.from(srat.subarray(0, 4)).toString()).toBe('SRAT');
    expect(dv.getUint32(4, true)).toBe(srat.length);
    expect(srat.length).toBe(48 + 4 * 16 + 3 * 40);
    const cpu = (i: number) => [srat[48 + 16 * i], srat[48 + 16 * i + 2], srat[48 + 16 * i + 3]];
    expect([0, 1, 2, 3].map(cpu)).toEqual([[0, 0, 0], [0, 1, 1], [0, 0, 2], [0, 1, 3]]);
    const mem = (i: number) => {
      const o = 48 + 64 + 40 * i;
      return [srat[o], dv.getUint32(o + 2, true), Number(dv.getBigUint64(o + 8, true)), Number(dv.getBigUint64(o + 16, true)), dv.getUint32(o + 28, true)];
    };
    expect([0, 1, 2].map(mem)).toEqual([[1, 0, 0, 2 * GiB, 1], [1, 1, 2 * GiB, GiB, 1], [1, 1, 4 * GiB, GiB, 1]]);
    const slit = buildSlit(TWO).bytes;
    expect([...slit.subarray(36)]).toEqual([2, 0, 0, 0, 0, 0, 0, 0, 10, 20, 20, 10]);
  });

  it('are in the RSDT and XSDT, in memory and in the fw_cfg tables, only with domains', () => {
    const mem = buildAcpiInMemory(numaPlatform(TWO, 4));
    expect(mem.placed.map((t) => t.sig)).toEqual(['RSD PTR ', 'RSDT', 'XSDT', 'FACP', 'APIC', 'HPET', 'MCFG', 'SRAT', 'SLIT', 'FACS', 'DSDT']);
    const rsdt = mem.placed.find((t) => t.sig === 'RSDT')!;
    const dv = new DataView(mem.image.buffer, mem.image.byteOffset);
    const entries = Array.from({ length: (rsdt.length - 36) / 4 }, (_, i) => dv.getUint32(rsdt.address - mem.base + 36 + 4 * i, true));
    expect(entries).toContain(mem.placed.find((t) => t.sig === 'SRAT')!.address);
    expect(entries).toContain(mem.placed.find((t) => t.sig === 'SLIT')!.address);
    expect(buildAcpiForFwCfg(numaPlatform(TWO, 4)).offsets.has('SRAT')).toBe(true);
    expect(buildAcpiInMemory(numaPlatform(undefined, 4)).placed.map((t) => t.sig)).not.toContain('SRAT');
  });
});

const IASL = spawnSync('iasl', ['-v'], { encoding: 'utf8' }).status === 0;
const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function disassemble(name: string, bytes: Uint8Array): string {
  const dir = mkdtempSync(join(tmpdir(), 'bhyve-numa-'));
  dirs.push(dir);
  writeFileSync(join(dir, `${name}.dat`), bytes);
  const r = spawnSync('iasl', ['-d', `${name}.dat`], { cwd: dir, encoding: 'utf8' });
  const out = `${r.stdout}\n${r.stderr}`;
  expect(r.status, out).toBe(0);
  expect(out).not.toMatch(/Invalid|Could not|ACPI Error/);
  return readFileSync(join(dir, readdirSync(dir).find((f) => f.endsWith('.dsl'))!), 'utf8');
}

/** One table's bytes out of the in-memory image. */
function placed(sig: string): Uint8Array {
  const m = buildAcpiInMemory(numaPlatform(TWO, 4));
  const t = m.placed.find((x) => x.sig === sig)!;
  return m.image.subarray(t.address - m.base, t.address - m.base + t.length);
}

describe.skipIf(!IASL)('SRAT and SLIT decoded by iasl -d (acpica-tools; skipped without it)', () => {
  it('decodes the SRAT: processor and memory affinity with their domains', () => {
    const dsl = disassemble('SRAT', placed('SRAT'));
    expect(dsl).toMatch(/Signature : "SRAT"/);
    expect(dsl).not.toMatch(/Unknown|terminates/i);
    expect((dsl.match(/Processor Local APIC\/SAPIC Affinity/g) ?? []).length).toBe(4);
    expect((dsl.match(/Memory Affinity/g) ?? []).length).toBe(3);
    expect(dsl).toMatch(/Base Address : 0000000100000000\s[\s\S]*?Address Length : 0000000040000000/);
    expect(dsl).toMatch(/Proximity Domain : 00000001/);
  });

  it('decodes the SLIT: 2 localities, 10 and 20', () => {
    const dsl = disassemble('SLIT', placed('SLIT'));
    expect(dsl).toMatch(/Signature : "SLIT"/);
    expect(dsl).toMatch(/Localities : 0000000000000002/);
    expect(dsl).toMatch(/Locality {3}0 : 0A 14/);
    expect(dsl).toMatch(/Locality {3}1 : 14 0A/);
  });
});
