// examples/vm's jail-style confinement (confine=yes), as root in a
// temporary network namespace: the VM's bhyve runs as an unprivileged user
// in network, mount and PID namespaces of its own, in a root that holds
// only bhyve's program files and the VM's own devices (/dev/kvm, its tap
// through /dev/net/tun, its disk). Checked from outside (/proc) and from
// inside (a shell entered into the same namespaces as the same user), then
// stopped through the ACPI power button and, for a guest that ignores it,
// by bhyvectl --force-poweroff run inside the jail.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUESTS, ROOT } from '../support/bhyve.js';
import { MODE, romWith } from '../support/guest-rom.js';
import { Site, TEST_FLAGS, conf, examplesUnavailable, until, vmLog } from '../support/vm-manager.js';

const skip = examplesUnavailable([['chroot', 'coreutils']]);
if (skip) console.warn(`skipping examples/vm confinement tests: ${skip}`);

const UID = 64123;
// Network namespaces are named vm-NAME host-wide: names of this run's own.
const [J1, J2, J3] = [1, 2, 3].map((i) => `j${i}x${process.pid}`);

describe.skipIf(skip !== undefined)('examples/vm confine=yes', { timeout: 120_000 }, () => {
  let site: Site;
  let dir: string;

  beforeAll(async () => {
    // The loop-device disk below copies the boot-sector image (this file
    // may run before the tests that build it).
    execFileSync('sh', [path.join(ROOT, 'scripts/build-bootsector.sh')], { stdio: 'ignore' });
    site = new Site();
    dir = site.vmDir;
    await site.ok(['init']);
    const tpl = (name: string, rom: string, timeout: number) => fs.writeFileSync(path.join(dir, '.templates', `${name}.conf`), conf({
      bootrom: rom, memory: '64M', console: 'log', bhyve_options: TEST_FLAGS, stop_timeout: timeout,
      confine: 'yes', confine_uid: UID, disk0_name: 'disk0.img', disk0_size: '4M',
      network0_type: 'virtio-net', network0_addr: '10.0.2.2/24',
    }));
    tpl('jail', path.join(GUESTS, 'powerbutton.rom'), 60);
    tpl('stubborn', romWith(site.tmp, 'powerbutton', MODE.POLL, 1), 3);
    // A second VM's files and a secret of the host's, neither of which the jail may see.
    await site.ok(['create', '-t', 'jail', 'other']);
    fs.writeFileSync(path.join(site.tmp, 'host-secret'), 'secret\n');
  });
  afterAll(() => site?.cleanup());

  /** Host pid of the confined bhyve: the child of the unshare wrapper. */
  function bhyvePid(name: string): number {
    const wrapper = fs.readFileSync(path.join(dir, '.run', name, 'bhyve.pid'), 'utf8').trim();
    return Number(fs.readFileSync(`/proc/${wrapper}/task/${wrapper}/children`, 'utf8').trim().split(/\s+/)[0]);
  }

  it('runs as an unprivileged user in its own namespaces, with only its own devices and files', async () => {
    await site.ok(['create', '-t', 'jail', J1]);
    // A second disk on a block device (a loop device; an LVM volume would do the same).
    const blk = site.loopDevice(path.join(GUESTS, 'bootsector.img'), '2M');
    fs.appendFileSync(path.join(dir, J1, `${J1}.conf`), conf({ disk1_name: blk }));
    await site.ok(['start', J1]);
    await until('acpi on', () => vmLog(dir, J1).includes('acpi on'), 60_000, () => vmLog(dir, J1));
    const pid = bhyvePid(J1);
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toMatch(/bin\/bhyve\0/);
    expect(status).toMatch(new RegExp(`^Uid:\\s+${UID}\\s+${UID}\\s+${UID}\\s+${UID}$`, 'm'));
    expect(status).toMatch(new RegExp(`^Gid:\\s+${UID}\\s+${UID}\\s+${UID}\\s+${UID}$`, 'm'));
    expect(status).toMatch(/^CapEff:\s+0+$/m);
    expect(status).toMatch(/^CapBnd:\s+0+$/m);
    expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
    expect(status).toMatch(new RegExp(`^NSpid:\\s+${pid}\\s+1$`, 'm'));
    for (const ns of ['net', 'mnt', 'pid']) {
      expect(fs.readlinkSync(`/proc/${pid}/ns/${ns}`), ns).not.toBe(fs.readlinkSync(`/proc/self/ns/${ns}`));
    }
    const root = `/proc/${pid}/root`;
    expect(fs.readdirSync(`${root}/dev`).sort()).toEqual(['kvm', 'net', 'null', 'random', 'urandom', 'vmdisk1', 'zero']);
    expect(fs.statSync(`${root}/dev/vmdisk1`).rdev).toBe(fs.statSync(blk).rdev);
    expect(fs.statSync(`${root}/dev/vmdisk1`).uid).toBe(UID);
    expect(fs.readdirSync(`${root}/dev/net`)).toEqual(['tun']);
    expect(fs.statSync(`${root}/dev/kvm`).uid).toBe(UID);
    expect(fs.readdirSync(`${root}/vm`).sort()).toEqual(['disk0.img', `${J1}.conf`, 'vm.log']);
    expect(fs.readdirSync(`${root}/etc`)).toEqual([]);
    for (const p of ['root', 'home', 'var', site.tmp, dir]) expect(fs.existsSync(`${root}/${p}`), p).toBe(false);
    // bhyve's install directory, read-only: its program files only.
    expect(fs.readdirSync(`${root}${ROOT}`).sort()).toEqual(['bin', 'dist', 'node_modules', 'package.json', 'share']);

    // From inside, as the VM's user: nothing of the host's.
    const inside = (cmd: string) => spawnSync('nsenter', ['-t', String(pid), '-m', '-p', '-n', '-r', '-w',
      '-S', String(UID), '-G', String(UID), '/bin/sh', '-c', cmd], { encoding: 'utf8' });
    expect(inside('id -u; wc -c </vm/disk0.img; wc -c </dev/vmdisk1').stdout).toBe(`${UID}\n4194304\n2097152\n`);
    for (const f of ['/etc/passwd', '/etc/shadow', `${site.tmp}/host-secret`, `${dir}/other/other.conf`, '/dev/loop0',
      '/dev/loop-control', blk, '/dev/mem', '/dev/sda', '/root/.profile']) {
      const r = inside(`cat ${f} >/dev/null`);
      expect(r.status, f).not.toBe(0);
      expect(r.stderr, f).toMatch(/No such file or directory/);
    }
    // Its PID namespace: bhyve is 1 and the host's processes are not there.
    const pids = inside('ls /proc').stdout.split('\n').filter((p) => /^\d+$/.test(p)).map(Number);
    expect(pids).toContain(1);
    expect(pids).not.toContain(process.pid);
    expect(pids.length).toBeLessThan(10);
    // Its network namespace: the loopback and its tap, nothing else.
    const links = inside('ip -o link').stdout.trim().split('\n').map((l) => l.split(': ')[1]);
    expect(links).toEqual(['lo', 'tap0']);
    // The tap is its user's.
    expect(inside('cat /sys/class/net/tap0/owner 2>/dev/null || echo nosys').stdout.trim()).toBe('nosys');
    expect(execFileSync('ip', ['-n', `vm-${J1}`, '-d', 'link', 'show', 'tap0'], { encoding: 'utf8' })).toMatch(new RegExp(`user ${UID} group ${UID}`));

    const r = await site.vm(['stop', J1]);
    expect(r.exitCode, r.stderr as string).toBe(0);
    expect(vmLog(dir, J1)).toMatch(/power button\r\n.*powered off \(status 1\)\n.*stopped\n$/);
    expect(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout).not.toMatch(new RegExp(`^vm-${J1}\\b`, 'm'));
  });

  it('a confined guest that ignores the power button is powered off by bhyvectl inside the jail', async () => {
    await site.ok(['create', '-t', 'stubborn', J2]);
    await site.ok(['start', J2]);
    await until('acpi on', () => vmLog(dir, J2).includes('acpi on'), 60_000, () => vmLog(dir, J2));
    const r = await site.vm(['stop', J2]);
    expect(r.exitCode, r.stderr as string).toBe(0);
    expect(r.stdout).toContain(`${J2} did not power off within 3 s: bhyvectl --force-poweroff`);
    expect(vmLog(dir, J2)).not.toContain('unshare:');
    expect(vmLog(dir, J2)).toMatch(/ignored\r\n[^]*bhyvectl --force-poweroff\n.*powered off \(status 1\)\n/);
  });

  it('a confined VM needs a user other than root (one line, status 4) and a boot ROM', async () => {
    await site.ok(['create', '-t', 'jail', J3]);
    fs.appendFileSync(path.join(dir, J3, `${J3}.conf`), conf({ confine_uid: 0 }));
    const r = await site.vm(['start', '-f', J3]);
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toBe('vm: confine=yes needs confine_uid (not 0)');
    // bhyveload's VM object would be made outside the jail's runtime directory.
    fs.appendFileSync(path.join(dir, J3, `${J3}.conf`), conf({ confine_uid: UID, loader: 'bhyveload' }));
    const b = await site.vm(['start', J3]);
    expect(b.exitCode).toBe(1);
    expect(b.stderr).toBe("vm: confine=yes needs loader=bootrom (bhyveload's virtual machine would be outside the jail)");
  });
});
