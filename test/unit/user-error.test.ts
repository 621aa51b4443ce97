// One user-error type: any UserError (ConfigError, UsageError, SysError,
// LoaderError, ...) ends a command with one line and its status; anything
// else, a RangeError included, is a bug: "internal error" and a hint.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { reportError } from '../../src/cli/output.js';
import { UsageError } from '../../src/config/errors.js';
import { ConfigError } from '../../src/config/tree.js';
import { LoaderError } from '../../src/loader/errors.js';
import { SysError } from '../../src/sys/libc.js';
import fs from 'node:fs';
import { errorLine, systemErrorText, UserError, userErrorWithPrefix } from '../../src/user-error.js';

function report(prog: string, err: unknown, userStatus?: number): { status: number; stderr: string } {
  let stderr = '';
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => { stderr += String(s); return true; });
  try {
    return { status: reportError(prog, err, userStatus), stderr };
  } finally {
    spy.mockRestore();
  }
}

afterEach(() => { delete process.env.BHYVE_DEBUG; });

describe('reportError', () => {
  it('a user error is one line with the command\'s status, or its own', () => {
    expect(report('bhyve', new ConfigError('pci slot 0:3:0: unknown device "x"\nsecond line'))).toEqual({
      status: 4, stderr: 'bhyve: pci slot 0:3:0: unknown device "x"\n',
    });
    expect(report('bhyveload', new LoaderError('kernel too big'), 1)).toEqual({ status: 1, stderr: 'bhyveload: kernel too big\n' });
    expect(report('bhyve', new SysError('open /dev/kvm', 13))).toEqual({ status: 4, stderr: 'bhyve: open /dev/kvm: Permission denied\n' });
    expect(report('bhyve', new UsageError('missing vmname', 1))).toEqual({ status: 1, stderr: 'bhyve: missing vmname (see bhyve -h for usage)\n' });
    expect(report('bhyve', new UsageError('invalid memsize', 64)).status).toBe(64);
  });

  it('anything else is a bug, a RangeError too: internal error, a hint to report it, status 4', () => {
    for (const e of [new RangeError('PIRQ pin 9 out of range 1-8'), new TypeError('x is undefined'), 'thrown string']) {
      const r = report('bhyve', e, 1);
      expect(r.status).toBe(4);
      expect(r.stderr).toMatch(/^bhyve: internal error: (PIRQ pin 9 out of range 1-8|x is undefined|thrown string) \(a bug: please report it, with the output of BHYVE_DEBUG=1\)\n$/);
    }
    process.env.BHYVE_DEBUG = '1';
    expect(report('bhyve', new RangeError('boom')).stderr).toMatch(/internal error: boom.*\nRangeError: boom\n\s+at /);
  });
});

describe('errors crossing layers', () => {
  it('errorLine: the message of a user error, the bug line otherwise', () => {
    expect(errorLine(new UserError('no disk'))).toBe('no disk');
    expect(errorLine(new Error('oops'))).toMatch(/^internal error: oops \(a bug/);
  });

  it('userErrorWithPrefix names the device for user errors and failed system calls, leaves bugs alone', () => {
    const enoent = Object.assign(new Error("ENOENT: no such file or directory, open '/x'"), { code: 'ENOENT', syscall: 'open' });
    const a = userErrorWithPrefix(enoent, 'com1: ');
    expect(a).toBeInstanceOf(UserError);
    expect((a as Error).message).toBe("com1: ENOENT: no such file or directory, open '/x'");
    const b = userErrorWithPrefix(new UsageError('bad', 64), 'p: ');
    expect(b).toMatchObject({ message: 'p: bad', exitCode: 64 });
    const bug = new RangeError('bug');
    expect(userErrorWithPrefix(bug, 'p: ')).toBe(bug);
  });

  it('systemErrorText: strerror words for a failed file call, without Node\'s code, call and path', () => {
    const caught = (f: () => unknown): unknown => { try { f(); } catch (e) { return e; } return undefined; };
    expect(systemErrorText(caught(() => fs.readFileSync('/nonexistent-file')))).toBe('No such file or directory');
    expect(systemErrorText(caught(() => fs.readFileSync('/')))).toBe('Is a directory');
    // Outside the table: libuv's words, capitalized.
    const notEmpty = Object.assign(new Error("ENOTEMPTY: directory not empty, rmdir '/x'"), { code: 'ENOTEMPTY', syscall: 'rmdir' });
    expect(systemErrorText(notEmpty)).toBe('Directory not empty');
    expect(systemErrorText(new Error('plain'))).toBe('plain');
  });
});
