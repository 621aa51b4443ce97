// The one line between "the user can fix this" and "this is a bug".
//
// A UserError (or any subclass: ConfigError, UsageError, SysError,
// VmSetupError, ...) is something the user caused or can fix: a bad flag,
// a missing file, a host without /dev/kvm. The command prints its message
// as one line and exits with the error's status, or with the command's own
// status for user errors (bhyve 4, bhyvectl and bhyveload 1). Anything else
// that reaches a command's top level is a bug: it prints "internal error"
// and a hint to report it (cli/output.ts).

export class UserError extends Error {
  // Each subclass names itself the same way: the bundles are minified
  // without esbuild's keepNames (scripts/bundle.mjs), so a class's own
  // .name is not its source name there (test/unit/error-names.test.ts).
  override readonly name: string = 'UserError';
  /** Exit status when this error has its own (bhyve's usage errors: 1 or
   * EX_USAGE); undefined: the command's status for user errors. */
  readonly exitCode: number | undefined;

  constructor(message: string, opts: { exitCode?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.exitCode = opts.exitCode;
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

/** A failed system call reported by Node.js (fs, net: `code` and
 * `syscall` set), the counterpart of sys's SysError: the host's state, so
 * the user's to fix. */
export function isSystemCallError(e: unknown): e is Error & { code: string; syscall: string } {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'string' && typeof (e as { syscall?: unknown }).syscall === 'string';
}

/** strerror(3)'s text for the errors a named file most often meets. */
const FILE_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: 'No such file or directory', EACCES: 'Permission denied', EPERM: 'Operation not permitted',
  EISDIR: 'Is a directory', ENOTDIR: 'Not a directory', ELOOP: 'Too many levels of symbolic links',
  ENAMETOOLONG: 'File name too long', EMFILE: 'Too many open files', EIO: 'Input/output error',
};

/** A failed system call's reason as strerror(3) words ("No such file or
 * directory"), without Node's code, call and path ("ENOENT: no such file
 * or directory, open '/x'"); any other error's message. */
export function systemErrorText(e: unknown): string {
  if (!isSystemCallError(e)) return e instanceof Error ? e.message : String(e);
  const known = FILE_ERRORS[e.code];
  if (known) return known;
  // libuv's words: between "CODE: " and ", call".
  const m = /^[A-Z0-9_]+: (.*?), [a-z_0-9]+(?: '.*')?$/s.exec(e.message);
  const words = m ? m[1] : e.code;
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** `e` as a user error with `prefix` when it is one or a failed system
 * call; anything else (a bug) unchanged. */
export function userErrorWithPrefix(e: unknown, prefix: string): unknown {
  if (isUserError(e)) return new UserError(`${prefix}${e.message}`, { exitCode: e.exitCode, cause: e });
  if (isSystemCallError(e)) return new UserError(`${prefix}${e.message}`, { cause: e });
  return e;
}

/** The line printed for a bug, without the program name. */
export function internalErrorText(err: unknown): string {
  const e = err instanceof Error ? err : new Error(String(err));
  return `internal error: ${e.message.split('\n')[0]} (a bug: please report it, with the output of BHYVE_DEBUG=1)`;
}

/** One line for any error: the message of a user error, else the bug line. */
export function errorLine(err: unknown): string {
  return isUserError(err) ? err.message.split('\n')[0] : internalErrorText(err);
}
