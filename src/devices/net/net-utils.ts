// bhyve's net_utils.c: the MAC address a NIC gets (net_genmac) or is given
// (net_parsemac), shared by virtio-net and e1000.

import { createHash } from 'node:crypto';
import { ConfigError } from '../../config/tree.js';

/** bhyve's net_genmac(): 00:a0:98 and MD5("slot-func-vmname")[0..2]. */
export function netGenMac(slot: number, func: number, vmName: string): Uint8Array {
  const digest = createHash('md5').update(`${slot}-${func}-${vmName}`).digest();
  return Uint8Array.from([0x00, 0xa0, 0x98, digest[0], digest[1], digest[2]]);
}

/** bhyve's net_parsemac() (ether_aton): six hex octets separated by ':'
 * (1 or 2 digits each); multicast and all-zero addresses are refused. */
export function parseMac(s: string): Uint8Array {
  const parts = s.trim().split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) {
    throw new ConfigError(`Invalid MAC ${s} (use six hex octets: xx:xx:xx:xx:xx:xx)`);
  }
  const mac = Uint8Array.from(parts.map((p) => parseInt(p, 16)));
  if (mac[0] & 1) throw new ConfigError(`Invalid MAC ${s} (a multicast address)`);
  if (mac.every((b) => b === 0)) throw new ConfigError(`Invalid MAC ${s} (all zero)`);
  return mac;
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}
