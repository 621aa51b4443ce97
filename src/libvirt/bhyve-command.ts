// DomainDef -> the bhyveload and bhyve command lines, in the order and
// spelling of libvirt's bhyve driver: virBhyveProcessBuildBhyveCmd() and
// virBhyveProcessBuildLoadCmd() in src/bhyve/bhyve_command.c, with the PCI
// slots bhyveAssignDevicePCISlots() (src/bhyve/bhyve_device.c) gives devices
// that have no <address>.

import { createHash } from 'node:crypto';
import { type Controller, type DomainDef, DomainError, type Disk, type PciAddr } from './domain-def.js';

export interface BhyveCommands {
  /** bhyveload (or the custom <bootloader>) argv; none for UEFI domains. */
  load?: string[];
  bhyve: string[];
}

/** Slot allocation as bhyve_device.c does it: slot 0 is the host bridge,
 * slot 1 is kept for the LPC bridge, the rest in device order. */
class PciSlots {
  private readonly used = new Map<string, string>();
  private last = 0;

  reserve(a: PciAddr, who: string): void {
    const key = `${a.slot}:${a.fn}`;
    const prev = this.used.get(key);
    if (prev !== undefined) throw new DomainError(`PCI address ${key} is used by both ${prev} and ${who}`);
    this.used.set(key, who);
  }

  slotInUse(slot: number): boolean {
    for (const k of this.used.keys()) if (k.startsWith(`${slot}:`)) return true;
    return false;
  }

  /** virDomainPCIAddressReserveNextAddr(): the next free slot after the last one given. */
  next(who: string): PciAddr {
    for (let i = 1; i <= 31; i++) {
      const slot = ((this.last + i - 1) % 31) + 1;
      if (!this.slotInUse(slot)) {
        this.last = slot;
        const a = { slot, fn: 0 };
        this.reserve(a, who);
        return a;
      }
    }
    throw new DomainError('no free PCI slot left');
  }
}

interface Placed { controllers: Map<Controller, PciAddr>; nets: PciAddr[]; disks: Map<Disk, PciAddr>; videos: PciAddr[]; sounds: PciAddr[]; fss: PciAddr[] }

function assignSlots(d: DomainDef): Placed {
  const slots = new PciSlots();
  slots.reserve({ slot: 0, fn: 0 }, 'hostbridge');
  const all: Array<{ addr?: PciAddr; who: string }> = [
    ...d.controllers.map((c) => ({ addr: c.addr, who: `${c.type} controller ${c.index}` })),
    ...d.nets.map((n, i) => ({ addr: n.addr, who: `interface ${i}` })),
    ...d.disks.map((k) => ({ addr: k.addr, who: `disk ${k.target}` })),
    ...d.videos.map((v, i) => ({ addr: v.addr, who: `video ${i}` })),
    ...d.sounds.map((s, i) => ({ addr: s.addr, who: `sound ${i}` })),
    ...d.filesystems.map((f) => ({ addr: f.addr, who: `filesystem ${f.target}` })),
  ];
  for (const x of all) if (x.addr) slots.reserve(x.addr, x.who);

  const placed: Placed = { controllers: new Map(), nets: [], disks: new Map(), videos: [], sounds: [], fss: [] };
  if (!slots.slotInUse(1)) {
    slots.reserve({ slot: 1, fn: 0 }, 'lpc');
    const isa = d.controllers.find((c) => c.type === 'isa' && !c.addr);
    if (isa) placed.controllers.set(isa, { slot: 1, fn: 0 });
  }
  for (const c of d.controllers) {
    if (c.type === 'pci' || placed.controllers.has(c)) continue;
    placed.controllers.set(c, c.addr ?? slots.next(`${c.type} controller ${c.index}`));
  }
  d.nets.forEach((n, i) => placed.nets.push(n.addr ?? slots.next(`interface ${i}`)));
  for (const k of d.disks) if (k.bus === 'virtio') placed.disks.set(k, k.addr ?? slots.next(`disk ${k.target}`));
  d.videos.forEach((v, i) => placed.videos.push(v.addr ?? slots.next(`video ${i}`)));
  d.sounds.forEach((s, i) => placed.sounds.push(s.addr ?? slots.next(`sound ${i}`)));
  d.filesystems.forEach((f) => placed.fss.push(f.addr ?? slots.next(`filesystem ${f.target}`)));
  return placed;
}

const MiB = (d: DomainDef): string => String(Math.ceil(d.memoryKiB / 1024));

/** libvirt generates a random 52:54:00 MAC for an interface without one;
 * this stands in with one derived from the domain and the interface index,
 * so that the same XML always gives the same command line. */
export function defaultMac(d: DomainDef, index: number): string {
  const h = createHash('sha256').update(`${d.uuid ?? d.name}/${index}`).digest();
  return ['52', '54', '00', ...[0, 1, 2].map((i) => h[i].toString(16).padStart(2, '0'))].join(':');
}

const bootIndex = (k: Disk): string => (k.bootIndex !== undefined ? `,bootindex=${k.bootIndex}` : '');

function controllerArgs(d: DomainDef, c: Controller, at: PciAddr, out: string[]): void {
  switch (c.type) {
    case 'pci':
      return;
    case 'isa':
      if (d.controllers.filter((x) => x.type === 'isa').length > 1) throw new DomainError('only single ISA controller is supported');
      out.push('-s', `${at.slot}:0,lpc`);
      return;
    case 'sata': {
      const disks = d.disks.filter((k) => k.bus === 'sata' && k.controller === c.index);
      if (disks.length > 32) throw new DomainError('only 32 disks are supported on one SATA controller');
      let list = '';
      for (const k of disks) {
        if (k.source === undefined) throw new DomainError(k.device === 'cdrom' ? 'cdrom device without source path not supported' : 'disk without source path not supported');
        list += `,${k.device === 'cdrom' ? 'cd' : 'hd'}:${k.source}${bootIndex(k)}`;
      }
      out.push('-s', `${at.slot}:0,ahci${list}`);
      return;
    }
    case 'nvme': {
      const disks = d.disks.filter((k) => k.bus === 'nvme' && k.controller === c.index);
      if (disks.length !== 1) throw new DomainError(`NVMe controller ${c.index} must have exactly one disk (it has ${disks.length})`);
      const k = disks[0];
      if (k.source === undefined) throw new DomainError('disk without source path not supported');
      let opts = '';
      if (k.queues !== undefined) opts += `,maxq=${k.queues}`;
      if (k.queueSize !== undefined) opts += `,qsz=${k.queueSize}`;
      if (c.serial !== undefined) {
        if (c.serial.includes(',')) throw new DomainError("NVMe serial may not contain ',' character");
        opts += `,ser=${c.serial}`;
      }
      out.push('-s', `${at.slot}:0,nvme,${k.source}${opts}${bootIndex(k)}`);
      return;
    }
    case 'usb':
      if (d.controllers.filter((x) => x.type === 'usb').length > 1) throw new DomainError('only single USB controller is supported');
      if (d.tablets !== 1) throw new DomainError('only single input device is supported');
      out.push('-s', `${at.slot}:${at.fn},xhci,tablet`);
      return;
  }
}

function bhyveArgv(d: DomainDef): string[] {
  // bhyve reads a -m without a suffix below 1048576 as MiB and above as bytes;
  // libvirt always writes MiB, which a guest of 1 TiB or more would not get.
  if (d.memoryKiB > 0 && Math.ceil(d.memoryKiB / 1024) >= 1024 * 1024) throw new DomainError('memory of 1 TiB or more: bhyve would read the -m value in MiB as bytes');
  if (d.memoryKiB <= 0) throw new DomainError('memory size must be more than 0');
  const placed = assignSlots(d);
  const out: string[] = ['-c'];
  if (d.topology) {
    const t = d.topology;
    if (t.dies !== 1) throw new DomainError('Only 1 die per socket is supported');
    if (d.vcpus !== t.sockets * t.cores * t.threads) {
      throw new DomainError('Invalid CPU topology: total number of vCPUs must equal the product of sockets, cores, and threads');
    }
    out.push(`cpus=${d.vcpus},sockets=${t.sockets},cores=${t.cores},threads=${t.threads}`);
  } else {
    out.push(String(d.vcpus));
  }
  for (const pin of d.vcpupin) {
    if (pin.vcpu >= d.vcpus) throw new DomainError(`vcpupin for vCPU ${pin.vcpu}, but the domain has ${d.vcpus}`);
    for (const cpu of pin.cpus) out.push('-p', `${pin.vcpu}:${cpu}`);
  }
  out.push('-m', MiB(d));
  if (d.locked) out.push('-S');
  if (d.msrsIgnore) out.push('-w');
  if (d.clock === 'utc') out.push('-u');
  out.push('-H', '-P', '-s', '0:0,hostbridge');
  if (d.bootloader === undefined && d.loader !== undefined) {
    // With QEMU's fw_cfg, which bhyve's EDK2 needs for bootindex.
    out.push('-l', `bootrom,${d.loader}${d.nvram !== undefined ? `,${d.nvram}` : ''},fwcfg=qemu`);
  }
  for (const c of d.controllers) controllerArgs(d, c, placed.controllers.get(c) ?? { slot: 0, fn: 0 }, out);
  d.nets.forEach((n, i) => {
    out.push('-s', `${placed.nets[i].slot}:0,${n.model === 'virtio' ? 'virtio-net' : 'e1000'},${n.ifname},mac=${n.mac ?? defaultMac(d, i)}`);
  });
  for (const k of d.disks) {
    if (k.bus !== 'virtio') continue;
    if (k.device !== 'disk') throw new DomainError('unsupported disk device');
    if (k.source === undefined) throw new DomainError('disk without source path not supported');
    out.push('-s', `${placed.disks.get(k)!.slot}:0,virtio-blk,${k.source}${bootIndex(k)}`);
  }
  if (d.graphics.length > 0 && d.videos.length > 0) {
    if (d.graphics.length !== 1 || d.videos.length !== 1) throw new DomainError('Multiple graphics devices are not supported');
    if (d.bootloader !== undefined || d.loader === undefined) throw new DomainError('Graphics are only supported when booting using UEFI');
    const g = d.graphics[0], v = d.videos[0], at = placed.videos[0];
    let opt = `${at.slot}:${at.fn},fbuf,tcp=${g.listen.includes(':') ? `[${g.listen}]` : g.listen}:${g.port}`;
    if (g.passwd !== undefined) opt += `,password=${g.passwd}`;
    if (v.width !== undefined && v.height !== undefined) opt += `,w=${v.width},h=${v.height}`;
    if (v.vgaconf !== undefined) opt += `,vga=${v.vgaconf}`;
    if (g.wait) opt += ',wait';
    out.push('-s', opt);
  }
  d.sounds.forEach((s, i) => {
    const at = placed.sounds[i];
    out.push('-s', `${at.slot}:${at.fn},hda${s.play !== undefined ? `,play=${s.play}` : ''}${s.rec !== undefined ? `,rec=${s.rec}` : ''}`);
  });
  d.filesystems.forEach((f, i) => {
    const at = placed.fss[i];
    out.push('-s', `${at.slot}:${at.fn},virtio-9p,${f.target}=${f.source}${f.readonly ? ',ro' : ''}`);
  });
  const ports = new Set<number>();
  for (const s of d.serials) {
    if (ports.has(s.port)) throw new DomainError(`serial port ${s.port} is given twice`);
    ports.add(s.port);
    out.push('-l', `com${s.port + 1},${s.kind === 'nmdm' ? s.master : `tcp=${s.host}:${s.service}`}`);
  }
  out.push(...d.extraArgs, d.name);
  return ['bhyve', ...out];
}

/** virBhyveUsableDisk(): disks and cdroms backed by a file. */
const usable = (k: Disk): boolean => k.source !== undefined;

/** virBhyveGetBootDisk(). */
function bootDisk(d: DomainDef): Disk {
  if (d.disks.length < 1) throw new DomainError('Domain should have at least one disk defined');
  if (d.bootDevs.length > 1) throw new DomainError('Only one boot device is supported');
  if (d.bootDevs.length === 1) {
    const dev = d.bootDevs[0];
    if (dev !== 'cdrom' && dev !== 'hd') throw new DomainError(`Cannot boot from device ${dev}`);
    const want = dev === 'cdrom' ? 'cdrom' : 'disk';
    const m = d.disks.find((k) => usable(k) && k.device === want);
    if (!m) throw new DomainError(`Cannot find boot device of requested type ${dev}`);
    return m;
  }
  let match: Disk | undefined;
  let last: Disk | undefined;
  for (const k of d.disks) {
    if (!usable(k)) continue;
    // libvirt keeps overwriting its "first usable disk" index: the last usable disk wins.
    last = k;
    if ((k.bootIndex ?? 0) > 0) {
      if (match) throw new DomainError('Only one boot device is supported');
      match = k;
    }
  }
  const found = match ?? last;
  if (!found) throw new DomainError('Domain should have at least one usable disk');
  return found;
}

function loadArgv(d: DomainDef): string[] | undefined {
  if (d.bootloader === undefined) {
    if (d.loader !== undefined) return undefined;
    if (d.bootloaderArgs !== undefined) return ['bhyveload', ...d.bootloaderArgs.split(' ')];
    return ['bhyveload', '-m', MiB(d), '-d', bootDisk(d).source!, d.name];
  }
  if (d.bootloader.includes('grub-bhyve')) throw new DomainError('grub-bhyve boot loader is not supported (it is not part of bhyve on Linux)');
  if (d.bootloaderArgs === undefined) throw new DomainError('Custom loader requires explicit bootloader_args configuration');
  return [d.bootloader, ...d.bootloaderArgs.split(' ')];
}

export function buildCommands(d: DomainDef): BhyveCommands {
  const load = loadArgv(d);
  return { ...(load ? { load } : {}), bhyve: bhyveArgv(d) };
}

/** One word as a POSIX shell reads it back. */
export function shellQuote(w: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`;
}
