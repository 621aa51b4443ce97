// A bhyve command line -> libvirt domain XML, for the command lines
// libvirt's bhyve driver writes (the inverse of bhyve-command.ts, which
// libvirt offers as `virsh domxml-from-native bhyve-argv`). Devices get the
// PCI addresses they had on the command line, so converting the XML back
// gives the same command line. Options and devices domain XML cannot
// express are one error line each.

import { XMLBuilder } from 'fast-xml-parser';
import { BHYVE_OPTSTRING } from '../config/bhyve-options.js';
import { getopt } from '../config/getopt.js';
import { parseMemorySize } from '../config/size.js';
import { DomainError } from './domain-def.js';

type Node = Record<string, unknown>;

/** `slot[:func]` of `-s` (bus 0 only). */
function pciAddress(slotSpec: string): Node {
  const parts = slotSpec.split(':').map(Number);
  if (parts.length > 2 || parts.some((n) => !Number.isInteger(n))) throw new DomainError(`cannot express PCI slot '${slotSpec}' in domain XML (bus 0 only)`);
  const hex = (n: number, w: number): string => `0x${n.toString(16).padStart(w, '0')}`;
  return { '@_type': 'pci', '@_domain': '0x0000', '@_bus': '0x00', '@_slot': hex(parts[0], 2), '@_function': hex(parts[1] ?? 0, 1) };
}

/** `key=value` options of a device configuration; bare words go to `words`. */
function options(list: string[]): { kv: Map<string, string>; words: string[] } {
  const kv = new Map<string, string>(), words: string[] = [];
  for (const o of list) {
    const eq = o.indexOf('=');
    if (eq < 0) words.push(o); else kv.set(o.slice(0, eq), o.slice(eq + 1));
  }
  return { kv, words };
}

function diskNode(file: string, dev: string, bus: string, device: string, boot: string | undefined, extra: Node = {}): Node {
  return {
    '@_type': 'file', '@_device': device,
    driver: { '@_name': 'file', '@_type': 'raw', ...extra },
    source: { '@_file': file }, target: { '@_dev': dev, '@_bus': bus },
    ...(boot !== undefined ? { boot: { '@_order': boot } } : {}),
  };
}

const letters = (i: number): string => (i < 26 ? String.fromCharCode(97 + i) : letters(Math.floor(i / 26) - 1) + letters(i % 26));

export function domainXmlFromArgv(words: readonly string[], bridge = 'bridge0'): string {
  const argv = words[0] === 'bhyve' || words[0]?.endsWith('/bhyve') ? words.slice(1) : words;
  const { options: opts, operands } = getopt(argv, BHYVE_OPTSTRING);
  if (operands.length !== 1) throw new DomainError('the bhyve command line must end with one VM name');
  let memKiB = 256 * 1024, vcpus = 1;
  let topology: Node | undefined;
  const pins = new Map<number, number[]>();
  const features: Node = {};
  let locked = false, utc = false;
  const os: Node = { type: 'hvm' };
  const controllers: Node[] = [], disks: Node[] = [], nets: Node[] = [], serials: Node[] = [];
  const inputs: Node[] = [], graphics: Node[] = [], videos: Node[] = [], sounds: Node[] = [], audios: Node[] = [], fss: Node[] = [];
  let sataIndex = 0, nvmeIndex = 0, vd = 0, sd = 0;

  for (const { opt, arg = '' } of opts) {
    switch (opt) {
      case 'c': {
        const m = /^(?:cpus=)?(\d+)?((?:,(?:sockets|cores|threads)=\d+)*)$/.exec(arg);
        if (!m) throw new DomainError(`cannot express -c ${arg} in domain XML`);
        const t = Object.fromEntries([...arg.matchAll(/(sockets|cores|threads)=(\d+)/g)].map((x) => [x[1], x[2]]));
        vcpus = Number(m[1] ?? Number(t.sockets ?? 1) * Number(t.cores ?? 1) * Number(t.threads ?? 1));
        if (m[2]) topology = { '@_sockets': t.sockets ?? '1', '@_dies': '1', '@_cores': t.cores ?? '1', '@_threads': t.threads ?? '1' };
        break;
      }
      case 'm': memKiB = Math.ceil(parseMemorySize(arg) / 1024); break;
      case 'p': {
        const m = /^(\d+):(\d+)$/.exec(arg);
        if (!m) throw new DomainError(`invalid -p ${arg}`);
        pins.set(Number(m[1]), [...(pins.get(Number(m[1])) ?? []), Number(m[2])]);
        break;
      }
      case 'S': locked = true; break;
      case 'w': features.msrs = { '@_unknown': 'ignore' }; break;
      case 'u': utc = true; break;
      case 'A': features.acpi = ''; break;
      case 'I': features.apic = ''; break;
      case 'H': case 'P': break; // libvirt always passes both
      case 'l': {
        const [dev, ...rest] = arg.split(',');
        if (dev === 'bootrom') {
          // bootrom,romfile[,varfile][,fwcfg=...]: the ROM is the first field whatever it holds.
          const [romfile, ...more] = rest;
          const varfile = more[0] !== undefined && !more[0].includes('=') ? more.shift() : undefined;
          if (romfile === undefined || more.some((m) => m !== 'fwcfg=qemu')) throw new DomainError(`cannot express -l ${arg} in domain XML`);
          os.loader = { '@_readonly': 'yes', '@_type': 'pflash', '#text': romfile };
          if (varfile !== undefined) os.nvram = varfile;
        } else if (/^com[1-4]$/.test(dev)) {
          const path = rest.join(',');
          const port = String(Number(dev.slice(3)) - 1);
          const tcp = /^tcp=(.*):(\d+)$/.exec(path);
          if (tcp) {
            serials.push({ '@_type': 'tcp', source: { '@_mode': 'bind', '@_host': tcp[1].replace(/^\[(.*)\]$/, '$1'), '@_service': tcp[2] }, protocol: { '@_type': 'raw' }, target: { '@_port': port } });
          } else if (/^\/dev\/nmdm.*A$/.test(path)) {
            serials.push({ '@_type': 'nmdm', source: { '@_master': path, '@_slave': `${path.slice(0, -1)}B` }, target: { '@_port': port } });
          } else {
            throw new DomainError(`cannot express -l ${arg} in domain XML (libvirt's bhyve serial ports are nmdm or tcp)`);
          }
        } else {
          throw new DomainError(`cannot express -l ${arg} in domain XML`);
        }
        break;
      }
      case 's': {
        const [slot, emul, ...conf] = arg.split(',');
        if (emul === 'hostbridge' || emul === 'amd_hostbridge') break;
        const address = pciAddress(slot);
        const { kv, words: w } = options(conf);
        switch (emul) {
          case 'lpc': controllers.push({ '@_type': 'isa', '@_index': '0', address }); break;
          case 'ahci': case 'ahci-hd': case 'ahci-cd': {
            const idx = String(sataIndex++);
            controllers.push({ '@_type': 'sata', '@_index': idx, address });
            // ahci,hd:PATH[,bootindex=N],cd:PATH... or the old ahci-hd,PATH
            const items = emul === 'ahci' ? conf : [`${emul.slice(5)}:${conf.join(',')}`];
            let unit = 0;
            for (const item of items) {
              const b = /^bootindex=(\d+)$/.exec(item);
              if (b) { (disks[disks.length - 1] as Node).boot = { '@_order': b[1] }; continue; }
              const m = /^(hd|cd):(.*)$/.exec(item);
              if (!m) throw new DomainError(`cannot express ahci option '${item}' in domain XML`);
              const d = diskNode(m[2], `sd${letters(sd++)}`, 'sata', m[1] === 'cd' ? 'cdrom' : 'disk', undefined);
              d.address = { '@_type': 'drive', '@_controller': idx, '@_bus': '0', '@_target': '0', '@_unit': String(unit++) };
              disks.push(d);
            }
            break;
          }
          case 'virtio-blk': {
            if (w.length !== 1 || [...kv.keys()].some((k) => k !== 'bootindex')) throw new DomainError(`cannot express -s ${arg} in domain XML`);
            disks.push({ ...diskNode(w[0], `vd${letters(vd++)}`, 'virtio', 'disk', kv.get('bootindex')), address });
            break;
          }
          case 'nvme': {
            if (w.length !== 1 || [...kv.keys()].some((k) => !['maxq', 'qsz', 'ser', 'bootindex'].includes(k))) throw new DomainError(`cannot express -s ${arg} in domain XML`);
            const idx = String(nvmeIndex++);
            controllers.push({ '@_type': 'nvme', '@_index': idx, ...(kv.has('ser') ? { serial: kv.get('ser') } : {}), address });
            const q: Node = {};
            if (kv.has('maxq')) q['@_queues'] = kv.get('maxq');
            if (kv.has('qsz')) q['@_queue_size'] = kv.get('qsz');
            disks.push({ ...diskNode(w[0], `nvme${idx}n1`, 'nvme', 'disk', kv.get('bootindex'), q), address: { '@_type': 'drive', '@_controller': idx, '@_bus': '0', '@_target': '0', '@_unit': '0' } });
            break;
          }
          case 'virtio-net': case 'e1000': {
            if (w.length !== 1 || [...kv.keys()].some((k) => k !== 'mac')) throw new DomainError(`cannot express -s ${arg} in domain XML`);
            nets.push({
              '@_type': 'bridge', ...(kv.has('mac') ? { mac: { '@_address': kv.get('mac') } } : {}),
              source: { '@_bridge': bridge }, target: { '@_dev': w[0] }, model: { '@_type': emul === 'e1000' ? 'e1000' : 'virtio' }, address,
            });
            break;
          }
          case 'fbuf': {
            const tcp = /^(.*):(\d+)$/.exec(kv.get('tcp') ?? '');
            if (!tcp || [...kv.keys()].some((k) => !['tcp', 'w', 'h', 'password', 'vga'].includes(k)) || w.some((x) => x !== 'wait')) {
              throw new DomainError(`cannot express -s ${arg} in domain XML`);
            }
            graphics.push({
              '@_type': 'vnc', '@_port': tcp[2], '@_autoport': 'no', ...(kv.has('password') ? { '@_passwd': kv.get('password') } : {}),
              ...(w.includes('wait') ? { '@_wait': 'yes' } : {}), listen: { '@_type': 'address', '@_address': tcp[1].replace(/^\[(.*)\]$/, '$1') },
            });
            videos.push({
              ...(kv.has('vga') ? { driver: { '@_vgaconf': kv.get('vga') } } : {}),
              model: { '@_type': 'gop', '@_heads': '1', '@_primary': 'yes', ...(kv.has('w') ? { resolution: { '@_x': kv.get('w'), '@_y': kv.get('h') } } : {}) },
              address,
            });
            break;
          }
          case 'xhci': {
            if (conf.join(',') !== 'tablet') throw new DomainError(`cannot express -s ${arg} in domain XML (libvirt's xhci has one tablet)`);
            controllers.push({ '@_type': 'usb', '@_index': '0', '@_model': 'nec-xhci', address });
            inputs.push({ '@_type': 'tablet', '@_bus': 'usb' });
            break;
          }
          case 'virtio-9p': {
            const m = /^([^=]+)=(.*)$/.exec(conf[0] ?? '');
            if (!m || conf.slice(1).some((x) => x !== 'ro')) throw new DomainError(`cannot express -s ${arg} in domain XML`);
            fss.push({ '@_type': 'mount', '@_accessmode': 'passthrough', source: { '@_dir': m[2] }, target: { '@_dir': m[1] }, ...(conf.includes('ro') ? { readonly: '' } : {}), address });
            break;
          }
          case 'hda': {
            if ([...kv.keys()].some((k) => k !== 'play' && k !== 'rec') || w.length > 0) throw new DomainError(`cannot express -s ${arg} in domain XML`);
            const id = String(sounds.length + 1);
            sounds.push({ '@_model': 'ich7', audio: { '@_id': id }, address });
            // libvirt writes the <input> device as play= and the <output> device as rec=.
            audios.push({ '@_type': 'oss', '@_id': id, ...(kv.has('play') ? { input: { '@_dev': kv.get('play') } } : {}), ...(kv.has('rec') ? { output: { '@_dev': kv.get('rec') } } : {}) });
            break;
          }
          default:
            throw new DomainError(`cannot express -s ${arg} in domain XML`);
        }
        break;
      }
      default:
        throw new DomainError(`cannot express bhyve option -${opt}${arg ? ` ${arg}` : ''} in domain XML`);
    }
  }
  const cputune = pins.size > 0 ? { vcpupin: [...pins].map(([v, cpus]) => ({ '@_vcpu': String(v), '@_cpuset': cpus.join(',') })) } : undefined;
  const domain: Node = {
    '@_type': 'bhyve',
    name: operands[0],
    memory: { '@_unit': 'KiB', '#text': String(memKiB) },
    ...(locked ? { memoryBacking: { locked: '' } } : {}),
    vcpu: String(vcpus),
    ...(cputune ? { cputune } : {}),
    os,
    ...(Object.keys(features).length > 0 ? { features } : {}),
    ...(topology ? { cpu: { topology } } : {}),
    clock: { '@_offset': utc ? 'utc' : 'localtime' },
    devices: {
      controller: controllers, disk: disks, interface: nets, serial: serials, input: inputs,
      graphics, video: videos, sound: sounds, audio: audios, filesystem: fss,
    },
  };
  const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true, indentBy: '  ', suppressEmptyNode: true });
  return builder.build({ domain });
}
