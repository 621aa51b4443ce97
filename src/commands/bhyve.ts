// The bhyve(8) command for oclif. bhyve keeps getopt(3) semantics (grouped
// flags, first operand ends the options), so oclif parses nothing here: the
// raw argv goes to bhyveMain().

import { Command } from '@oclif/core';

import { bhyveMain } from '../cli/bhyve-main.js';

export default class Bhyve extends Command {
  static override description = 'run a virtual machine (FreeBSD bhyve(8) on Linux KVM)';
  static override strict = false;
  static override usage = 'bhyve [-aCDeHhPSuWwxY] [-c cpus] [-k config_file] [-l lpc] [-m mem] [-o var=value] [-p vcpu:hostcpu] [-s pci] [-U uuid] vmname';

  async run(): Promise<void> {
    process.exitCode = await bhyveMain(this.argv);
  }
}
