// Issue 9 defect 3 without KVM: the run lock is an open-file-description
// lock, so two opens conflict even inside one process, nobody's PID is
// consulted, closing the holder frees it at once, and a VM directory that
// goes away under a waiting locker is reported as gone, not locked.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { lockHeld, VmLock } from '../../src/vmm/vm-lock.js';
import { VmObject } from '../../src/vmm/vm-object.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vm-lock-unit-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('VM run lock', () => {
  it('one holder at a time; free as soon as the holder lets go', () => {
    const dir = path.join(tmp, 'a');
    fs.mkdirSync(dir, { mode: 0o700 });
    expect(lockHeld(dir)).toBe(false);
    const first = VmLock.tryAcquire(dir);
    expect(first).toBeInstanceOf(VmLock);
    expect(lockHeld(dir)).toBe(true);
    expect(VmLock.tryAcquire(dir)).toBe('busy');
    (first as VmLock).release();
    expect(lockHeld(dir)).toBe(false);
    const second = VmLock.tryAcquire(dir);
    expect(second).toBeInstanceOf(VmLock);
    (second as VmLock).release();
  });

  it('a bhyve.pid naming a live process does not make a VM running', () => {
    const root = path.join(tmp, 'run');
    VmObject.create('vm', root).unlock();
    fs.writeFileSync(path.join(root, 'vm', 'bhyve.pid'), `${process.pid}\n`);
    const obj = VmObject.open('vm', root);
    expect(obj.runningPid()).toBeUndefined();
    const held = VmObject.acquire('vm', 2 * 1024 * 1024, root);
    expect(VmObject.open('vm', root).runningPid()).toBe(process.pid); // named by the file, running by the lock
    expect(() => VmObject.acquire('vm', 2 * 1024 * 1024, root)).toThrow(`VM 'vm' is already running (bhyve pid ${process.pid})`);
    held.destroy();
    expect(fs.existsSync(path.join(root, 'vm'))).toBe(false);
  });

  it('creates a new VM directory with its lock already held', () => {
    const root = path.join(tmp, 'run2');
    const obj = VmObject.acquire('fresh', 2 * 1024 * 1024, root);
    expect(obj.createdHere).toBe(true);
    expect(lockHeld(path.join(root, 'fresh'))).toBe(true);
    expect(fs.readdirSync(root)).toEqual(['fresh']); // no temporary name left
    obj.destroy();
    expect(fs.readdirSync(root)).toEqual([]);
  });

  it('a directory destroyed under a locker is gone, not locked', () => {
    const dir = path.join(tmp, 'b');
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.rmSync(dir, { recursive: true });
    expect(VmLock.tryAcquire(dir)).toBe('gone');
  });
});
