// Fuzz targets for the host side's parsers: bhyve's command line (getopt,
// -s slot and legacy device options, -l, -o with %(var) references, -m
// sizes, -c topology, -p pinning, -U, -G, -f, -n, -k config files) through
// parseBhyveArgs and then every value expanded (dumpConfig); bhyvectl's
// long options with register and descriptor values (buildUpdate, libxo);
// bhyveload's options. An operation is one command line. Inputs are
// grammar-built tokens, then mutated (bytes flipped, spliced, cut, huge,
// non-ASCII, unpaired surrogates).
//
// Oracle: each parse returns, or throws a ConfigError (UsageError is one):
// the one-line user error bhyve prints. Any other exception is a crash
// (the user would see "internal error"); the per-operation bound catches
// blow-ups such as exponential %(var) expansion.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dumpConfig, parseBhyveArgs } from '../../../src/config/bhyve-args.js';
import { ConfigError } from '../../../src/config/tree.js';
import { getopt } from '../../../src/config/getopt.js';
import { parseMemorySize } from '../../../src/config/size.js';
import { parseCpuset, strtolFull } from '../../../src/config/topology.js';
import { knownConfigKeys } from '../../../src/config/bhyve-options.js';
const KNOWN_CONFIG_KEYS = knownConfigKeys();
import { BHYVECTL_OPTIONS } from '../../../src/config/bhyvectl-options.js';
import { buildUpdate, parseBhyvectlArgs, parseNumber } from '../../../src/cli/bhyvectl-main.js';
import { parseBhyveloadArgs } from '../../../src/cli/bhyveload-main.js';
import { parseLibxo } from '../../../src/bhyvectl/report.js';
import type { FuzzInstance, FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';

let dir: string | undefined;
function scratchDir(): string {
  dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-fuzz-cfg-'));
  return dir;
}
process.once('exit', () => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

/** Parses and rethrows anything that is not a user error. */
function userErrorsOnly(f: () => void): void {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return;
    throw e;
  }
}

const EMULS = ['hostbridge', 'amd_hostbridge', 'lpc', 'virtio-blk', 'virtio-net', 'virtio-rnd', 'virtio-console', 'ahci', 'ahci-hd', 'ahci-cd',
  'nvme', 'passthru', 'fbuf', 'xhci', 'e1000', 'uart', 'virtio-9p', 'virtio-scsi', 'virtio-input', 'bogus', ''];
const SLOT_OPTS = ['/tmp/disk.img', 'ro', 'nocache', 'direct', 'sync', 'sectorsize=512', 'sectorsize=512/4096', 'sectorsize=3', 'nodelete',
  'ser=ABC', 'serial=X', 'tap0', 'tap9', 'vmnet0', '/dev/tap1', 'netgraph,path=x', 'mac=00:a0:98:01:02:03', 'mac=ff:ff:ff:ff:ff:ff',
  'mtu=1400', 'mtu=9', 'port1=/tmp/s', 'port1=', 'bootindex=1', 'bootindex=x', 'transport=modern', 'transport=bad', 'iothread=true',
  'backend=tap0', 'path=/x', 'ram=64', 'hd:/x', 'cd:/y', 'pcireg.vendor=host', '%(name)', '%(pci.0.0.0.device)', '%%', '%('];
const LPC_OPTS = ['com1,stdio', 'com2,/dev/null', 'com3,tcp=127.0.0.1:1', 'com4,tcp=[::1]:0', 'bootrom,/x.fd', 'bootrom,/x.fd,/y.fd',
  'bootrom,/x.fd,fwcfg=qemu', 'fwcfg,qemu', 'fwcfg,bhyve', 'pc-testdev', 'tpm,swtpm,/x', 'help', 'com5,stdio', 'com1', ''];

export class ArgFuzz {
  constructor(readonly r: Rng) {}

  /** A string mutated at the byte level now and then. */
  mutate(s: string): string {
    const r = this.r;
    if (!r.chance(0.15)) return s;
    switch (r.below(9)) {
      case 0: return s.slice(0, r.below(s.length + 1));
      case 1: { const i = r.below(s.length + 1); return s.slice(0, i) + String.fromCharCode(r.below(0x80)) + s.slice(i); }
      case 2: { const i = r.below(s.length + 1); return s.slice(0, i) + r.pick(['\0', '\n', '\uffff', '\ud800', 'é', '😀', ',', '=', ':', '.', '%(', ')', '%']) + s.slice(i); }
      case 3: return s.repeat(r.range(2, 50));
      case 4: return s + 'x'.repeat(r.pick([100, 1000, 100_000]));
      case 5: return s.replace(/[0-9]+/, String(r.pick([0, -1, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 64, 1e300])));
      case 6: return s.toUpperCase();
      case 7: return ` ${s} `;
      default: return s.split('').reverse().join('');
    }
  }

  number(): string {
    const r = this.r;
    return r.pick(['0', '1', '-1', '31', '32', '255', '256', '0x1f', '010', '4294967296', '18446744073709551616', '1e3', 'NaN', '', ' 1', '1 ', String(r.u32())]);
  }

  size(): string {
    const r = this.r;
    return this.mutate(r.pick(['256M', '1G', '512', '1K', '0', '17T', '1T', '16E', '0x10000000', '010M', '2g', '1MB', '1Mb', '1b', 'M', '-1M', '9007199254740992', `${r.u32()}${r.pick(['', 'k', 'm', 'g', 't', 'p', 'e', 'x'])}`]));
  }

  slot(): string {
    const r = this.r;
    const where = r.pick([`${r.below(32)}`, `${r.below(32)}:${r.below(8)}`, `${r.below(256)}:${r.below(32)}:${r.below(8)}`, this.number(), `${this.number()}:${this.number()}`, '']);
    const parts = [where, r.pick(EMULS)];
    const n = r.below(4);
    for (let i = 0; i < n; i++) parts.push(r.pick(SLOT_OPTS));
    return this.mutate(parts.join(','));
  }

  /** -o key=value, with %(var) references (sometimes nested deeply). */
  configOption(): string {
    const r = this.r;
    const key = r.chance(0.6) ? r.pick(KNOWN_CONFIG_KEYS) : r.pick(['a', 'b', 'c', 'a.b', 'a.b.c', 'pci.0.3.0.device', 'lpc.com1.path', '', '.', 'a..b', 'x'.repeat(200)]);
    let value = r.pick(['true', 'false', '1', '0', 'on', 'yes', 'x', '', this.size(), this.number(), '%(a)', '%(b)%(b)', '%(a.b)', '%%', '%(', '%()', '%(%(a))', '%(name)']);
    if (r.chance(0.1)) value = Array.from({ length: r.range(2, 16) }, () => `%(${r.pick(['a', 'b', 'c', 'd'])})`).join('');
    return this.mutate(`${key}=${value}`);
  }

  topology(): string {
    const r = this.r;
    if (r.chance(0.4)) return this.number();
    const keys = ['cpus', 'sockets', 'cores', 'threads', 'maxcpus', 'bogus'];
    return this.mutate(Array.from({ length: r.range(1, 4) }, () => `${r.pick(keys)}=${this.number()}`).join(','));
  }

  /** Set when the last command line chained %(var) references in depth. */
  deepChain = 0;

  bhyveArgv(): string[] {
    const r = this.r;
    const argv: string[] = [];
    this.deepChain = 0;
    if (r.chance(0.01)) {
      // v0=%(v1)%(v1), v1=%(v2)%(v2), ...: each level doubles the expansion.
      const d = r.range(1, 18);
      this.deepChain = d;
      for (let i = 0; i < d; i++) argv.push('-o', `v${i}=%(v${i + 1})%(v${i + 1})`);
      // memory.size is read (expanded) while the command line is validated.
      argv.push('-o', `v${d}=xy`, '-o', 'memory.size=%(v0)', 'vm');
      return argv;
    }
    const n = r.range(0, 10);
    for (let i = 0; i < n; i++) {
      switch (r.below(20)) {
        case 0: case 1: case 2: argv.push('-s', this.slot()); break;
        case 3: argv.push('-l', this.mutate(r.pick(LPC_OPTS))); break;
        case 4: case 5: case 6: argv.push('-o', this.configOption()); break;
        case 7: argv.push('-m', this.size()); break;
        case 8: argv.push('-c', this.topology()); break;
        case 9: argv.push('-p', this.mutate(`${this.number()}:${this.number()}`)); break;
        case 10: argv.push('-U', this.mutate(r.pick(['12345678-1234-1234-1234-123456789abc', 'x', '']))); break;
        case 11: argv.push('-G', this.mutate(r.pick(['1234', 'w1234', '127.0.0.1:1234', ':', 'w']))); break;
        case 12: argv.push('-f', this.mutate(r.pick(['name=opt/x,string=hi', 'opt/y,file=/nonexistent', 'x', `${'n'.repeat(60)},string=a`, 'a,file=/dev/null']))); break;
        case 13: argv.push('-n', this.mutate(r.pick(['id=0,size=1G,cpus=0-1', 'id=1', 'id=x', 'id=0,domain_policy=bad']))); break;
        case 14: argv.push('-k', this.configFile()); break;
        case 15: argv.push(r.pick(['-a', '-A', '-C', '-D', '-e', '-H', '-I', '-P', '-S', '-u', '-w', '-W', '-x', '-Y', '-h', '-z', '--', '-'])); break;
        case 16: argv.push(this.mutate(r.pick(['-s', '-o', '-m', '-c', '-l']))); break;
        case 17: argv.push('-K', this.mutate('us')); break;
        default: argv.push(r.pick(['-Ho', '-so', '-m1G', '-c2']), this.configOption()); break;
      }
    }
    if (r.chance(0.9)) argv.push(this.mutate(r.pick(['vm', 'guest-1', 'a'.repeat(300), '.', '..', 'a/b', ''])));
    if (r.chance(0.05)) argv.push('extra');
    return argv;
  }

  /** A -k file of key=value lines (or a path that is not one). */
  configFile(): string {
    const r = this.r;
    if (r.chance(0.2)) return r.pick(['/nonexistent/x', '/', '/dev/null', '']);
    const p = path.join(scratchDir(), 'cfg');
    const lines = Array.from({ length: r.range(0, 8) }, () => r.pick(['# comment', '', 'novalue', '=x', this.configOption()]));
    fs.writeFileSync(p, lines.join(r.chance(0.9) ? '\n' : '\r\n'));
    return p;
  }

  bhyvectlArgv(): string[] {
    const r = this.r;
    const argv: string[] = [];
    const n = r.range(0, 6);
    for (let i = 0; i < n; i++) {
      const o = r.pick(BHYVECTL_OPTIONS);
      const flag = r.chance(0.1) ? o.flag.slice(0, r.range(0, o.flag.length)) : o.flag;
      const v = r.pick(['0', '0x10', '077', '18446744073709551615', '18446744073709551616', '-1', 'x', '', 'json', 'xml,pretty', 'text', this.number()]);
      if (o.arg !== undefined) {
        if (r.chance(0.5)) argv.push(`--${flag}=${this.mutate(v)}`); else argv.push(`--${flag}`, this.mutate(v));
      } else {
        argv.push(this.mutate(`--${flag}`));
      }
    }
    if (r.chance(0.3)) argv.push('--vm', this.mutate('vm'));
    if (r.chance(0.05)) argv.push(this.mutate(r.pick(['--', '-x', 'operand'])));
    return argv;
  }

  bhyveloadArgv(): string[] {
    const r = this.r;
    const argv: string[] = [];
    for (let i = r.range(0, 6); i > 0; i--) {
      switch (r.below(6)) {
        case 0: argv.push('-m', this.size()); break;
        case 1: argv.push('-d', this.mutate('/x.img')); break;
        case 2: argv.push('-e', this.mutate(r.pick(['a=b', '=b', 'a', 'a=']))); break;
        case 3: argv.push('-l', this.mutate('/boot/userboot.so')); break;
        case 4: argv.push(r.pick(['-C', '-S', '-h', '-c', '-x'])); break;
        default: argv.push(this.mutate(r.pick(['-m', '-d', '-e', '-l']))); break;
      }
    }
    if (r.chance(0.9)) argv.push(this.mutate('vm'));
    return argv;
  }
}

class BhyveArgsFuzz implements FuzzInstance {
  private readonly g: ArgFuzz;
  get lastOp(): string | undefined { return this.g.deepChain ? `nested %(var) expansion, depth ${this.g.deepChain}` : undefined; }
  private runs = 0;
  private parsed = 0;
  constructor(private readonly r: Rng) { this.g = new ArgFuzz(r); }
  step(): void {
    const r = this.r;
    switch (r.below(8)) {
      case 0: userErrorsOnly(() => parseMemorySize(this.g.size())); return;
      case 1: userErrorsOnly(() => parseCpuset(r.below(300), this.g.mutate(r.pick(['0', '0-3', '1,2', '3-1', '0-1023', '0-1024', 'x', '', '-', '1-', ',']))))
        ; void strtolFull(this.g.number()); return;
      case 2: {
        // getopt with random option strings.
        const optstring = this.g.mutate(r.pick(['ab:c', 'aehuwxACDHIPSWYk:f:o:p:G:c:s:m:l:K:U:r:n:', ':a', 'a::', '', '+a']));
        userErrorsOnly(() => getopt(this.g.bhyveArgv(), optstring));
        return;
      }
      default: {
        const argv = this.g.bhyveArgv();
        userErrorsOnly(() => {
          const res = parseBhyveArgs(argv);
          this.parsed++;
          if (res.kind === 'run') {
            this.runs++;
            dumpConfig(res.config);
            res.config.entries(); // every value expanded
          }
        });
      }
    }
  }
  stats(): Record<string, number> { return { 'command lines accepted': this.parsed, 'configs that would run': this.runs }; }
}

class CtlArgsFuzz implements FuzzInstance {
  private readonly g: ArgFuzz;
  private updates = 0;
  constructor(private readonly r: Rng) { this.g = new ArgFuzz(r); }
  step(): void {
    const r = this.r;
    if (r.chance(0.3)) {
      userErrorsOnly(() => parseBhyveloadArgs(this.g.bhyveloadArgv()));
      return;
    }
    userErrorsOnly(() => {
      const opts = parseBhyvectlArgs(this.g.bhyvectlArgv());
      const libxo = opts.get('libxo');
      // bhyvectlMain turns parseLibxo's RangeError into a UsageError.
      if (typeof libxo === 'string') { try { parseLibxo(libxo); } catch (e) { if (!(e instanceof RangeError)) throw e; } }
      const u = buildUpdate(opts);
      if (Object.keys(u).length) this.updates++;
      for (const [k, v] of opts) if (typeof v === 'string' && r.chance(0.2)) parseNumber(v, k, r.pick([8, 16, 32, 64]));
    });
  }
  stats(): Record<string, number> { return { 'register updates built': this.updates }; }
}

export const HOST_CONFIG_TARGETS: readonly FuzzTarget[] = [
  {
    name: 'bhyve-args',
    surface: 'bhyve command line: getopt, -s slot/legacy options, -l, -o and -k config (tree, %(var) expansion), -m sizes, -c topology, -p, -U, -G, -f, -n',
    create: (rng) => new BhyveArgsFuzz(rng),
    instanceOps: 5000,
  },
  {
    name: 'bhyvectl-args',
    surface: 'bhyvectl long options (prefixes, values, --set-* registers and descriptors, --libxo) and bhyveload options',
    create: (rng) => new CtlArgsFuzz(rng),
    instanceOps: 5000,
  },
];
