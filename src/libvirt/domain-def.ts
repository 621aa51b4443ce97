// libvirt domain XML -> the part of virDomainDef that libvirt's bhyve driver
// turns into command lines (src/bhyve/bhyve_command.c), with the implicit
// devices libvirt adds while parsing (LPC when firmware, consoles or
// graphics need it; SATA and NVMe controllers for disks; a video device
// for graphics). Elements the driver has no use for on a command line
// (uuid, metadata, on_poweroff...) are read and dropped; anything else is
// left unread and reported by the caller as unsupported.

import { parseXml, type XmlElement } from './xml-element.js';

/** A PCI address given in the XML (<address type='pci'>), or none. */
export interface PciAddr { slot: number; fn: number }

export interface Controller {
  type: 'pci' | 'sata' | 'usb' | 'isa' | 'nvme';
  index: number;
  model?: string;
  addr?: PciAddr;
  /** <serial> of an NVMe controller (ser=). */
  serial?: string;
}

export interface Disk {
  device: 'disk' | 'cdrom';
  bus: 'sata' | 'virtio' | 'nvme';
  source?: string;
  /** Drive address controller index (SATA and NVMe). */
  controller: number;
  addr?: PciAddr;
  bootIndex?: number;
  queues?: number;
  queueSize?: number;
  target: string;
}

export interface Net { model: 'virtio' | 'e1000'; bridge: string; ifname?: string; mac?: string; addr?: PciAddr }
export type Serial = { port: number; kind: 'nmdm'; master: string } | { port: number; kind: 'tcp'; host: string; service: string };
export interface Graphics { port: number; autoport: boolean; listen: string; passwd?: string; wait: boolean }
export interface Video { addr?: PciAddr; width?: number; height?: number; vgaconf?: string }
export interface Sound { addr?: PciAddr; play?: string; rec?: string }
export interface Filesystem { addr?: PciAddr; source: string; target: string; readonly: boolean }

export interface DomainDef {
  name: string;
  uuid?: string;
  memoryKiB: number;
  vcpus: number;
  topology?: { sockets: number; dies: number; cores: number; threads: number };
  vcpupin: Array<{ vcpu: number; cpus: number[] }>;
  locked: boolean;
  msrsIgnore: boolean;
  clock: 'utc' | 'localtime';
  loader?: string;
  /** The NVRAM (varfile) path, if the domain has one. */
  nvram?: string;
  bootloader?: string;
  bootloaderArgs?: string;
  bootDevs: string[];
  controllers: Controller[];
  disks: Disk[];
  nets: Net[];
  serials: Serial[];
  tablets: number;
  graphics: Graphics[];
  videos: Video[];
  sounds: Sound[];
  filesystems: Filesystem[];
  /** <bhyve:commandline> arguments, appended before the VM name. */
  extraArgs: string[];
}

/** Paths libvirt takes from bhyve.conf and its install prefix. */
export interface HostPaths {
  /** Where firmware='efi' finds BHYVE_UEFI.fd. */
  firmwareDir: string;
  /** Where a domain's NVRAM (NAME_VARS.fd) is kept. */
  nvramDir: string;
  /** bhyve.conf vnc_listen. */
  vncListen: string;
}

export const DEFAULT_HOST_PATHS: HostPaths = {
  firmwareDir: '/usr/local/share/uefi-firmware',
  nvramDir: '/var/lib/libvirt/bhyve/nvram',
  vncListen: '127.0.0.1',
};

const BHYVE_NS = 'http://libvirt.org/schemas/domain/bhyve/1.0';

/** A converter error: one line, libvirt's wording where libvirt has one. */
export class DomainError extends Error {}

function int(s: string | undefined, what: string): number | undefined {
  if (s === undefined) return undefined;
  const t = s.trim();
  const n = /^0x[0-9a-f]+$/i.test(t) ? parseInt(t, 16) : /^\d+$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(n)) throw new DomainError(`invalid ${what} '${s}'`);
  return n;
}

const UNIT_KIB: Record<string, number> = {
  b: 1 / 1024, bytes: 1 / 1024, kb: 1000 / 1024, k: 1, kib: 1, mb: 1e6 / 1024, m: 1024, mib: 1024,
  gb: 1e9 / 1024, g: 1024 ** 2, gib: 1024 ** 2, tb: 1e12 / 1024, t: 1024 ** 3, tib: 1024 ** 3,
};

/** <memory unit='...'>N</memory> in KiB, rounded up as virScaleInteger + VIR_DIV_UP do. */
function memoryKiB(el: XmlElement): number {
  const n = int(el.text, 'memory size');
  const unit = (el.attr('unit') ?? 'KiB').toLowerCase();
  const scale = UNIT_KIB[unit];
  if (scale === undefined) throw new DomainError(`unknown memory unit '${el.attr('unit')}'`);
  return Math.ceil((n ?? 0) * scale);
}

/** Host CPU numbers a cpuset may name (libvirt's VIR_DOMAIN_CPUMASK_LEN is 1024). */
const MAX_HOST_CPUS = 1024;

/** virBitmapParse(): "0-3,^2,5". */
export function parseCpuset(s: string): number[] {
  const set = new Set<number>();
  for (const part of s.split(',').map((p) => p.trim())) {
    const neg = part.startsWith('^');
    const m = /^(\d+)(?:-(\d+))?$/.exec(neg ? part.slice(1) : part);
    if (!m) throw new DomainError(`invalid cpuset '${s}'`);
    const lo = Number(m[1]), hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi >= MAX_HOST_CPUS) throw new DomainError(`invalid cpuset '${s}'`);
    for (let c = lo; c <= hi; c++) { if (neg) set.delete(c); else set.add(c); }
  }
  return [...set].sort((a, b) => a - b);
}

function pciAddr(dev: XmlElement): PciAddr | undefined {
  const a = dev.child('address');
  if (!a) return undefined;
  if (a.attr('type') !== 'pci') throw new DomainError(`${dev.path}: address type '${a.attr('type')}' is not a PCI address`);
  if ((int(a.attr('domain'), 'PCI domain') ?? 0) !== 0 || (int(a.attr('bus'), 'PCI bus') ?? 0) !== 0) {
    throw new DomainError('only PCI domain 0 and bus 0 are supported');
  }
  const slot = int(a.attr('slot'), 'PCI slot') ?? 0;
  const fn = int(a.attr('function'), 'PCI function') ?? 0;
  if (slot > 31 || fn > 7) throw new DomainError(`invalid PCI address ${slot}:${fn}`);
  if (slot === 0) return undefined; // virDeviceInfoPCIAddressIsWanted: 0:0 means "assign one"
  return { slot, fn };
}

function yes(v: string | undefined): boolean {
  return v === 'yes' || v === 'on';
}

/** virDomainControllerInsertPreAlloced(): after the controllers of the same type, by index. */
function insertController(list: Controller[], c: Controller): void {
  let at = -1;
  for (let i = list.length - 1; i >= 0; i--) {
    if (list[i].type !== c.type) continue;
    if (list[i].index > c.index) at = i;
    else if (at === -1) { at = i + 1; break; }
  }
  if (at === -1) list.push(c); else list.splice(at, 0, c);
}

function parseOs(os: XmlElement | undefined, d: DomainDef, paths: HostPaths): void {
  if (!os) return;
  const type = os.child('type');
  if (type && type.text !== 'hvm') throw new DomainError(`unsupported OS type '${type.text}' (bhyve runs hvm guests)`);
  const loader = os.child('loader');
  const nvram = os.child('nvram');
  const firmware = os.attr('firmware');
  if (firmware !== undefined && firmware !== 'efi') throw new DomainError(`unsupported firmware '${firmware}'`);
  if (loader && loader.text !== '') d.loader = loader.text;
  else if (firmware === 'efi' || loader) d.loader = `${paths.firmwareDir}/BHYVE_UEFI.fd`;
  if (loader) loader.ignore('firmware');
  if (d.loader !== undefined && (nvram || firmware === 'efi')) {
    // libvirt copies the template to this path before the first start.
    d.nvram = nvram && nvram.text !== '' ? nvram.text : `${paths.nvramDir}/${d.name}_VARS.fd`;
  } else if (nvram) {
    throw new DomainError('<nvram> needs a UEFI <loader>');
  }
  for (const b of os.all('boot')) {
    const dev = b.attr('dev') ?? '';
    d.bootDevs.push(dev);
  }
  os.ignore('bootmenu', 'smbios', 'bios');
}

function parseDisk(el: XmlElement, d: DomainDef): void {
  const type = el.attr('type') ?? 'file';
  const device = el.attr('device') ?? 'disk';
  if (device !== 'disk' && device !== 'cdrom') throw new DomainError('unsupported disk device');
  if (type !== 'file') throw new DomainError('unsupported disk type');
  const target = el.child('target');
  const dev = target?.attr('dev') ?? '';
  let bus = target?.attr('bus');
  if (bus === undefined) {
    // virDomainDiskDefAssignAddress: the bus follows the device name.
    bus = dev.startsWith('vd') ? 'virtio' : dev.startsWith('nvme') ? 'nvme' : dev.startsWith('sd') ? 'scsi' : 'ide';
  }
  if (bus !== 'sata' && bus !== 'virtio' && bus !== 'nvme') throw new DomainError(`unsupported disk bus '${bus}'`);
  const driver = el.child('driver');
  const source = el.child('source')?.attr('file');
  const addrEl = el.children.find((c) => c.name === 'address');
  let controller = -1;
  let addr: PciAddr | undefined;
  if (addrEl?.attr('type') === 'drive') {
    el.child('address');
    controller = int(addrEl.attr('controller'), 'drive controller') ?? 0;
  } else if (addrEl) {
    if (bus !== 'virtio') throw new DomainError(`${bus} disks take a drive address, not a PCI address`);
    addr = pciAddr(el);
  }
  const disk: Disk = { device, bus, controller, target: dev, ...(source !== undefined ? { source } : {}), ...(addr ? { addr } : {}) };
  const boot = el.child('boot');
  if (boot) disk.bootIndex = int(boot.attr('order'), 'boot order');
  if (driver) {
    const queues = int(driver.attr('queues'), 'queues'), qsz = int(driver.attr('queue_size'), 'queue_size');
    if ((queues !== undefined || qsz !== undefined) && bus !== 'nvme') {
      throw new DomainError(`disk queues and queue_size are only supported on NVMe disks`);
    }
    if (queues !== undefined) disk.queues = queues;
    if (qsz !== undefined) disk.queueSize = qsz;
  }
  if (device === 'cdrom' && bus !== 'sata') throw new DomainError('unsupported disk device');
  // A CD is read-only anyway; libvirt does not mark disks read-only for bhyve.
  if (device === 'cdrom') el.ignore('readonly');
  el.ignore('alias');
  d.disks.push(disk);
}

function parseInterface(el: XmlElement, d: DomainDef, index: number): void {
  const type = el.attr('type');
  if (type !== 'bridge') throw new DomainError(`Network type ${type ?? '(none)'} is not supported (only type='bridge')`);
  const model = el.child('model')?.attr('type');
  if (model !== 'virtio' && model !== 'e1000') throw new DomainError(`NIC model ${model === undefined ? '' : `'${model}' `}is not supported`);
  const bridge = el.child('source')?.attr('bridge');
  if (!bridge) throw new DomainError('bridge interface without <source bridge=...>');
  const mac = el.child('mac')?.attr('address');
  if (mac !== undefined && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) throw new DomainError(`invalid MAC address '${mac}'`);
  const ifname = el.child('target')?.attr('dev');
  const addr = pciAddr(el);
  el.ignore('alias');
  d.nets.push({ model, bridge, ...(mac ? { mac: mac.toLowerCase() } : {}), ifname: ifname ?? `tap${index}`, ...(addr ? { addr } : {}) });
}

function parseSerial(el: XmlElement, d: DomainDef, nextPort: () => number): void {
  const type = el.attr('type');
  const port = int(el.child('target')?.attr('port'), 'serial port') ?? nextPort();
  if (port > 3) throw new DomainError('only four serial ports are supported');
  const src = el.child('source');
  if (type === 'nmdm') {
    let master = src?.attr('master');
    if (master === undefined) {
      if (d.uuid === undefined) throw new DomainError('an nmdm serial without <source master=...> needs the domain <uuid>');
      master = `/dev/nmdm${d.uuid}A`;
    }
    d.serials.push({ port, kind: 'nmdm', master });
  } else if (type === 'tcp') {
    const mode = src?.attr('mode') ?? 'connect';
    if (mode !== 'bind') throw new DomainError("only tcp serial ports in mode 'bind' are supported");
    const proto = el.child('protocol')?.attr('type') ?? 'raw';
    if (proto !== 'raw') throw new DomainError(`unsupported serial protocol '${proto}'`);
    d.serials.push({ port, kind: 'tcp', host: src?.attr('host') ?? '127.0.0.1', service: src?.attr('service') ?? '' });
  } else {
    throw new DomainError('only nmdm and tcp console types are supported');
  }
  el.ignore('alias', 'log');
}

function parseGraphics(el: XmlElement, d: DomainDef, paths: HostPaths): void {
  if (el.attr('type') !== 'vnc') throw new DomainError('Only VNC supported');
  const listens = el.all('listen');
  let listen = el.attr('listen') ?? paths.vncListen;
  if (listens.length > 0) {
    const l = listens[0];
    const lt = l.attr('type') ?? 'address';
    if (lt !== 'address') throw new DomainError('Unsupported listen type');
    listen = l.attr('address') ?? listen;
  }
  const portAttr = int(el.attr('port') === '-1' ? undefined : el.attr('port'), 'VNC port');
  const autoport = yes(el.attr('autoport')) || portAttr === undefined;
  // libvirt's port allocator hands out the first free port from 5900.
  const port = autoport ? 5900 : portAttr!;
  if (!autoport && (port < 5900 || port > 65535)) throw new DomainError('vnc port must be in range [5900,65535]');
  const passwd = el.attr('passwd');
  if (passwd !== undefined && passwd.includes(',')) throw new DomainError("Password may not contain ',' character");
  d.graphics.push({ port, autoport, listen, wait: yes(el.attr('wait')), ...(passwd !== undefined ? { passwd } : {}) });
}

function parseVideo(el: XmlElement, d: DomainDef): void {
  const model = el.child('model');
  const mt = model?.attr('type') ?? 'gop';
  if (mt !== 'gop') throw new DomainError(`unsupported video model '${mt}' (bhyve has 'gop')`);
  const res = model?.child('resolution');
  const vgaconf = el.child('driver')?.attr('vgaconf');
  if (vgaconf !== undefined && !['io', 'on', 'off'].includes(vgaconf)) throw new DomainError(`invalid vgaconf '${vgaconf}'`);
  const addr = pciAddr(el);
  d.videos.push({
    ...(addr ? { addr } : {}),
    ...(res ? { width: int(res.attr('x'), 'resolution x'), height: int(res.attr('y'), 'resolution y') } : {}),
    ...(vgaconf ? { vgaconf } : {}),
  });
}

function parseFilesystem(el: XmlElement, d: DomainDef): void {
  const type = el.attr('type') ?? 'mount';
  if (type !== 'mount') throw new DomainError(`unsupported filesystem type '${type}'`);
  const driver = el.child('driver')?.attr('type');
  if (driver !== undefined && driver !== 'default') throw new DomainError(`unsupported filesystem driver '${driver}'`);
  const mode = el.attr('accessmode') ?? 'passthrough';
  if (mode !== 'passthrough') throw new DomainError(`unsupported filesystem accessmode '${mode}'`);
  const source = el.child('source')?.attr('dir');
  const target = el.child('target')?.attr('dir');
  if (!source || !target) throw new DomainError('filesystem needs <source dir=...> and <target dir=...>');
  const addr = pciAddr(el);
  d.filesystems.push({ source, target, readonly: el.child('readonly') !== undefined, ...(addr ? { addr } : {}) });
}

function parseDevices(devs: XmlElement | undefined, d: DomainDef, paths: HostPaths): void {
  if (!devs) return;
  devs.ignore('emulator', 'memballoon');
  for (const c of devs.all('controller')) {
    const type = c.attr('type');
    if (type !== 'pci' && type !== 'sata' && type !== 'usb' && type !== 'isa' && type !== 'nvme') {
      throw new DomainError(`unsupported controller type '${type}'`);
    }
    const model = c.attr('model');
    if (type === 'pci' && model !== 'pci-root') throw new DomainError('unsupported PCI controller model: only PCI root supported');
    if (type === 'usb' && model !== 'nec-xhci') throw new DomainError("only USB controllers of model 'nec-xhci' are supported");
    const addr = pciAddr(c);
    const serial = c.child('serial')?.text;
    c.ignore('alias');
    insertController(d.controllers, {
      type, index: int(c.attr('index'), 'controller index') ?? 0,
      ...(model ? { model } : {}), ...(addr ? { addr } : {}), ...(serial !== undefined ? { serial } : {}),
    });
  }
  for (const el of devs.all('disk')) parseDisk(el, d);
  devs.all('interface').forEach((el, i) => parseInterface(el, d, i));
  const used = new Set<number>();
  const nextPort = (): number => { let p = 0; while (used.has(p)) p++; used.add(p); return p; };
  const serials = devs.all('serial');
  const consoles = devs.all('console');
  // virDomainDefAddConsoleCompat: a console is serial 0 when there is no <serial>.
  // Other consoles are the serial port seen again (or a virtio console: unread).
  for (const el of serials.length > 0 ? consoles : consoles.slice(1)) {
    if ((el.children.find((c) => c.name === 'target')?.attr('type') ?? 'serial') === 'serial') el.consumeAll();
    else el.used = false;
  }
  for (const el of serials.length > 0 ? serials : consoles.slice(0, 1)) {
    const explicit = int(el.children.find((c) => c.name === 'target')?.attr('port'), 'serial port');
    if (explicit !== undefined) used.add(explicit);
    parseSerial(el, d, nextPort);
  }
  for (const el of devs.all('input')) {
    const type = el.attr('type'), bus = el.attr('bus');
    if (bus === 'ps2' && (type === 'mouse' || type === 'keyboard')) continue; // bhyve's atkbdc, always there
    if (bus !== 'usb') throw new DomainError('only USB input devices are supported');
    if (type !== 'tablet') throw new DomainError('only tablet input devices are supported');
    el.ignore('alias', 'address');
    d.tablets++;
  }
  for (const el of devs.all('graphics')) parseGraphics(el, d, paths);
  for (const el of devs.all('video')) parseVideo(el, d);
  // virDomainDefAddImplicitVideo: graphics without a video device get one.
  if (d.graphics.length > 0 && d.videos.length === 0) d.videos.push({});
  const audios = new Map(devs.all('audio').map((a) => [a.attr('id'), a]));
  for (const el of devs.all('sound')) {
    if (el.attr('model') !== 'ich7') throw new DomainError('Sound device model is not supported');
    const addr = pciAddr(el);
    const id = el.child('audio')?.attr('id');
    const audio = id !== undefined ? audios.get(id) : audios.size > 0 ? [...audios.values()][0] : undefined;
    const s: Sound = { ...(addr ? { addr } : {}) };
    if (audio) {
      if (audio.attr('type') !== 'oss') throw new DomainError(`unsupported audio backend '${audio.attr('type')}'`);
      // bhyve_command.c: the input device becomes play=, the output rec=.
      const inDev = audio.child('input')?.attr('dev');
      const outDev = audio.child('output')?.attr('dev');
      if (inDev !== undefined) s.play = inDev;
      if (outDev !== undefined) s.rec = outDev;
    }
    d.sounds.push(s);
  }
  for (const el of devs.all('filesystem')) parseFilesystem(el, d);
}

/** Adds the controllers libvirt adds on its own, in the order it adds them. */
function addImplicitControllers(d: DomainDef): void {
  const needsIsa = (d.bootloader === undefined && d.loader !== undefined) || d.serials.length > 0
    || (d.graphics.length > 0 && d.videos.length > 0);
  if (needsIsa && !d.controllers.some((c) => c.type === 'isa')) insertController(d.controllers, { type: 'isa', index: 0 });
  // NVMe disks without a drive address each get the next free controller.
  const nvmeTaken = new Set(d.disks.filter((k) => k.bus === 'nvme' && k.controller >= 0).map((k) => k.controller));
  for (const k of d.disks) {
    if (k.bus === 'sata' && k.controller < 0) k.controller = 0;
    if (k.bus === 'nvme' && k.controller < 0) {
      let i = 0;
      while (nvmeTaken.has(i)) i++;
      nvmeTaken.add(i);
      k.controller = i;
    }
  }
  for (const bus of ['sata', 'nvme'] as const) {
    for (const k of d.disks) {
      if (k.bus === bus && !d.controllers.some((c) => c.type === bus && c.index === k.controller)) {
        insertController(d.controllers, { type: bus, index: k.controller });
      }
    }
  }
}

/** Parses a domain; `unsupported` gets one entry per element left unread. */
export function parseDomainXml(source: string, what: string, paths: HostPaths = DEFAULT_HOST_PATHS): { def: DomainDef; unsupported: string[] } {
  const dom = parseXml(source, what);
  if (dom.name !== 'domain') throw new DomainError(`root element is <${dom.name}>, not <domain>`);
  const type = dom.attr('type');
  if (type !== undefined && type !== 'bhyve') throw new DomainError(`domain type '${type}' is not 'bhyve'`);
  const name = dom.child('name')?.text;
  if (!name) throw new DomainError('missing domain <name>');
  const memEl = dom.child('memory');
  if (!memEl) throw new DomainError('missing <memory>');
  const vcpuEl = dom.child('vcpu');
  const d: DomainDef = {
    name, memoryKiB: memoryKiB(memEl), vcpus: int(vcpuEl?.text, 'vcpu count') ?? 1, vcpupin: [], locked: false,
    msrsIgnore: false, clock: 'utc', bootDevs: [], controllers: [], disks: [], nets: [], serials: [], tablets: 0,
    graphics: [], videos: [], sounds: [], filesystems: [], extraArgs: [],
  };
  const uuid = dom.child('uuid')?.text;
  if (uuid) d.uuid = uuid;
  dom.ignore('title', 'description', 'metadata', 'currentMemory', 'on_poweroff', 'on_reboot', 'on_crash', 'genid');
  const bootloader = dom.child('bootloader')?.text;
  if (bootloader) d.bootloader = bootloader;
  const blargs = dom.child('bootloader_args')?.text;
  if (blargs) d.bootloaderArgs = blargs;
  parseOs(dom.child('os'), d, paths);

  const cpu = dom.child('cpu');
  const topo = cpu?.child('topology');
  if (topo) {
    d.topology = {
      sockets: int(topo.attr('sockets'), 'sockets') ?? 1, dies: int(topo.attr('dies'), 'dies') ?? 1,
      cores: int(topo.attr('cores'), 'cores') ?? 1, threads: int(topo.attr('threads'), 'threads') ?? 1,
    };
  }
  for (const pin of dom.child('cputune')?.all('vcpupin') ?? []) {
    const vcpu = int(pin.attr('vcpu'), 'vcpupin vcpu') ?? 0;
    if (d.vcpupin.some((p) => p.vcpu === vcpu)) throw new DomainError('duplicate vcpupin for same vcpu');
    d.vcpupin.push({ vcpu, cpus: parseCpuset(pin.attr('cpuset') ?? '') });
  }
  const mb = dom.child('memoryBacking');
  if (mb?.child('locked')) d.locked = true;
  const features = dom.child('features');
  if (features) {
    // bhyve always builds ACPI tables and an I/O APIC: libvirt no longer passes -A or -I.
    features.ignore('acpi', 'apic', 'pae');
    const msrs = features.child('msrs');
    if (msrs) {
      if (msrs.attr('unknown') !== 'ignore') throw new DomainError(`unsupported msrs unknown='${msrs.attr('unknown')}'`);
      d.msrsIgnore = true;
    }
  }
  const clock = dom.child('clock');
  if (clock) {
    const off = clock.attr('offset') ?? 'utc';
    if (off !== 'utc' && off !== 'localtime') throw new DomainError(`unsupported clock offset '${off}'`);
    d.clock = off;
  }
  parseDevices(dom.child('devices'), d, paths);
  for (const c of dom.children) {
    if (!c.name.endsWith(':commandline')) continue;
    const prefix = c.name.slice(0, -':commandline'.length);
    if (dom.attr(`xmlns:${prefix}`) !== BHYVE_NS) continue;
    c.used = true;
    for (const a of c.all(`${prefix}:arg`)) d.extraArgs.push(a.attr('value') ?? '');
  }
  addImplicitControllers(d);
  return { def: d, unsupported: dom.unread() };
}
