// The slirp backend's keys (bhyve's net_backend_slirp.c): hostfwd rules
// and open. Parsed at start-time checks and again when the backend opens.

import type { ConfigTree } from '../../config/tree.js';
import { UserError } from '../../user-error.js';

/** One hostfwd rule. */
export interface HostFwdRule {
  text: string;
  udp: boolean;
  hostAddr: string;
  hostPort: number;
  guestAddr: string;
  guestPort: number;
}

export class SlirpConfigError extends UserError { override readonly name: string = 'SlirpConfigError'; }

/** bhyve's parse_addr: "[a.b.c.d]:port". */
function parseAddr(s: string, rule: string): { addr: string; port: number } {
  const colon = s.indexOf(':');
  if (colon < 0) throw new SlirpConfigError(`Unable to parse hostfwd rule '${rule}': expected address:port in '${s}'`);
  const addr = s.slice(0, colon);
  const portText = s.slice(colon + 1);
  if (addr !== '' && !/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/.test(addr)) {
    throw new SlirpConfigError(`Unable to parse hostfwd rule '${rule}': '${addr}' is not an IPv4 address`);
  }
  const port = portText === '' ? 0 : /^\d+$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 0 && port <= 65535)) throw new SlirpConfigError(`Unable to parse hostfwd rule '${rule}': bad port '${portText}'`);
  return { addr, port };
}

/** bhyve's parse_hostfwd_rule, for each ';'-separated rule. bhyve takes
 * any protocol but "udp" as TCP; a misspelt one is refused here. */
export function parseHostFwd(value: string): HostFwdRule[] {
  return value.split(';').map((rule) => {
    const c = rule.indexOf(':');
    if (c < 0) throw new SlirpConfigError(`Unable to parse hostfwd rule '${rule}' (use tcp::HOSTPORT-:GUESTPORT)`);
    const proto = rule.slice(0, c);
    if (proto !== 'tcp' && proto !== 'udp') throw new SlirpConfigError(`Unable to parse hostfwd rule '${rule}': protocol '${proto}' (use tcp or udp)`);
    const rest = rule.slice(c + 1);
    const dash = rest.indexOf('-');
    if (dash < 0) throw new SlirpConfigError(`Unable to parse hostfwd rule '${rule}' (use tcp::HOSTPORT-:GUESTPORT)`);
    const h = parseAddr(rest.slice(0, dash), rule);
    const g = parseAddr(rest.slice(dash + 1), rule);
    return { text: rule, udp: proto === 'udp', hostAddr: h.addr, hostPort: h.port, guestAddr: g.addr, guestPort: g.port };
  });
}

/** The slirp options of NIC node `node` (pci.B.S.F). */
export function slirpOptionsFromConfig(config: ConfigTree, node: string): { open: boolean; hostfwd: HostFwdRule[] } {
  const hf = config.get(`${node}.hostfwd`);
  return { open: config.getBool(`${node}.open`, false), hostfwd: hf === undefined ? [] : parseHostFwd(hf) };
}


/** Start-time check of a NIC's slirp keys (the record's validate): rules
 * that parse, and hostfwd/open only with the slirp backend. */
export function validateSlirpKeys(config: ConfigTree, node: string, where: string, emul: string): void {
  const prefix = `${emul} at pci slot ${where}: `;
  const backend = config.get(`${node}.backend`);
  if (backend?.trim() === 'slirp') {
    try {
      slirpOptionsFromConfig(config, node);
    } catch (e) {
      if (e instanceof SlirpConfigError) throw new SlirpConfigError(`${prefix}net backend 'slirp': ${e.message}`);
      throw e;
    }
  } else if (config.get(`${node}.hostfwd`) !== undefined || config.get(`${node}.open`) !== undefined) {
    throw new SlirpConfigError(`${prefix}hostfwd and open are options of the slirp backend`);
  }
}
