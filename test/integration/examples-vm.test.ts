// examples/vm end to end, as root in a temporary network namespace, on a
// btrfs pool on a loop device the test makes and removes: create from a
// template (a subvolume with a reflinked disk), start, the guest's output
// on `vm console`, snapshot and rollback, a clone that boots (SeaBIOS from
// the cloned disk), ACPI power-off on `vm stop` and the bhyvectl
// --force-poweroff fallback, the reboot loop (boot ROM and bhyveload),
// restart, send and receive to a second pool, a disk on a raw block
// device, destroy.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUESTS, ROOT } from '../support/bhyve.js';
import { MODE, romWith } from '../support/guest-rom.js';
import { Site, TEST_FLAGS, conf, examplesUnavailable, until, vmLog } from '../support/vm-manager.js';

const SEABIOS = '/usr/share/seabios/bios.bin';
const skip = examplesUnavailable([['mkfs.btrfs', 'btrfs-progs'], ['nc', 'netcat-openbsd'], ['losetup', 'mount']])
  ?? (fs.existsSync(SEABIOS) ? undefined : `${SEABIOS} is missing (apt-get install seabios)`);
if (skip) console.warn(`skipping examples/vm tests: ${skip}`);

const sha = (f: string) => createHash('sha256').update(fs.readFileSync(f)).digest('hex');

describe.skipIf(skip !== undefined)('examples/vm on a btrfs pool', { timeout: 180_000 }, () => {
  let site: Site;
  let pool: string;
  let pool2: string;
  let base: string;

  beforeAll(async () => {
    execFileSync('sh', [path.join(ROOT, 'scripts/build-bootsector.sh')], { stdio: 'ignore' });
    execFileSync('sh', [path.join(ROOT, 'scripts/build-kernels.sh')], { stdio: 'ignore' });
    site = new Site();
    pool = site.btrfsPool('pool');
    pool2 = site.btrfsPool('pool2');
    site.vmDir = pool;
    await site.ok(['init']);
    // The base image: the boot sector SeaBIOS runs, then 8 MiB of data, kept
    // in the pool so that `vm create -i` reflinks it.
    fs.mkdirSync(path.join(pool, '.images'));
    base = path.join(pool, '.images', 'base.img');
    const data = Buffer.alloc(8 << 20);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i * 2654435761 >>> 0, i);
    fs.writeFileSync(base, Buffer.concat([fs.readFileSync(path.join(GUESTS, 'bootsector.bin')), data]));
    const tpl = (name: string, o: Record<string, string | number>) =>
      fs.writeFileSync(path.join(pool, '.templates', `${name}.conf`), conf(o));
    tpl('seabios', {
      loader: 'bootrom', bootrom: SEABIOS, bootrom_options: 'fwcfg=qemu', memory: '128M',
      disk0_type: 'virtio-blk', disk0_name: 'disk0.img', console: 'tcp', console_port: 5101, bhyve_options: TEST_FLAGS,
    });
    tpl('pwrbtn', {
      bootrom: path.join(GUESTS, 'powerbutton.rom'), memory: '64M', console: 'log', bhyve_options: TEST_FLAGS, stop_timeout: 60,
    });
    tpl('stubborn', {
      bootrom: romWith(site.tmp, 'powerbutton', MODE.POLL, 1), memory: '64M', console: 'log', bhyve_options: TEST_FLAGS, stop_timeout: 3,
    });
    const kdir = path.join(site.tmp, 'kernel');
    fs.mkdirSync(path.join(kdir, 'boot'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'build/kernels/mb-echo.bin'), path.join(kdir, 'boot/mb-echo'));
    tpl('mbcycle', {
      loader: 'bhyveload', kernel: '/boot/mb-echo', kernel_host: kdir, kernel_cmdline: 'cycle', memory: '64M',
      console: 'log', bhyve_options: TEST_FLAGS,
    });
  });
  afterAll(() => site?.cleanup());

  /** Starts NAME and reads `vm console NAME` until TEXT shows; then the run ends (status 33).
   * The console connects as soon as bhyve listens; SeaBIOS takes seconds
   * (interpreted real mode here) before the boot sector prints. */
  async function bootAndWatch(name: string, text: string): Promise<string> {
    expect(await site.ok(['start', name])).toContain(`Starting ${name}`);
    const con = site.spawn(['console', name]);
    let out = '';
    con.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    await until(`'${text}' on ${name}'s console`, () => out.includes(text), 120_000);
    await until(`${name} to stop`, () => vmLog(pool, name).includes('stopped'), 60_000);
    con.kill();
    await con;
    return out;
  }

  it('create: the VM is a subvolume, its disk a reflink of the base image', async () => {
    await site.ok(['create', '-t', 'seabios', '-i', base, 'vm1']);
    expect(fs.readFileSync(path.join(pool, 'vm1/vm1.conf'), 'utf8')).toContain('console_port="5101"');
    expect(execFileSync('btrfs', ['subvolume', 'show', path.join(pool, 'vm1')], { encoding: 'utf8' })).toMatch(/Name:\s+vm1/);
    expect(sha(path.join(pool, 'vm1/disk0.img'))).toBe(sha(base));
    // Every byte of the disk is shared with the base image (no copy made).
    const du = execFileSync('btrfs', ['filesystem', 'du', '--raw', path.join(pool, 'vm1/disk0.img')], { encoding: 'utf8' });
    const [total, , shared] = du.trim().split('\n').pop()!.trim().split(/\s+/).map(Number);
    expect(shared).toBe(total);
    expect(total).toBeGreaterThan(8 << 20);
    const list = await site.ok(['list']);
    expect(list).toMatch(/^vm1\s+1\s+128M\s+bootrom\s+stopped\s+tcp=127\.0\.0\.1:5101$/m);
    expect(await site.ok(['info', 'vm1'])).toContain(`-s 2,virtio-blk,${pool}/vm1/disk0.img -l com1,tcp=127.0.0.1:5101`);
  });

  it('start: SeaBIOS boots the disk and the guest\'s output shows on vm console', async () => {
    const out = await bootAndWatch('vm1', 'boot sector running\r\n');
    expect(out).toContain('boot sector running\r\n');
    expect(vmLog(pool, 'vm1')).toMatch(/starting\n(.*warning.*\n)?.*exited with status 33\n.*stopped\n/);
    expect(await site.ok(['list'])).toMatch(/^vm1 .* stopped /m);
  });

  it('vm console is both ways: what is typed reaches the guest', async () => {
    fs.writeFileSync(path.join(pool, '.templates/echo.conf'), conf({
      bootrom: path.join(GUESTS, 'echo.rom'), memory: '64M', console: 'tcp', console_port: 5103, bhyve_options: TEST_FLAGS,
    }));
    await site.ok(['create', '-t', 'echo', 'echo1']);
    await site.ok(['start', 'echo1']);
    const con = site.spawn(['console', 'echo1']);
    let out = '';
    con.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    // COM1's tcp= backend drops output while no client is connected (as
    // bhyve's does), so 'echo ready' may come before vm console connects;
    // what is typed waits in the UART's receive FIFO for the guest.
    await until('the console to connect', () => site.sh('cat /proc/net/tcp').split('\n')
      .some((l) => / 0100007F:13EF 0100007F:[0-9A-F]{4} 01 /.test(l)));
    con.stdin!.write('hello vm');
    await until('the echo', () => out.includes('hello vm'));
    con.stdin!.write('q');
    await until('echo1 to stop', () => vmLog(pool, 'echo1').includes('stopped'));
    con.kill();
    await con;
    expect(out).toMatch(/hello vm\r?\n?bye/);
    expect(vmLog(pool, 'echo1')).toMatch(/exited with status 33\n/);
    await site.ok(['destroy', 'echo1']);
  });

  it('snapshot is read-only and rollback brings the disk back', async () => {
    await site.ok(['snapshot', 'vm1@s1']);
    const snap = path.join(pool, '.snapshots/vm1@s1');
    expect(execFileSync('btrfs', ['property', 'get', snap, 'ro'], { encoding: 'utf8' }).trim()).toBe('ro=true');
    const disk = path.join(pool, 'vm1/disk0.img');
    const before = sha(disk);
    const fd = fs.openSync(disk, 'r+');
    fs.writeSync(fd, Buffer.alloc(512, 0xee), 0, 512, 0);
    fs.closeSync(fd);
    expect(sha(disk)).not.toBe(before);
    await site.ok(['rollback', 'vm1@s1']);
    expect(sha(disk)).toBe(before);
    expect(await site.ok(['info', 'vm1'])).toContain('snapshot: vm1@s1');
    const r = await site.vm(['rollback', 'vm1@nope']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe('vm: no snapshot vm1@nope');
  });

  it('clone of a snapshot is a new VM that boots from its own copy of the disk', async () => {
    await site.ok(['clone', 'vm1@s1', 'vm2']);
    expect(fs.existsSync(path.join(pool, 'vm2/vm2.conf'))).toBe(true);
    expect(fs.existsSync(path.join(pool, 'vm2/vm1.conf'))).toBe(false);
    expect(execFileSync('btrfs', ['subvolume', 'show', path.join(pool, 'vm2')], { encoding: 'utf8' })).toMatch(/Name:\s+vm2/);
    const out = await bootAndWatch('vm2', 'boot sector running\r\n');
    expect(out).toContain('boot sector running\r\n');
    expect(vmLog(pool, 'vm2')).toMatch(/cloned from vm1@s1\n[^]*exited with status 33\n/);
  });

  it('stop: SIGTERM presses the ACPI power button and the guest powers off', async () => {
    await site.ok(['create', '-t', 'pwrbtn', 'pb1']);
    await site.ok(['start', 'pb1']);
    await until('acpi on', () => vmLog(pool, 'pb1').includes('acpi on'));
    const r = await site.vm(['stop', 'pb1']);
    expect(r.exitCode, r.stderr as string).toBe(0);
    expect(r.stdout).toBe('Sending ACPI shutdown to pb1');
    expect(vmLog(pool, 'pb1')).toMatch(/acpi on\r\npower button\r\n.*powered off \(status 1\)\n.*stopped\n$/);
    expect((await site.vm(['stop', 'pb1'])).stderr).toBe("vm: 'pb1' is not running");
  });

  it('restart: stop (ACPI) and start again', async () => {
    await site.ok(['start', 'pb1']);
    await until('acpi on', () => (vmLog(pool, 'pb1').match(/acpi on/g) ?? []).length === 2);
    await site.ok(['restart', 'pb1']);
    await until('acpi on a third time', () => (vmLog(pool, 'pb1').match(/acpi on/g) ?? []).length === 3);
    expect((vmLog(pool, 'pb1').match(/powered off \(status 1\)/g) ?? []).length).toBe(2);
    await site.ok(['stop', 'pb1']);
    expect((vmLog(pool, 'pb1').match(/powered off \(status 1\)/g) ?? []).length).toBe(3);
  });

  it('stop: a guest that ignores the power button is powered off by bhyvectl after stop_timeout', async () => {
    await site.ok(['create', '-t', 'stubborn', 'pb2']);
    await site.ok(['start', 'pb2']);
    await until('acpi on', () => vmLog(pool, 'pb2').includes('acpi on'));
    const r = await site.vm(['stop', 'pb2']);
    expect(r.exitCode, r.stderr as string).toBe(0);
    expect(r.stdout).toBe('Sending ACPI shutdown to pb2\npb2 did not power off within 3 s: bhyvectl --force-poweroff');
    expect(vmLog(pool, 'pb2')).toMatch(/power button\r\nignored\r\n[^]*no power-off after 3 s: bhyvectl --force-poweroff\n.*powered off \(status 1\)\n/);
  });

  it('bhyveload loop: the guest reboots (status 0), is loaded again, then powers off (status 1)', async () => {
    await site.ok(['create', '-t', 'mbcycle', 'mb1']);
    const r = await site.vm(['start', '-f', 'mb1']);
    expect(r.exitCode).toBe(1);
    // Guest memory outlives each bhyve run (the VM object), as on FreeBSD:
    // the kernel counts its boots there.
    expect(r.stdout).toContain('boot 1\n');
    expect(r.stdout).toMatch(/boot 1\n[^]*mb-echo: magic ok\n[^]*boot 2/);
    const log = vmLog(pool, 'mb1');
    expect(log).toMatch(/starting\n.*rebooted \(status 0\)\n.*powered off \(status 1\)\n.*stopped\n$/);
    // vmrun.sh destroys the VM object after a power-off.
    expect(fs.existsSync(path.join(site.rundir, 'mb1'))).toBe(false);
  });

  it('boot ROM loop: a guest that resets (status 0) is booted again until vm stop', async () => {
    fs.writeFileSync(path.join(pool, '.templates/reset.conf'), conf({
      bootrom: path.join(GUESTS, 'exit-reset.rom'), memory: '64M', console: 'log', bhyve_options: TEST_FLAGS,
    }));
    await site.ok(['create', '-t', 'reset', 'rst1']);
    await site.ok(['start', 'rst1']);
    await until('two reboots', () => (vmLog(pool, 'rst1').match(/rebooted \(status 0\)\n/g) ?? []).length >= 2);
    const r = await site.vm(['stop', 'rst1']);
    expect(r.exitCode, r.stderr as string).toBe(0);
    const log = vmLog(pool, 'rst1');
    expect((log.match(/^resetting\r\n/gm) ?? []).length).toBeGreaterThanOrEqual(2);
    expect(log).toMatch(/stopped\n$/);
    expect(await site.ok(['list'])).toMatch(/^rst1 .* stopped /m);
    await site.ok(['destroy', 'rst1']);
  });

  it('send and recv move a snapshot, then an incremental one, to another pool', async () => {
    const stream = path.join(site.tmp, 's1.btrfs');
    const s1 = await site.vm(['send', 'vm1@s1'], { encoding: 'buffer' });
    expect(s1.exitCode).toBe(0);
    fs.writeFileSync(stream, s1.stdout as unknown as Buffer);
    await site.ok(['init'], { vmDir: pool2 });
    const r1 = await site.vm(['recv'], { vmDir: pool2, input: fs.readFileSync(stream) });
    expect(r1.stdout).toBe('received vm1@s1');
    expect(sha(path.join(pool2, 'vm1/disk0.img'))).toBe(sha(path.join(pool, '.snapshots/vm1@s1/disk0.img')));
    expect(fs.readFileSync(path.join(pool2, 'vm1/vm1.conf'), 'utf8')).toBe(fs.readFileSync(path.join(pool, 'vm1/vm1.conf'), 'utf8'));
    // Change the disk, snapshot, send only the difference.
    const fd = fs.openSync(path.join(pool, 'vm1/disk0.img'), 'r+');
    fs.writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, 1 << 20);
    fs.closeSync(fd);
    await site.ok(['snapshot', 'vm1@s2']);
    const s2 = await site.vm(['send', '-p', 'vm1@s1', 'vm1@s2'], { encoding: 'buffer' });
    expect(s2.exitCode).toBe(0);
    expect((s2.stdout as unknown as Buffer).length).toBeLessThan(1 << 20);
    const r2 = await site.vm(['recv'], { vmDir: pool2, input: s2.stdout as unknown as Buffer });
    expect(r2.stdout).toBe('received vm1@s2');
    expect(sha(path.join(pool2, '.snapshots/vm1@s2/disk0.img'))).toBe(sha(path.join(pool, 'vm1/disk0.img')));
  });

  it('a disk on a raw block device (a loop device): the guest writes it and reads it back', async () => {
    const dev = site.loopDevice(path.join(GUESTS, 'bootsector.img'), '8M');
    fs.writeFileSync(path.join(pool, '.templates/blk.conf'), conf({
      bootrom: path.join(GUESTS, 'virtio-blk.rom'), memory: '64M', console: 'log', bhyve_options: TEST_FLAGS,
      disk0_type: 'virtio-blk', disk0_name: dev,
    }));
    await site.ok(['create', '-t', 'blk', 'blk1']);
    expect(fs.readdirSync(path.join(pool, 'blk1')).sort()).toEqual(['blk1.conf', 'vm.log']);
    expect(await site.ok(['info', 'blk1'])).toContain(`-s 2,virtio-blk,${dev} `);
    const r = await site.vm(['start', '-f', 'blk1']);
    expect(r.exitCode).toBe(33);
    const m = (r.stdout as string).match(/virtio-blk: wrote 8192 sectors, read back OK, checksum ([0-9a-f]{8})/);
    expect(m, r.stdout as string).not.toBeNull();
    // What the guest wrote is on the device.
    const fd = fs.openSync(dev, 'r');
    const head = Buffer.alloc(4 << 20);
    fs.readSync(fd, head, 0, head.length, 0);
    fs.closeSync(fd);
    expect(zlib.crc32(head).toString(16).padStart(8, '0')).toBe(m![1]);
  });

  it('destroy removes the subvolume and its snapshots; a running VM is refused', async () => {
    await site.ok(['start', 'pb1']);
    await until('acpi on', () => (vmLog(pool, 'pb1').match(/acpi on/g) ?? []).length === 4);
    const busy = await site.vm(['destroy', 'pb1']);
    expect(busy.exitCode).toBe(1);
    expect(busy.stderr).toBe("vm: 'pb1' is running (vm stop pb1 first)");
    await site.ok(['stop', 'pb1']);
    await site.ok(['snapshot', 'vm2@a']);
    await site.ok(['destroy', 'vm2']);
    await site.ok(['destroy', 'pb1']);
    expect(fs.existsSync(path.join(pool, 'vm2'))).toBe(false);
    expect(fs.existsSync(path.join(pool, '.snapshots/vm2@a'))).toBe(false);
    const subvols = execFileSync('btrfs', ['subvolume', 'list', pool], { encoding: 'utf8' });
    expect(subvols).not.toMatch(/vm2|pb1/);
    expect(subvols).toMatch(/path vm1\n/);
    expect(await site.ok(['list'])).not.toMatch(/^(vm2|pb1) /m);
    expect(spawnSync('ip', ['netns', 'exec', site.ns, 'ip', '-o', 'link'], { encoding: 'utf8' }).stdout).not.toMatch(/tap\d/);
  });
});
