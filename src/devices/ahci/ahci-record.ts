// The AHCI records (pci-device.ts; bhyve's pci_de_ahci, pci_de_ahci_hd,
// pci_de_ahci_cd): names, keys, the legacy `hd:path,cd:path` string and
// the ports' checks, for the option parsing and start-time checks; the
// emulation is ahci.ts, loaded when a run configures one.

import { blockifLegacyConfig, createNode, setValue } from '../../config/legacy.js';
import { ConfigError, type ConfigTree } from '../../config/tree.js';
import { requireBlockPath } from '../block/blockif-keys.js';
import type { DeviceKey, LegacyParser, PciDeviceRecord, PciSlot } from '../pci-device.js';

export const AHCI_MAX_PORTS = 32;

// 0: on this project's 2-CPU hosts without other load the exit path
// measured ahead on every sequential row (A/B at load ~3: write 0.71-1.10x
// of QEMU against 0.53-0.54x with one thread); with the host loaded the
// thread was (BENCHMARKS.md). Hosts with CPUs to spare: try iopool=1.
export const IOPOOL_THREADS_DEFAULT = 0;
export const IOPOOL_MIN_DEFAULT = 65536;
/** Largest transfer, in bytes, an I/O thread makes of NCQ commands that
 * continue each other in the image (0: one transfer per command). */
export const IOPOOL_MERGE_DEFAULT = 1 << 20;

function ahciPort(tree: ConfigTree, node: string, port: number, type: string, opts: string | undefined): void {
  const portNode = `${node}.port.${port}`;
  createNode(tree, portNode);
  setValue(tree, `${portNode}.type`, type);
  blockifLegacyConfig(tree, portNode, opts);
}

/** pci_ahci_legacy_config(): `hd:path[,opts],cd:path[,opts],...` -> port.N.* */
const ahciLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  createNode(tree, `${node}.port`);
  let str: string | undefined = opts;
  for (let p = 0; p < AHCI_MAX_PORTS && str !== undefined; p++) {
    let type: string | undefined;
    if (str.startsWith('hd:')) { type = 'hd'; str = str.slice(3); }
    else if (str.startsWith('cd:')) { type = 'cd'; str = str.slice(3); }
    const hd = str.indexOf(',hd:');
    const cd = str.indexOf(',cd:');
    let cut = hd;
    if (hd < 0 || (cd >= 0 && cd < hd)) cut = cd;
    let next: string | undefined;
    if (cut >= 0) { next = str.slice(cut + 1); str = str.slice(0, cut); }
    if (str !== '') {
      if (type === undefined) throw new ConfigError(`Missing or invalid type for port ${p}: "${str}" (use hd:path or cd:path)`);
      ahciPort(tree, node, p, type, str);
    }
    str = next;
  }
};

const AHCI_KEYS: readonly DeviceKey[] = [
  { key: 'port.N.type', description: 'ahci port type (hd or cd)' },
  { key: 'port.N.path', description: 'ahci port backing file' },
  { key: 'port.N.nmrr', description: 'ahci port nominal media rotation rate (1: SSD)' },
  { key: 'port.N.ser', description: 'ahci port serial number' },
  { key: 'port.N.rev', description: 'ahci port firmware revision' },
  { key: 'port.N.model', description: 'ahci port model' },
  { key: 'port.N.bootindex', description: 'boot order index of the controller, from this port' },
  { key: 'regpage', default: 'true', description: 'ahci register reads from a read-only guest page (no exit per read)' },
  { key: 'iopool', default: String(IOPOOL_THREADS_DEFAULT), description: 'ahci I/O threads for large NCQ transfers (0, the default: every command runs in its PxCI exit)' },
  { key: 'iopool_min', default: String(IOPOOL_MIN_DEFAULT), description: 'ahci smallest NCQ transfer, in bytes, handed to the I/O threads' },
  { key: 'iopool_merge', default: String(IOPOOL_MERGE_DEFAULT), description: 'ahci largest transfer, in bytes, an I/O thread makes of waiting NCQ commands that continue each other (0: one per command)' },
  { key: 'sactcoalesce', default: 'true', description: 'ahci PxSACT writes through KVM\'s coalesced MMIO ring (no exit per NCQ command\'s PxSACT write)' },
];

/** Every ahci port with a type needs a path. */
function validateAhciPorts(config: ConfigTree, s: PciSlot): void {
  for (const [p, pn] of config.getNode(`${s.node}.port`) ?? []) {
    const type = config.get(`${s.node}.port.${p}.type`);
    if (pn instanceof Map && type !== undefined) {
      requireBlockPath(config, `${s.node}.port.${p}`, s, `ahci port ${p}`, type === 'cd' ? 'ahci,cd:/path/to/image.iso' : 'ahci,hd:/path/to/disk.img');
    }
  }
}

export const ahciDevice: PciDeviceRecord = {
  name: 'ahci', description: 'AHCI SATA controller with several ports', legacyConfig: ahciLegacy, keys: AHCI_KEYS,
  bootable: true,
  validate: (c, s) => validateAhciPorts(c, s),
  model: () => import('./ahci.js').then((m) => m.ahciModel),
};
export const ahciHdDevice: PciDeviceRecord = {
  name: 'ahci-hd', alias: 'ahci', description: 'AHCI controller with one SATA hard disk', keys: AHCI_KEYS,
  legacyConfig: (t, n, o) => { createNode(t, `${n}.port`); ahciPort(t, n, 0, 'hd', o); },
};
export const ahciCdDevice: PciDeviceRecord = {
  name: 'ahci-cd', alias: 'ahci', description: 'AHCI controller with one ATAPI CD-ROM', keys: AHCI_KEYS,
  legacyConfig: (t, n, o) => { createNode(t, `${n}.port`); ahciPort(t, n, 0, 'cd', o); },
};
