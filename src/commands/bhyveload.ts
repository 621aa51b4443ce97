// bhyveload(8): validates its options, then refuses (loading FreeBSD kernels
// through userboot is a later feature).

import { statSync } from 'node:fs';

import { Args, Command, Flags } from '@oclif/core';

import { BHYVELOAD_USAGE } from '../config/bhyveload-options.js';
import { ConfigError, UsageError } from '../config/errors.js';
import { parseMemorySize } from '../config/size.js';
import { reportError } from '../cli/output.js';
import { parseErrorLine } from '../cli/oclif-util.js';

function requirePath(path: string, what: string, kind: 'file' | 'dir' | 'any'): void {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new ConfigError(`${what} ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'No such file or directory' : (e as Error).message}`);
  }
  if (kind === 'dir' && !st.isDirectory()) throw new ConfigError(`${what} ${path}: Not a directory`);
  if (kind === 'file' && st.isDirectory()) throw new ConfigError(`${what} ${path}: Is a directory`);
}

export default class Bhyveload extends Command {
  static override description = 'load a FreeBSD guest kernel into a virtual machine';
  static override usage = BHYVELOAD_USAGE.replace(/^usage: /, '');
  static override strict = true;
  static override args = { vmname: Args.string({ required: false, description: 'virtual machine name' }) };
  static override flags = {
    console: Flags.string({ char: 'c', description: 'tty device for the loader console, or stdio' }),
    disk: Flags.string({ char: 'd', multiple: true, multipleNonGreedy: true, description: 'guest boot disk image' }),
    env: Flags.string({ char: 'e', multiple: true, multipleNonGreedy: true, description: 'loader environment variable name=value' }),
    host: Flags.string({ char: 'h', description: 'host directory used as the guest boot file system root' }),
    loader: Flags.string({ char: 'l', description: 'alternative OS loader' }),
    memory: Flags.string({ char: 'm', description: 'guest memory size' }),
    wired: Flags.boolean({ char: 'S', description: 'wire guest memory' }),
    core: Flags.boolean({ char: 'C', description: 'include guest memory in core files' }),
  };

  async run(): Promise<void> {
    try {
      let parsed;
      try {
        parsed = await this.parse(Bhyveload);
      } catch (err) {
        this.parsed = true; // we report the error ourselves; no "did not parse" warning
        throw new UsageError(parseErrorLine(err), 1);
      }
      const { flags, argv } = parsed;
      if (argv.length === 0) throw new UsageError('missing vmname', 1);
      if (argv.length > 1) throw new UsageError(`too many operands: ${argv.slice(1).join(' ')}`, 1);
      if (flags.memory !== undefined) parseMemorySize(flags.memory);
      for (const d of flags.disk ?? []) requirePath(d, 'disk', 'file');
      if (flags.host !== undefined) requirePath(flags.host, 'host path', 'dir');
      if (flags.loader !== undefined) requirePath(flags.loader, 'loader', 'file');
      if (flags.console !== undefined && flags.console !== 'stdio') requirePath(flags.console, 'console', 'any');
      for (const e of flags.env ?? []) {
        if (!e.includes('=')) throw new UsageError(`invalid environment variable '${e}' (use -e name=value)`, 1);
      }
      process.stderr.write('bhyveload: not supported yet: loading kernels\n');
      process.exitCode = 1;
    } catch (err) {
      const code = reportError('bhyveload', err, [], 'see bhyveload(8)');
      process.exitCode = code === 4 ? 1 : code;
    }
  }
}
