import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { parseBhyveArgs, initConfig, dumpConfig } from '../../src/config/bhyve-args.js';
import { BHYVE_OPTIONS, knownConfigKeys } from '../../src/config/bhyve-options.js';
import { parseMemorySize } from '../../src/config/size.js';
import { calcTopology, parseCpuset } from '../../src/config/topology.js';
import { ConfigTree } from '../../src/config/tree.js';
import { validateForStart } from '../../src/devices/registry.js';

const DEFAULTS: Array<[string, string]> = [
  ['acpi_tables', 'true'], ['acpi_tables_in_memory', 'true'], ['memory.size', '256M'],
  ['x86.strictmsr', 'true'], ['lpc.fwcfg', 'bhyve'],
];

function run(argv: string): ConfigTree {
  const r = parseBhyveArgs(argv.split(' ').filter((w) => w !== ''));
  if (r.kind !== 'run') throw new Error(`expected run, got ${r.kind}`);
  return r.config;
}

function values(argv: string): Record<string, string> {
  return Object.fromEntries(run(argv).toJSON());
}

describe('parseBhyveArgs: flags -> config tree', () => {
  it('applies amd64 defaults and the vmname', () => {
    expect(run('vm0').toJSON()).toEqual([...DEFAULTS, ['name', 'vm0']]);
    expect(dumpConfig(initConfig())).toBe(DEFAULTS.map(([k, v]) => `${k}=${v}\n`).join(''));
  });

  it.each([
    ['-H', { 'x86.vmexit_on_hlt': 'true' }],
    ['-P', { 'x86.vmexit_on_pause': 'true' }],
    ['-w', { 'x86.strictmsr': 'false' }],
    ['-u', { 'rtc.use_localtime': 'false' }],
    ['-e', { 'x86.strictio': 'true' }],
    ['-W', { virtio_msix: 'false' }],
    ['-Y', { 'x86.mptable': 'false' }],
    ['-x', { 'x86.x2apic': 'true' }],
    ['-a', { 'x86.x2apic': 'false' }],
    ['-x -a', { 'x86.x2apic': 'false' }],
    ['-S', { 'memory.wired': 'true' }],
    ['-C', { 'memory.guest_in_core': 'true' }],
    ['-D', { destroy_on_poweroff: 'true' }],
    ['-AI', {}],
    ['-m 1G', { 'memory.size': '1G' }],
    ['-m512', { 'memory.size': '512' }],
    ['-c 4', { cpus: '4' }],
    ['-c cpus=4,sockets=2,cores=2', { cpus: '4', sockets: '2', cores: '2' }],
    ['-c sockets=2,threads=2', { sockets: '2', threads: '2' }],
    ['-U 01234567-89ab-cdef-0123-456789abcdef', { uuid: '01234567-89ab-cdef-0123-456789abcdef' }],
    ['-p 0:2 -p 0:3 -p 1:5', { 'vcpu.0.cpuset': '2,3', 'vcpu.1.cpuset': '5' }],
    ['-K us', { 'keyboard.layout': 'us' }],
    ['-G 1234', { 'gdb.port': '1234' }],
    ['-G w127.0.0.1:1234', { 'gdb.wait': 'true', 'gdb.address': '127.0.0.1', 'gdb.port': '1234' }],
    ['-n id=0,size=1G,cpus=0-1', { 'domains.0.size': '1G', 'domains.0.cpus': '0-1' }],
    ['-o foo.bar=baz', { 'foo.bar': 'baz' }],
    ['-l com1,stdio -l COM2,/dev/nmdm0A', { 'lpc.com1.path': 'stdio', 'lpc.com2.path': '/dev/nmdm0A' }],
    ['-l com3,tcp=127.0.0.1:4321', { 'lpc.com3.path': 'tcp=127.0.0.1:4321' }],
    ['-l bootrom,/rom.fd', { 'lpc.bootrom': '/rom.fd' }],
    ['-l bootrom,/rom.fd,/vars.fd', { 'lpc.bootrom': '/rom.fd', 'lpc.bootvars': '/vars.fd' }],
    ['-l bootrom,/rom.fd,fwcfg=qemu', { 'lpc.bootrom': '/rom.fd', 'lpc.fwcfg': 'qemu' }],
    ['-l bootrom,/rom.fd,/vars.fd,fwcfg=qemu', { 'lpc.bootrom': '/rom.fd', 'lpc.bootvars': '/vars.fd', 'lpc.fwcfg': 'qemu' }],
    ['-l pc-testdev', { 'lpc.pc-testdev': 'true' }],
    ['-l tpm,swtpm,/tmp/sock', { 'tpm.type': 'swtpm', 'tpm.path': '/tmp/sock', 'tpm.version': '2.0' }],
    ['-l fwcfg,qemu', { 'lpc.fwcfg': 'qemu' }],
    ['-o name=other', { name: 'vm0' }],
  ])('%s', (flags, expected) => {
    const v = values(`${flags} vm0`);
    for (const [k, val] of Object.entries(expected)) expect(v[k], k).toBe(val);
  });

  it('later settings override earlier ones', () => {
    expect(values('-m 1G -m 2G -o memory.size=3G vm0')['memory.size']).toBe('3G');
    expect(values('-w -o x86.strictmsr=yes vm0')['x86.strictmsr']).toBe('yes');
  });

  it('takes the name from -o name= when no operand is given', () => {
    expect(values('-o name=fromopt').name).toBe('fromopt');
  });

  it('-c "" sets a 1-vCPU topology', () => {
    const v = Object.fromEntries(parseBhyveArgs(['-c', '', 'vm0']).kind === 'run' ? run('vm0').toJSON() : []);
    expect(v.name).toBe('vm0');
    const r = parseBhyveArgs(['-c', '', 'vm0']);
    expect(r.kind === 'run' && Object.fromEntries(r.config.toJSON())).toMatchObject({ sockets: '1', cores: '1', threads: '1', cpus: '1' });
  });

  it('-k reads key=value lines; later -o wins, earlier -o loses', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bhyve-k-'));
    const f = join(dir, 'vm.conf');
    writeFileSync(f, '# comment\n\nmemory.size=2G\ncpus=2\npci.0.0.0.device=hostbridge\nname=kname\n');
    const v = values(`-o cpus=8 -k ${f} -o memory.size=4G`);
    expect(v).toMatchObject({ 'memory.size': '4G', cpus: '2', 'pci.0.0.0.device': 'hostbridge', name: 'kname' });
  });

  it('-f keeps fw_cfg user files outside the tree', () => {
    const r = parseBhyveArgs(['-f', 'opt/x,string=hello', '-f', 'name=opt/y,string=', 'vm0']);
    expect(r.kind).toBe('run');
    if (r.kind !== 'run') return;
    expect(r.fwcfgFiles.map((f) => [f.name, new TextDecoder().decode(f.data)])).toEqual([['opt/x', 'hello'], ['opt/y', '']]);
    expect(() => validateForStart(r.config, { fwcfgFiles: r.fwcfgFiles })).not.toThrow();
  });

  it('%(name) references expand on read and stay raw in the dump', () => {
    const r = parseBhyveArgs(['-o', 'disk=/vm/%(name).img', '-s', '3,virtio-blk,%(disk)', '-o', 'config.dump=on', 'guest']);
    expect(r.kind).toBe('dump');
    if (r.kind !== 'dump') return;
    expect(r.config.get('pci.0.3.0.path')).toBe('/vm/guest.img');
    expect(r.text).toContain('pci.0.3.0.path=%(disk)\n');
  });

  it.each(['true', 'on', 'yes', '1', 'TRUE', 'Yes'])('config.dump=%s dumps and exits 1 (as bhyve)', (word) => {
    const r = parseBhyveArgs(['-o', `config.dump=${word}`, 'vm0']);
    expect(r.kind).toBe('dump');
    if (r.kind === 'dump') expect(r.exitCode).toBe(1);
  });

  it.each(['false', 'off', 'no', '0'])('config.dump=%s runs', (word) => {
    expect(parseBhyveArgs(['-o', `config.dump=${word}`, 'vm0']).kind).toBe('run');
  });

  it('help results', () => {
    expect(parseBhyveArgs(['-h'])).toMatchObject({ kind: 'help', exitCode: 0, stream: 'stderr' });
    const s = parseBhyveArgs(['-s', 'help']);
    expect(s.kind === 'help' && s.text.split('\n')).toContain('virtio-blk');
    const l = parseBhyveArgs(['-l', 'help']);
    expect(l.kind === 'help' && l.text).toBe('bootrom\ncom1\ncom2\ncom3\ncom4\ntpm (not supported yet)\npc-testdev\n');
    expect(s.kind === 'help' && s.text.split('\n')).toContain('passthru');
    expect(s.kind === 'help' && s.text.split('\n')).toEqual(expect.arrayContaining(['ahci', 'ahci-hd', 'ahci-cd', 'nvme']));
  });
});

describe('the tables', () => {
  it('covers every bhyve flag', () => {
    expect(BHYVE_OPTIONS.map((o) => o.flag).sort().join('')).toBe([...'aACcDefGHhIkKlmnoPprSsUuWwxY'].sort().join(''));
  });
  it('knows the config keys', () => {
    for (const k of ['memory.size', 'x86.require_ept_rvi', 'pci.B.S.F.device', 'lpc.comN.path', 'vcpu.N.cpuset', 'tpm.version']) {
      expect(knownConfigKeys()).toContain(k);
    }
  });
});

describe('sizes and topology', () => {
  it.each([
    ['256M', 256 * 2 ** 20], ['1G', 2 ** 30], ['1g', 2 ** 30], ['2T', 2 * 2 ** 40], ['512', 512 * 2 ** 20],
    ['512k', 512 * 1024], ['1GB', 2 ** 30], ['0x100', 256 * 2 ** 20], ['2147483648', 2 ** 31],
  ])('parseMemorySize(%s)', (s, n) => expect(parseMemorySize(s)).toBe(n));

  it.each(['', 'abc', '1X', '1GiB', '-1', '0', '1.5G'])('parseMemorySize rejects %j', (s) => {
    expect(() => parseMemorySize(s)).toThrow(/invalid memsize/);
  });

  it.each([
    [{ cpus: '4' }, { cpus: 4, sockets: 4, cores: 1, threads: 1 }],
    [{ sockets: '2', cores: '2' }, { cpus: 4, sockets: 2, cores: 2, threads: 1 }],
    [{ cpus: '8', sockets: '2', cores: '2', threads: '2' }, { cpus: 8, sockets: 2, cores: 2, threads: 2 }],
    [{}, { cpus: 1, sockets: 1, cores: 1, threads: 1 }],
  ])('calcTopology(%j)', (kv, topo) => {
    const t = new ConfigTree();
    for (const [k, v] of Object.entries(kv)) t.set(k, v);
    expect(calcTopology(t)).toEqual(topo);
  });

  it('parseCpuset', () => {
    expect(parseCpuset(0, '0,2-4,7')).toEqual([0, 2, 3, 4, 7]);
    expect(() => parseCpuset(0, '3-1')).toThrow(/Invalid hostcpu range/);
    expect(() => parseCpuset(0, 'x')).toThrow(/invalid cpuset/);
  });
});
