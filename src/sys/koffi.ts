// koffi, loaded once per thread the short way where it is safe. koffi's
// own loader (its index.cjs) reads node's ELF header to tell glibc from
// musl and probes its candidate paths on every load, 10-20 ms a thread on
// this host, in every thread that makes a system call. On glibc Linux its
// prebuilt native module is one known file of its platform package; this
// loads that file, checked against the package's version, and anything
// else (musl, another layout) goes through koffi's loader. The native
// module is the API koffi exports (its index.cjs adds deprecated aliases).
// BHYVE_KOFFI_LOADER=1 always uses koffi's loader (for comparison).

import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { threadpoolSize } from './threadpool-size.js';
import type * as KoffiModule from 'koffi';

export type Koffi = typeof KoffiModule;

let loaded: Koffi | undefined;
/** The package koffi's native module was loaded from (its real path). */
let nativePackage: string | undefined;

export function koffi(): Koffi {
  return (loaded ??= allowPoolCalls(loadKoffi()));
}

/** koffi refuses more asynchronous calls in flight than max_async_calls
 * (256 by default: "Too many asynchronous calls are running"), and bhyve
 * keeps one blocked on every thread of libuv's pool at times (finding and
 * confining the pool: up to 1024 threads, 8 + vCPUs - 1 by bin/bhyve) as
 * well as each AP's KVM_RUN: room for twice the pool. */
function allowPoolCalls(k: Koffi): Koffi {
  const want = Math.min(4096, 2 * threadpoolSize() + 64);
  const config = k.config();
  if ((config.max_async_calls ?? 0) < want) k.config({ ...config, max_async_calls: want });
  return k;
}

/** The directory of the package whose native module koffi() loaded in
 * this thread, or undefined (not loaded yet, or koffi's own loader found
 * it). The sandbox
 * lets every thread read it: a worker started later loads it again, and
 * the platform package may lie outside bhyve's tree (a node_modules that
 * is a link elsewhere, as pnpm makes them). */
export function koffiNativeDirectory(): string | undefined {
  return nativePackage;
}

function loadKoffi(): Koffi {
  const require = createRequire(import.meta.url);
  if (process.platform === 'linux' && process.env.BHYVE_KOFFI_LOADER !== '1') {
    const pkg = `@koromix/koffi-linux-${process.arch}`;
    try {
      const native = require(`${pkg}/linux_${process.arch}/koffi.node`) as Koffi & { version?: string };
      if (native.version === (require(`${pkg}/package.json`) as { version: string }).version) {
        nativePackage = fs.realpathSync(path.dirname(require.resolve(`${pkg}/package.json`)));
        return native;
      }
    } catch {
      // not glibc, or not this layout
    }
  }
  return require('koffi') as Koffi;
}
