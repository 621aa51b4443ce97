// Starts bin/bhyve-vfio-user for a test and waits until its socket exists.
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { ROOT } from './bhyve.js';

export const VFIO_USER_SERVER = path.join(ROOT, 'bin/bhyve-vfio-user');

export interface RunningServer {
  socket: string;
  child: ResultPromise;
  /** Its stderr so far. */
  log(): string;
  /** Waits for it to exit (after its client went away) and returns its status and log. */
  done(): Promise<{ status: number; log: string }>;
}

export async function startVfioUserServer(socket: string, args: string[] = ['-1', '-d', 'test-dma']): Promise<RunningServer> {
  const child = execa('nice', [process.execPath, VFIO_USER_SERVER, ...args, socket], { reject: false, stdin: 'ignore', timeout: 180_000, encoding: 'utf8' });
  let log = '';
  child.stderr!.on('data', (b: Buffer) => { log += b.toString(); });
  const t0 = Date.now();
  while (!fs.existsSync(socket)) {
    if (Date.now() - t0 > 30_000 || child.exitCode !== null) throw new Error(`bhyve-vfio-user did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    socket, child, log: () => log,
    async done() { const r = await child; return { status: r.exitCode ?? -1, log }; },
  };
}
