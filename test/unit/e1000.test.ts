// e1000 (devices/net/e1000.ts, bhyve's pci_e82545.c) played by a driver in
// this file: PCI identity and BARs on a platform, the EEPROM bit-banged
// through EECD, the PHY through MDIC, interrupt causes and masks with ITR
// throttling, transmit (legacy, context + data descriptors, checksum
// insertion, TSO, VLAN insertion) and receive rings in a guest-memory
// buffer; then hostile rings and descriptors, which must end in a dropped
// frame or an untouched ring, never an exception or a hang.
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext } from '../../src/devices/device.js';
import { E1000, ICR, R, RXD, TXC, TXD, e1000OptionsFromConfig } from '../../src/devices/net/e1000.js';
import { netGenMac } from '../../src/devices/net/net-utils.js';
import { buildPlatform } from '../../src/devices/platform.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { MsiLog } from './ahci-driver.js';
import { E1000Rig, MAC, RAM } from './e1000-driver.js';
import { ether, inetChecksum, ip4, ipv4, parse, tcp, udp } from '../support/frames.js';
import '../support/device-models.js'; // the device models buildPlatform needs

const HOSTMAC = Uint8Array.from([0x02, 0, 0, 0, 0, 1]);
const A = ip4('10.0.2.15');
const B = ip4('10.0.2.2');

function udpFrame(n: number, csum = true): Uint8Array {
  const data = Uint8Array.from({ length: n }, (_, i) => i & 0xff);
  const u = udp(A, B, 1000, 2000, data);
  if (!csum) { u[6] = 0; u[7] = 0; }
  return ether(HOSTMAC, MAC, 0x0800, ipv4(A, B, 17, u));
}

/** True when the frame's IPv4 header and TCP/UDP checksums verify. */
function checksumsOk(f: Uint8Array): boolean {
  const p = parse(f);
  if (!p.ip) return false;
  if (inetChecksum(p.ip.header) !== 0) return false;
  const ph = new Uint8Array(12);
  ph.set(ip4(p.ip.src), 0); ph.set(ip4(p.ip.dst), 4); ph[9] = p.ip.proto; ph[10] = p.ip.payload.length >> 8; ph[11] = p.ip.payload.length & 0xff;
  let s = 0;
  for (let i = 0; i < 12; i += 2) s += (ph[i] << 8) | ph[i + 1];
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return inetChecksum(p.ip.payload, 0, p.ip.payload.length, s) === 0;
}

describe('e1000 on the PCI bus', () => {
  const SLOT = 4;
  function platform(extra: Record<string, string> = {}) {
    const io = new LocalIoBus();
    const config = new ConfigTree();
    for (const [k, v] of Object.entries({ name: 'vm0', 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc', [`pci.0.${SLOT}.0.device`]: 'e1000', ...extra })) config.set(k, v);
    const bytes = new Uint8Array(1 << 20);
    const ctx: DeviceContext = { io, irq: new MsiLog(), config, mem: new GuestMemory([{ gpa: RAM, bytes }]), machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined,
      timer: () => ({ armAt: () => {}, cancel: () => {}, now: () => 0n }) };
    const p = buildPlatform(ctx, computeLayout(256 << 20));
    const cfgRd = (off: number, size: 1 | 2 | 4 = 4): number => {
      io.portWrite(0xcf8, 4, (0x80000000 | (SLOT << 11) | (off & 0xfc)) >>> 0);
      return io.portRead(0xcfc + (off & 3), size)!;
    };
    const cfgWr = (off: number, v: number): void => {
      io.portWrite(0xcf8, 4, (0x80000000 | (SLOT << 11) | (off & 0xfc)) >>> 0);
      io.portWrite(0xcfc, 4, v >>> 0);
    };
    return { io, p, cfgRd, cfgWr, dev: p.devices.find((d): d is E1000 => d instanceof E1000)! };
  }

  it('is an 82545EM (8086:100f, subsystem 8086:1008, class 020000) with bhyve\'s three BARs and INTA#, no MSI', () => {
    const { cfgRd, cfgWr } = platform();
    expect(cfgRd(0x00)).toBe(0x100f8086);
    expect(cfgRd(0x08) >>> 8).toBe(0x020000);
    expect(cfgRd(0x2c)).toBe(0x10088086);
    expect(cfgRd(0x3d, 1)).toBe(1);
    expect(cfgRd(0x06, 2) & 0x10).toBe(0); // no capability list: INTx only, as bhyve
    const size = (bar: number): number => {
      const off = 0x10 + bar * 4;
      const old = cfgRd(off);
      cfgWr(off, 0xffffffff);
      const v = cfgRd(off);
      cfgWr(off, old);
      return v;
    };
    expect((~(size(0) & ~0xf) + 1) >>> 0).toBe(128 * 1024);
    expect((~(size(1) & ~0xf) + 1) >>> 0).toBe(64 * 1024);
    expect(size(2) & 1).toBe(1); // I/O
    expect(((~(size(2) & ~0x3) + 1) >>> 0) & 0xffff).toBe(8);
  });

  it('registers through BAR 0 and the I/O window in BAR 2 (IOADDR/IODATA)', () => {
    const { io, cfgRd, cfgWr } = platform();
    cfgWr(0x04, 0x7); // I/O, memory, bus master
    const bar0 = (cfgRd(0x10) & ~0xf) >>> 0;
    const iobase = cfgRd(0x18) & 0xfffc;
    const d = new Uint8Array(4);
    io.mmioRead(bar0 + R.STATUS, d);
    expect(d[0] & 0x2).toBe(0x2); // LU
    io.portWrite(iobase, 4, R.STATUS);
    expect(io.portRead(iobase + 4, 4)! & 0x83).toBe(0x83); // FD, LU, 1000 Mb/s
    io.portWrite(iobase, 4, R.ITR);
    io.portWrite(iobase + 4, 4, 1234);
    io.mmioRead(bar0 + R.ITR, d);
    expect(new DataView(d.buffer).getUint32(0, true)).toBe(1234);
  });

  it('MAC: bhyve\'s net_genmac by default, mac= when given; a bad MAC is refused', () => {
    const c = new ConfigTree();
    c.set('name', 'vm0');
    expect(Array.from(e1000OptionsFromConfig(c, 'pci.0.4.0', 4, 0).mac)).toEqual(Array.from(netGenMac(4, 0, 'vm0')));
    c.set('pci.0.4.0.mac', '52:54:00:aa:bb:cc');
    expect(Array.from(e1000OptionsFromConfig(c, 'pci.0.4.0', 4, 0).mac)).toEqual([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
    c.set('pci.0.4.0.mac', '01:00:00:00:00:01');
    expect(() => e1000OptionsFromConfig(c, 'pci.0.4.0', 4, 0)).toThrow(/Invalid MAC/);
  });
});

describe('e1000 EEPROM, PHY and link', () => {
  it('the EEPROM read bit by bit holds the MAC, the PCI ids and a 0xBABA checksum', () => {
    const r = new E1000Rig();
    expect(r.rd(R.EECD) & 0x100).toBe(0x100); // EEPROM present
    const words = Array.from({ length: 64 }, (_, i) => r.eepromRead(i));
    expect([words[0] & 0xff, words[0] >> 8, words[1] & 0xff, words[1] >> 8, words[2] & 0xff, words[2] >> 8]).toEqual(Array.from(MAC));
    expect(words[0x0d]).toBe(0x100f);
    expect(words[0x0e]).toBe(0x8086);
    expect(words.reduce((a, b) => (a + b) & 0xffff, 0)).toBe(0xbaba);
  });

  it('MDIC reads the M88E1011 PHY: ids, link up and autonegotiation complete', () => {
    const r = new E1000Rig();
    const mdi = (reg: number): number => {
      r.wr(R.MDIC, 0x08000000 | (1 << 21) | (reg << 16));
      const v = r.rd(R.MDIC);
      expect(v & 0x10000000).toBe(0x10000000); // READY
      return v & 0xffff;
    };
    expect(mdi(2)).toBe(0x0141);
    expect(mdi(3)).toBe(0x0c24);
    expect(mdi(1) & 0x24).toBe(0x24);
  });

  it('STATUS.LU; an LSC set through ICS interrupts when unmasked, reading ICR clears it and drops the line', () => {
    const r = new E1000Rig();
    expect(r.rd(R.STATUS) & 2).toBe(2);
    r.wr(R.ICS, ICR.LSC); // masked: cause recorded, no interrupt
    expect(r.dev.intxAsserted).toBe(false);
    expect(r.rd(R.ICR)).toBe(ICR.LSC);
    expect(r.rd(R.ICR)).toBe(0);
    r.wr(R.IMS, ICR.LSC | ICR.RXT0);
    expect(r.rd(R.IMS)).toBe(ICR.LSC | ICR.RXT0);
    r.wr(R.ICS, ICR.LSC);
    expect(r.dev.intxAsserted).toBe(true);
    expect(r.rd(R.ICR)).toBe(ICR.LSC);
    expect(r.dev.intxAsserted).toBe(false);
    r.wr(R.IMC, ICR.LSC);
    expect(r.rd(R.IMS)).toBe(ICR.RXT0);
  });

  it('ITR throttles as bhyve: a cause during the interval waits for its end, then interrupts', () => {
    const r = new E1000Rig();
    r.wr(R.IMS, ICR.LSC | ICR.TXDW);
    expect(r.rd(R.ITR)).toBe(250); // bhyve's reset value: 64 us -> 1 ms
    r.wr(R.ICS, ICR.LSC);
    expect(r.dev.intxAsserted).toBe(true);
    expect(r.timerAt).toBe(1_000_000n);
    r.rd(R.ICR); // acknowledged
    expect(r.dev.intxAsserted).toBe(false);
    r.wr(R.ICS, ICR.TXDW); // inside the interval: held
    expect(r.dev.intxAsserted).toBe(false);
    r.advance(999_999n);
    expect(r.dev.intxAsserted).toBe(false);
    r.advance(1n);
    expect(r.dev.intxAsserted).toBe(true);
    expect(r.rd(R.ICR)).toBe(ICR.TXDW);
    r.advance(1_000_000n); // nothing pending: the throttle stops
    expect(r.timerAt).toBeUndefined();
    r.wr(R.ICS, ICR.LSC);
    expect(r.dev.intxAsserted).toBe(true); // at once
    // ITR 0: no throttling at all.
    r.rd(R.ICR);
    r.wr(R.ITR, 0);
    r.advance(1_000_000n);
    r.wr(R.ICS, ICR.LSC);
    r.rd(R.ICR);
    r.wr(R.ICS, ICR.TXDW);
    expect(r.dev.intxAsserted).toBe(true);
  });

  it('CTRL.RST resets the rings, masks and RAH valid bits but keeps the descriptor bases', () => {
    const r = new E1000Rig();
    r.setupTx(8);
    r.wr(R.IMS, ICR.TXDW);
    r.wr(R.CTRL, 0x04000000);
    expect(r.rd(R.CTRL) & 0x04000000).toBe(0);
    expect(r.rd(R.IMS)).toBe(0);
    expect(r.rd(R.TDLEN)).toBe(0);
    expect(r.rd(R.TDBAL)).toBe(r.tdbase);
    expect(r.rd(R.TCTL)).toBe(0);
  });
});

describe('e1000 transmit', () => {
  it('legacy descriptors: two frames (one split in two buffers) go out, DD on RS, TXDW and TXQE', () => {
    const r = new E1000Rig();
    r.setupTx(8);
    r.wr(R.IMS, ICR.TXDW | ICR.TXQE);
    const f1 = udpFrame(100);
    const f2 = udpFrame(1400);
    const i0 = r.legacy(r.buf(f1), f1.length, TXD.EOP | TXD.IFCS | TXD.RS);
    const i1 = r.legacy(r.buf(f2.subarray(0, 700)), 700, TXD.IFCS);
    const i2 = r.legacy(r.buf(f2.subarray(700)), f2.length - 700, TXD.EOP | TXD.IFCS | TXD.RS);
    r.kick();
    expect(r.port.sent.map((f) => Buffer.from(f).toString('hex'))).toEqual([f1, f2].map((f) => Buffer.from(f).toString('hex')));
    expect(r.txStatus(i0) & 1).toBe(1);
    expect(r.txStatus(i1) & 1).toBe(0); // no RS: no write-back
    expect(r.txStatus(i2) & 1).toBe(1);
    expect(r.rd(R.TDH)).toBe(3);
    expect(r.rd(R.ICR)).toBe(ICR.TXDW | ICR.TXQE);
    expect(r.rd(0x4080)).toBe(2); // GPTC, cleared on read
    expect(r.rd(0x4080)).toBe(0);
  });

  it('without IFCS the last two bytes of a frame are dropped (bhyve strips the guest\'s FCS); a frame without EOP waits', () => {
    const r = new E1000Rig();
    r.setupTx(8);
    const f = udpFrame(60);
    r.legacy(r.buf(f.subarray(0, 40)), 40, 0);
    r.kick();
    expect(r.port.sent.length).toBe(0);
    expect(r.rd(R.TDH)).toBe(0);
    r.legacy(r.buf(f.subarray(40)), f.length - 40, TXD.EOP);
    r.kick();
    expect(r.port.sent.length).toBe(1);
    expect(r.port.sent[0].length).toBe(f.length - 2);
  });

  it('legacy checksum insertion (IC, CSS, CSO): the UDP checksum is filled in', () => {
    const r = new E1000Rig();
    r.setupTx(8);
    const f = udpFrame(200, false);
    // The driver puts the pseudo-header sum in the checksum field (as Linux
    // does for CHECKSUM_PARTIAL); the device sums from CSS to the end.
    const p = parse(f);
    const ph = new Uint8Array(12);
    ph.set(A, 0); ph.set(B, 4); ph[9] = 17; ph[10] = p.ip!.payload.length >> 8; ph[11] = p.ip!.payload.length & 0xff;
    const partial = (~inetChecksum(ph)) & 0xffff;
    f[14 + 20 + 6] = partial >> 8; f[14 + 20 + 7] = partial & 0xff;
    r.legacy(r.buf(f), f.length, TXD.EOP | TXD.IFCS | TXD.IC, 14 + 20 + 6, 14 + 20);
    r.kick();
    expect(checksumsOk(r.port.sent[0])).toBe(true);
  });

  it('context + data descriptors: IP and TCP checksums inserted (IXSM, TXSM)', () => {
    const r = new E1000Rig();
    r.setupTx(8);
    const seg = tcp(A, B, 5000, 80, 1, 1, 0x18, Uint8Array.from({ length: 300 }, (_, i) => i));
    const f = ether(HOSTMAC, MAC, 0x0800, ipv4(A, B, 6, seg));
    f[24] = 0; f[25] = 0; // IP checksum to be filled
    const ph = new Uint8Array(12);
    ph.set(A, 0); ph.set(B, 4); ph[9] = 6; ph[10] = seg.length >> 8; ph[11] = seg.length & 0xff;
    const partial = (~inetChecksum(ph)) & 0xffff;
    f[14 + 20 + 16] = partial >> 8; f[14 + 20 + 17] = partial & 0xff;
    // context: ipcss 14, ipcso 24, ipcse 33; tucss 34, tucso 50, tucse 0
    r.putTx(BigInt(14 | (24 << 8) | (33 << 16)) | (BigInt(34 | (50 << 8)) << 32n), TXD.DEXT | TXC.TCP | TXC.IP, 0);
    r.putTx(r.buf(f), f.length | TXD.DEXT | TXD.DTYP_D | TXD.EOP | TXD.IFCS | TXD.RS, (TXD.POPTS_IXSM | TXD.POPTS_TXSM) << 8);
    r.kick();
    expect(r.port.sent.length).toBe(1);
    expect(checksumsOk(r.port.sent[0])).toBe(true);
    expect(r.txStatus(1) & 1).toBe(1);
  });

  it('TSO: a 3000-byte TCP payload at MSS 1000 goes out as three segments with their own lengths, ids, sequence numbers and checksums', () => {
    const r = new E1000Rig();
    r.setupTx(8);
    const payload = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) & 0xff);
    const seg = tcp(A, B, 5000, 80, 0x10000, 1, 0x18 | 0x01, payload); // PSH|ACK|FIN
    const f = ether(HOSTMAC, MAC, 0x0800, ipv4(A, B, 6, seg, 0x100));
    // The driver zeroes the IP checksum and leaves a pseudo-header sum
    // without the length in the TCP one, as Linux's e1000_tso does.
    f[24] = 0; f[25] = 0;
    const ph = new Uint8Array(12);
    ph.set(A, 0); ph.set(B, 4); ph[9] = 6;
    const partial = (~inetChecksum(ph)) & 0xffff;
    f[50] = partial >> 8; f[51] = partial & 0xff;
    const hdrlen = 54;
    r.putTx(BigInt(14 | (24 << 8) | (33 << 16)) | (BigInt(34 | (50 << 8)) << 32n),
      TXD.DEXT | TXC.TCP | TXC.IP | TXC.TSE | 3000, (hdrlen << 8) | (1000 << 16));
    r.putTx(r.buf(f.subarray(0, hdrlen)), hdrlen | TXD.DEXT | TXD.DTYP_D | TXD.TSE, (TXD.POPTS_IXSM | TXD.POPTS_TXSM) << 8);
    r.putTx(r.buf(f.subarray(hdrlen)), 3000 | TXD.DEXT | TXD.DTYP_D | TXD.TSE | TXD.EOP | TXD.IFCS | TXD.RS, (TXD.POPTS_IXSM | TXD.POPTS_TXSM) << 8);
    r.kick();
    expect(r.port.sent.length).toBe(3);
    r.port.sent.forEach((s, i) => {
      const p = parse(s);
      expect(s.length).toBe(hdrlen + 1000);
      expect(checksumsOk(s), `segment ${i} checksums`).toBe(true);
      expect(new DataView(s.buffer).getUint16(16)).toBe(20 + 20 + 1000);
      expect(new DataView(s.buffer).getUint16(18)).toBe(0x100 + i);
      expect(p.tcp!.seq).toBe(0x10000 + 1000 * i);
      expect(p.tcp!.flags & 0x09).toBe(i === 2 ? 0x09 : 0); // FIN and PSH only on the last
      expect(Array.from(p.tcp!.data)).toEqual(Array.from(payload.subarray(1000 * i, 1000 * (i + 1))));
    });
    expect(r.dev.counts.txTsoSegments).toBe(3);
  });

  it('VLAN insertion (CTRL.VME and VLE): the 802.1Q tag from VET and the descriptor goes after the addresses', () => {
    const r = new E1000Rig();
    r.setupTx(8);
    r.wr(R.CTRL, 0x40000000);
    r.wr(R.VET, 0x8100);
    const f = udpFrame(64);
    r.putTx(r.buf(f), f.length | TXD.EOP | TXD.IFCS | TXD.VLE, 0x0123 << 16);
    r.kick();
    const s = r.port.sent[0];
    expect(s.length).toBe(f.length + 4);
    expect(Array.from(s.subarray(12, 16))).toEqual([0x81, 0x00, 0x01, 0x23]);
    expect(Array.from(s.subarray(16))).toEqual(Array.from(f.subarray(12)));
  });

  it('TDT writes before TCTL.EN send nothing; enabling sends what is queued', () => {
    const r = new E1000Rig();
    r.setupTx(8);
    r.wr(R.TCTL, 0);
    const f = udpFrame(50);
    r.legacy(r.buf(f), f.length, TXD.EOP | TXD.IFCS);
    r.kick();
    expect(r.port.sent.length).toBe(0);
    r.wr(R.TCTL, 2);
    expect(r.port.sent.length).toBe(1);
  });
});

describe('e1000 receive', () => {
  it('frames fill descriptors: data, length with 4 CRC bytes, padding to 60, DD|EOP, RXT0; RDH advances', () => {
    const r = new E1000Rig();
    r.setupRx(8);
    r.wr(R.RDT, 7);
    r.wr(R.IMS, ICR.RXT0);
    const big = udpFrame(500);
    const small = ether(MAC, HOSTMAC, 0x0806, new Uint8Array(28).fill(1)); // 42 bytes
    r.port.rx.push(big, small);
    r.dev.poll();
    expect(r.rxDesc(0).len).toBe(big.length + 4);
    expect(r.rxDesc(0).status).toBe(RXD.DD | RXD.EOP | RXD.IXSM | RXD.PIF);
    expect(Array.from(r.rxData(0, big.length))).toEqual(Array.from(big));
    expect(r.rxDesc(1).len).toBe(64);
    expect(Array.from(r.rxData(1, 64))).toEqual([...small, ...new Array(22).fill(0)]);
    expect(r.rd(R.RDH)).toBe(2);
    expect(r.dev.intxAsserted).toBe(true);
    expect(r.rd(R.ICR) & ICR.RXT0).toBe(ICR.RXT0);
    expect(r.port.rx.length).toBe(0);
    expect(r.rd(0x4074)).toBe(2); // GPRC
  });

  it('frames arriving while the ITR interval holds the RX interrupt wait in the backend for its end; with RXT0 masked they arrive at once', () => {
    const r = new E1000Rig();
    r.setupRx(8);
    r.wr(R.RDT, 7);
    r.wr(R.IMS, ICR.RXT0);
    r.port.rx.push(udpFrame(100));
    r.dev.poll(); // no interval running: at once, with its interrupt
    expect(r.rd(R.RDH)).toBe(1);
    expect(r.rd(R.ICR)).toBe(ICR.RXT0); // acknowledged; the 1 ms interval runs
    r.port.rx.push(udpFrame(101), udpFrame(102));
    r.dev.poll();
    expect(r.port.rx.length).toBe(2); // held: the interrupt could not come before the interval ends
    expect(r.rxDesc(1).status).toBe(0);
    r.advance(1_000_000n);
    expect(r.port.rx.length).toBe(0);
    expect(r.rd(R.RDH)).toBe(3);
    expect(r.rxDesc(2).len).toBe(udpFrame(102).length + 4);
    expect(r.dev.intxAsserted).toBe(true);
    expect(r.rd(R.ICR) & ICR.RXT0).toBe(ICR.RXT0);
    // A polling driver masks RXT0: frames held until then come in at the
    // mask, later ones at once.
    r.port.rx.push(udpFrame(103));
    r.dev.poll();
    expect(r.port.rx.length).toBe(1);
    r.wr(R.IMC, ICR.RXT0);
    expect(r.port.rx.length).toBe(0);
    r.port.rx.push(udpFrame(104));
    r.dev.poll();
    expect(r.port.rx.length).toBe(0);
    expect(r.rd(R.RDH)).toBe(5);
    // Buffers handed back (RDT) take waiting frames whatever the interval.
    r.wr(R.IMS, ICR.RXT0);
    r.wr(R.ICS, ICR.LSC); // an interrupt: a new interval
    r.port.rx.push(udpFrame(105));
    r.dev.poll();
    expect(r.port.rx.length).toBe(1);
    r.wr(R.RDT, 0);
    expect(r.port.rx.length).toBe(0);
    // CTRL.RST forgets the hold.
    r.port.rx.push(udpFrame(106));
    r.dev.poll();
    r.wr(R.CTRL, 0x04000000);
    expect(r.timerAt).toBeUndefined();
  });

  it('a receive buffer running across two chunks of guest RAM takes the frame (no DMA error)', () => {
    const r = new E1000Rig({ splitAt: 0x80000 });
    r.setupRx(8);
    const a = RAM + 0x80000 - 700; // 700 bytes in the first chunk, the rest in the next
    r.dv.setBigUint64(r.o(r.rdbase), BigInt(a), true);
    r.wr(R.RDT, 7);
    const f = udpFrame(1200);
    r.port.rx.push(f);
    r.dev.poll();
    expect(r.rxDesc(0).status & RXD.DD).toBe(RXD.DD);
    expect(r.rxDesc(0).len).toBe(f.length + 4);
    expect(Array.from(r.bytes.subarray(r.o(a), r.o(a) + f.length))).toEqual(Array.from(f));
    expect(Array.from(r.bytes.subarray(r.o(a) + f.length, r.o(a) + f.length + 4))).toEqual([0, 0, 0, 0]); // CRC bytes
    expect(r.dev.counts.dmaErrors).toBe(0);
  });

  it('SECRC: no CRC bytes counted', () => {
    const r = new E1000Rig();
    r.setupRx(8, 2048, 0x04000000);
    r.wr(R.RDT, 7);
    r.port.rx.push(udpFrame(100));
    r.dev.poll();
    expect(r.rxDesc(0).len).toBe(udpFrame(100).length);
  });

  it('a frame longer than the buffer size spans descriptors; only the last has EOP', () => {
    const r = new E1000Rig();
    r.setupRx(8, 256);
    r.wr(R.RDT, 7);
    const f = udpFrame(600);
    r.port.rx.push(f);
    r.dev.poll();
    const n = Math.ceil((f.length + 4) / 256);
    for (let i = 0; i < n; i++) {
      expect(r.rxDesc(i).status & RXD.EOP, `descriptor ${i}`).toBe(i === n - 1 ? RXD.EOP : 0);
      expect(r.rxDesc(i).status & RXD.DD).toBe(RXD.DD);
    }
    expect(r.rxDesc(n - 1).len).toBe(f.length + 4 - 256 * (n - 1));
    const got = new Uint8Array(f.length);
    for (let i = 0; i < n; i++) got.set(r.rxData(i, Math.min(256, f.length - i * 256)), i * 256);
    expect(Array.from(got)).toEqual(Array.from(f));
    expect(r.rd(R.RDH)).toBe(n);
  });

  it('no descriptors: the frame waits in the backend until RDT gives some, then arrives', () => {
    const r = new E1000Rig();
    r.setupRx(8);
    r.port.rx.push(udpFrame(80));
    r.dev.poll(); // RDT == RDH: no room
    expect(r.port.rx.length).toBe(1);
    expect(r.rxDesc(0).status).toBe(0);
    r.wr(R.RDT, 4);
    expect(r.port.rx.length).toBe(0);
    expect(r.rxDesc(0).status & RXD.DD).toBe(RXD.DD);
  });

  it('RXDMT0 when the free descriptors fall under RDMTS (half the ring)', () => {
    const r = new E1000Rig();
    r.setupRx(8);
    r.wr(R.RDT, 7);
    for (let i = 0; i < 4; i++) r.port.rx.push(udpFrame(60));
    r.dev.poll();
    expect(r.rd(R.ICR) & ICR.RXDMT0).toBe(ICR.RXDMT0);
  });

  it('receive off or loopback: frames are discarded, as bhyve does', () => {
    const r = new E1000Rig();
    r.setupRx(8);
    r.wr(R.RCTL, 0);
    r.port.rx.push(udpFrame(60));
    r.dev.poll();
    expect(r.port.rx.length).toBe(0);
    expect(r.rxDesc(0).status).toBe(0);
  });

  it('VLAN filter: a tagged frame of a VLAN not in VFTA is dropped, one in it is received', () => {
    const r = new E1000Rig();
    r.setupRx(8, 2048, 0x00040000);
    r.wr(R.RDT, 7);
    r.wr(R.VET, 0x8100);
    const tagged = (vid: number): Uint8Array => {
      const f = udpFrame(60);
      const t = new Uint8Array(f.length + 4);
      t.set(f.subarray(0, 12));
      t.set([0x81, 0x00, vid >> 8, vid & 0xff], 12);
      t.set(f.subarray(12), 16);
      return t;
    };
    r.wr(0x5600 + (5 >> 5) * 4, 1 << 5);
    r.port.rx.push(tagged(7), tagged(5));
    r.dev.poll();
    expect(r.dev.counts.rxVlanDropped).toBe(1);
    expect(r.rd(R.RDH)).toBe(1);
  });
});

describe('e1000 with a hostile driver', () => {
  it('rings outside RAM, heads and tails beyond the ring: nothing sent or written, no exception', () => {
    const r = new E1000Rig();
    r.setupTx(8);
    r.legacy(r.buf(udpFrame(60)), 100, TXD.EOP | TXD.RS);
    r.wr(R.TDT, 200); // beyond the ring
    expect(r.port.sent.length).toBe(0);
    r.wr(R.TDBAL, 0xfff00000); // not RAM
    r.wr(R.TDT, 1);
    expect(r.port.sent.length).toBe(0);
    r.wr(R.TDBAH, 0xffffffff);
    r.wr(R.TDT, 1);
    r.setupRx(8);
    r.wr(R.RDH, 0xffff);
    r.port.rx.push(udpFrame(60));
    r.wr(R.RDT, 3);
    r.dev.poll();
    expect(r.port.rx.length).toBe(1); // waits: the ring is unusable
    r.wr(R.RDH, 0);
    r.wr(R.RDBAL, 0xfffff000);
    r.dev.poll();
    expect(r.dev.counts.dmaErrors).toBeGreaterThan(0);
  });

  it('wild buffer addresses, huge lengths, mixed descriptor types, 65 segments, no EOP round the ring: frames dropped, descriptors completed', () => {
    const r = new E1000Rig();
    r.setupTx(128);
    r.legacy(0x7fff_ffff_0000, 1000, TXD.EOP | TXD.RS); // not RAM
    r.legacy(r.buf(new Uint8Array(16)), 0xffff, TXD.EOP | TXD.RS); // reads on past the buffer, but in RAM: sent
    r.putTx(r.buf(new Uint8Array(100)), 0xfffff | TXD.DEXT | TXD.DTYP_D | TXD.EOP | TXD.RS, 0); // 1 MiB data descriptor
    r.legacy(r.buf(new Uint8Array(64)), 64, 0); // legacy then data: mixed
    r.putTx(r.buf(new Uint8Array(64)), 64 | TXD.DEXT | TXD.DTYP_D | TXD.EOP | TXD.RS, 0);
    for (let i = 0; i < 65; i++) r.legacy(r.buf(new Uint8Array(16)), 16, i === 64 ? TXD.EOP | TXD.RS : 0);
    r.kick();
    expect(r.port.sent.map((f) => f.length)).toEqual([0xffff - 2]);
    expect(r.dev.counts.txDropped).toBe(4);
    expect(r.rd(R.TDH)).toBe(r.tail);
    // A whole ring of descriptors without EOP: waits, and never loops.
    const r2 = new E1000Rig();
    r2.setupTx(8);
    for (let i = 0; i < 7; i++) r2.legacy(r2.buf(new Uint8Array(16)), 16, 0);
    r2.kick();
    expect(r2.rd(R.TDH)).toBe(0);
  });

  it('TSO with an MSS of 0, a header longer than the frame or past 240 bytes: dropped, never a loop', () => {
    for (const [mss, hdrlen] of [[0, 54], [1000, 250], [1000, 200]]) {
      const r = new E1000Rig();
      r.setupTx(8);
      const f = udpFrame(100);
      r.putTx(BigInt(14 | (24 << 8) | (33 << 16)) | (BigInt(34 | (50 << 8)) << 32n), TXD.DEXT | TXC.TCP | TXC.IP | TXC.TSE | 100, (hdrlen << 8) | (mss << 16));
      r.putTx(r.buf(f), f.length | TXD.DEXT | TXD.DTYP_D | TXD.TSE | TXD.EOP | TXD.RS, (TXD.POPTS_TXSM) << 8);
      r.kick();
      expect(r.port.sent.length, `mss ${mss} hdrlen ${hdrlen}`).toBe(0);
      expect(r.dev.counts.txDropped).toBe(1);
    }
  });

  it('receive buffers outside RAM: the frame is lost, the ring untouched', () => {
    const r = new E1000Rig();
    r.setupRx(8);
    r.dv.setBigUint64(r.o(r.rdbase), 0xdead_0000_0000n, true);
    r.wr(R.RDT, 7);
    r.port.rx.push(udpFrame(60), udpFrame(61));
    r.dev.poll();
    expect(r.dev.counts.dmaErrors).toBe(2);
    expect(r.port.rx.length).toBe(0);
    expect(r.rxDesc(0).status).toBe(0);
    expect(r.rd(R.RDH)).toBe(0);
  });

  it('random register writes and reads over the whole BAR never throw or hang', () => {
    let seed = 12345;
    const rnd = (): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed; };
    const r = new E1000Rig();
    r.setupTx(16);
    r.setupRx(16);
    for (let i = 0; i < 20000; i++) {
      const off = rnd() % 0x20000;
      if (rnd() & 1) r.wr(off & ~3, rnd());
      else r.rd(off & ~3);
      if ((i & 63) === 0) { r.port.rx.push(udpFrame(rnd() % 1400)); r.dev.poll(); r.advance(500_000n); }
      if ((i & 31) === 0) {
        // Descriptors full of noise.
        for (let k = 0; k < 4; k++) r.putTx(BigInt(rnd()) | (BigInt(rnd() & 3) << 32n), rnd(), rnd());
        r.kick();
      }
    }
    expect(true).toBe(true);
  });
});

describe('e1000 without a backend', () => {
  it('transmits into nothing (bhyve: no backend, frames dropped) and completes descriptors', () => {
    const r = new E1000Rig({ noPort: true });
    r.setupTx(8);
    r.legacy(r.buf(udpFrame(60)), 100, TXD.EOP | TXD.RS);
    r.kick();
    expect(r.txStatus(0) & 1).toBe(1);
    expect(r.dev.counts.txDropped).toBe(1);
  });
});
