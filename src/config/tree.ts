// The bhyve_config(5) tree: a hierarchy of nodes whose leaves are string
// values, addressed by dotted paths ("pci.0.3.0.path"). Values may refer to
// other variables as %(name); "%%" is a literal percent sign. Expansion happens
// when a value is read, as in bhyve's config.c, so later settings win.

import { UserError } from '../user-error.js';

/** A bad configuration value or combination: a user error. */
export class ConfigError extends UserError { override readonly name: string = 'ConfigError'; }

export type ConfigNode = Map<string, ConfigNode | string>;

const TRUE_WORDS = new Set(['true', 'on', 'yes', '1']);
const FALSE_WORDS = new Set(['false', 'off', 'no', '0']);

/** Parses a bhyve_config(5) boolean; throws ConfigError on anything else. */
export function parseBool(value: string, what: string): boolean {
  const v = value.toLowerCase();
  if (TRUE_WORDS.has(v)) return true;
  if (FALSE_WORDS.has(v)) return false;
  throw new ConfigError(`invalid boolean value '${value}' for ${what} (use true/false, on/off, yes/no, 1/0)`);
}

export class ConfigTree {
  readonly root: ConfigNode = new Map();

  /** Sets a value at a dotted path, creating intermediate nodes. */
  set(path: string, value: string): void {
    const parts = splitPath(path);
    let node = this.root;
    for (let i = 0; i < parts.length - 1; i++) {
      const child = node.get(parts[i]);
      if (child === undefined) {
        const created: ConfigNode = new Map();
        node.set(parts[i], created);
        node = created;
      } else if (typeof child === 'string') {
        throw new ConfigError(`config variable '${parts.slice(0, i + 1).join('.')}' is a value, cannot hold '${path}'`);
      } else {
        node = child;
      }
    }
    const leaf = parts[parts.length - 1];
    if (node.get(leaf) instanceof Map) {
      throw new ConfigError(`config variable '${path}' is a node, cannot be given a value`);
    }
    node.set(leaf, value);
  }

  /** Sets a value only when the path holds nothing yet (defaults). */
  setDefault(path: string, value: string): void {
    if (this.getRaw(path) === undefined && this.getNode(path) === undefined) this.set(path, value);
  }

  /** The unexpanded string at a path, or undefined. */
  getRaw(path: string): string | undefined {
    const v = this.lookup(path);
    return typeof v === 'string' ? v : undefined;
  }

  /** The node (map) at a path, or undefined. */
  getNode(path: string): ConfigNode | undefined {
    const v = this.lookup(path);
    return v instanceof Map ? v : undefined;
  }

  has(path: string): boolean {
    return this.lookup(path) !== undefined;
  }

  /** The value at a path with %(var) references expanded, or undefined. */
  get(path: string): string | undefined {
    const raw = this.getRaw(path);
    return raw === undefined ? undefined : this.expand(raw, [path], { path, refs: 0 });
  }

  getBool(path: string, dflt: boolean): boolean {
    const v = this.get(path);
    return v === undefined ? dflt : parseBool(v, path);
  }

  /** Removes a value or node; no error when absent. */
  delete(path: string): void {
    const parts = splitPath(path);
    const parent = parts.length === 1 ? this.root : this.getNode(parts.slice(0, -1).join('.'));
    parent?.delete(parts[parts.length - 1]);
  }

  /** Every value as [dotted path, expanded value], depth first in insertion order. */
  entries(): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    const walk = (node: ConfigNode, prefix: string): void => {
      for (const [k, v] of node) {
        const p = prefix ? `${prefix}.${k}` : k;
        if (typeof v === 'string') out.push([p, this.expand(v, [p], { path: p, refs: 0 })]);
        else walk(v, p);
      }
    };
    walk(this.root, '');
    return out;
  }

  /** The `-o config.dump=true` output: one key=value line per variable. */
  dump(): string {
    return this.entries().map(([k, v]) => `${k}=${v}\n`).join('');
  }

  /** A plain object form, for handing the tree to worker threads. */
  toJSON(): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    const walk = (node: ConfigNode, prefix: string): void => {
      for (const [k, v] of node) {
        const p = prefix ? `${prefix}.${k}` : k;
        if (typeof v === 'string') out.push([p, v]);
        else walk(v, p);
      }
    };
    walk(this.root, '');
    return out;
  }

  static fromJSON(pairs: Array<[string, string]>): ConfigTree {
    const t = new ConfigTree();
    for (const [k, v] of pairs) t.set(k, v);
    return t;
  }

  private lookup(path: string): ConfigNode | string | undefined {
    let node: ConfigNode | string | undefined = this.root;
    for (const part of splitPath(path)) {
      if (!(node instanceof Map)) return undefined;
      node = node.get(part);
    }
    return node;
  }

  private expand(value: string, seen: string[], budget: ExpansionBudget): string {
    let out = '';
    const tooMuch = (what: string): ConfigError => new ConfigError(`config value of '${budget.path}' expands too much (${what})`);
    if (seen.length > MAX_EXPANSION_DEPTH) throw tooMuch(`variables nested more than ${MAX_EXPANSION_DEPTH} deep`);
    for (let i = 0; i < value.length; i++) {
      if (out.length > MAX_EXPANDED_LENGTH) throw tooMuch(`more than ${MAX_EXPANDED_LENGTH} characters`);
      const c = value[i];
      if (c !== '%') { out += c; continue; }
      const next = value[i + 1];
      if (next === '%') { out += '%'; i++; continue; }
      if (next === '(') {
        const end = value.indexOf(')', i + 2);
        if (end < 0) throw new ConfigError(`unterminated %( in config value '${value}'`);
        const name = value.slice(i + 2, end);
        if (seen.includes(name)) throw new ConfigError(`config variable '${name}' refers to itself`);
        if (++budget.refs > MAX_EXPANSION_REFS) throw tooMuch(`more than ${MAX_EXPANSION_REFS} %(var) references`);
        const raw = this.getRaw(name);
        out += raw === undefined ? '' : this.expand(raw, [...seen, name], budget);
        i = end;
        continue;
      }
      out += c;
    }
    if (out.length > MAX_EXPANDED_LENGTH) throw tooMuch(`more than ${MAX_EXPANDED_LENGTH} characters`);
    return out;
  }
}

// Bounds on %(var) expansion: values that refer to each other twice per
// level double at each level (30 levels made 2.8 GB in 90 s).
const MAX_EXPANDED_LENGTH = 64 * 1024;
const MAX_EXPANSION_DEPTH = 32;
const MAX_EXPANSION_REFS = 4096;
interface ExpansionBudget { path: string; refs: number }

function splitPath(path: string): string[] {
  const parts = path.split('.');
  if (path === '' || parts.some((p) => p === '')) throw new ConfigError(`invalid config variable name '${path}'`);
  return parts;
}
