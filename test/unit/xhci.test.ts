// The xHCI controller (bhyve's pci_xhci.c) and its USB tablet (usb_mouse.c)
// driven as a guest driver drives them: PCI identity and registers, reset,
// the command ring and its completions, slot and endpoint contexts in guest
// memory, control transfers (descriptors, HID requests, a STALL and the
// recovery from it), interrupt IN reports from pointer events, port reset,
// MSI and INTx; and hostile input: rings and contexts outside RAM, link
// loops, TDs without end, bad TRBs, a full event ring, random register
// writes. No /dev/kvm.
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { parseSlotOption } from '../../src/config/bhyve-args.js';
import { parseXhciSlots } from '../../src/devices/usb/xhci.js';
import { validatePciDevices } from '../../src/devices/registry.js';
import { TABLET_CONFIG_DESCRIPTOR, TABLET_DEVICE_DESCRIPTOR, TABLET_REPORT_DESCRIPTOR } from '../../src/devices/usb/hid-descriptors.js';
import { DBOFF, IR0, OP, RAM, RAM_SIZE, RING, SLOT, XhciRig } from './xhci-driver.js';
import type { MemoryBacking, MemoryMapControl } from '../../src/devices/device.js';
import { Fbuf } from '../../src/devices/display/fbuf.js';
import { FILE_SIZE, REG_HEIGHT, REG_WIDTH } from '../../src/devices/display/framebuffer-file.js';
import { INPUT_POINTER } from '../../src/devices/display/display-input.js';
import { ByteRing } from '../../src/vmm/byte-ring.js';
import { fake } from '../support/fake-device.js';

const GET_DESCRIPTOR = (type: number, index: number, length: number, recip = 0x80, wIndex = 0) =>
  ({ type: recip, req: 6, value: (type << 8) | index, index: wIndex, length });
const STS_HCH = 1, STS_HSE = 4, STS_EINT = 8, STS_HCE = 0x1000;

function ready(o: { msi?: boolean } = {}): { r: XhciRig; slot: number } {
  const r = new XhciRig();
  r.enablePci(o.msi ?? true);
  r.start();
  r.events(); // the port status change for the tablet
  return { r, slot: r.address() };
}

describe('xhci: PCI function and registers as bhyve', () => {
  it('is 8086:1E31, class 0C/03/30, USB 3.0, one MSI message, INTx, BAR 0 of 4 KiB', () => {
    const r = new XhciRig();
    expect(r.cfgRd(0x00)).toBe(0x1e318086);
    expect(r.cfgRd(0x08) >>> 8).toBe(0x0c0330);
    expect(r.cfgRd(0x60, 1)).toBe(0x30);
    const msi = r.findCap(0x05);
    expect((r.cfgRd(msi + 2, 2) >> 1) & 7).toBe(0);
    expect(r.cfgRd(0x3d, 1)).toBe(1);
    r.cfgWr(0x10, 0xffffffff);
    expect((~(r.cfgRd(0x10) & ~0xf) + 1) >>> 0).toBe(0x1000);
  });

  it('capability registers: xHCI 1.0, 64 slots, 1 interrupter, 8 ports, doorbells at 0x4a0, runtime at 0xcc0, protocols at 0xd00', () => {
    const r = new XhciRig();
    r.enablePci();
    expect(r.rd(0)).toBe(0x01000020);
    expect(r.rd(0, 1)).toBe(0x20);
    expect(r.rd(2, 2)).toBe(0x100);
    expect(r.rd(4)).toBe((8 << 24) | (1 << 8) | 64);
    expect(r.rd(8)).toBe(4);
    const hcc = r.rd(0x10);
    expect(hcc & 1).toBe(1); // AC64
    expect(hcc & 4).toBe(0); // 32-byte contexts
    expect(hcc >>> 16).toBe(0xd00 / 4);
    expect(r.rd(0x14)).toBe(DBOFF);
    expect(r.rd(0x18)).toBe(0xcc0);
    // Supported protocols: USB 2.0 on ports 5-8, then USB 3.0 on ports 1-4.
    expect(r.rd(0xd00)).toBe(0x02000402);
    expect(r.rd(0xd04)).toBe(0x20425355);
    expect(r.rd(0xd08)).toBe((4 << 8) | 5);
    expect(r.rd(0xd10)).toBe(0x03000002);
    expect(r.rd(0xd18)).toBe((4 << 8) | 1);
    expect(r.rd(OP + 8)).toBe(1); // 4 KiB pages
    expect(r.usbsts).toBe(STS_HCH);
  });

  it('the tablet is on USB 3 port 1: connected, enabled, high speed, U0; the empty ports in RxDetect', () => {
    const r = new XhciRig();
    r.enablePci();
    const p1 = r.rd(OP + 0x400);
    expect(p1 & 1).toBe(1); // CCS
    expect(p1 & 2).toBe(2); // PED
    expect(p1 & 0x200).toBe(0x200); // PP
    expect((p1 >> 10) & 0xf).toBe(3);
    expect((p1 >> 5) & 0xf).toBe(0);
    for (let p = 2; p <= 8; p++) expect(r.rd(OP + 0x400 + 16 * (p - 1))).toBe((5 << 5) | 0x200);
  });

  it('-s N,xhci,tablet and slot.N.device: checks as pci_xhci_parse_devices', () => {
    const t = new ConfigTree();
    parseSlotOption(t, '5,xhci,tablet,tablet');
    expect(t.get('pci.0.5.0.slot.2.device')).toBe('tablet');
    expect(parseXhciSlots(t, 'pci.0.5.0')).toEqual([{ slot: 1, device: 'tablet' }, { slot: 2, device: 'tablet' }]);
    const bad = (kv: Record<string, string>, msg: RegExp) => {
      const c = new ConfigTree();
      for (const [k, v] of Object.entries(kv)) c.set(`pci.0.5.0.${k}`, v);
      expect(() => parseXhciSlots(c, 'pci.0.5.0')).toThrow(msg);
    };
    bad({ 'slot.0.device': 'tablet' }, /invalid slot '0'/);
    bad({ 'slot.65.device': 'tablet' }, /invalid slot '65'/);
    bad({ 'slot.1.device': 'keyboard' }, /unknown USB device model "keyboard"/);
    bad({ 'slot.1.foo': 'x' }, /missing "device" value for slot '1'/);
    bad(Object.fromEntries([1, 2, 3, 4, 5].map((i) => [`slot.${i}.device`, 'tablet'])), /max number of USB 3 devices reached, max 4/);
    expect(() => parseSlotOption(new ConfigTree(), '5,xhci,mouse')).toThrow(/unknown USB device "mouse"/);
    const two = new ConfigTree();
    parseSlotOption(two, '5,xhci,tablet');
    parseSlotOption(two, '6,xhci,tablet');
    expect(() => validatePciDevices(two)).toThrow(/pci_xhci controller already defined at 0:5:0/);
  });
});

describe('xhci: bring-up, commands and contexts', () => {
  it('RS posts a port status change for the tablet and one MSI; EHB holds further interrupts until cleared', () => {
    const r = new XhciRig();
    r.enablePci();
    r.start();
    expect(r.usbsts & STS_HCH).toBe(0);
    expect(r.irq.msis).toEqual([[0xfee00000, 0x41]]);
    expect(r.rd(IR0) & 1).toBe(1); // IP
    expect(r.usbsts & STS_EINT).toBe(STS_EINT);
    const ev = r.events();
    expect(ev.map((e) => [e.type, e.lo >>> 24, e.cc])).toEqual([[34, 1, 1]]);
    expect(r.rd(OP + 0x400) & (1 << 17)).not.toBe(0); // CSC
    r.wr(IR0, 3); // clear IP
    expect(r.rd(IR0) & 1).toBe(0);
    r.command(23);
    expect(r.irq.msis.length).toBe(2);
  });

  it('Enable Slot hands out the configured slot once; Address Device fills the output context', () => {
    const { r, slot } = ready();
    expect(slot).toBe(1);
    expect(r.command(9).cc).toBe(9); // No Slots Available
    const out = r.outCtx(slot);
    expect(r.r32(out + 12)).toBe((2 << 27) | 1); // addressed, address 1
    expect(r.r32(out + 32) & 7).toBe(1); // EP0 running
    expect((r.r32(out) >>> 27)).toBe(1);
    // A second Address Device in the addressed state: Context State Error.
    const ic = r.inputCtx(3);
    r.w32(ic + 64 + 4, 4 << 3); r.w64(ic + 64 + 8, r.alloc(64) | 1);
    expect(r.command(11, { lo: ic, slot }).cc).toBe(19);
  });

  it('Address Device with BSR leaves the device in the default state at address 0', () => {
    const r = new XhciRig();
    r.enablePci(); r.start(); r.events();
    const slot = r.address(1, 3, true);
    expect(r.r32(r.outCtx(slot) + 12)).toBe(1 << 27);
  });

  it('commands on slots that are not enabled, bad endpoints, states and unknown TRB types fail with their completion codes', () => {
    const { r, slot } = ready();
    expect(r.command(10, { slot: 7 }).cc).toBe(11);
    expect(r.command(11, { slot: 0, lo: r.inputCtx(3) }).cc).toBe(11);
    expect(r.command(14, { slot, flags: 0 << 16 }).cc).toBe(5); // endpoint 0: TRB error
    expect(r.command(14, { slot, flags: 1 << 16 }).cc).toBe(19); // EP0 running, not halted
    expect(r.command(16, { slot, lo: r.alloc(64) | 1, flags: 1 << 16 }).cc).toBe(19); // not stopped
    expect(r.command(15, { slot, flags: 5 << 16 }).cc).toBe(12); // endpoint not enabled
    expect(r.command(30).cc).toBe(5);
    expect(r.command(19).cc).toBe(1); // Negotiate Bandwidth: bhyve's silent success
    // Address Device with a drop flag: TRB error (bhyve).
    r.command(10, { slot }); r.command(9);
    expect(r.command(11, { slot, lo: r.inputCtx(3, 4) }).cc).toBe(5);
  });

  it('Evaluate Context, Stop Endpoint, Set TR Dequeue, Reset Device, deconfigure and Disable Slot', () => {
    const { r, slot } = ready();
    const ic = r.inputCtx(3);
    r.w32(ic + 32 + 4, 0x1234);
    r.w32(ic + 64 + 4, 512 << 16);
    expect(r.command(13, { lo: ic, slot }).cc).toBe(1);
    const out = r.outCtx(slot);
    expect(r.r32(out + 4) & 0xffff).toBe(0x1234);
    expect(r.r32(out + 32 + 4) >>> 16).toBe(512);
    expect(r.configureTablet(slot)).toBe(1);
    expect(r.r32(out + 12) >>> 27).toBe(3); // configured
    expect(r.r32(out + 3 * 32) & 7).toBe(1);
    expect(r.command(15, { slot, flags: 3 << 16 }).cc).toBe(1);
    expect(r.r32(out + 3 * 32) & 7).toBe(3); // stopped
    const ring = r.newRing();
    expect(r.command(16, { slot, lo: ring.base | 1, flags: 3 << 16 }).cc).toBe(1);
    expect(r.r32(out + 3 * 32 + 8)).toBe(ring.base | 1);
    expect(r.command(12, { slot, flags: 1 << 9 }).cc).toBe(1); // deconfigure
    expect(r.r32(out + 12) >>> 27).toBe(2);
    expect(r.r32(out + 3 * 32) & 7).toBe(0);
    expect(r.command(17, { slot }).cc).toBe(1); // Reset Device
    expect(r.r32(out + 12)).toBe(1 << 27);
    expect(r.command(10, { slot }).cc).toBe(1);
    expect(r.command(10, { slot }).cc).toBe(11);
    expect(r.command(9).slot).toBe(1);
  });

  it('HCRST returns the controller to its power-on state', () => {
    const { r } = ready();
    r.wr(OP, 0);
    expect(r.usbsts & STS_HCH).toBe(STS_HCH);
    r.wr(OP, 2);
    expect(r.rd(OP)).toBe(0);
    expect(r.rd(OP + 0x30)).toBe(0);
    expect(r.rd(IR0 + 8)).toBe(0);
    r.start(); r.events();
    expect(r.address()).toBe(1); // the slot was disabled by the reset
  });

  it('port reset: PRC and a port status change event; change bits clear on write', () => {
    const { r } = ready();
    r.wr(OP + 0x400, 0x200 | 0x10);
    const sc = r.rd(OP + 0x400);
    expect(sc & (1 << 21)).not.toBe(0);
    expect(sc & 2).toBe(2);
    expect(r.events().map((e) => [e.type, e.lo >>> 24])).toEqual([[34, 1]]);
    r.wr(OP + 0x400, 0x200 | (1 << 21) | (1 << 17));
    expect(r.rd(OP + 0x400) & ((1 << 21) | (1 << 17))).toBe(0);
    expect(r.rd(OP + 0x400) & 3).toBe(3); // still connected and enabled
  });
});

describe('xhci: control transfers to the tablet', () => {
  it('GET_DESCRIPTOR device, configuration, strings, HID report descriptor', () => {
    const { r, slot } = ready();
    const dev = r.control(slot, GET_DESCRIPTOR(1, 0, 18));
    expect(dev.events.map((e) => [e.type, e.cc, e.len])).toEqual([[32, 1, 0]]);
    expect(dev.data).toEqual(TABLET_DEVICE_DESCRIPTOR);
    expect(dev.data[8] | (dev.data[9] << 8)).toBe(0xfb5d);
    // A longer buffer: Short Packet on the data stage (ISP), success on the status stage.
    const cfg = r.control(slot, GET_DESCRIPTOR(2, 0, 255));
    expect(cfg.events.map((e) => [e.cc, e.len])).toEqual([[13, 255 - 40], [1, 0]]);
    expect(cfg.data.subarray(0, 40)).toEqual(TABLET_CONFIG_DESCRIPTOR);
    const str = r.control(slot, GET_DESCRIPTOR(3, 2, 64));
    expect(Buffer.from(str.data.subarray(2, str.data[0])).toString('utf16le')).toBe('HID Tablet');
    expect(r.control(slot, GET_DESCRIPTOR(3, 0, 4)).data).toEqual(Uint8Array.from([4, 3, 9, 4]));
    const rep = r.control(slot, GET_DESCRIPTOR(0x22, 0, TABLET_REPORT_DESCRIPTOR.length, 0x81));
    expect(rep.data).toEqual(TABLET_REPORT_DESCRIPTOR);
    expect(Buffer.from(rep.data).includes(Buffer.from([0x26, 0xff, 0x7f]))).toBe(true);
  });

  it('SET_CONFIGURATION, GET_CONFIGURATION, HID SET_IDLE / SET_PROTOCOL / GET_REPORT', () => {
    const { r, slot } = ready();
    expect(r.control(slot, { type: 0, req: 9, value: 1, index: 0, length: 0 }).events.map((e) => e.cc)).toEqual([1]);
    expect(r.control(slot, { type: 0x80, req: 8, value: 0, index: 0, length: 1 }).data).toEqual(Uint8Array.of(1));
    expect(r.control(slot, { type: 0x21, req: 0x0a, value: 0, index: 0, length: 0 }).events[0].cc).toBe(1);
    expect(r.control(slot, { type: 0x21, req: 0x0b, value: 0, index: 0, length: 0 }).events[0].cc).toBe(1);
    expect(r.dev.tablet!.protocol).toBe(0);
    expect(r.control(slot, { type: 0xa1, req: 0x03, value: 0, index: 0, length: 1 }).data).toEqual(Uint8Array.of(0));
    r.dev.tablet!.pointerEvent(1, 100, 200, 1000, 1000);
    const rep = r.control(slot, { type: 0xa1, req: 0x01, value: 0x0100, index: 0, length: 6 });
    expect(Array.from(rep.data)).toEqual([1, 0xcc, 0x0c, 0x99, 0x19, 0]);
  });

  it('an unknown request STALLs and halts EP0; Reset Endpoint and Set TR Dequeue recover it', () => {
    const { r, slot } = ready();
    const st = r.control(slot, GET_DESCRIPTOR(0x77, 0, 8));
    expect(st.events.map((e) => e.cc)).toEqual([6]);
    const out = r.outCtx(slot);
    expect(r.r32(out + 32) & 7).toBe(2); // halted
    // A doorbell on a halted endpoint does nothing.
    const again = r.control(slot, GET_DESCRIPTOR(1, 0, 18));
    expect(again.events).toEqual([]);
    expect(r.command(14, { slot, flags: 1 << 16 }).cc).toBe(1);
    expect(r.r32(out + 32) & 7).toBe(3);
    const ring = r.newRing();
    r.rings.set(`${slot}.1`, ring);
    expect(r.command(16, { slot, lo: ring.base | 1, flags: 1 << 16 }).cc).toBe(1);
    expect(r.control(slot, GET_DESCRIPTOR(1, 0, 18)).data).toEqual(TABLET_DEVICE_DESCRIPTOR);
  });
});

describe('xhci: interrupt IN reports from pointer events', () => {
  it('NAKs until the pointer moves, then one report: buttons, X and Y scaled to 0..0x7fff as bhyve', () => {
    const { r, slot } = ready();
    expect(r.configureTablet(slot)).toBe(1);
    const buf = r.queueIn(slot, 8);
    expect(r.events()).toEqual([]);
    const msis = r.irq.msis.length;
    r.dev.tablet!.pointerEvent(0x04, 512, 384, 1024, 768); // right button
    const ev = r.events();
    expect(ev.map((e) => [e.type, e.cc, e.len, e.slot, e.ep])).toEqual([[32, 13, 2, slot, 3]]);
    expect(Array.from(r.bytes.subarray(buf - RAM, buf - RAM + 6))).toEqual([2, 0, 0x40, 0, 0x40, 0]);
    expect(r.irq.msis.length).toBe(msis + 1);
    // Only the latest report is kept; the next TRB gets it when it comes.
    r.dev.tablet!.pointerEvent(0x01, 0, 0, 1024, 768);
    r.dev.tablet!.pointerEvent(0x02 | 0x08, 1023, 767, 1024, 768); // middle + wheel up
    const b2 = r.queueIn(slot, 6);
    expect(r.events().map((e) => [e.cc, e.len])).toEqual([[1, 0]]);
    expect(Array.from(r.bytes.subarray(b2 - RAM, b2 - RAM + 6))).toEqual([4, 0xe0, 0x7f, 0xd5, 0x7f, 1]);
    // Past the screen's edge stays inside the logical range.
    r.queueIn(slot, 8);
    r.dev.tablet!.pointerEvent(0, 5000, 5000, 1024, 768);
    expect(r.dev.tablet!.report[2]).toBe(0x7f);
    expect(r.dev.stats()['tablet reports']).toBe(3);
  });

  it('INTx without MSI: the line follows IMAN.IP while interrupts are enabled', () => {
    const { r, slot } = ready({ msi: false });
    r.configureTablet(slot);
    r.queueIn(slot);
    r.wr(IR0, 3); // clear IP
    const high = () => [...r.irq.levels.values()].some((v) => v);
    expect(high()).toBe(false);
    r.dev.tablet!.pointerEvent(1, 10, 10, 100, 100);
    expect(high()).toBe(true);
    r.wr(IR0, 3);
    expect(high()).toBe(false);
  });
});

describe('VNC pointer events: to the tablet when there is one, else the PS/2 mouse', () => {
  function fbuf(w: number, h: number) {
    const f = fake({ 'pci.0.2.0.device': 'fbuf', 'pci.0.2.0.w': String(w), 'pci.0.2.0.h': String(h) });
    const file = new Uint8Array(FILE_SIZE);
    const mm: MemoryMapControl = { map: () => {}, unmap: () => {}, view: (b: MemoryBacking, size: number) => file.subarray(b.offset, b.offset + size) };
    const ring = ByteRing.create(4096);
    const d = new Fbuf({ ...f.ctx, memoryMap: mm, hostPorts: { display: () => ({ kind: 'fbuf-input', input: ring.sab }) } as never }, 'pci.0.2.0');
    const ps2: Array<[number, number, number]> = [];
    d.attachKeyboard({ keyEvent: () => {}, pointerEvent: (b, x, y) => { ps2.push([b, x, y]); } });
    const move = (b: number, x: number, y: number) => { ring.push(Uint8Array.of(INPUT_POINTER, b, x & 0xff, x >> 8, y & 0xff, y >> 8)); d.poll(); };
    return { d, ps2, move };
  }

  it('without a tablet the PS/2 mouse gets them; with one, the tablet, scaled by the mode the guest set', () => {
    const { d, ps2, move } = fbuf(800, 600);
    move(1, 400, 300);
    expect(ps2).toEqual([[1, 400, 300]]);
    const { r, slot } = ready();
    r.configureTablet(slot);
    const buf = r.queueIn(slot);
    d.attachPointer(r.dev.tablet!);
    move(4, 400, 150);
    expect(ps2.length).toBe(1);
    expect(Array.from(r.bytes.subarray(buf - RAM, buf - RAM + 6))).toEqual([2, 0, 0x40, 0, 0x20, 0]);
    // The guest switches to 1024x768: the same position is further left.
    d.regs.setUint16(REG_WIDTH, 1024, true);
    d.regs.setUint16(REG_HEIGHT, 768, true);
    const b2 = r.queueIn(slot);
    move(0, 512, 768);
    expect(Array.from(r.bytes.subarray(b2 - RAM, b2 - RAM + 6))).toEqual([0, 0, 0x40, 0xd5, 0x7f, 0]);
  });
});

describe('xhci: hostile drivers end in the spec\'s error states', () => {
  it('a command ring outside guest RAM: Host System Error, the controller halts', () => {
    const r = new XhciRig();
    r.enablePci(); r.start(); r.events();
    r.wr(OP + 0x18, 1); r.wr(OP + 0x1c, 0x10);
    r.wr(DBOFF, 0);
    expect(r.usbsts & (STS_HSE | STS_HCH)).toBe(STS_HSE | STS_HCH);
    expect(r.dev.stats().hostSystemErrors).toBe(1);
    // Doorbells on a halted controller do nothing; HCRST clears the error.
    r.wr(DBOFF, 0);
    r.wr(OP, 2);
    expect(r.usbsts).toBe(STS_HCH);
  });

  it('a command ring of link TRBs pointing at themselves: Host Controller Error, not a hang', () => {
    const r = new XhciRig();
    r.enablePci(); r.start(); r.events();
    const at = r.alloc(16);
    r.w64(at, at); r.w32(at + 12, (6 << 10) | 1);
    r.wr(OP + 0x18, at | 1); r.wr(OP + 0x1c, 0);
    r.wr(DBOFF, 0);
    expect(r.usbsts & (STS_HCE | STS_HCH)).toBe(STS_HCE | STS_HCH);
    // RS cannot start it again before a reset.
    r.wr(OP, 1);
    expect(r.usbsts & STS_HCH).toBe(STS_HCH);
  });

  it('a command ring that toggles its own cycle forever ends at the cycle bit', () => {
    const r = new XhciRig();
    r.enablePci(); r.start(); r.events();
    const at = r.alloc(16);
    r.w64(at, at); r.w32(at + 12, (6 << 10) | 2 | 1);
    r.wr(OP + 0x18, at | 1); r.wr(OP + 0x1c, 0);
    r.wr(DBOFF, 0);
    expect(r.usbsts & (STS_HCE | STS_HSE | STS_HCH)).toBe(0);
  });

  it('event ring segment tables: too small, too large, outside RAM', () => {
    for (const [size, base, want] of [[0, RAM + 0x8000, STS_HCE], [5000, RAM + 0x8000, STS_HCE], [16, 0x40000000, STS_HSE]] as const) {
      const r = new XhciRig();
      r.enablePci();
      const erst = r.alloc(16);
      r.w64(erst, base); r.w32(erst + 8, size);
      r.wr(IR0 + 8, 1);
      r.wr(IR0 + 0x10, erst); r.wr(IR0 + 0x14, 0);
      expect(r.usbsts & want).toBe(want);
    }
    const r = new XhciRig();
    r.enablePci();
    r.wr(IR0 + 8, 1);
    r.wr(IR0 + 0x10, 0); r.wr(IR0 + 0x14, 0x100);
    expect(r.usbsts & STS_HSE).toBe(STS_HSE);
  });

  it('an ERDP outside the event ring segment when an event is due: Host Controller Error', () => {
    const r = new XhciRig();
    r.enablePci(); r.start({ run: false });
    r.wr(IR0 + 0x18, RAM + RAM_SIZE - 64);
    r.wr(OP, 5);
    expect(r.usbsts & STS_HCE).toBe(STS_HCE);
  });

  it('input contexts, DCBAA entries and transfer buffers outside RAM: Host System Error', () => {
    let { r, slot } = ready();
    r.command(10, { slot }); r.command(9);
    r.put(r.cmd, RAM + RAM_SIZE - 32, 0, 0, (11 << 10) | (slot << 24));
    r.wr(DBOFF, 0);
    expect(r.usbsts & STS_HSE).toBe(STS_HSE);
    ({ r, slot } = ready());
    r.w64(r.dcbaa + 8 * slot, 0x7fff0000);
    r.command(13, { slot, lo: r.inputCtx(3) }); // evaluates into the context Address Device saw: fine
    r.command(10, { slot }); r.command(9);
    const ic = r.inputCtx(3);
    r.w32(ic + 64 + 4, 4 << 3); r.w64(ic + 64 + 8, r.alloc(64) | 1);
    r.put(r.cmd, ic, 0, 0, (11 << 10) | (slot << 24));
    r.wr(DBOFF, 0);
    expect(r.usbsts & STS_HSE).toBe(STS_HSE);
    ({ r, slot } = ready());
    r.control(slot, GET_DESCRIPTOR(1, 0, 18), { buf: 0x7ff00000 });
    expect(r.usbsts & STS_HSE).toBe(STS_HSE);
  });

  it('a TD that never ends (chained TRBs round a ring of links) completes with TRB Error and halts the endpoint', () => {
    const { r, slot } = ready();
    r.configureTablet(slot);
    const ring = r.rings.get(`${slot}.3`)!;
    for (let i = 0; i < RING - 1; i++) r.put(ring, r.alloc(8), 0, 8, (1 << 10) | (1 << 4));
    r.w32(ring.base + (RING - 1) * 16 + 12, (6 << 10) | 1); // the link keeps the cycle: the chain goes round
    r.wr(DBOFF + 4 * slot, 3);
    const ev = r.events();
    expect(ev.map((e) => [e.type, e.cc, e.ep])).toEqual([[32, 5, 3]]);
    expect(r.r32(r.outCtx(slot) + 3 * 32) & 7).toBe(2);
    expect(r.usbsts & (STS_HCE | STS_HSE)).toBe(0);
  });

  it('a setup TRB without immediate data, a data stage on an interrupt ring: TRB Error', () => {
    let { r, slot } = ready();
    const ring = r.rings.get(`${slot}.1`)!;
    r.put(ring, 0x01000680, 0x00120000, 8, 2 << 10); // no IDT
    r.put(ring, 0, 0, 0, (4 << 10) | (1 << 5));
    r.wr(DBOFF + 4 * slot, 1);
    expect(r.events().map((e) => e.cc)).toEqual([5]);
    ({ r, slot } = ready());
    r.configureTablet(slot);
    r.put(r.rings.get(`${slot}.3`)!, r.alloc(8), 0, 8, (3 << 10) | (1 << 5));
    r.wr(DBOFF + 4 * slot, 3);
    expect(r.events().map((e) => e.cc)).toEqual([5]);
  });

  it('doorbells for missing slots, endpoint 0, endpoints past 31 or with stream IDs are ignored', () => {
    const { r, slot } = ready();
    for (const [target, v] of [[9, 1], [64, 1], [slot, 0], [slot, 32], [slot, 1 | (5 << 16)], [slot, 7], [65, 1]]) r.wr(DBOFF + 4 * target, v);
    expect(r.events()).toEqual([]);
    expect(r.usbsts & (STS_HCE | STS_HSE | STS_HCH)).toBe(0);
  });

  it('a full event ring gets the Event Ring Full event, then drops events until the driver catches up', () => {
    const r = new XhciRig();
    r.enablePci(); r.start({ evtSize: 16 });
    // 1 port event already; 20 No Op commands without moving ERDP.
    for (let i = 0; i < 20; i++) r.put(r.cmd, 0, 0, 0, 23 << 10);
    r.wr(DBOFF, 0);
    const ev = r.events();
    expect(ev.length).toBe(15);
    expect(ev[14].type).toBe(37);
    expect(ev[14].cc).toBe(21);
    expect(r.dev.stats().eventsLost).toBe(21 - 14);
    expect(r.command(23).cc).toBe(1);
  });

  it('random register writes never throw or hang', () => {
    const { r, slot } = ready();
    r.configureTablet(slot);
    r.queueIn(slot);
    let x = 12345;
    const rnd = () => { x = (x * 1103515245 + 12345) >>> 0; return x; };
    for (let i = 0; i < 20000; i++) {
      const off = (rnd() % 0x1000) & ~3;
      if (rnd() & 1) r.wr(off, rnd()); else r.rd(off);
      if (i % 500 === 0) r.dev.tablet!.pointerEvent(rnd() & 7, rnd() & 0x3ff, rnd() & 0x3ff, 1024, 768);
    }
    expect(r.dev.stats().commands).toBeGreaterThanOrEqual(0);
  });
});

void SLOT;
