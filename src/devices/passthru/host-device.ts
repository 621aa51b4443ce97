// Finds the host PCI device a `passthru` slot names and checks that the
// host is set up to hand it to a guest through VFIO, from sysfs and /dev
// alone, before the VM exists. When it is not, the HostSetupError says in
// one line what is missing and how to fix it: no IOMMU, VFIO not loaded,
// the device absent, bound to a host driver instead of vfio-pci, its IOMMU
// group not viable, or no permission on its VFIO device node.
//
// Every path is read under a root directory (normally "/"), so tests build
// a fake sysfs and /dev tree; BHYVE_PASSTHRU_HOST_ROOT sets that root for
// the whole program and exists for tests only.

import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, type ConfigTree } from '../../config/tree.js';

/** What a passthru slot names, from its pci.B.S.F keys. */
export type PassthruSource =
  | { kind: 'address'; address: string } // bus/slot/func (domain 0) or host=DDDD:BB:SS.F
  | { kind: 'ppt'; unit: number; name: string } // pptdev=pptN
  | { kind: 'cdev'; path: string } // cdev=/dev/vfio/devices/vfioN
  | { kind: 'vfio-user'; path: string }; // vfio-user=SOCKET: a device another process serves

export interface HostDevice {
  /** DDDD:BB:SS.F */
  address: string;
  group: number;
  /** How it would be opened: iommufd with the device's cdev, else the VFIO group. */
  api: 'iommufd' | 'group';
  /** /dev/vfio/devices/vfioN (iommufd) or /dev/vfio/N (group). */
  node: string;
}

export interface HostRootOptions {
  /** Prefix of every sysfs and /dev path (tests). Default: $BHYVE_PASSTHRU_HOST_ROOT or "/". */
  root?: string;
  /** Whether we may open a device node read-write (tests: root passes access(2) anyway). */
  canOpen?: (file: string) => boolean;
}

/** A host that is not set up for this passthrough; the message is the one line to print. */
export class HostSetupError extends ConfigError { override readonly name: string = 'HostSetupError'; }

const ADDRESS_RE = /^([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/;
const SHORT_ADDRESS_RE = /^([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/;
const CDEV_RE = /^\/dev\/vfio\/devices\/vfio(\d+)$/;
const PPT_RE = /^ppt(\d+)$/;

/** DDDD:BB:SS.F (lower case) from a Linux PCI address, with or without the domain; undefined if not one. */
export function normalizeAddress(s: string): string | undefined {
  const m = ADDRESS_RE.exec(s);
  if (m) return `${m[1]}:${m[2]}:${m[3]}.${m[4]}`.toLowerCase();
  const k = SHORT_ADDRESS_RE.exec(s);
  if (k) return `0000:${k[1]}:${k[2]}.${k[3]}`.toLowerCase();
  return undefined;
}

/** Whether `s` is one of the Linux forms of the first passthru option. */
export function isLinuxForm(s: string): boolean {
  return normalizeAddress(s) !== undefined || CDEV_RE.test(s);
}

/** bhyve's B/S/F (domain 0), as a Linux address. */
export function bsfAddress(bus: number, slot: number, func: number): string {
  const hex = (n: number, w: number): string => n.toString(16).padStart(w, '0');
  return `0000:${hex(bus, 2)}:${hex(slot, 2)}.${func}`;
}

function intKey(config: ConfigTree, key: string, max: number): number {
  const v = config.get(key);
  if (v === undefined) throw new ConfigError(`passthru: ${key} is missing (set bus, slot and func together)`);
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > max) throw new ConfigError(`passthru: invalid ${key} "${v}" (0-${max})`);
  return n;
}

/** What the node's keys name; throws ConfigError when they name nothing or too much. */
export function passthruSource(config: ConfigTree, node: string): PassthruSource {
  const host = config.get(`${node}.host`);
  const cdev = config.get(`${node}.cdev`);
  const ppt = config.get(`${node}.pptdev`);
  const vfioUser = config.get(`${node}.vfio-user`);
  const bsf = ['bus', 'slot', 'func'].some((k) => config.get(`${node}.${k}`) !== undefined);
  const given = [host !== undefined, cdev !== undefined, ppt !== undefined, bsf, vfioUser !== undefined].filter(Boolean).length;
  if (given === 0) throw new ConfigError('passthru: no host device (give B/S/F, pciB:S:F, pptN, DDDD:BB:SS.F, /dev/vfio/devices/vfioN or vfio-user=SOCKET)');
  if (given > 1) throw new ConfigError('passthru: give the host device once (one of bus/slot/func, pptdev, host, cdev or vfio-user)');
  if (vfioUser !== undefined) {
    if (vfioUser === '') throw new ConfigError('passthru: vfio-user needs the path of the server\'s socket');
    return { kind: 'vfio-user', path: vfioUser };
  }
  if (host !== undefined) {
    const address = normalizeAddress(host);
    if (!address) throw new ConfigError(`passthru: invalid host "${host}" (use a PCI address like 0000:01:00.0)`);
    return { kind: 'address', address };
  }
  if (cdev !== undefined) {
    if (!CDEV_RE.test(cdev)) throw new ConfigError(`passthru: invalid cdev "${cdev}" (use /dev/vfio/devices/vfioN)`);
    return { kind: 'cdev', path: cdev };
  }
  if (ppt !== undefined) {
    const m = PPT_RE.exec(ppt);
    if (!m) throw new ConfigError(`passthru: invalid pptdev "${ppt}" (use pptN)`);
    return { kind: 'ppt', unit: Number(m[1]), name: ppt };
  }
  return {
    kind: 'address',
    address: bsfAddress(intKey(config, `${node}.bus`, 255), intKey(config, `${node}.slot`, 31), intKey(config, `${node}.func`, 7)),
  };
}

function defaultRoot(): string {
  return process.env.BHYVE_PASSTHRU_HOST_ROOT || '/';
}

function defaultCanOpen(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Host-side checks, reading under one root. */
class HostView {
  readonly root: string;
  readonly canOpen: (file: string) => boolean;

  constructor(opts: HostRootOptions) {
    this.root = opts.root ?? defaultRoot();
    this.canOpen = opts.canOpen ?? ((f) => defaultCanOpen(this.at(f)));
  }

  at(p: string): string {
    return path.join(this.root, p);
  }

  exists(p: string): boolean {
    return fs.existsSync(this.at(p));
  }

  list(p: string): string[] {
    try {
      return fs.readdirSync(this.at(p)).sort();
    } catch {
      return [];
    }
  }

  /** Last component of a symlink's target, or undefined when there is no link. */
  linkName(p: string): string | undefined {
    try {
      return path.basename(fs.readlinkSync(this.at(p)));
    } catch {
      return undefined;
    }
  }

  driverOf(address: string): string | undefined {
    return this.linkName(`/sys/bus/pci/devices/${address}/driver`);
  }
}

const fail = (msg: string): never => {
  throw new HostSetupError(`passthru: ${msg}`);
};

/** Host drivers a group member may have and the group still be viable (as the kernel's vfio allows). */
const VIABLE_DRIVERS = new Set(['vfio-pci', 'pci-stub', 'pcieport']);

function bindFix(address: string, driver: string | undefined): string {
  const dev = `/sys/bus/pci/devices/${address}`;
  const unbind = driver ? `echo ${address} > ${dev}/driver/unbind; ` : '';
  return `modprobe vfio-pci; echo vfio-pci > ${dev}/driver_override; ${unbind}echo ${address} > /sys/bus/pci/drivers_probe`;
}

/**
 * Resolves the source to a host device and checks the host is set up to pass
 * it through; throws HostSetupError naming the first thing that is missing.
 */
export function checkHostDevice(source: PassthruSource, opts: HostRootOptions = {}): HostDevice {
  if (source.kind === 'vfio-user') throw new TypeError('checkHostDevice: a vfio-user device is not a host device');
  const h = new HostView(opts);

  if (h.list('/sys/kernel/iommu_groups').length === 0) {
    fail('no IOMMU: /sys/kernel/iommu_groups is empty (turn on VT-d or AMD-Vi in the firmware and boot Linux with intel_iommu=on or amd_iommu=on)');
  }
  const haveIommufd = h.exists('/dev/iommu');
  if (!haveIommufd && !h.exists('/dev/vfio/vfio')) {
    fail('VFIO is not loaded: no /dev/iommu and no /dev/vfio/vfio (modprobe vfio-pci)');
  }

  let address: string;
  if (source.kind === 'address') {
    address = source.address;
  } else if (source.kind === 'ppt') {
    // FreeBSD numbers ppt(4) devices in the order it attaches them; here
    // pptN is the Nth device bound to vfio-pci, in PCI address order.
    const bound = h.list('/sys/bus/pci/drivers/vfio-pci').filter((n) => ADDRESS_RE.test(n));
    if (source.unit >= bound.length) {
      fail(`${source.name}: ${bound.length === 0 ? 'no device is' : `only ${bound.length} device(s) are`} bound to vfio-pci`
        + `${bound.length ? ` (${bound.join(', ')})` : ''}; pptN counts them in PCI address order from ppt0`);
    }
    address = bound[source.unit];
  } else {
    const name = path.basename(source.path);
    if (!haveIommufd) fail(`${source.path} needs iommufd and there is no /dev/iommu (Linux 6.6+ with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV; modprobe iommufd)`);
    if (!h.exists(source.path)) fail(`no VFIO device ${source.path}`);
    const pci = h.linkName(`/sys/class/vfio-dev/${name}/device`);
    if (!pci || !ADDRESS_RE.test(pci)) fail(`${source.path} is not a VFIO PCI device (no /sys/class/vfio-dev/${name}/device)`);
    address = pci!;
  }

  const dev = `/sys/bus/pci/devices/${address}`;
  if (!h.exists(dev)) fail(`host PCI device ${address} does not exist (see lspci -D)`);

  const driver = h.driverOf(address);
  if (driver !== 'vfio-pci') {
    fail(`host PCI device ${address} is ${driver ? `bound to ${driver}` : 'bound to no driver'}, not vfio-pci (as root: ${bindFix(address, driver)})`);
  }

  const groupName = h.linkName(`${dev}/iommu_group`);
  if (groupName === undefined || !/^\d+$/.test(groupName)) {
    fail(`host PCI device ${address} is in no IOMMU group (the IOMMU does not translate for it)`);
  }
  const group = Number(groupName);
  const hostBound = h.list(`/sys/kernel/iommu_groups/${group}/devices`)
    .filter((m) => m !== address)
    .map((m) => ({ m, d: h.driverOf(m) }))
    .filter(({ d }) => d !== undefined && !VIABLE_DRIVERS.has(d));
  if (hostBound.length > 0) {
    fail(`IOMMU group ${group} of ${address} is not viable: ${hostBound.map(({ m, d }) => `${m} (${d})`).join(', ')}`
      + ` ${hostBound.length === 1 ? 'is' : 'are'} bound to host drivers (bind every device of the group to vfio-pci, or unbind it)`);
  }

  // iommufd with the device's own file where the kernel has both, else the group.
  const cdevName = h.list(`${dev}/vfio-dev`).find((n) => /^vfio\d+$/.test(n));
  if (source.kind === 'cdev' || (haveIommufd && cdevName !== undefined)) {
    const node = source.kind === 'cdev' ? source.path : `/dev/vfio/devices/${cdevName}`;
    if (!h.exists(node)) fail(`no ${node} for host PCI device ${address}`);
    for (const f of [node, '/dev/iommu']) {
      if (!h.canOpen(f)) fail(`no permission to open ${f} read-write (run bhyve as root, or give its user the file: chown USER ${f})`);
    }
    return { address, group, api: 'iommufd', node };
  }
  const node = `/dev/vfio/${group}`;
  if (!h.exists(node)) fail(`no ${node} for IOMMU group ${group} of ${address} (is vfio-pci loaded?)`);
  if (!h.exists('/dev/vfio/vfio')) fail('no /dev/vfio/vfio (modprobe vfio-pci)');
  for (const f of [node, '/dev/vfio/vfio']) {
    if (!h.canOpen(f)) fail(`no permission to open ${f} read-write (run bhyve as root, or give its user the file: chown USER ${f})`);
  }
  return { address, group, api: 'group', node };
}
