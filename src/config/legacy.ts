// bhyve's "legacy" option-string parsers: the conf part of `-s slot,emul,conf`
// and of `-l lpcdev,conf`, turned into bhyve_config(5) variables exactly as
// pci_parse_legacy_config(), blockif_legacy_config() and
// netbe_legacy_config() do.

import { ConfigError, ConfigTree, type ConfigNode } from './tree.js';

/**
 * set_config_value(): replaces a value. Like bhyve's nvlist, a replaced value
 * moves to the end of its node, so `-o config.dump=true` lists variables in
 * the order bhyve would.
 */
export function setValue(tree: ConfigTree, path: string, value: string): void {
  if (tree.getRaw(path) !== undefined) tree.delete(path);
  tree.set(path, value);
}

/** set_config_value_if_unset(). */
export function setValueIfUnset(tree: ConfigTree, path: string, value: string): void {
  if (tree.getRaw(path) === undefined) setValue(tree, path, value);
}

/** set_config_bool(). */
export function setBool(tree: ConfigTree, path: string, value: boolean): void {
  setValue(tree, path, value ? 'true' : 'false');
}

/** Creates an (empty) node, as create_config_node() does. */
export function createNode(tree: ConfigTree, path: string): void {
  let node: ConfigNode = tree.root;
  const parts = path.split('.');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    const child = node.get(part);
    if (child instanceof Map) { node = child; continue; }
    if (typeof child === 'string') {
      throw new ConfigError(
        `configuration node ${path} is a child of existing variable ${parts.slice(0, i + 1).join('.')}`);
    }
    const created: ConfigNode = new Map();
    node.set(part, created);
    node = created;
  }
}

/**
 * pci_parse_legacy_config(): a comma list of `name=value`; a bare `name`
 * becomes `name=true`. Empty items (",,") set an empty name, which bhyve
 * stores as a value named ""; we skip them (our tree has no empty names).
 */
export function parseLegacyConfig(tree: ConfigTree, node: string, opt: string | undefined): void {
  if (opt === undefined) return;
  for (const item of opt.split(',')) {
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    if (name === '') continue;
    setValue(tree, `${node}.${name}`, eq < 0 ? 'true' : item.slice(eq + 1));
  }
}

/** blockif_legacy_config(): first item is `path`, the rest generic. */
export function blockifLegacyConfig(tree: ConfigTree, node: string, opts: string | undefined): void {
  if (opts === undefined) return;
  const comma = opts.indexOf(',');
  if (comma < 0) { setValue(tree, `${node}.path`, opts); return; }
  setValue(tree, `${node}.path`, opts.slice(0, comma));
  parseLegacyConfig(tree, node, opts.slice(comma + 1));
}

/**
 * netbe_legacy_config(): first item is `backend`, the rest generic; when the
 * first item is itself name=value, the whole string is generic.
 */
export function netbeLegacyConfig(tree: ConfigTree, node: string, opts: string | undefined): void {
  if (opts === undefined) return;
  const comma = opts.indexOf(',');
  const eq = opts.indexOf('=');
  if (eq >= 0 && (comma < 0 || eq < comma)) { parseLegacyConfig(tree, node, opts); return; }
  if (comma < 0) { setValue(tree, `${node}.backend`, opts); return; }
  setValue(tree, `${node}.backend`, opts.slice(0, comma));
  parseLegacyConfig(tree, node, opts.slice(comma + 1));
}
