// How the command-line tools end: one line on stderr for a user error
// (user-error.ts), "internal error" and a hint to report it for anything
// else (the stack only with BHYVE_DEBUG).

import { UsageError } from '../config/errors.js';
import { internalErrorText, isUserError } from '../user-error.js';

/** Writes to a stream and resolves once the data is flushed. */
export function writeOut(stream: NodeJS.WriteStream, text: string): Promise<void> {
  return new Promise((resolve) => {
    if (text === '') { resolve(); return; }
    stream.write(text, () => resolve());
  });
}

/**
 * Reports an error on stderr (one line) and returns the exit status:
 * the error's own, else `userStatus` for a user error, else 4.
 */
export function reportError(prog: string, err: unknown, userStatus = 4, usageHint = `see ${prog} -h for usage`): number {
  if (isUserError(err)) {
    const line = err instanceof UsageError && err.showUsage
      ? `${err.message} (${usageHint})`
      : err.message.split('\n')[0];
    process.stderr.write(`${prog}: ${line}\n`);
    return err.exitCode ?? userStatus;
  }
  process.stderr.write(`${prog}: ${internalErrorText(err)}\n`);
  if (process.env.BHYVE_DEBUG) process.stderr.write(`${(err instanceof Error && err.stack) || String(err)}\n`);
  return 4;
}
