// The bhyveload(8) command for oclif. bhyveload keeps getopt(3) semantics
// (bhyveload.c), so oclif parses nothing here: the raw argv goes to
// bhyveloadMain().

import { Command } from '@oclif/core';

import { BHYVELOAD_USAGE } from '../config/bhyveload-options.js';
import { bhyveloadMain } from '../cli/bhyveload-main.js';

export default class Bhyveload extends Command {
  static override description = 'load a guest kernel into a virtual machine';
  static override usage = BHYVELOAD_USAGE.replace(/^usage: /, '').trim();
  static override strict = false;

  async run(): Promise<void> {
    process.exitCode = await bhyveloadMain(this.argv);
  }
}
