// Fuzz target for bhyve-xml: libvirt domain XML (the fixtures of
// test/fixtures/libvirt, with attribute values, text and whole elements
// replaced, dropped, duplicated and byte-mutated) through to-argv, and the
// bhyve command lines it makes (and mutated ones) through from-argv.
//
// Oracle: to-argv returns command lines or error lines, or throws a
// UserError (malformed XML); from-argv returns XML or throws a DomainError
// or a ConfigError (getopt). Anything else is a crash. Invariant: when
// from-argv accepts a command line to-argv made, converting its XML back
// gives the same command line.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildCommands } from '../../../src/libvirt/bhyve-command.js';
import { DomainError, parseDomainXml } from '../../../src/libvirt/domain-def.js';
import { domainXmlFromArgv } from '../../../src/libvirt/domain-from-argv.js';
import { ConfigError } from '../../../src/config/tree.js';
import { UserError } from '../../../src/user-error.js';
import { type FuzzInstance, type FuzzTarget, InvariantError } from '../harness.js';
import type { Rng } from '../rng.js';
import { ArgFuzz } from './host-config.js';

// From test/fuzz/targets/ (vitest) or build/fuzz/test/fuzz/targets/ (npm run fuzz).
const FIXTURES = ['../../..', '../../../../..'].map((up) => path.resolve(import.meta.dirname, up, 'test/fixtures/libvirt')).find((d) => fs.existsSync(d)) ?? '';
const DOMAINS = FIXTURES !== ''
  ? fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.xml')).map((f) => fs.readFileSync(path.join(FIXTURES, f), 'utf8'))
  : [];
if (DOMAINS.length === 0) throw new Error('domain-xml fuzz target: test/fixtures/libvirt not found');

const ELEMENTS = [
  "<disk type='file' device='cdrom'><source file='/c.iso'/><target dev='sdz' bus='sata'/></disk>",
  "<disk type='file'><source file='/n.img'/><target dev='nvme3n1' bus='nvme'/><address type='drive' controller='7'/></disk>",
  "<disk type='block'><source dev='/dev/zvol/x'/><target dev='vdz' bus='virtio'/></disk>",
  "<interface type='bridge'><source bridge='br1'/><model type='e1000'/><address type='pci' slot='0x1f' function='0x7'/></interface>",
  "<controller type='usb' model='nec-xhci'/>", "<controller type='isa'/>", "<controller type='sata' index='3'/>",
  "<input type='tablet' bus='usb'/>", "<graphics type='vnc' autoport='yes'/>", "<video><model type='vga'/></video>",
  "<serial type='nmdm'><target port='9'/></serial>", "<console type='tcp'><source mode='bind' host='::' service='1'/></console>",
  "<filesystem><source dir='/a'/><target dir='b'/></filesystem>", "<sound model='ich6'/>", "<watchdog model='x'/>",
  "<boot order='0'/>", "<address type='pci' slot='1'/>", '<features><msrs unknown="fault"/></features>', "<clock offset='variable'/>",
];

class DomainXmlFuzz implements FuzzInstance {
  private readonly a: ArgFuzz;
  private readonly counts = { converted: 0, refused: 0, malformed: 0, roundTrips: 0, fromArgvRefused: 0 };
  lastOp?: string;

  constructor(private readonly r: Rng) { this.a = new ArgFuzz(r); }

  private domain(): string {
    const r = this.r;
    let x = r.pick(DOMAINS);
    const n = r.below(6);
    for (let i = 0; i < n; i++) {
      switch (r.below(6)) {
        case 0: { // an attribute value
          const vals = [...x.matchAll(/='([^']*)'/g)];
          if (vals.length === 0) break;
          const v = r.pick(vals);
          const nv = this.a.mutate(r.pick([v[1], this.a.number(), '', '0x20', '-1', '/x,y', 'a b', '&amp;', v[1].repeat(3)])).replace(/['<&]/g, '');
          x = x.slice(0, v.index) + `='${nv}'` + x.slice(v.index! + v[0].length);
          break;
        }
        case 1: { // a text node
          const t = [...x.matchAll(/>([^<>\s][^<>]*)</g)];
          if (t.length === 0) break;
          const v = r.pick(t);
          x = x.slice(0, v.index! + 1) + this.a.mutate(r.pick([this.a.number(), this.a.size(), v[1]])).replace(/[<&]/g, '') + x.slice(v.index! + v[0].length - 1);
          break;
        }
        case 2: { // drop or duplicate a line
          const lines = x.split('\n');
          const i = r.below(lines.length);
          if (r.chance(0.5)) lines.splice(i, 1); else lines.splice(i, 0, lines[i]);
          x = lines.join('\n');
          break;
        }
        case 3: // another element in <devices> or in the domain
          x = r.chance(0.7) ? x.replace('</devices>', `${r.pick(ELEMENTS)}</devices>`) : x.replace('</domain>', `${r.pick(ELEMENTS)}</domain>`);
          break;
        case 4:
          x = this.a.mutate(x);
          break;
        default:
          break;
      }
    }
    // Big enough for every element kind many times over, small enough that
    // the XML parser's time stays far below the per-operation bound.
    return x.slice(0, 20_000);
  }

  step(): void {
    const xml = this.domain();
    this.lastOp = `to-argv ${JSON.stringify(xml.slice(0, 4000))}`;
    let argv: string[] | undefined;
    try {
      const { def, unsupported } = parseDomainXml(xml, 'fuzz.xml');
      if (unsupported.length > 0) { this.counts.refused++; return; }
      argv = buildCommands(def).bhyve;
      this.counts.converted++;
    } catch (e) {
      if (e instanceof DomainError) { this.counts.refused++; return; }
      if (e instanceof UserError) { this.counts.malformed++; return; }
      throw e;
    }
    const mutated = this.r.chance(0.3);
    const words = mutated ? argv.map((w) => this.a.mutate(w)) : argv;
    this.lastOp = `from-argv ${JSON.stringify(words)}`;
    let back: string;
    try {
      back = domainXmlFromArgv(words);
    } catch (e) {
      if (e instanceof DomainError || e instanceof ConfigError) { this.counts.fromArgvRefused++; return; }
      throw e;
    }
    let again: string[];
    try {
      const p = parseDomainXml(back, 'from-argv.xml');
      if (p.unsupported.length > 0) throw new InvariantError(`from-argv wrote elements to-argv does not read: ${p.unsupported.join(' ')}`);
      again = buildCommands(p.def).bhyve;
    } catch (e) {
      if (e instanceof InvariantError) throw e;
      if (mutated && (e instanceof DomainError || e instanceof UserError)) return;
      throw new InvariantError(`from-argv XML refused by to-argv: ${(e as Error).message}`);
    }
    if (!mutated && again.join('\u0001') !== argv.join('\u0001')) {
      throw new InvariantError(`round trip changed the command line:\n  ${argv.join(' ')}\n  ${again.join(' ')}`);
    }
    this.counts.roundTrips++;
  }

  stats(): Record<string, number> { return { ...this.counts }; }
}

export const DOMAIN_XML_TARGET: FuzzTarget = {
  name: 'domain-xml',
  surface: 'bhyve-xml: libvirt domain XML (mutated fixtures) through to-argv, the command lines through from-argv and back',
  create: (rng) => new DomainXmlFuzz(rng),
  instanceOps: 2000,
};
