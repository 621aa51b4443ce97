#!/usr/bin/env node
// Compiles native/*.c into dist/native/*.so (npm run build runs it): the
// loop waker (native/loop-waker.c, src/sys/loop-waker.ts), which lets vCPU 0
// run on the main thread, and frame batches (native/net-batch.c,
// src/sys/net-batch.ts), which write a queueful of frames by one call.
// Without a C compiler the build goes on and says so: bhyve then runs vCPU 0
// on a thread of its own (vcpu.bsp_model) and sends frame by frame.
import { execa } from 'execa';
import { mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = join(ROOT, 'dist', 'native');
const CC = process.env.CC ?? 'cc';
/** What bhyve does without each library. */
const WITHOUT = {
  'loop-waker.c': 'vCPU 0 will run on a thread of its own',
  'net-batch.c': 'network devices will send frame by frame',
};

mkdirSync(OUT, { recursive: true });
for (const file of readdirSync(join(ROOT, 'native')).filter((f) => f.endsWith('.c'))) {
  const out = join(OUT, file.replace(/\.c$/, '.so'));
  try {
    await execa(CC, ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', '-o', out, join(ROOT, 'native', file), '-lpthread']);
  } catch (e) {
    if (e.code === 'ENOENT') {
      process.stderr.write(`build-native: no C compiler (${CC}): ${file} not built (${WITHOUT[file] ?? 'its users fall back'}; apt-get install gcc)\n`);
      continue;
    }
    process.stderr.write(`build-native: ${e.shortMessage ?? e.message}\n${e.stderr ?? ''}\n`);
    process.exit(1);
  }
}
