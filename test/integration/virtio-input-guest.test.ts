// virtio-input.rom (test/guests/virtio/guest-input.c) drives a virtio input
// device as a driver does: reads its config space (name, ids, property and
// event bitmaps, ABS_X), gives it event buffers, prints every event it
// receives and sends a CAPS LOCK LED on the status queue; by polling, by
// MSI-X and by INTx (events taken only after an interrupt).
//
// On our bhyve (-s 7,virtio-input,PATH) the host device is an evdev served
// through FUSE (test/support/fuse-evdev.ts: this kernel has no uinput):
// bhyve opens and grabs it, answers the guest's config questions with its
// EVIOCG* ioctls, passes the injected key and axis events through and
// writes the guest's LED event back to it, all of it at run time inside
// the sandbox (on by default: the reads, writes and ioctls on the evdev
// opened before it went up). On QEMU the same ROM drives
// -device virtio-keyboard-pci with keys sent over QMP (input-send-event);
// the key press and release reach both guests as the same four events.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BHYVE, GUESTS, bhyveArgs, kvmUnavailable, runBhyve, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, qemuArgs, romWith, runInteractive, stat } from '../support/guest-rom.js';
import { fuseEvdevUnavailable, startFuseEvdev, type FakeEvdevDevice } from '../support/fuse-evdev.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'virtio-input.rom')) ? undefined : 'virtio-input.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping virtio-input guest tests: ${skip}`);
const noEvdev = fuseEvdevUnavailable();
if (!skip && noEvdev) console.warn(`skipping virtio-input on bhyve: ${noEvdev}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vinput-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const EV_SYN = 0, EV_KEY = 1, EV_ABS = 3, EV_LED = 0x11, KEY_A = 30, KEY_Q = 16, KEY_B = 48, LED_CAPSL = 1;
const DEVICE: FakeEvdevDevice = {
  name: 'bhyve-kvm test evdev', id: [0x06, 0x1234, 0x5678, 1], props: [0],
  bits: { [EV_KEY]: [KEY_Q, KEY_A, KEY_B], [EV_ABS]: [0, 1], [EV_LED]: [LED_CAPSL] },
  abs: { 0: [0, 1023, 0, 0, 10] },
};
/** A key press and release: what both VMMs' guests must see first. */
const KEY_EVENTS = [
  'vinput: event 0: type 1 code 30 value 1', 'vinput: event 1: type 0 code 0 value 0',
  'vinput: event 2: type 1 code 30 value 0', 'vinput: event 3: type 0 code 0 value 0',
];

const MODES = [['polling', MODE.POLL], ['MSI-X', MODE.MSIX], ['INTx', MODE.INTX]] as const;
let mounts = 0;

describe.skipIf(skip !== undefined)('virtio-input.rom on bhyve and QEMU', () => {
  for (const [label, mode] of MODES) {
    it.skipIf(noEvdev !== undefined)(`bhyve (-s 7,virtio-input,EVDEV), ${label}`, async () => {
      const evdev = await startFuseEvdev(path.join(tmp, `mnt${mounts++}`), DEVICE);
      try {
        const vm = vmName(`vinput-${label}`);
        const r = await runInteractive([BHYVE, ...bhyveArgs(romWith(tmp, 'virtio-input', mode | MODE.HOLD, 6), vm, {
          extra: ['-s', `7,virtio-input,${evdev.path}`],
        })], {
          ready: 'ready for 6 events', vm,
          whenReady: async (out) => {
            evdev.inject([[EV_KEY, KEY_A, 1], [EV_SYN, 0, 0]]);
            // Two groups in one go: handed over at each EV_SYN.
            while (!out().includes('event 1:')) await new Promise((res) => setTimeout(res, 50));
            evdev.inject([[EV_KEY, KEY_A, 0], [EV_SYN, 0, 0], [EV_ABS, 0, 512], [EV_SYN, 0, 0]]);
          },
        });
        expect(r.status, r.out).toBe(33);
        expect(r.out).toContain('vinput: 00:07.0 1af4:1052 rev 1 subsystem 108e:1100 class 098000');
        expect(r.out).toContain("vinput: name 'bhyve-kvm test evdev'");
        expect(r.out).toContain('vinput: serial 0 bytes');
        expect(r.out).toContain('vinput: ids bus 0006 vendor 1234 product 5678 version 0001');
        expect(r.out).toContain('vinput: props 1 bytes, INPUT_PROP_POINTER');
        expect(r.out).toContain('vinput: ev_bits EV_KEY: 7 bytes, 3 codes, KEY_A yes');
        expect(r.out).toContain('vinput: ev_bits EV_REL: 0 bytes, 0 codes');
        expect(r.out).toContain('vinput: ev_bits EV_ABS: 1 bytes, 2 codes');
        expect(r.out).toContain('vinput: ev_bits EV_LED: 1 bytes, 1 codes, LED_CAPSL yes');
        expect(r.out).toContain('vinput: ABS_X min 0 max 1023 fuzz 0 flat 0 res 10');
        for (const line of KEY_EVENTS) expect(r.out).toContain(line);
        expect(r.out).toContain('vinput: event 4: type 3 code 0 value 512');
        expect(r.out).toContain('vinput: event 5: type 0 code 0 value 0');
        expect(r.out).toContain('vinput: received 6 events, crc a6802884');
        expect(evdev.grabbed()).toBe(true);
        expect(evdev.writes).toEqual([[EV_LED, LED_CAPSL, 1], [EV_SYN, 0, 0]]);
        const dev = 'virtio-input@pci.0.7.0';
        expect(stat(r.stats, dev, 'events delivered')).toBe(6);
        expect(stat(r.stats, dev, 'events dropped')).toBe(0);
        expect(stat(r.stats, dev, 'status events written')).toBe(2);
        if (mode === MODE.MSIX) expect(stat(r.stats, dev, 'msi-x messages')).toBeGreaterThan(0);
        if (mode === MODE.INTX) expect(stat(r.stats, dev, 'intx assertions')).toBeGreaterThan(0);
        if (mode !== MODE.POLL) expect(r.out).toMatch(/vinput: interrupts: (msix|intx) queue vector [0-9a-f]+ [1-9]\d*/);
      } finally {
        await evdev.close();
      }
    }, 180_000);

    it.skipIf(!HAVE_QEMU)(`QEMU (-device virtio-keyboard-pci, keys over QMP), ${label}`, async () => {
      const qmp = path.join(tmp, `qmp${mounts++}.sock`);
      const r = await runInteractive(['qemu-system-x86_64', ...qemuArgs(romWith(tmp, 'virtio-input', mode, 4), [
        '-device', 'virtio-keyboard-pci', '-qmp', `unix:${qmp},server=on,wait=off`,
      ])], {
        ready: 'ready for 4 events',
        whenReady: async () => {
          const c = net.connect(qmp);
          await new Promise<void>((res, rej) => { c.once('connect', () => res()); c.once('error', rej); });
          const send = (o: unknown): void => { c.write(`${JSON.stringify(o)}\n`); };
          send({ execute: 'qmp_capabilities' });
          for (const down of [true, false]) {
            send({ execute: 'input-send-event', arguments: { events: [{ type: 'key', data: { down, key: { type: 'qcode', data: 'a' } } }] } });
            await new Promise((res) => setTimeout(res, 200));
          }
          c.end();
        },
      });
      expect(r.status, r.out).toBe(33);
      expect(r.out).toMatch(/vinput: 00:[0-9a-f]{2}\.0 1af4:1052 rev 1/);
      expect(r.out).toContain("vinput: name 'QEMU Virtio Keyboard'");
      expect(r.out).toMatch(/vinput: ev_bits EV_KEY: \d+ bytes, \d+ codes, KEY_A yes/);
      for (const line of KEY_EVENTS) expect(r.out).toContain(line);
      expect(r.out).toContain('vinput: received 4 events, crc 2bfc3d54');
    }, 180_000);
  }

  it('a path that is not an event device ends the start with one line naming the slot', async () => {
    const r = await runBhyve(bhyveArgs(path.join(GUESTS, 'virtio-input.rom'), vmName('vinput-bad'), {
      extra: ['-s', '7,virtio-input,/dev/null'],
    }), { timeout: 60_000 });
    expect(r.exitCode).toBe(4);
    const lines = String(r.stderr).trim().split('\n').filter((l) => !l.includes('warning:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('virtio-input at pci slot 0:7:0: /dev/null is no evdev');
  }, 90_000);
});
