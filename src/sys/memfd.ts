// memfd_create(2): anonymous memory with a file descriptor, for memory a
// process shares by passing the descriptor (a vfio-user server's
// mmap-able BAR).

import fs from 'node:fs';
import { errno, libcFunc, SysError } from './libc.js';

const memfdCreateFn = libcFunc('int memfd_create(const char *name, unsigned int flags)');
const MFD_CLOEXEC = 1;

/** A new memfd of `size` zero bytes. */
export function memfd(name: string, size: number): number {
  const fd = memfdCreateFn(name, MFD_CLOEXEC) as number;
  if (fd < 0) throw new SysError('memfd_create', errno());
  try {
    fs.ftruncateSync(fd, size);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}
