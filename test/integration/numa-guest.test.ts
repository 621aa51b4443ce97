// numa.rom (test/guests/numa/numa.c) reads the NUMA topology as an OS does
// at boot: RSDP, RSDT, SRAT (each vCPU's and each memory range's domain,
// every range below 4 GiB checked to be RAM) and SLIT. bhyve -n puts them
// there; without -n there is no SRAT.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { GUESTS, bhyveArgs, kvmUnavailable, runBhyve, vmName } from '../support/bhyve.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'numa.rom')) ? undefined : 'numa.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping NUMA guest tests: ${skip}`);
const ROM = path.join(GUESTS, 'numa.rom');

describe.skipIf(skip !== undefined)('numa.rom on bhyve -n', () => {
  it('sees two domains of 32 MiB, one vCPU each, 10/20 apart', async () => {
    const r = await runBhyve(bhyveArgs(ROM, vmName('numa2'), {
      cpus: 2, mem: '64M', extra: ['-n', 'id=0,size=32M,cpus=0', '-n', 'id=1,size=32M,cpus=1'],
    }), { timeout: 90_000 });
    const out = String(r.stdout);
    expect(r.exitCode, `${out}${String(r.stderr)}`).toBe(33);
    for (const line of [
      'numa: cpu apic 0 domain 0', 'numa: cpu apic 1 domain 1',
      'numa: memory 0-1ffffff domain 0', 'numa: memory 2000000-3ffffff domain 1',
      'numa: distance 0 0 10', 'numa: distance 0 1 20', 'numa: distance 1 0 20', 'numa: distance 1 1 10',
      'numa: 2 domains, 2 cpus, 2 ranges',
    ]) expect(out).toContain(line);
  }, 120_000);

  it('shares the memory out evenly when no size is given, with bhyve\'s warning', async () => {
    const r = await runBhyve(bhyveArgs(ROM, vmName('numa3'), {
      cpus: 3, mem: '96M', extra: ['-n', 'id=0,cpus=0-1', '-n', 'id=1,cpus=2'],
    }), { timeout: 90_000 });
    const out = String(r.stdout);
    expect(r.exitCode, `${out}${String(r.stderr)}`).toBe(33);
    expect(String(r.stderr)).toContain('bhyve: warning: At least one domain memory size was not specified, distributing total VM memory size across all domains');
    for (const line of [
      'numa: cpu apic 0 domain 0', 'numa: cpu apic 1 domain 0', 'numa: cpu apic 2 domain 1',
      'numa: memory 0-2ffffff domain 0', 'numa: memory 3000000-5ffffff domain 1', 'numa: 2 domains, 3 cpus, 2 ranges',
    ]) expect(out).toContain(line);
  }, 120_000);

  it('without -n there is no SRAT', async () => {
    const r = await runBhyve(bhyveArgs(ROM, vmName('numa0'), { cpus: 1, mem: '64M' }), { timeout: 90_000 });
    expect(r.exitCode).toBe(5);
    expect(String(r.stdout)).toContain('numa: no SRAT');
  }, 120_000);

  it('refuses domains that do not describe the guest with one line and status 4', async () => {
    const r = await runBhyve(bhyveArgs(ROM, vmName('numabad'), {
      cpus: 2, mem: '64M', extra: ['-n', 'id=0,size=32M,cpus=0', '-n', 'id=1,size=16M,cpus=1'],
    }), { timeout: 60_000 });
    expect(r.exitCode).toBe(4);
    expect(String(r.stderr).trim()).toBe('bhyve: the NUMA domain sizes add up to 50331648 bytes, not the guest memory size of 67108864 bytes (-m)');
  }, 90_000);
});
