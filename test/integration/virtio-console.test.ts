// virtio-console.rom on our bhyve: port 0 (the first port, `port1=`) is a
// UNIX socket the test connects to; the guest writes a line, the test
// answers with one, the guest prints it and exits 33. Also: a second client
// is turned away while the first is connected, and a socket path that
// already exists is one clear error with status 4.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bhyveArgs, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';

const skip = kvmUnavailable() ?? (fs.existsSync(rom('virtio-console')) ? undefined : 'virtio test guests are not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping virtio-console integration tests: ${skip}`);

async function waitFor(p: string): Promise<void> {
  for (let i = 0; i < 4000 && !fs.existsSync(p); i++) await new Promise((r) => setTimeout(r, 2));
}

/** The socket file appears at bind(), a moment before listen(): retry. */
async function connectRetry(p: string): Promise<net.Socket> {
  for (let i = 0; ; i++) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(p, () => { s.off('error', reject); resolve(s); });
        s.once('error', reject);
      });
    } catch (e) {
      if (i >= 200) throw e;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

describe.skipIf(skip !== undefined)('virtio-console on bhyve', () => {
  let tmp = '';
  beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vcon-int-')); });
  afterAll(() => { if (tmp) fs.rmSync(tmp, { recursive: true, force: true }); });

  it('a line out of port 0 and one back over the port socket', async () => {
    const sock = path.join(tmp, 'con.sock');
    const run = runBhyve(bhyveArgs(rom('virtio-console'), vmName('vcon'), {
      extra: ['-s', `4,virtio-console,port1=${sock},port2=${path.join(tmp, 'two.sock')}`],
    }), { timeout: 60_000 });
    await waitFor(sock);
    const c = await connectRetry(sock);
    let got = '';
    const line = new Promise<string>((resolve, reject) => {
      c.on('data', (d) => {
        got += d.toString('latin1');
        if (got.includes('\n')) { c.write('pong from the host\n'); resolve(got); }
      });
      c.on('error', reject);
    });
    // A second client is closed at once (one connection per port, as bhyve).
    const second = net.connect(sock);
    const secondClosed = await new Promise<boolean>((r) => { second.on('close', () => r(true)); second.on('error', () => undefined); });
    expect(secondClosed).toBe(true);
    const r = await run;
    c.destroy();
    expect(await Promise.race([line, Promise.resolve(`(no line) ${r.stdout}${r.stderr}`)])).toBe('hello from virtio-console guest\n');
    expect(r.stdout, `${r.stdout}${r.stderr}`).toMatch(/pci 00:04\.0 1af4:10(03|43) class 070000 virtio-console\r\n/);
    expect(r.stdout).toContain("virtio-console: received 'pong from the host'\r\n");
    expect(r.exitCode).toBe(33);
    expect(fs.existsSync(sock)).toBe(false); // removed at exit
  });

  it('a socket path that already exists is one line and status 4', async () => {
    const p = path.join(tmp, 'taken');
    fs.writeFileSync(p, '');
    const r = await runBhyve(bhyveArgs(rom('virtio-console'), vmName('vcon'), { extra: ['-s', `4,virtio-console,port1=${p}`] }));
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toContain(`bhyve: virtio-console at pci slot 0:4:0: cannot create port port1: ${p} already exists`);
  });
});
