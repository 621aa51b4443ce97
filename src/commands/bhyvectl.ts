// The bhyvectl(8) command for oclif. bhyvectl keeps getopt_long(3)
// semantics (bhyvectl.c), so oclif parses nothing here: the raw argv goes to
// bhyvectlMain().

import { Command } from '@oclif/core';

import { bhyvectlMain } from '../cli/bhyvectl-main.js';

export default class Bhyvectl extends Command {
  static override description = 'control a virtual machine';
  static override usage = 'bhyvectl --vm=NAME [--cpu=N] [--create] [--destroy] [--get-all] [--get-stats] [--inject-nmi] [--force-reset] [--force-poweroff] [--libxo=json|xml] [...]';
  static override strict = false;

  async run(): Promise<void> {
    process.exitCode = await bhyvectlMain(this.argv);
  }
}
