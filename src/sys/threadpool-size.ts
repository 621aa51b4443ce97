// The size of libuv's threadpool, as libuv reads UV_THREADPOOL_SIZE once
// at its first use (bin/bhyve sets it from -c before anything runs). On its
// own so that sys/koffi.ts can size koffi's limit on calls in flight
// without importing the pool's other helpers (which use koffi).

/** The pool's size as libuv read it (bin/bhyve sets it before first use). */
export function threadpoolSize(): number {
  const v = process.env.UV_THREADPOOL_SIZE;
  if (v === undefined) return 4;
  // As libuv reads it: atoi, at least 1, at most 1024.
  const n = parseInt(v, 10);
  return Number.isNaN(n) || n === 0 ? 1 : n < 0 ? 1024 : Math.min(n, 1024);
}
