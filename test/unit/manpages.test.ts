// The man pages in man/ are mdoc, lint clean, and in sync with the code:
// every bhyve flag, config key, PCI emulation, LPC device, bhyveload flag and
// bhyvectl option that the code knows is documented, and every flag the
// bhyve page documents exists in the code.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MAN = join(ROOT, 'man');
const PAGES = ['bhyve.8', 'bhyve_config.5', 'bhyveload.8', 'bhyvectl.8', 'bhyve-xml.1', 'bhyve-vfio-user.8'];

const page = (name: string): string => readFileSync(join(MAN, name), 'utf8');

const HAVE_MANDOC = spawnSync('sh', ['-c', 'command -v mandoc'], { encoding: 'utf8' }).status === 0;

/** Lines of one `.Sh NAME` section (up to the next `.Sh`). */
function section(src: string, title: string): string[] {
  const lines = src.split('\n');
  const start = lines.findIndex((l) => l.trim() === `.Sh ${title}`);
  if (start < 0) throw new Error(`no section ${title}`);
  const rest = lines.slice(start + 1);
  const end = rest.findIndex((l) => l.startsWith('.Sh '));
  return end < 0 ? rest : rest.slice(0, end);
}

/** Letters given to `Fl` anywhere in the lines; `Fl aCD` counts a, C and D. */
function flagLetters(lines: string[]): Set<string> {
  const out = new Set<string>();
  for (const line of lines) {
    if (!line.startsWith('.')) continue;
    for (const m of line.matchAll(/\bFl\s+([A-Za-z]+)(?=[\s\\]|$)/g)) {
      for (const ch of m[1]) out.add(ch);
    }
  }
  return out;
}

/** Letters of `.It Fl X` list entries. */
function itFlagLetters(lines: string[]): Set<string> {
  const out = new Set<string>();
  for (const line of lines) {
    const m = /^\.It\s+Fl\s+([A-Za-z])(?=[\s\\]|$)/.exec(line);
    if (m) out.add(m[1]);
  }
  return out;
}

/** First argument of every `.It Va name` entry. */
function vaEntries(src: string): Set<string> {
  const out = new Set<string>();
  for (const line of src.split('\n')) {
    const m = /^\.It\s+Va\s+(\S+)/.exec(line);
    if (m) out.add(m[1]);
  }
  return out;
}

/** Plain words of the `.It` lines of a section, macros and punctuation removed. */
function itWords(lines: string[]): Set<string> {
  const out = new Set<string>();
  for (const line of lines) {
    if (!line.startsWith('.It')) continue;
    for (const tok of line.replace(/\\&/g, '').split(/\s+/)) {
      const word = tok.replace(/^[,;:(]+|[,;:)]+$/g, '');
      if (/^[A-Z][a-z]$/.test(word) || word === '.It') continue; // mdoc macro
      if (word) out.add(word);
    }
  }
  return out;
}

/**
 * Top-level `.It Cm name ...` entries of a section: the names on the `.It`
 * line and the text up to the next such entry (or the next `.Ss`).
 */
function entries(lines: string[]): { names: Set<string>; body: string }[] {
  const out: { names: Set<string>; body: string }[] = [];
  let cur: { names: Set<string>; body: string } | undefined;
  for (const line of lines) {
    if (line.startsWith('.Ss ')) break;
    if (/^\.It\s+Cm\s/.test(line)) {
      cur = { names: itWords([line]), body: '' };
      out.push(cur);
    } else if (cur) {
      cur.body += `${line}\n`;
    }
  }
  return out;
}

/** Checks that each device's entry says "Supported." or "Not supported yet." as the registry does. */
function statusMismatches(lines: string[], registry: Record<string, { implemented: boolean }>): string[] {
  const list = entries(lines);
  const bad: string[] = [];
  for (const [name, info] of Object.entries(registry)) {
    const entry = list.find((e) => e.names.has(name));
    if (!entry) continue; // reported by the "documented" test
    const refused = /not supported yet/i.test(entry.body);
    const supported = /(^|[\s;,])Supported[.;]/m.test(entry.body);
    if (info.implemented && (refused || !supported)) bad.push(`${name}: implemented, page must say "Supported."`);
    if (!info.implemented && !refused) bad.push(`${name}: not implemented, page must say "Not supported yet."`);
  }
  return bad;
}

/** The registry's PCI emulations by name, with whether each is built. */
function pciStatus(registry: Record<string, unknown>): Record<string, { implemented: boolean }> {
  const records = (registry.pciDevices as () => ReadonlyArray<{ name: string }>)();
  const isBuilt = registry.isBuilt as (r: unknown) => boolean;
  return Object.fromEntries(records.map((r) => [r.name, { implemented: isBuilt(r) }]));
}

/** Tries to load a module written by others; undefined when it is missing. */
async function load(path: string): Promise<Record<string, unknown> | undefined> {
  try {
    return (await import(path)) as Record<string, unknown>;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || /Cannot find module|Failed to load url/.test(String(e))) return undefined;
    throw e;
  }
}

type Option = { flag: string };

describe('man pages: mandoc -Tlint', () => {
  for (const name of PAGES) {
    it.skipIf(!HAVE_MANDOC)(`${name} is clean at -W warning${HAVE_MANDOC ? '' : ' (skipped: mandoc is not installed)'}`, () => {
      const r = spawnSync('mandoc', ['-Tlint', '-W', 'warning', join(MAN, name)], { encoding: 'utf8' });
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
    });
  }

  it('all pages carry the same .Dd and are mdoc', () => {
    const dates = PAGES.map((n) => /^\.Dd (.+)$/m.exec(page(n))?.[1]);
    for (const d of dates) expect(d).toMatch(/^[A-Z][a-z]+ \d{1,2}, \d{4}$/);
    expect(new Set(dates).size).toBe(1);
  });
});

describe('man pages are in sync with the code', () => {
  it('bhyve-xml(1): its commands and every to-argv option are in SYNOPSIS and DESCRIPTION', async () => {
    const mod = await load('../../src/cli/bhyve-xml-main.js');
    expect(mod, 'src/cli/bhyve-xml-main.ts must exist').toBeDefined();
    const src = page('bhyve-xml.1');
    const longFlags = (lines: string[]): Set<string> => new Set(lines.flatMap((l) => [...l.matchAll(/\bFl -([a-z-]+)/g)].map((m) => `--${m[1]}`)));
    const synopsis = section(src, 'SYNOPSIS');
    const description = section(src, 'DESCRIPTION');
    for (const flag of Object.keys(mod!.TO_ARGV_OPTIONS as object)) {
      expect(longFlags(synopsis), `${flag} in SYNOPSIS`).toContain(flag);
      expect(description.some((l) => l.startsWith(`.It Fl ${flag.slice(1)} `)), `${flag} in DESCRIPTION`).toBe(true);
    }
    for (const cmd of ['to-argv', 'from-argv']) expect(description).toContain(`.It Cm ${cmd}`);
  });

  const bhyve8 = page('bhyve.8');
  const config5 = page('bhyve_config.5');

  it('bhyve(8): every BHYVE_OPTIONS flag is in SYNOPSIS and DESCRIPTION, and every documented flag exists', async () => {
    const mod = await load('../../src/config/bhyve-options.js');
    expect(mod, 'src/config/bhyve-options.ts must exist').toBeDefined();
    const options = mod!.BHYVE_OPTIONS as readonly Option[];
    const codeFlags = new Set(options.map((o) => o.flag));
    const synopsis = flagLetters(section(bhyve8, 'SYNOPSIS'));
    const described = itFlagLetters(section(bhyve8, 'DESCRIPTION'));
    const missingSynopsis = [...codeFlags].filter((f) => !synopsis.has(f));
    const missingDescription = [...codeFlags].filter((f) => !described.has(f));
    const unknown = [...itFlagLetters(bhyve8.split('\n'))].filter((f) => !codeFlags.has(f));
    expect(missingSynopsis, 'flags missing from SYNOPSIS of man/bhyve.8').toEqual([]);
    expect(missingDescription, 'flags without .It Fl in DESCRIPTION of man/bhyve.8').toEqual([]);
    expect(unknown, 'flags documented in man/bhyve.8 but not in BHYVE_OPTIONS').toEqual([]);
  });

  // Rule: a key is documented when bhyve_config(5) has an `.It Va <key>`
  // entry spelled exactly as in the code (placeholders N and B.S.F included);
  // a per-device key pci.B.S.F.<rest> may instead appear as `.It Va <rest>`
  // in the device sections, which name variables relative to the device node.
  it('bhyve_config(5): every knownConfigKeys() pattern has an .It Va entry', async () => {
    const mod = await load('../../src/config/bhyve-options.js');
    expect(mod, 'src/config/bhyve-options.ts must exist').toBeDefined();
    const keys = (mod!.knownConfigKeys as () => readonly string[])();
    expect(keys.length).toBeGreaterThan(0);
    const entries = vaEntries(config5);
    const missing = keys.filter((k) => {
      if (entries.has(k)) return false;
      const pci = /^pci\.B\.S\.F\.(.+)$/.exec(k);
      return !(pci && entries.has(pci[1]));
    });
    expect(missing, 'config keys missing from man/bhyve_config.5').toEqual([]);
  });

  it('bhyve(8): every PCI emulation and LPC device of the registry is documented', async () => {
    const mod = await load('../../src/devices/registry.js');
    expect(mod, 'src/devices/registry.ts must exist').toBeDefined();
    const pciWords = itWords(section(bhyve8, 'PCI EMULATIONS'));
    const lpcWords = itWords(section(bhyve8, 'LPC DEVICES'));
    const pciNames = Object.keys(pciStatus(mod!));
    const lpcNames = Object.keys(mod!.LPC_DEVICES as object);
    expect(pciNames.length).toBeGreaterThan(0);
    expect(lpcNames.length).toBeGreaterThan(0);
    expect(pciNames.filter((n) => !pciWords.has(n)), 'PCI emulations missing from PCI EMULATIONS').toEqual([]);
    expect(lpcNames.filter((n) => !lpcWords.has(n)), 'LPC devices missing from LPC DEVICES').toEqual([]);
  });

  it('bhyve(8): each device entry states the implementation status the registry records', async () => {
    const mod = await load('../../src/devices/registry.js');
    expect(mod, 'src/devices/registry.ts must exist').toBeDefined();
    const pciReg = pciStatus(mod!);
    const lpcReg = mod!.LPC_DEVICES as Record<string, { implemented: boolean }>;
    expect(statusMismatches(section(bhyve8, 'PCI EMULATIONS'), pciReg), 'PCI EMULATIONS status').toEqual([]);
    expect(statusMismatches(section(bhyve8, 'LPC DEVICES'), lpcReg), 'LPC DEVICES status').toEqual([]);
    // Every PCI emulation that is refused at start is listed in IMPLEMENTATION NOTES.
    const notes = section(bhyve8, 'IMPLEMENTATION NOTES').join('\n');
    const unlisted = Object.entries(pciReg)
      .filter(([n, i]) => !i.implemented && !new RegExp(`(?<![\\w-])${n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![\\w-])`).test(notes))
      .map(([n]) => n);
    expect(unlisted, 'unimplemented PCI emulations missing from IMPLEMENTATION NOTES').toEqual([]);
  });

  it('bhyveload(8): every BHYVELOAD_OPTIONS flag is in SYNOPSIS and DESCRIPTION', async () => {
    const mod = await load('../../src/config/bhyveload-options.js');
    expect(mod, 'src/config/bhyveload-options.ts must exist').toBeDefined();
    const src = page('bhyveload.8');
    const flags = (mod!.BHYVELOAD_OPTIONS as readonly Option[]).map((o) => o.flag);
    expect(flags.length).toBeGreaterThan(0);
    const synopsis = flagLetters(section(src, 'SYNOPSIS'));
    const described = itFlagLetters(section(src, 'DESCRIPTION'));
    expect(flags.filter((f) => !synopsis.has(f)), 'missing from SYNOPSIS').toEqual([]);
    expect(flags.filter((f) => !described.has(f)), 'missing from DESCRIPTION').toEqual([]);
    const codeFlags = new Set(flags);
    expect([...described].filter((f) => !codeFlags.has(f)), 'documented but not in BHYVELOAD_OPTIONS').toEqual([]);
  });

  it('bhyvectl(8): every BHYVECTL_OPTIONS long option is documented', async () => {
    const mod = await load('../../src/config/bhyvectl-options.js');
    expect(mod, 'src/config/bhyvectl-options.ts must exist').toBeDefined();
    const src = page('bhyvectl.8');
    const names = (mod!.BHYVECTL_OPTIONS as readonly Option[]).map((o) => o.flag.replace(/^-+/, ''));
    expect(names.length).toBeGreaterThan(0);
    // Written `Fl -name` or, in comma lists after one Fl, `-name`, on a macro line.
    // Lines ending in a backslash continue on the next line.
    const macroLines = src.replace(/\\\n/g, ' ').split('\n').filter((l) => l.startsWith('.')).join('\n');
    const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const missing = names.filter((n) => !new RegExp(`(?<![\\w-])-${escape(n)}(?![\\w-])`).test(macroLines));
    expect(missing, 'options missing from man/bhyvectl.8').toEqual([]);
  });
});
