// How the command-line tools end: one line on stderr for anything a user
// can cause, "internal error" (stack only with BHYVE_DEBUG) for the rest.

import { ConfigError } from '../config/tree.js';
import { exitCodeOf, UsageError } from '../config/errors.js';

/** Writes to a stream and resolves once the data is flushed. */
export function writeOut(stream: NodeJS.WriteStream, text: string): Promise<void> {
  return new Promise((resolve) => {
    if (text === '') { resolve(); return; }
    stream.write(text, () => resolve());
  });
}

/** The one-line message for an error a user caused, or undefined for bugs. */
export function userErrorLine(
  prog: string, err: unknown, userErrors: ReadonlyArray<new (...a: never[]) => Error> = [], usageHint = `see ${prog} -h for usage`,
): string | undefined {
  if (err instanceof UsageError && err.showUsage) return `${prog}: ${err.message} (${usageHint})`;
  if (err instanceof ConfigError || userErrors.some((c) => err instanceof c)) {
    return `${prog}: ${(err as Error).message.split('\n')[0]}`;
  }
  return undefined;
}

/** Reports an error on stderr (one line) and returns the exit status for it. */
export function reportError(
  prog: string, err: unknown, userErrors: ReadonlyArray<new (...a: never[]) => Error> = [], usageHint?: string,
): number {
  const line = userErrorLine(prog, err, userErrors, usageHint);
  if (line !== undefined) {
    process.stderr.write(`${line}\n`);
    return exitCodeOf(err);
  }
  const e = err instanceof Error ? err : new Error(String(err));
  process.stderr.write(`${prog}: internal error: ${e.message.split('\n')[0]}\n`);
  if (process.env.BHYVE_DEBUG) process.stderr.write(`${e.stack ?? ''}\n`);
  return 4;
}
