// The sandbox of bhyve-vfio-user (cli/bhyve-vfio-user-main.ts), the same
// as bhyve's (sandbox.ts): once the server's socket is listening and its
// device model has opened its backends, no_new_privs, no capabilities,
// Landlock and the seccomp allowlist. A served device model is as exposed
// to a hostile guest as one in bhyve (its client's guest drives it), so it
// is held as tightly.
//
// What it may still touch: its code (a worker thread loads modules), the
// disk images of the model (a block backend may reopen its image), and the
// socket's directory, to remove the socket when it ends. It accepts its
// next client on the socket it already listens on (accept4), maps the
// clients' DMA files (mmap of a received descriptor), and opens nothing
// new: no new sockets, no exec, no files created.

import path from 'node:path';
import type { ConfigTree } from '../../config/tree.js';
import { FS, landlockStatus } from './landlock.js';
import { codeDirectories, diskImages, type SandboxPlan } from './sandbox.js';

/** The plan for a vfio-user server at `socketPath` serving the model of
 * `model` (its slot configuration; undefined for the built-in test
 * devices); undefined with security.sandbox=false in `options`. */
export function serverSandboxPlan(options: ConfigTree, socketPath: string, model?: ConfigTree): SandboxPlan | undefined {
  if (!options.getBool('security.sandbox', true)) return undefined;
  const ll = landlockStatus();
  const notes: string[] = [];
  if (!('abi' in ll)) notes.push(`no Landlock: ${ll.missing}; file access is limited by the seccomp filter only (no new files, no exec)`);
  return {
    log: options.getBool('security.sandbox_log', false),
    landlockAbi: 'abi' in ll ? ll.abi : 0,
    landlockRules: [
      ...codeDirectories().map((p) => ({ path: p, access: FS.READ_FILE })),
      { path: path.dirname(path.resolve(socketPath)), access: FS.REMOVE_FILE },
      ...(model ? diskImages(model) : []),
    ],
    sockets: false,
    notes,
  };
}
