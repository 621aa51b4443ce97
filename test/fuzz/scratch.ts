// Scratch files of a fuzz run (disk images, boot ROM and VARS files,
// config files, control sockets) in one directory, removed when the run
// ends (runTarget), also in worker threads and test workers, where exit
// handlers do not reliably run.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

let dir: string | undefined;

export function scratchPath(name: string): string {
  dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-fuzz-'));
  return path.join(dir, name);
}

export function removeScratch(): void {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = undefined;
}
