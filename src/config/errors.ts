// Errors a user can cause on the command line. Each carries the exit status
// bhyve(8) uses for it: usage(1) -> 1, errx(EX_USAGE) -> 64, errx(4) -> 4.

import { ConfigError } from './tree.js';

export { ConfigError };

/** sysexits(3) EX_USAGE, used by bhyve's errx(EX_USAGE, ...) calls. */
export const EX_USAGE = 64;

/** A command-line error with the exit status bhyve gives it. */
export class UsageError extends ConfigError {
  override readonly name: string = 'UsageError';
  /** True when bhyve would print its usage text (usage(1)). */
  readonly showUsage: boolean;
  constructor(message: string, exitCode = EX_USAGE, showUsage = exitCode === 1) {
    super(message, { exitCode });
    this.showUsage = showUsage;
  }
}
