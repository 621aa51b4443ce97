// A small RFB (VNC) client for the display tests: connects without
// authentication (RFB 3.8), gets past ServerInit and sends key events, so
// the same test drives bhyve's VNC server and QEMU's.
import net from 'node:net';

/** An RFB 3.8 client without authentication, past ServerInit. */
export async function rfbConnect(port: number) {
  const sock = net.connect(port, '127.0.0.1');
  let got = Buffer.alloc(0);
  sock.on('data', (d) => { got = Buffer.concat([got, d]); });
  sock.on('error', () => undefined);
  const until = async (n: number): Promise<void> => {
    const t0 = Date.now();
    while (got.length < n) {
      if (Date.now() - t0 > 20_000) throw new Error(`RFB: ${got.length} of ${n} bytes`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  await until(12);
  sock.write('RFB 003.008\n');
  await until(14);
  sock.write(Buffer.from([1]));
  await until(18);
  sock.write(Buffer.from([1])); // shared
  await until(18 + 24);
  await until(18 + 24 + got.readUInt32BE(18 + 20));
  return { sock, until, got: () => got };
}

/** An RFB KeyEvent for an X11 keysym. */
export const keysym = (down: boolean, k: number): Buffer =>
  Buffer.from([4, down ? 1 : 0, 0, 0, k >>> 24, (k >> 16) & 0xff, (k >> 8) & 0xff, k & 0xff]);

/** A free TCP port on 127.0.0.1 (at least `min`: QEMU's -vnc takes a display number, port - 5900). */
export async function freePort(min = 0): Promise<number> {
  for (;;) {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as net.AddressInfo).port;
    await new Promise((r) => s.close(r));
    if (port >= min) return port;
  }
}
