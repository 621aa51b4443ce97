// Interrupts reach the guests: the test guests in interrupt mode
// (test/guests/README.md) on our bhyve and on QEMU, side by side.
//   - virtio-blk and virtio-net completions by MSI-X (a vector per queue),
//     by MSI (one message: bhyve -W; QEMU's virtio-pci has no MSI
//     capability) and by INTx routed as the firmware says (bhyve: the MP
//     table's I/O interrupt entries, or with -Y the PIRQ router; QEMU -bios
//     has no tables: the guest routes the PIIX3's PIRQ links as SeaBIOS
//     does); the guests take completions only after an interrupt and check
//     that VIRTQ_AVAIL_F_NO_INTERRUPT and used_event are honoured;
//   - which path served the requests, from bhyvectl --get-stats while the
//     guest holds at its end: the exit path or the iothread (virtio-blk's,
//     virtio-net's I/O thread), notifies by exit or by ioeventfd, and the
//     kind of interrupt the device sent;
//   - HPET, RTC, PIT and local APIC timer interrupts at their rates;
//   - an interrupt storm that masks and unmasks under load.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bhyveArgs, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';
import { MODE, romWith, runHeld, runQemu, stat } from '../support/guest-rom.js';
import { HAVE_QEMU, NO_TAP_NETNS } from '../support/probes.js';

const skip = kvmUnavailable() ?? (fs.existsSync(rom('timers')) ? undefined : 'test guests are not built: run scripts/build-guests.sh');
const qemuSkip = skip ?? (HAVE_QEMU ? undefined : 'qemu-system-x86_64 is not installed');
const netSkip = skip ?? NO_TAP_NETNS;
for (const [what, why] of [['interrupt tests', skip], ['QEMU interrupt tests', qemuSkip], ['virtio-net interrupt tests', netSkip]]) {
  if (why) console.warn(`skipping ${what}: ${why}`);
}

let tmp = '';
beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'irq-int-')); });
afterAll(() => { if (tmp) fs.rmSync(tmp, { recursive: true, force: true }); });

function disk(name: string, bytes = 8 << 20): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, bytes);
  return p;
}

/** The blk guest wrote the pattern, read it back, and the image holds it. */
function expectBlkOk(out: string, img: string): void {
  const m = out.match(/virtio-blk: wrote (\d+) sectors, read back OK, checksum ([0-9a-f]{8})\r\n/);
  expect(m, out).not.toBeNull();
  expect(crc32(fs.readFileSync(img).subarray(0, Number(m![1]) * 512)).toString(16).padStart(8, '0')).toBe(m![2]);
  expect(out).toContain('virtio-blk: interrupt suppression honoured\r\n');
}

/** Interrupts the guest took on the queue vector (the summary line). */
function queueInterrupts(out: string, mode: string): number {
  const m = new RegExp(`virtio-blk: interrupts: ${mode} queue vector [0-9a-f]+ (\\d+) \\((\\d+) spurious\\), config vector [0-9a-f]+ (\\d+), (\\d+) requests\\r\\n`).exec(out);
  expect(m, out).not.toBeNull();
  expect(Number(m![3])).toBe(0); // no config interrupt: nothing changed
  return Number(m![1]) - Number(m![2]);
}

const BLK = 'virtio-blk@pci.0.3.0';

describe.skipIf(skip !== undefined)('virtio-blk completions by interrupt on bhyve', () => {
  it('MSI-X per queue, exit path: requests served on the device thread, notifies by exit, MSI-X messages', async () => {
    const img = disk('msix.img');
    const name = vmName('irqmsix');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-blk', MODE.MSIX | MODE.HOLD), name, {
      extra: ['-s', `3,virtio-blk,${img},iothread=false`],
    }), name);
    expect(r.out).toMatch(/virtio-blk: MSI-X, 2 table entries at [0-9a-f]+, config vector [0-9a-f]+\r\n/);
    expect(r.out).toContain('virtio-blk: VIRTQ_AVAIL_F_NO_INTERRUPT: 4 requests, 0 interrupts\r\n');
    expectBlkOk(r.out, img);
    expect(queueInterrupts(r.out, 'msix')).toBeGreaterThan(0);
    expect(r.status, r.out).toBe(33);
    expect(stat(r.stats, BLK, 'requests served on the device thread')).toBeGreaterThanOrEqual(87);
    expect(stat(r.stats, BLK, 'requests served on the iothread')).toBe(0);
    expect(stat(r.stats, BLK, 'queue notifies by exit')).toBeGreaterThan(0);
    expect(stat(r.stats, BLK, 'msi-x messages')).toBeGreaterThan(0);
    expect(stat(r.stats, BLK, 'msi messages')).toBe(0);
    expect(stat(r.stats, BLK, 'intx assertions')).toBe(0);
  });

  it('MSI-X with EVENT_IDX on the iothread: every request on the iothread, no notify exits (ioeventfd)', async () => {
    const img = disk('msix-iot.img');
    const name = vmName('irqiot');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-blk', MODE.MSIX | MODE.EVENT_IDX | MODE.HOLD), name, {
      extra: ['-s', `3,virtio-blk,${img},iothread=true`],
    }), name);
    expect(r.out).toMatch(/virtio-blk: used_event \d+: 3 requests, 0 interrupts; avail_event \d+\r\n/);
    expectBlkOk(r.out, img);
    expect(queueInterrupts(r.out, 'msix')).toBeGreaterThan(0);
    expect(r.status, r.out).toBe(33);
    expect(stat(r.stats, BLK, 'requests served on the iothread')).toBeGreaterThanOrEqual(86);
    expect(stat(r.stats, BLK, 'requests served on the device thread')).toBe(0);
    expect(stat(r.stats, BLK, 'queue notifies by exit')).toBe(0);
    expect(stat(r.stats, BLK, 'notifies forwarded to the iothread')).toBe(0);
    expect(stat(r.stats, BLK, 'iothread wakeups')).toBeGreaterThan(0);
    expect(stat(r.stats, BLK, 'msi-x messages')).toBeGreaterThan(0);
  });

  it('MSI with one message (-W): the device sends MSI, no MSI-X capability', async () => {
    const img = disk('msi.img');
    const name = vmName('irqmsi');
    const r = await runHeld(['-W', ...bhyveArgs(romWith(tmp, 'virtio-blk', MODE.MSI | MODE.HOLD), name, {
      extra: ['-s', `3,virtio-blk,${img}`],
    })], name);
    expect(r.out).toMatch(/virtio-blk: MSI \(64-bit\), one message, vector [0-9a-f]+\r\n/);
    expect(r.out).not.toMatch(/virtio-blk: cap [0-9a-f]+ id 11\r\n/);
    expectBlkOk(r.out, img);
    expect(queueInterrupts(r.out, 'msi')).toBeGreaterThan(0);
    expect(r.status, r.out).toBe(33);
    expect(stat(r.stats, BLK, 'msi messages')).toBeGreaterThan(0);
    expect(stat(r.stats, BLK, 'msi-x messages')).toBe(0);
  });

  // bhyve's MP table lists an I/O interrupt entry per routed PCI INTx pin
  // (the tables are written after the platform routed INTx); without one
  // the guest says "the MP table has no entry" and falls back to the PIRQ
  // router.
  it('INTx routed by the MP table\'s I/O interrupt entry for the slot', async () => {
    const img = disk('intx.img');
    const name = vmName('irqintx');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-blk', MODE.INTX | MODE.HOLD), name, {
      extra: ['-s', `3,virtio-blk,${img}`],
    }), name);
    expect(r.out).toMatch(/virtio-blk: INTA -> I\/O APIC pin (1[6-9]|2[0-3]) \(level, active low\), vector [0-9a-f]+, from the MP table\r\n/);
    expectBlkOk(r.out, img);
    expect(queueInterrupts(r.out, 'intx')).toBeGreaterThan(0);
    expect(r.status, r.out).toBe(33);
    expect(stat(r.stats, BLK, 'intx assertions')).toBeGreaterThan(0);
  });

  it('INTx without an MP table (-Y): the ISA IRQ the PIRQ router gives the slot', async () => {
    const img = disk('intx-y.img');
    const name = vmName('irqintxy');
    const r = await runHeld(['-Y', ...bhyveArgs(romWith(tmp, 'virtio-blk', MODE.INTX | MODE.EVENT_IDX | MODE.HOLD), name, {
      extra: ['-s', `3,virtio-blk,${img}`],
    })], name);
    const m = r.out.match(/intx: interrupt line (\d+) is PIRQ([A-H])'s IRQ\r\n/);
    expect(m, r.out).not.toBeNull();
    expect(r.out).toContain(`virtio-blk: INTA -> I/O APIC pin ${m![1]} (level, active low, via an ISA IRQ), vector`);
    expect(r.out).toMatch(/from the PIRQ router\r\n/);
    expectBlkOk(r.out, img);
    expect(queueInterrupts(r.out, 'intx')).toBeGreaterThan(0);
    expect(r.status, r.out).toBe(33);
    expect(stat(r.stats, BLK, 'intx assertions')).toBeGreaterThan(0);
    expect(stat(r.stats, BLK, 'msi-x messages')).toBe(0);
  });
});

describe.skipIf(qemuSkip !== undefined)('virtio-blk completions by interrupt on QEMU', () => {
  const dev = (img: string) => ['-drive', `file=${img},if=none,format=raw,id=d0`, '-device', 'virtio-blk-pci,drive=d0,disable-legacy=on,addr=3'];

  it('MSI-X per queue, with and without EVENT_IDX', async () => {
    for (const mode of [MODE.MSIX, MODE.MSIX | MODE.EVENT_IDX]) {
      const img = disk(`q-msix-${mode}.img`);
      const r = await runQemu(romWith(tmp, 'virtio-blk', mode), dev(img));
      expect(r.out).toMatch(/virtio-blk: MSI-X, \d+ table entries at [0-9a-f]+, config vector [0-9a-f]+\r\n/);
      expectBlkOk(r.out, img);
      expect(queueInterrupts(r.out, 'msix')).toBeGreaterThan(0);
      expect(r.status, r.out).toBe(33);
    }
  });

  it('INTx with no firmware: the guest routes the PIIX3 PIRQ links as SeaBIOS does', async () => {
    const img = disk('q-intx.img');
    const r = await runQemu(romWith(tmp, 'virtio-blk', MODE.INTX), dev(img));
    // slot 3, INTA: PIRQ (0 + 3 - 1) & 3 = C, which SeaBIOS puts on IRQ 11
    expect(r.out).toContain('intx: PIRQC -> IRQ 11\r\n');
    expect(r.out).toMatch(/virtio-blk: INTA -> I\/O APIC pin 11 \(level, active high, via an ISA IRQ\), vector [0-9a-f]+, from the PIIX3 PIRQ routed by this guest\r\n/);
    expectBlkOk(r.out, img);
    expect(queueInterrupts(r.out, 'intx')).toBeGreaterThan(0);
    expect(r.status, r.out).toBe(33);
  });

  it('QEMU\'s virtio-pci offers no MSI capability (bhyve -W is the single-vector MSI case)', async () => {
    const r = await runQemu(romWith(tmp, 'virtio-blk', MODE.MSI), dev(disk('q-msi.img')));
    expect(r.out).toContain('FAIL: virtio-blk: no MSI capability');
    expect(r.status).toBe(3);
  });
});

describe.skipIf(netSkip !== undefined)('virtio-net by interrupt, bhyve and QEMU, with a tap in a network namespace', () => {
  const ns = `virq${process.pid}`;
  const inNs = (cmd: string): string => spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', cmd], { encoding: 'utf8' }).stdout;
  beforeAll(() => {
    spawnSync('ip', ['netns', 'add', ns]);
    inNs('ip tuntap add dev tap0 mode tap && ip addr add 10.0.2.2/24 dev tap0 && ip link set tap0 up'
      + ' && sysctl -qw net.ipv6.conf.all.disable_ipv6=1');
  });
  afterAll(() => { spawnSync('ip', ['netns', 'del', ns]); });
  const inNsPrefix = ['ip', 'netns', 'exec', ns];

  const expectNet = (out: string, mode: string) => {
    expect(out).toContain('virtio-net: ping reply from 10.0.2.2 OK\r\n');
    const m = new RegExp(`virtio-net: interrupts: ${mode} rx vector [0-9a-f]+ (\\d+) \\(\\d+ spurious\\), tx vector [0-9a-f]+ (\\d+)\\r\\n`).exec(out);
    expect(m, out).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
  };

  // The I/O thread: by default (iothread=true) it receives, the receive
  // notifies reach it by ioeventfd; with iothread_tx=true it sends too and no
  // notify exits at all, with false (and the default, poll, for these
  // drivers: they wait on interrupts) the device thread sends at each
  // notify exit, with auto the thread sends when the driver gave its
  // queues MSI-X vectors, and with switch the queue moves by the direction
  // of the traffic (a ping is no stream: the exit keeps it); iothread=false
  // is the exit path for both. With MSI-X its
  // queue interrupts go by irqfd (irqfd=false: through vCPU 0).
  for (const [label, mode, flags, iothread] of [
    ['MSI-X with EVENT_IDX, I/O thread for both queues', MODE.MSIX | MODE.EVENT_IDX, [], 'all'],
    ['MSI-X with EVENT_IDX, iothread_tx=auto: both queues on the I/O thread', MODE.MSIX | MODE.EVENT_IDX, [], 'autoAll'],
    ['MSI-X with EVENT_IDX, I/O thread receiving (default)', MODE.MSIX | MODE.EVENT_IDX, [], 'rx'],
    ['MSI-X with EVENT_IDX, iothread_tx=switch: a ping is no stream, the exit keeps the transmit queue', MODE.MSIX | MODE.EVENT_IDX, [], 'switch'],
    ['MSI-X, I/O thread receiving, irqfd=false', MODE.MSIX, [], 'rxNoIrqfd'],
    ['MSI-X with EVENT_IDX, exit path', MODE.MSIX | MODE.EVENT_IDX, [], 'off'],
    ['MSI (-W), I/O thread for both queues', MODE.MSI, ['-W'], 'all'],
    ['INTx, I/O thread for both queues', MODE.INTX, ['-Y'], 'all'],
    ['INTx, I/O thread receiving (default)', MODE.INTX, ['-Y'], 'rx'],
    ['INTx, iothread_tx=auto: no MSI-X vectors, the I/O thread receives', MODE.INTX, ['-Y'], 'autoRx'],
    ['INTx, exit path', MODE.INTX, ['-Y'], 'off'],
  ] as const) {
    it(`bhyve: ${label}`, async () => {
      const name = vmName('irqnet');
      const opt = { all: ',iothread_tx=true', autoAll: ',iothread_tx=auto', autoRx: ',iothread_tx=auto', switch: ',iothread_tx=switch', rx: '', rxNoIrqfd: ',irqfd=false', off: ',iothread=false' }[iothread];
      // What the default chose, by the driver's interrupts.
      const served = iothread === 'autoAll' ? 'all' : iothread === 'autoRx' || iothread === 'switch' ? 'rx' : iothread;
      const r = await runHeld([...flags, ...bhyveArgs(romWith(tmp, 'virtio-net', mode | MODE.HOLD), name, {
        extra: ['-s', `3,virtio-net,tap0${opt}`],
      })], name, { prefix: inNsPrefix });
      const irq = mode & 0xf;
      expectNet(r.out, irq === MODE.MSIX ? 'msix' : irq === MODE.MSI ? 'msi' : 'intx');
      if (mode & MODE.EVENT_IDX) expect(r.out).toMatch(/virtio-net test \(msix, event idx\)\r\n/);
      expect(r.status, r.out).toBe(33);
      const dev = 'virtio-net@pci.0.3.0';
      const kind = irq === MODE.MSIX ? 'msi-x messages' : irq === MODE.MSI ? 'msi messages' : 'intx assertions';
      // The I/O thread's MSI-X interrupts go by irqfd, not through the
      // transport's counters; everything else through the transport.
      const byIrqfd = stat(r.stats, dev, 'msi-x messages by irqfd');
      expect(stat(r.stats, dev, kind) + byIrqfd).toBeGreaterThan(0);
      if (irq === MODE.MSIX && (served === 'all' || served === 'rx')) {
        expect(byIrqfd).toBeGreaterThan(0);
        if (served === 'rx') expect(stat(r.stats, dev, kind)).toBeGreaterThan(0); // transmit completions
      } else {
        expect(byIrqfd).toBe(0);
      }
      // ARP request and echo request out, ARP reply and echo reply in.
      if (served === 'all') {
        expect(stat(r.stats, dev, 'queue notifies by exit')).toBe(0);
        expect(stat(r.stats, dev, 'notifies forwarded to the I/O thread')).toBe(0);
        expect(stat(r.stats, dev, 'frames sent on the I/O thread')).toBeGreaterThanOrEqual(2);
        expect(stat(r.stats, dev, 'frames received on the I/O thread')).toBeGreaterThanOrEqual(2);
        expect(stat(r.stats, dev, 'frames sent on the device thread')).toBe(0);
        expect(stat(r.stats, dev, 'frames received on the device thread')).toBe(0);
        expect(stat(r.stats, dev, 'I/O thread wakeups')).toBeGreaterThan(0);
      } else if (served === 'rx' || served === 'rxNoIrqfd') {
        // Receive notifies by ioeventfd, transmit notifies by exit.
        expect(stat(r.stats, dev, 'notifies forwarded to the I/O thread')).toBe(0);
        expect(stat(r.stats, dev, 'frames received on the I/O thread')).toBeGreaterThanOrEqual(2);
        expect(stat(r.stats, dev, 'frames received on the device thread')).toBe(0);
        expect(stat(r.stats, dev, 'frames sent on the device thread')).toBeGreaterThanOrEqual(2);
        expect(stat(r.stats, dev, 'frames sent on the I/O thread')).toBe(0);
        expect(stat(r.stats, dev, 'queue notifies by exit')).toBeGreaterThan(0);
        expect(stat(r.stats, dev, 'transmit queue hand-overs')).toBe(0);
        expect(stat(r.stats, dev, 'transmit notifies routed to the I/O thread')).toBe(0);
      } else {
        expect(stat(r.stats, dev, 'queue notifies by exit')).toBeGreaterThan(0);
        expect(stat(r.stats, dev, 'frames sent on the device thread')).toBeGreaterThanOrEqual(2);
        expect(stat(r.stats, dev, 'frames received on the I/O thread')).toBe(0);
      }
    });
  }

  it.skipIf(!HAVE_QEMU)('QEMU: MSI-X and INTx', async () => {
    for (const mode of [MODE.MSIX, MODE.INTX]) {
      const r = await runQemu(romWith(tmp, 'virtio-net', mode), [
        '-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no', '-device', 'virtio-net-pci,netdev=n0,disable-legacy=on',
      ], inNsPrefix);
      expectNet(r.out, mode === MODE.MSIX ? 'msix' : 'intx');
      expect(r.status, r.out).toBe(33);
    }
  });
});

/** timers.rom's lines (the guest checks the rates itself; this pins what it saw). */
function expectTimers(out: string): void {
  expect(out).toMatch(/hpet: \d+ timers, counter (\d+) Hz \(period \d+ fs\), measured \d+ Hz\r\n/);
  expect(out).toMatch(/hpet: one-shot timer 1 on pin \d+ \((I\/O APIC route|legacy replacement)\): 1 interrupt after \d+ us \(armed for 50000 us\)\r\n/);
  expect(out).toMatch(/hpet: periodic timer 0 on pin \d+ \((I\/O APIC route|legacy replacement)\): 20 interrupts, median period \d+ us, mean \d+ us \(programmed 10000 us\)\r\n/);
  expect(out).toMatch(/rtc: periodic 64 Hz on pin 8 \([^)]*\): 20 interrupts, median period \d+ us, mean \d+ us \(expected 15625 us\), register C [cd]0\r\n/);
  expect(out).toMatch(/rtc: alarm at second \d+: interrupt after \d+ ms, register C [ab]0\r\n/);
  expect(out).toMatch(/pit: channel 0 rate generator 100 Hz on IRQ 0 -> pin 2 \([^)]*\): 20 interrupts, median period \d+ us, mean \d+ us \(expected 10000 us\)\r\n/);
  expect(out).toMatch(/pit: channel 0 mode 0: 1 interrupt after \d+ us \(armed for 20000 us\)\r\n/);
  expect(out).toMatch(/lapic: one-shot: 1 interrupt after \d+ us \(armed for 20000 us\)\r\n/);
  expect(out).toMatch(/lapic: periodic: 20 interrupts, median period \d+ us, mean \d+ us \(programmed 10000 us\)\r\n/);
  expect(out).toContain('timers: OK\r\n');
}

describe.skipIf(skip !== undefined)('timer interrupts', () => {
  it('bhyve: HPET (I/O APIC route and FSB), RTC, PIT on IRQ 0 -> pin 2 as the MP table says, LAPIC timer', async () => {
    const r = await runBhyve(bhyveArgs(rom('timers'), vmName('timers')), { timeout: 90_000 });
    expectTimers(r.stdout);
    expect(r.stdout).toMatch(/hpet: 8 timers, counter 10000000 Hz/);
    expect(r.stdout).toMatch(/hpet: one-shot timer 1 on pin (2[0-3]) \(I\/O APIC route\)/);
    expect(r.stdout).toMatch(/hpet: FSB \(MSI\) one-shot timer 2: 1 interrupt after \d+ us \(armed for 50000 us\)\r\n/);
    expect(r.stdout).toContain('(MP table): 20 interrupts, median period');
    expect(r.exitCode, `${r.stdout}${r.stderr}`).toBe(33);
  });

  it.skipIf(qemuSkip !== undefined)('QEMU: HPET (legacy replacement), RTC, PIT, LAPIC timer', async () => {
    const r = await runQemu(rom('timers'), [], [], 90_000);
    expectTimers(r.out);
    expect(r.out).toMatch(/hpet: one-shot timer 1 on pin 8 \(legacy replacement\)/);
    expect(r.status, r.out).toBe(33);
  });
});

describe.skipIf(skip !== undefined)('interrupt storm: masking and unmasking under load', () => {
  const stormLine = /storm: (\d+) requests in 100 rounds \(QD 16\), interrupts: (\d+) while unmasked, 0 while masked, 100 on unmask, \d+ spurious\r\n/;

  for (const [label, mode, iothread] of [['MSI-X, exit path', MODE.MSIX, false], ['MSI-X, iothread', MODE.MSIX, true], ['INTx disable, iothread', MODE.INTX, true]] as const) {
    it(`bhyve: ${label}`, async () => {
      const img = disk(`storm-${mode}-${iothread}.img`);
      const name = vmName('storm');
      const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-storm', mode | MODE.HOLD), name, {
        extra: ['-s', `3,virtio-blk,${img},iothread=${iothread}`],
      }), name, { timeout: 120_000 });
      const m = stormLine.exec(r.out);
      expect(m, r.out).not.toBeNull();
      expect(Number(m![1])).toBe(100 * 48 + 17); // 100 x (32 + 16) reads, 16 writes and a flush
      expect(r.out).toContain('storm: OK\r\n');
      expect(r.status, r.out).toBe(33);
      if (mode === MODE.MSIX) expect(stat(r.stats, BLK, 'msi-x messages held by a mask')).toBeGreaterThanOrEqual(100);
      expect(stat(r.stats, BLK, iothread ? 'requests served on the iothread' : 'requests served on the device thread')).toBe(100 * 48 + 17);
    });
  }

  it.skipIf(qemuSkip !== undefined)('QEMU: MSI-X and INTx disable', async () => {
    for (const mode of [MODE.MSIX, MODE.INTX]) {
      const img = disk(`q-storm-${mode}.img`);
      const r = await runQemu(romWith(tmp, 'virtio-storm', mode), [
        '-drive', `file=${img},if=none,format=raw,id=d0`, '-device', 'virtio-blk-pci,drive=d0,disable-legacy=on',
      ], [], 120_000);
      expect(stormLine.exec(r.out), r.out).not.toBeNull();
      expect(r.out).toContain('storm: OK\r\n');
      expect(r.status, r.out).toBe(33);
    }
  });
});
