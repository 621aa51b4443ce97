// The slirp backend (devices/net/slirp-backend.ts) with a test playing the
// guest on the NIC's end of the packet pair, the way virtio-net or e1000
// would: libslirp (Debian's libslirp0) on its own thread answers DHCP,
// forwards a host connection through hostfwd to the guest, and lets the
// guest connect out to the host (10.0.2.2) only with `open`. No /dev/kvm,
// no root. Uses the compiled backend (dist/): its thread is a worker.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { parseHostFwd } from '../../src/devices/net/slirp-options.js';
import { BCAST, TCP, dhcp, dhcpOptions, ether, ip4, ipv4, parse, tcp, udp, type Parsed } from '../support/frames.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const distNet = path.join(root, 'dist/devices/net/net-backend.js');
const haveLib = ['/usr/lib/x86_64-linux-gnu/libslirp.so.0', '/lib/x86_64-linux-gnu/libslirp.so.0'].some((p) => fs.existsSync(p));
const skip = !haveLib ? 'libslirp0 is not installed (apt-get install libslirp0)'
  : !fs.existsSync(distNet) ? 'dist/ is not built (npm run build)' : undefined;
if (skip) console.warn(`skipping slirp backend tests: ${skip}`);

const MAC = Uint8Array.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const GUEST = ip4('10.0.2.15');
const HOST = ip4('10.0.2.2');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('hostfwd rules (bhyve parse_hostfwd_rule)', () => {
  it('parses several rules separated by ;', () => {
    expect(parseHostFwd('tcp::2222-:22;udp:127.0.0.1:5353-10.0.2.15:53')).toEqual([
      { text: 'tcp::2222-:22', udp: false, hostAddr: '', hostPort: 2222, guestAddr: '', guestPort: 22 },
      { text: 'udp:127.0.0.1:5353-10.0.2.15:53', udp: true, hostAddr: '127.0.0.1', hostPort: 5353, guestAddr: '10.0.2.15', guestPort: 53 },
    ]);
  });
  it('refuses malformed rules with the rule in the message', () => {
    expect(() => parseHostFwd('tcp:2222:22')).toThrow(/Unable to parse hostfwd rule 'tcp:2222:22'/);
    expect(() => parseHostFwd('sctp::1-:2')).toThrow(/protocol 'sctp'/);
    expect(() => parseHostFwd('tcp::70000-:22')).toThrow(/bad port/);
    expect(() => parseHostFwd('tcp:1.2.3:1-:2')).toThrow(/not an IPv4 address/);
  });
});

interface Port { peek(): Uint8Array | null; consume(): void; send(v: Uint8Array[]): boolean }
interface Host { transfer: unknown; close(): Promise<void> }

describe.skipIf(skip !== undefined)('slirp backend with a guest played by the test', () => {
  let host: Host | undefined;
  const servers: net.Server[] = [];
  afterEach(async () => {
    await host?.close();
    host = undefined;
    for (const s of servers.splice(0)) s.close();
  });

  async function open(keys: Record<string, string>): Promise<Port> {
    const { openNetBackend, attachNetBackend } = await import(distNet);
    const c = new ConfigTree();
    c.set('pci.0.3.0.device', 'e1000');
    c.set('pci.0.3.0.backend', 'slirp');
    c.set('security.sandbox', 'false');
    for (const [k, v] of Object.entries(keys)) c.set(`pci.0.3.0.${k}`, v);
    host = await openNetBackend(c, 'pci.0.3.0', () => undefined);
    return attachNetBackend(host!.transfer);
  }

  /** Frames from slirp until `want` matches one (returned) or `ms` pass. */
  async function expectFrame(port: Port, want: (p: Parsed) => boolean, ms = 5000): Promise<Parsed | undefined> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const f = port.peek();
      if (f === null) { await sleep(5); continue; }
      const p = parse(f.slice());
      port.consume();
      // Answer slirp's ARP for the guest on the way.
      if (p.type === 0x0806 && f[21] === 1 && f[38] === 10 && f[41] === 15) {
        const a = new Uint8Array(28);
        a.set([0, 1, 8, 0, 6, 4, 0, 2]);
        a.set(MAC, 8); a.set(GUEST, 14); a.set(f.subarray(22, 28), 18); a.set(f.subarray(28, 32), 24);
        port.send([ether(f.subarray(6, 12), MAC, 0x0806, a)]);
      }
      if (want(p)) return p;
    }
    return undefined;
  }

  async function lease(port: Port, open: boolean): Promise<void> {
    port.send([ether(BCAST, MAC, 0x0800, ipv4(ip4('0.0.0.0'), ip4('255.255.255.255'), 17, udp(ip4('0.0.0.0'), ip4('255.255.255.255'), 68, 67, dhcp(MAC, 1, 0x1234))))]);
    const offer = await expectFrame(port, (p) => p.udp?.sport === 67 && p.udp.dport === 68);
    expect(offer, 'a DHCP OFFER').toBeDefined();
    const d = offer!.udp!.data;
    expect(`${d[16]}.${d[17]}.${d[18]}.${d[19]}`).toBe('10.0.2.15'); // yiaddr
    const o = dhcpOptions(d);
    expect(o.get(53)?.[0]).toBe(2); // OFFER
    expect(Array.from(o.get(54) ?? [])).toEqual([10, 0, 2, 2]); // server
    expect(Array.from(o.get(1) ?? [])).toEqual([255, 255, 255, 0]);
    // libslirp offers a router and its DNS relay only when not restricted.
    expect(Array.from(o.get(3) ?? [])).toEqual(open ? [10, 0, 2, 2] : []);
    expect(Array.from(o.get(6) ?? [])).toEqual(open ? [10, 0, 2, 3] : []);
    port.send([ether(BCAST, MAC, 0x0800, ipv4(ip4('0.0.0.0'), ip4('255.255.255.255'), 17, udp(ip4('0.0.0.0'), ip4('255.255.255.255'), 68, 67, dhcp(MAC, 3, 0x1234, GUEST, HOST))))]);
    const ack = await expectFrame(port, (p) => p.udp?.sport === 67 && dhcpOptions(p.udp.data).get(53)?.[0] === 5);
    expect(ack, 'a DHCP ACK').toBeDefined();
  }

  async function listener(): Promise<{ port: number; accepted: () => number; data: () => string }> {
    let n = 0;
    let data = '';
    const s = net.createServer((c) => { n++; c.on('data', (b) => { data += b.toString(); }); c.on('error', () => undefined); });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    return { port: (s.address() as net.AddressInfo).port, accepted: () => n, data: () => data };
  }

  it('DHCP: a lease of 10.0.2.15; with open, gateway 10.0.2.2 and DNS relay 10.0.2.3', async () => {
    await lease(await open({}), false);
    await host!.close();
    await lease(await open({ open: 'true' }), true);
  }, 20_000);

  it('hostfwd: a host connection to the forwarded port reaches the guest port as a SYN', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
    const hostPort = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const port = await open({ hostfwd: `tcp:127.0.0.1:${hostPort}-:8080` });
    await lease(port, false);
    const sock = net.connect(hostPort, '127.0.0.1');
    sock.on('error', () => undefined);
    const syn = await expectFrame(port, (p) => p.tcp !== undefined && (p.tcp.flags & TCP.SYN) !== 0);
    sock.destroy();
    expect(syn, 'a SYN to the guest').toBeDefined();
    expect(syn!.ip!.dst).toBe('10.0.2.15');
    expect(syn!.tcp!.dport).toBe(8080);
  }, 20_000);

  it("given the device thread's doorbell, slirp's thread rings it when it sends to a NIC that read its end dry, once per dry read", async () => {
    const { openNetBackend, attachNetBackend } = await import(distNet);
    // A doorbell whose thread has not answered yet records the request bits
    // alone; its "kvm_run page" is a scratch file here.
    const scratch = path.join(fs.mkdtempSync(path.join(root, 'build', 'slirp-wake-')), 'run');
    fs.writeFileSync(scratch, new Uint8Array(4096));
    const runFd = fs.openSync(scratch, 'r+');
    const sab = new SharedArrayBuffer(8);
    const requests = new Int32Array(sab);
    try {
      const c = new ConfigTree();
      c.set('pci.0.3.0.device', 'e1000');
      c.set('pci.0.3.0.backend', 'slirp');
      c.set('security.sandbox', 'false');
      let kicks = 0;
      host = await openNetBackend(c, 'pci.0.3.0', () => { kicks++; }, { sab, vcpuFd: runFd, mmapSize: 4096 });
      const port: Port = attachNetBackend(host!.transfer);
      expect(port.peek()).toBeNull(); // read dry: waits for a kick
      const discover = (type: number): Uint8Array => ether(BCAST, MAC, 0x0800, ipv4(ip4('0.0.0.0'), ip4('255.255.255.255'), 17,
        udp(ip4('0.0.0.0'), ip4('255.255.255.255'), 68, 67, dhcp(MAC, type, 0x1234, type === 3 ? GUEST : undefined, type === 3 ? HOST : undefined))));
      port.send([discover(1)]);
      for (let i = 0; i < 500 && Atomics.load(requests, 0) === 0; i++) await sleep(10);
      expect(Atomics.load(requests, 0)).toBe(1); // DEVICE_REQUEST.POLL
      const offer = port.peek();
      expect(offer && parse(offer.slice()).udp?.sport).toBe(67);
      port.consume();
      // Not read dry since: the next frame comes without a ring.
      Atomics.store(requests, 0, 0);
      port.send([discover(3)]);
      await sleep(300);
      expect(Atomics.load(requests, 0)).toBe(0);
      expect(port.peek()).not.toBeNull();
      expect(kicks).toBe(0); // no main-thread waker in the way
    } finally {
      fs.closeSync(runFd);
      fs.rmSync(path.dirname(scratch), { recursive: true, force: true });
    }
  }, 20_000);

  it('a hostfwd port already taken is one clear error', async () => {
    const l = await listener();
    await expect(open({ hostfwd: `tcp:127.0.0.1:${l.port}-:22` })).rejects.toThrow(
      new RegExp(`net backend 'slirp': Unable to add hostfwd rule 'tcp:127.0.0.1:${l.port}-:22': Address already in use`));
  });

  /** The guest opens a TCP connection to 10.0.2.2:port and sends "hi". */
  async function connectOut(port: Port, hostPort: number): Promise<boolean> {
    const seq = 1000;
    const synTo = (flags: number, s: number, a: number, data?: Uint8Array) => port.send([ether(HOST_MAC ?? BCAST, MAC, 0x0800,
      ipv4(GUEST, HOST, 6, tcp(GUEST, HOST, 40000, hostPort, s, a, flags, data)))]);
    synTo(TCP.SYN, seq, 0);
    const sa = await expectFrame(port, (p) => p.tcp !== undefined && p.tcp.sport === hostPort && (p.tcp.flags & (TCP.SYN | TCP.ACK)) === (TCP.SYN | TCP.ACK), 2000);
    if (!sa) return false;
    synTo(TCP.ACK | TCP.PSH, seq + 1, sa.tcp!.seq + 1, new TextEncoder().encode('hi'));
    return true;
  }
  let HOST_MAC: Uint8Array | undefined;

  it('open: the guest connects out to a host port as 10.0.2.2', async () => {
    const l = await listener();
    const port = await open({ open: 'true' });
    await lease(port, true);
    HOST_MAC = Uint8Array.from([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);
    expect(await connectOut(port, l.port)).toBe(true);
    const end = Date.now() + 5000;
    while (l.data() !== 'hi' && Date.now() < end) await sleep(10);
    expect(l.accepted()).toBe(1);
    expect(l.data()).toBe('hi');
  }, 20_000);

  it('restricted (no open, as bhyve by default): the connection out is refused', async () => {
    const l = await listener();
    const port = await open({});
    await lease(port, false);
    expect(await connectOut(port, l.port)).toBe(false);
    expect(l.accepted()).toBe(0);
  }, 20_000);
});
