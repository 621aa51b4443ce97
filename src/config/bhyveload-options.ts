// bhyveload(8)'s options; man/bhyveload.8 is checked against this table.

import type { OptionInfo } from './bhyve-options.js';

export const BHYVELOAD_OPTIONS: readonly OptionInfo[] = [
  { flag: 'c', arg: 'cons-dev', description: 'tty(4) device for the loader console, or stdio (the default); checked, not used' },
  { flag: 'd', arg: 'disk-path', description: 'guest boot disk image (ISO 9660 or ext2/3/4) to load the kernel from without -h (repeatable; the first is used)' },
  { flag: 'e', arg: 'name=value', description: 'loader variable: kernel=PATH, initrd=PATH, cmdline=STRING, module.N=PATH[ ARGS] (repeatable)' },
  { flag: 'h', arg: 'host-path', description: 'host directory used as the root of the guest boot file system' },
  { flag: 'l', arg: 'os-loader', description: 'loader to use instead of /boot/userboot.so (not supported yet)' },
  { flag: 'm', arg: 'mem-size', description: 'guest memory size (no suffix: MiB; default 256M)' },
  { flag: 'S', description: 'wire guest memory (accepted; bhyve -S wires the running guest)' },
  { flag: 'C', description: 'include guest memory in core files' },
];

export const BHYVELOAD_USAGE =
  'usage: bhyveload [-CS] [-c <console-device>] [-d <disk-path>] [-e <name=value>]\n' +
  '                 [-h <host-path>] [-m memsize[K|k|M|m|G|g|T|t]] <vmname>\n';
