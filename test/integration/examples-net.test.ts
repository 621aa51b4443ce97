// examples/vm networking, as root in a temporary network namespace: a
// switch (a Linux bridge) with one tap per VM carries ARP and ICMP between
// two guests (virtio-net.rom as 10.0.2.15 and in its peer mode as
// 10.0.2.2), and a VM with netns=yes gets a network namespace of its own
// holding its tap, invisible from the host's. Also the datastore without
// btrfs: snapshot and clone by copying.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUESTS } from '../support/bhyve.js';
import { MODE, romWith } from '../support/guest-rom.js';
import { Site, TEST_FLAGS, conf, examplesUnavailable, until, vmLog } from '../support/vm-manager.js';

const skip = examplesUnavailable();
// Network namespaces are named vm-NAME host-wide: a name of this run's own.
const ISO = `iso${process.pid}`;
if (skip) console.warn(`skipping examples/vm network tests: ${skip}`);

describe.skipIf(skip !== undefined)('examples/vm networking', { timeout: 120_000 }, () => {
  let site: Site;
  let dir: string;
  const links = (ns?: string) => spawnSync('ip', [...(ns ? ['-n', ns] : []), '-o', 'link'], { encoding: 'utf8' }).stdout;

  beforeAll(async () => {
    site = new Site();
    dir = site.vmDir;
    await site.ok(['init']);
    const tpl = (name: string, o: Record<string, string | number>) =>
      fs.writeFileSync(path.join(dir, '.templates', `${name}.conf`), conf({ memory: '64M', console: 'log', bhyve_options: TEST_FLAGS, ...o }));
    tpl('client', { bootrom: path.join(GUESTS, 'virtio-net.rom'), network0_type: 'virtio-net', network0_switch: 'lan' });
    tpl('peer', { bootrom: romWith(site.tmp, 'virtio-net', MODE.POLL, 0x40000000), network0_type: 'virtio-net', network0_switch: 'lan' });
    // MODE_HOLD: after the ping the guest waits on COM1.
    const held = romWith(site.tmp, 'virtio-net', MODE.HOLD, 0);
    tpl('isolated', { bootrom: held, netns: 'yes', network0_type: 'virtio-net', network0_addr: '10.0.2.2/24', stop_timeout: 5 });
  });
  afterAll(() => site?.cleanup());

  it('a switch is a bridge; it carries frames between two VMs, one tap each', async () => {
    await site.ok(['switch', 'create', 'lan']);
    expect(await site.ok(['switch', 'list'])).toMatch(/^lan\s+vm-lan\s+-$/m);
    expect(site.sh('ip -d -o link show vm-lan')).toMatch(/bridge/);
    await site.ok(['create', '-t', 'peer', 'peer']);
    await site.ok(['create', '-t', 'client', 'client']);
    await site.ok(['start', 'peer']);
    await until('the peer to wait', () => vmLog(dir, 'peer').includes('peer 10.0.2.2 waiting'), 60_000, () => vmLog(dir, 'peer'));
    expect(site.sh('ip -o link show master vm-lan')).toMatch(/^\d+: tap0: .* master vm-lan .*state UP/m);
    const r = await site.vm(['start', '-f', 'client']);
    expect(r.exitCode).toBe(33);
    await until('the peer to stop', () => vmLog(dir, 'peer').includes('stopped'), 60_000, () => vmLog(dir, 'peer'));
    // start -f: the console (console=log) on standard output.
    const peerMac = vmLog(dir, 'peer').match(/virtio-net: mac (\S+)\r\n/)![1];
    expect(r.stdout).toContain(`virtio-net: 10.0.2.2 is at ${peerMac}\r\n`);
    expect(r.stdout).toMatch(/virtio-net: ping reply from 10.0.2.2 OK\r?$/);
    expect(vmLog(dir, 'peer')).toContain('virtio-net: answered ping from 10.0.2.15\r\n');
    expect(vmLog(dir, 'peer')).toMatch(/exited with status 33\n/);
    // The taps went with the VMs; the switch stays.
    expect(site.sh('ip -o link')).not.toMatch(/tap\d/);
    await site.ok(['switch', 'destroy', 'lan']);
    expect(site.sh('ip -o link')).not.toContain('vm-lan');
  });

  it('a VM with netns=yes has its own network namespace: its tap is there and nowhere else', async () => {
    await site.ok(['create', '-t', 'isolated', ISO]);
    await site.ok(['start', ISO]);
    await until('the ping', () => vmLog(dir, ISO).includes('ping reply from 10.0.2.2 OK'), 60_000, () => vmLog(dir, ISO));
    const inside = links(`vm-${ISO}`);
    expect(inside).toMatch(/^\d+: lo: /m);
    const tap = inside.match(/^\d+: (tap0): /m)![1];
    expect(inside.trim().split('\n')).toHaveLength(2);
    expect(spawnSync('ip', ['-n', `vm-${ISO}`, '-o', 'addr', 'show', tap], { encoding: 'utf8' }).stdout).toContain('10.0.2.2/24');
    expect(site.sh('ip -o link')).not.toContain(tap);
    // The guest never enabled ACPI: SIGTERM ends bhyve (143), as bhyve's does.
    await site.ok(['stop', ISO]);
    expect(vmLog(dir, ISO)).toMatch(/exited with status 143\n.*stopped\n$/);
    expect(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout).not.toMatch(new RegExp(`^vm-${ISO}\\b`, 'm'));
  });

  it('without btrfs, snapshot, rollback and clone copy the directory', async () => {
    expect(await site.ok(['info', 'client'])).toContain('storage: directory');
    await site.ok(['snapshot', 'client@one']);
    expect(fs.readFileSync(path.join(dir, '.snapshots/client@one/client.conf'), 'utf8'))
      .toBe(fs.readFileSync(path.join(dir, 'client/client.conf'), 'utf8'));
    fs.appendFileSync(path.join(dir, 'client/client.conf'), 'cpu="2"\n');
    await site.ok(['rollback', 'client@one']);
    expect(fs.readFileSync(path.join(dir, 'client/client.conf'), 'utf8')).not.toContain('cpu="2"');
    await site.ok(['clone', 'client@one', 'client2']);
    expect(await site.ok(['list'])).toMatch(/^client2\s+1\s+64M\s+bootrom\s+stopped/m);
    const r = await site.vm(['send', 'client@one']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^vm: vm send needs a btrfs datastore \(.* is [^)]+\)$/);
  });
});
