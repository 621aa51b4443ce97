// The options of `-s N,fbuf,...` (pci.B.S.F.*) as pci_fbuf.c's
// pci_fbuf_parse_config reads them, with its limits and defaults:
//   rfb (preferred) or tcp = [host:]port, or [IPv6%zone]:port
//                            (default 127.0.0.1:5900, rfb_init's)
//   unix = PATH              a unix socket instead of TCP (beyond bhyve)
//   w, h                     640x480 .. 3840x2160, default 1024x768
//   vga = io | on | off      default io
//   wait                     boot when the first VNC client is in
//   password                 VNC authentication
// Used by config validation, the device (device thread) and the VNC
// server (main thread), so all three agree.

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import type { RfbListen } from './rfb-server.js';
import { pciNodes } from '../../config/pci-nodes.js';

export const COLS_MAX = 3840;
export const ROWS_MAX = 2160;
export const COLS_DEFAULT = 1024;
export const ROWS_DEFAULT = 768;
export const COLS_MIN = 640;
export const ROWS_MIN = 480;
export const RFB_DEFAULT_PORT = 5900;
export const RFB_DEFAULT_HOST = '127.0.0.1';

export type VgaMode = 'io' | 'on' | 'off';

export interface FbufOptions {
  listen: RfbListen;
  wait: boolean;
  vga: VgaMode;
  width: number;
  height: number;
  password?: string;
}

/** C's atoi/strtol on a decimal prefix ("5900x" is 5900, "x" is 0). */
function cNumber(s: string): number {
  const m = /^\s*[+-]?\d+/.exec(s);
  return m ? Number.parseInt(m[0], 10) : 0;
}

function parsePort(s: string, value: string): number {
  if (s === '') throw new ConfigError(`fbuf: Missing port number: "${value}"`);
  const port = cNumber(s);
  if (port < 0 || port > 65535) throw new ConfigError(`fbuf: invalid port number: "${value}" (use 0-65535)`);
  return port === 0 ? RFB_DEFAULT_PORT : port;
}

/** pci_fbuf_parse_config's reading of rfb=/tcp=. */
export function parseRfbAddress(value: string): { host: string; port: number } {
  if (value.startsWith('[')) {
    const close = value.indexOf(']', 1);
    if (close < 0 || close === 1) throw new ConfigError(`fbuf: Invalid IPv6 address: "${value}"`);
    const host = value.slice(1, close);
    const rest = value.slice(close + 1);
    if (rest === '') return { host, port: RFB_DEFAULT_PORT };
    if (!rest.startsWith(':')) throw new ConfigError(`fbuf: Invalid IPv6 address: "${value}"`);
    return { host, port: parsePort(rest.slice(1), value) };
  }
  const colon = value.indexOf(':');
  if (colon < 0) return { host: RFB_DEFAULT_HOST, port: parsePort(value, value) };
  const host = value.slice(0, colon);
  return { host: host === '' ? RFB_DEFAULT_HOST : host, port: parsePort(value.slice(colon + 1), value) };
}

export function parseFbufOptions(config: ConfigTree, node: string): FbufOptions {
  const get = (k: string): string | undefined => config.get(`${node}.${k}`);
  const wait = config.getBool(`${node}.wait`, false);
  const addr = get('rfb') ?? get('tcp');
  const unix = get('unix');
  let listen: RfbListen;
  if (unix !== undefined) {
    if (addr !== undefined) throw new ConfigError('fbuf: use either unix= or rfb=/tcp=, not both');
    if (unix === '') throw new ConfigError('fbuf: unix= needs a socket path');
    listen = { kind: 'unix', path: unix };
  } else {
    const a = addr === undefined ? { host: RFB_DEFAULT_HOST, port: RFB_DEFAULT_PORT } : parseRfbAddress(addr);
    listen = { kind: 'tcp', ...a };
  }
  const vga = get('vga') ?? 'io';
  if (vga !== 'io' && vga !== 'on' && vga !== 'off') throw new ConfigError(`fbuf: Invalid vga setting: "${vga}"`);
  const w = get('w');
  const h = get('h');
  const width = w === undefined ? COLS_DEFAULT : cNumber(w);
  const height = h === undefined ? ROWS_DEFAULT : cNumber(h);
  if (width > COLS_MAX || height > ROWS_MAX) throw new ConfigError(`fbuf: max resolution is ${COLS_MAX}x${ROWS_MAX}`);
  if (width < COLS_MIN || height < ROWS_MIN) throw new ConfigError(`fbuf: minimum resolution is ${COLS_MIN}x${ROWS_MIN}`);
  const password = get('password');
  return { listen, wait, vga, width, height, ...(password !== undefined ? { password } : {}) };
}

/** The one fbuf slot node (bhyve allows one), or undefined; throws on a second. */
export function fbufNode(config: ConfigTree, nodes: ReadonlyArray<{ node: string }>): string | undefined {
  const found = nodes.filter((n) => config.get(`${n.node}.device`) === 'fbuf');
  if (found.length > 1) throw new ConfigError('Only one frame buffer device is allowed.');
  return found[0]?.node;
}

/** An fbuf with vga=on is configured (its VGA memory window needs a hole in RAM). */
export function fbufVgaOn(config: ConfigTree): boolean {
  return pciNodes(config).some((n) => config.get(`${n.node}.device`) === 'fbuf' && config.get(`${n.node}.vga`) === 'on');
}
