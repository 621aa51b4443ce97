// A device is its record: a toy PCI device defined only in this file, once
// registered, is listed by -s help, parsed by -s with its own legacy
// parser, checked by its own validate(), documented in configKeys(), and
// built on the bus by the platform; a record without a model is marked
// and refused at start.
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/tree.js';
import { setValue } from '../../src/config/legacy.js';
import { parseBhyveArgs } from '../../src/config/bhyve-args.js';
import { knownConfigKeys } from '../../src/config/bhyve-options.js';
import type { PciDeviceRecord } from '../../src/devices/pci-device.js';
import { PciFunctionBase } from '../../src/devices/pci/pci-function.js';
import { buildPlatform } from '../../src/devices/platform.js';
import { loadPciModel, registerPciDevice, validateForStart } from '../../src/devices/registry.js';
import { fake } from '../support/fake-device.js';
import '../support/device-models.js'; // the device models buildPlatform needs

class ToyFunction extends PciFunctionBase {
  constructor(readonly level: number) {
    super('toy');
    this.cfg.setIdentity({ vendor: 0x1234, device: 0x5678, revision: level, classCode: 0xff, subclass: 0 });
  }
}

const toy: PciDeviceRecord = {
  name: 'toy',
  description: 'a device that exists only in this test',
  // `-s 5,toy,LEVEL[,name=value...]`
  legacyConfig: (tree, node, conf) => {
    const [level, ...rest] = (conf ?? '').split(',');
    if (level !== '') setValue(tree, `${node}.level`, level);
    for (const kv of rest) setValue(tree, `${node}.${kv.split('=')[0]}`, kv.split('=')[1] ?? 'true');
  },
  keys: [{ key: 'level', default: '1', description: 'toy level, 1 to 9' }],
  validate: (config, s) => {
    const v = config.get(`${s.node}.level`);
    if (v !== undefined && !/^[1-9]$/.test(v)) throw new ConfigError(`pci slot ${s.where}: toy level must be 1 to 9, not "${v}"`);
  },
  model: async () => ({ create: (ctx, s) => new ToyFunction(Number(ctx.config.get(`${s.node}.level`) ?? 1)) }),
};

const toyUnbuilt: PciDeviceRecord = { name: 'toy-unbuilt', description: 'a toy with no model yet', keys: [] };

registerPciDevice(toy);
registerPciDevice(toyUnbuilt);
await loadPciModel(toy);

const args = (...extra: string[]) => ['-m', '64M', '-s', '0,hostbridge', ...extra, 'vm'];

describe('a device record defined outside the tree', () => {
  it('is listed by -s help (a record without a model is marked)', () => {
    const r = parseBhyveArgs(['-s', 'help']);
    expect(r.kind === 'help' && r.text.split('\n')).toContain('toy');
    expect(r.kind === 'help' && r.text.split('\n')).toContain('toy-unbuilt (not supported yet)');
  });

  it('is accepted by -s, with its own legacy parser', () => {
    const r = parseBhyveArgs(args('-s', '5,toy,7,color=red'));
    expect(r.kind).toBe('run');
    if (r.kind !== 'run') return;
    expect(r.config.get('pci.0.5.0.device')).toBe('toy');
    expect(r.config.get('pci.0.5.0.level')).toBe('7');
    expect(r.config.get('pci.0.5.0.color')).toBe('red');
    expect(() => validateForStart(r.config)).not.toThrow();
  });

  it('validates its options at parse time, from -s and from -o alike', () => {
    expect(() => parseBhyveArgs(args('-s', '5,toy,12'))).toThrow(/pci slot 0:5:0: toy level must be 1 to 9, not "12"/);
    expect(() => parseBhyveArgs(args('-o', 'pci.0.6.0.device=toy', '-o', 'pci.0.6.0.level=x'))).toThrow(/pci slot 0:6:0: toy level/);
  });

  it('documents its keys in the config key list (bhyve_config(5))', () => {
    expect(knownConfigKeys()).toContain('pci.B.S.F.level');
  });

  it('is built on the bus by the platform from its node', () => {
    const f = fake({ 'pci.0.0.0.device': 'hostbridge', 'pci.0.5.0.device': 'toy', 'pci.0.5.0.level': '3' });
    const p = buildPlatform(f.ctx, { lowmem: 64 << 20, highmem: 0 });
    const fn = p.pci.lookup(0, 5, 0);
    expect(fn).toBeInstanceOf(ToyFunction);
    expect((fn as ToyFunction).level).toBe(3);
    expect(fn!.name).toBe('toy@pci.0.5.0');
    // The guest sees it through configuration mechanism #1.
    f.outp(0xcf8, 0x80000000 | (5 << 11), 4);
    expect(f.inp(0xcfc, 4)).toBe(0x56781234);
    expect(p.devices).toContain(fn);
  });

  it('without a model parses but is refused at start and by the platform', () => {
    const r = parseBhyveArgs(args('-s', '7,toy-unbuilt'));
    expect(r.kind).toBe('run');
    if (r.kind !== 'run') return;
    expect(() => validateForStart(r.config)).toThrow(/not supported yet: PCI emulation 'toy-unbuilt' \(pci slot 0:7:0\)/);
    const f = fake({ 'pci.0.7.0.device': 'toy-unbuilt' });
    expect(() => buildPlatform(f.ctx, { lowmem: 64 << 20, highmem: 0 })).toThrow(/not supported yet: toy-unbuilt/);
  });
});
