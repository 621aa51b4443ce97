// The virtio test guests (test/guests/virtio/ -> build/guests/virtio-*.rom)
// under QEMU, the side-by-side peer: they enumerate PCI bus 0, assign BARs
// (QEMU -bios leaves them unassigned), drive the devices through the virtio
// 1.x modern transport from ring 3 of long mode, and report on COM1 and
// through the isa-debug-exit port (status (value << 1) | 1; 33 = success).
// Skipped when qemu-system-x86_64 is not installed. -accel kvm, with TCG as
// the fallback when KVM is unavailable.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HAVE_QEMU, NO_TAP_NETNS, QEMU_MISSING } from '../support/probes.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const GUESTS = join(ROOT, 'build', 'guests');
const ROMS = ['virtio-blk', 'virtio-console', 'virtio-net', 'virtio-rnd'];
const NET_SKIP = QEMU_MISSING ?? NO_TAP_NETNS ?? null;
const rom = (name: string): string => join(GUESTS, `${name}.rom`);
let tmp = '';

const qemuArgs = (romPath: string, devices: string[]) => [
  '-accel', 'kvm', '-accel', 'tcg', '-machine', 'pc', '-m', '256M', '-smp', '1',
  '-nodefaults', '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
  '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot', '-bios', romPath, ...devices,
];

function qemu(romPath: string, devices: string[], timeoutMs = 60_000, prefix: string[] = []) {
  const argv = [...prefix, 'qemu-system-x86_64', ...qemuArgs(romPath, devices)];
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'latin1', timeout: timeoutMs, input: '' });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

function disk(name: string, bytes: number): string {
  const p = join(tmp, name);
  writeFileSync(p, '');
  execFileSync('truncate', ['-s', String(bytes), p]);
  return p;
}

const blkDev = (path: string, extra = 'disable-legacy=on') => [
  '-drive', `file=${path},if=none,format=raw,id=d0`, '-device', `virtio-blk-pci,drive=d0,${extra},serial=TESTSERIAL`,
];

beforeAll(() => {
  execFileSync(join(ROOT, 'scripts', 'build-guests.sh'), { stdio: 'pipe' });
  tmp = mkdtempSync(join(tmpdir(), 'virtio-guest-'));
}, 60_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('virtio test ROM images', () => {
  it.each(ROMS)('%s.rom is 64 KiB with a near jmp to offset 0 at the reset vector and parameter 0', (name) => {
    const b = readFileSync(rom(name));
    expect(b.length).toBe(65536);
    expect(b[0xfff0]).toBe(0xe9);
    expect((0xfff3 + b.readInt16LE(0xfff1)) & 0xffff).toBe(0);
    expect(b.readUInt32LE(0xffe0)).toBe(0);
  });
});

describe.skipIf(!HAVE_QEMU)('virtio test ROMs under QEMU', () => {
  it('virtio-blk writes, flushes and reads back 4 MiB, and the image holds what it wrote', () => {
    const img = disk('blk.img', 8 << 20);
    const r = qemu(rom('virtio-blk'), [...blkDev(img), '-device', 'virtio-rng-pci,disable-legacy=on']);
    expect(r.out).toMatch(/pci 00:0\d\.0 1af4:1042 class 010000 virtio-blk\r\n/);
    expect(r.out).toMatch(/pci 00:0\d\.0 1af4:1044 class 00ff00 virtio-rnd\r\n/);
    expect(r.out).toMatch(/BAR4: assigned c[0-9a-f]{7} size 4000\r\n/);
    expect(r.out).toContain('virtio-blk: capacity 16384 sectors (8 MiB)');
    expect(r.out).toContain("virtio-blk: serial 'TESTSERIAL'\r\n");
    const m = r.out.match(/virtio-blk: wrote (\d+) sectors, read back OK, checksum ([0-9a-f]{8})\r\n/);
    expect(m, r.out + r.err).not.toBeNull();
    expect(Number(m![1])).toBe(8192);
    expect(r.status).toBe(33);
    const data = readFileSync(img).subarray(0, 8192 * 512);
    expect(crc32(data).toString(16).padStart(8, '0')).toBe(m![2]);
  });

  it('virtio-blk drives a transitional device (1af4:1001) through its modern capabilities', () => {
    const img = disk('blk-t.img', 8 << 20);
    const r = qemu(rom('virtio-blk'), blkDev(img, 'disable-legacy=off'));
    expect(r.out).toMatch(/1af4:1001 class 010000 virtio-blk\r\n/);
    expect(r.out).toMatch(/virtio-blk: wrote 8192 sectors, read back OK, checksum [0-9a-f]{8}\r\n/);
    expect(r.status).toBe(33);
  });

  it('virtio-blk shrinks the pattern to a small disk', () => {
    const img = disk('blk-small.img', 1 << 20);
    const r = qemu(rom('virtio-blk'), blkDev(img));
    expect(r.out).toMatch(/virtio-blk: wrote 2048 sectors, read back OK, checksum [0-9a-f]{8}\r\n/);
    expect(r.status).toBe(33);
  });

  it('virtio-blk without a disk says so and exits 5', () => {
    const r = qemu(rom('virtio-blk'), ['-device', 'virtio-rng-pci,disable-legacy=on']);
    expect(r.out).toContain('FAIL: no virtio-blk device on PCI bus 0\r\n');
    expect(r.status).toBe(5);
  });

  it('virtio-rnd reads two different 64-byte blocks of entropy', () => {
    const r = qemu(rom('virtio-rnd'), ['-device', 'virtio-rng-pci,disable-legacy=on']);
    const a = r.out.match(/virtio-rnd: read 1 ([0-9a-f]{128})\r\n/);
    const b = r.out.match(/virtio-rnd: read 2 ([0-9a-f]{128})\r\n/);
    expect(a, r.out + r.err).not.toBeNull();
    expect(b).not.toBeNull();
    expect(a![1]).not.toBe(b![1]);
    expect(r.out).toContain('virtio-rnd: OK\r\n');
    expect(r.status).toBe(33);
  });

  it('virtio-console writes a line on port 0 and reads one back', async () => {
    const sock = join(tmp, 'con.sock');
    const child = spawn('qemu-system-x86_64', qemuArgs(rom('virtio-console'), [
      '-device', 'virtio-serial-pci,disable-legacy=on,max_ports=1',
      '-chardev', `socket,id=c0,path=${sock},server=on,wait=on`, '-device', 'virtconsole,chardev=c0',
    ]), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d.toString('latin1'); });
    child.stderr.on('data', (d) => { err += d.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    try {
      for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      const fromGuest = await new Promise<string>((resolve, reject) => {
        const c = connect(sock);
        let got = '';
        c.on('data', (d) => {
          got += d.toString('latin1');
          if (got.includes('\n')) {
            c.write('pong from the host\n');
            resolve(got);
          }
        });
        c.on('error', reject);
        child.on('close', () => c.destroy());
      });
      expect(fromGuest).toBe('hello from virtio-console guest\n');
      const status = await exited;
      expect(out, out + err).toMatch(/pci 00:0\d\.0 1af4:1043 class 078000 virtio-console\r\n/);
      expect(out).toContain("virtio-console: received 'pong from the host'\r\n");
      expect(status).toBe(33);
    } finally {
      clearTimeout(timer);
      child.kill('SIGKILL');
    }
  });
});

describe.skipIf(NET_SKIP !== null)(`virtio-net test ROM under QEMU with a tap in a network namespace${NET_SKIP ? ` (skipped: ${NET_SKIP})` : ''}`, () => {
  const ns = `vguest${process.pid}`;
  afterAll(() => {
    spawnSync('ip', ['netns', 'del', ns]);
  });

  it('virtio-net resolves the host by ARP and gets a ping reply', () => {
    const sh = (cmd: string) => execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', cmd], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'add', ns]);
    sh('ip tuntap add dev vtap0 mode tap && ip addr add 10.0.2.2/24 dev vtap0 && ip link set vtap0 up'
      + ' && sysctl -qw net.ipv6.conf.all.disable_ipv6=1');
    const r = qemu(rom('virtio-net'), [
      '-netdev', 'tap,id=n0,ifname=vtap0,script=no,downscript=no',
      '-device', 'virtio-net-pci,netdev=n0,disable-legacy=on,mac=52:54:00:12:34:56',
    ], 60_000, ['ip', 'netns', 'exec', ns]);
    const hostMac = execFileSync('ip', ['netns', 'exec', ns, 'cat', '/sys/class/net/vtap0/address'], { encoding: 'utf8' }).trim();
    expect(r.out, r.out + r.err).toMatch(/pci 00:0\d\.0 1af4:1041 class 020000 virtio-net\r\n/);
    expect(r.out).toContain('virtio-net: mac 52:54:00:12:34:56\r\n');
    expect(r.out).toContain(`virtio-net: 10.0.2.2 is at ${hostMac}\r\n`);
    expect(r.out).toContain('virtio-net: ping reply from 10.0.2.2 OK\r\n');
    expect(r.status).toBe(33);
  });
});
