// The PS/2 mouse behind the i8042's aux port, as bhyve's ps2mouse.c:
// commands from the guest (0xd4 to port 0x64, then the byte to 0x60) and
// 3-byte movement packets from fbuf's VNC clients. VNC pointer events are
// absolute; the mouse reports the difference from the last position
// (y grows upwards on PS/2), split into packets of at most 255 counts.
//
// Commands: 0xff reset (ACK, 0xaa, 0x00; reporting off, defaults),
// 0xf6 defaults, 0xf4/0xf5 reporting on/off, 0xf2 device id (ACK, 0x00),
// 0xe9 status (ACK, status, resolution, rate), 0xeb read data (ACK, a
// packet), 0xf3 sample rate and 0xe8 resolution (ACK, then ACK for the
// parameter), 0xe6/0xe7 scaling, 0xea stream, 0xf0 remote, 0xee/0xec wrap
// on/off; anything else is ACKed. In wrap mode bytes are echoed.

const ACK = 0xfa;
const MAX_DELTA = 255;

export class Ps2Mouse {
  private reporting = false;
  private remote = false;
  private wrap = false;
  private scaling21 = false;
  private resolution = 2;
  private rate = 100;
  private param = 0;
  private buttons = 0;
  private x = 0;
  private y = 0;
  private havePosition = false;
  private dx = 0;
  private dy = 0;

  /** `out` queues a byte for the guest on the aux channel; `room` says how
   * many more fit (a packet goes whole or waits). */
  constructor(private readonly out: (b: number) => void, private readonly room: () => number) {}

  reset(): void {
    this.defaults();
    this.reporting = false;
    this.remote = false;
    this.wrap = false;
    this.param = 0;
  }

  private defaults(): void {
    this.resolution = 2;
    this.rate = 100;
    this.scaling21 = false;
  }

  /** A byte the guest sent to the mouse. */
  write(val: number): void {
    if (this.param !== 0) {
      if (this.param === 0xf3) this.rate = val;
      else if (this.param === 0xe8) this.resolution = val & 3;
      this.param = 0;
      this.out(ACK);
      return;
    }
    if (this.wrap && val !== 0xec && val !== 0xff) { this.out(val); return; }
    switch (val) {
      case 0xff: this.reset(); this.out(ACK); this.out(0xaa); this.out(0x00); break;
      case 0xf6: this.defaults(); this.out(ACK); break;
      case 0xf4: this.reporting = true; this.out(ACK); break;
      case 0xf5: this.reporting = false; this.out(ACK); break;
      case 0xf2: this.out(ACK); this.out(0x00); break;
      case 0xe9:
        this.out(ACK);
        this.out((this.remote ? 0x40 : 0) | (this.reporting ? 0x20 : 0) | (this.scaling21 ? 0x10 : 0) | this.psButtons());
        this.out(this.resolution);
        this.out(this.rate);
        break;
      case 0xeb: this.out(ACK); this.packet(true); break;
      case 0xf3: case 0xe8: this.param = val; this.out(ACK); break;
      case 0xe6: this.scaling21 = false; this.out(ACK); break;
      case 0xe7: this.scaling21 = true; this.out(ACK); break;
      case 0xea: this.remote = false; this.out(ACK); break;
      case 0xf0: this.remote = true; this.out(ACK); break;
      case 0xee: this.wrap = true; this.out(ACK); break;
      case 0xec: this.wrap = false; this.out(ACK); break;
      default: this.out(ACK); break;
    }
  }

  /** RFB button mask (bit 0 left, 1 middle, 2 right) at absolute x, y. */
  pointer(rfbButtons: number, x: number, y: number): void {
    if (this.havePosition) {
      this.dx += x - this.x;
      this.dy += this.y - y;
    }
    this.x = x;
    this.y = y;
    this.havePosition = true;
    const moved = this.dx !== 0 || this.dy !== 0;
    const changed = (rfbButtons & 7) !== this.buttons;
    this.buttons = rfbButtons & 7;
    if (!this.reporting || this.remote || this.wrap) return;
    if (changed && !moved) this.packet(false);
    while (this.dx !== 0 || this.dy !== 0) if (!this.packet(false)) break;
  }

  /** PS/2 button bits: left 1, right 2, middle 4. */
  private psButtons(): number {
    return (this.buttons & 1) | ((this.buttons & 4) >> 1) | ((this.buttons & 2) << 1);
  }

  /** Sends one packet with up to 255 counts of the pending movement; false
   * (movement kept for later) when the controller has no room for it. */
  private packet(force: boolean): boolean {
    if (!force && this.room() < 3) return false;
    const dx = Math.max(-MAX_DELTA, Math.min(MAX_DELTA, this.dx));
    const dy = Math.max(-MAX_DELTA, Math.min(MAX_DELTA, this.dy));
    this.out(0x08 | this.psButtons() | (dx < 0 ? 0x10 : 0) | (dy < 0 ? 0x20 : 0));
    this.out(dx & 0xff);
    this.out(dy & 0xff);
    this.dx -= dx;
    this.dy -= dy;
    return true;
  }
}
