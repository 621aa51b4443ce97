// bhyvectl(8): validates its options, then refuses (operating on existing
// VM objects is a later feature).

import { Command } from '@oclif/core';

import { BHYVECTL_MODIFIERS, BHYVECTL_OPTIONS } from '../config/bhyvectl-options.js';
import { UsageError } from '../config/errors.js';
import { reportError } from '../cli/output.js';
import { longFlags, parseErrorLine } from '../cli/oclif-util.js';

const NUMERIC = /^(0[xX][0-9a-fA-F]+|-?\d+)$/;

export default class Bhyvectl extends Command {
  static override description = 'control a virtual machine';
  static override usage = 'bhyvectl --vm=NAME [--cpu=N] [--create] [--destroy] [--get-stats] [--inject-nmi] [--force-reset] [--force-poweroff] [...]';
  static override strict = true;
  static override flags = longFlags(BHYVECTL_OPTIONS);

  async run(): Promise<void> {
    try {
      let parsed;
      try {
        parsed = await this.parse(Bhyvectl);
      } catch (err) {
        this.parsed = true; // we report the error ourselves; no "did not parse" warning
        throw new UsageError(parseErrorLine(err), 1);
      }
      const flags = parsed.flags as Record<string, string | boolean | undefined>;
      if (parsed.argv.length > 0) throw new UsageError(`unexpected operand: ${parsed.argv[0]}`, 1);
      const vm = flags.vm;
      if (typeof vm !== 'string' || vm === '') throw new UsageError('missing --vm=NAME', 1);
      const cpu = flags.cpu;
      if (typeof cpu === 'string' && !/^\d+$/.test(cpu)) throw new UsageError(`invalid --cpu value '${cpu}'`, 1);
      for (const o of BHYVECTL_OPTIONS) {
        const v = flags[o.flag];
        if (typeof v !== 'string') continue;
        if ((o.flag.startsWith('set-') && o.flag !== 'set-mem') || o.flag.startsWith('desc-') || o.flag === 'rtc-nvram-offset'
          || o.flag === 'get-gpa-pmap' || o.flag === 'assert-lapic-lvt') {
          if (!NUMERIC.test(v)) throw new UsageError(`invalid value '${v}' for --${o.flag}`, 1);
        }
        if (o.flag === 'set-mem' && !/^\d+$/.test(v)) throw new UsageError(`invalid value '${v}' for --set-mem (MiB)`, 1);
        if (o.flag === 'setcap' && v !== '0' && v !== '1') throw new UsageError(`invalid value '${v}' for --setcap (0 or 1)`, 1);
      }
      const ops = BHYVECTL_OPTIONS.filter((o) => !BHYVECTL_MODIFIERS.has(o.flag) && flags[o.flag] !== undefined && flags[o.flag] !== false);
      const what = ops.length ? ops.map((o) => `--${o.flag}`).join(' ') : `opening VM '${vm}'`;
      process.stderr.write(`bhyvectl: not supported yet: ${what}\n`);
      process.exitCode = 1;
    } catch (err) {
      process.exitCode = reportError('bhyvectl', err, [], 'see bhyvectl(8)');
    }
  }
}
