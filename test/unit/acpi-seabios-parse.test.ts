// SeaBIOS (CONFIG_ACPI_PARSE, e.g. Debian's bios-256k.bin) walks the DSDT
// with a deliberately small AML parser (src/fw/dsdt_parser.c) to find
// devices by _HID (PS/2 keyboard and mouse, serial ports, the PCI root) and
// their _CRS. It understands only a few declarations in a TermList (Name,
// Scope, Buffer, Package, Method, Device, Mutex, OperationRegion, Field,
// Processor, PowerResource, ThermalZone and integer/string constants) and
// skips Method/Field/Package bodies by their PkgLength. Anything else at
// declaration level makes it log "parse_termlist: parse error" and give up
// on the rest of the enclosing scope. This is a model of that walker (same
// accepted subset, same failure points) run on our DSDT, so a construct it
// cannot read fails here without needing KVM or SeaBIOS.
import { describe, expect, it } from 'vitest';
import { acpiPlatform, buildAcpiTables, type AcpiPlatform } from '../../src/firmware/acpi/index.js';
import { builtMachine } from '../support/built-machine.js';

interface SeenDevice { name: string; hid?: Uint8Array; crs?: Uint8Array }

class SeaBiosDsdtModel {
  readonly errors: string[] = [];
  readonly devices: SeenDevice[] = [];
  private name = '';
  private dev: SeenDevice | undefined;
  private depth = 0;
  private failed = false;

  constructor(private readonly b: Uint8Array) {}

  private fail(what: string, at: number): void {
    const bytes = [...this.b.subarray(at, at + 8)].map((x) => x.toString(16).padStart(2, '0')).join(' ');
    this.errors.push(`${what} at 0x${at.toString(16)}: ${bytes}`);
    this.failed = true;
  }

  /** PkgLength at p: [value, bytes used]. */
  private pkgLength(p: number): [number, number] {
    const lead = this.b[p];
    const n = lead >> 6;
    if (n === 0) return [lead & 0x3f, 1];
    let v = lead & 0x0f;
    for (let i = 1; i <= n; i++) v |= this.b[p + i] << (4 + 8 * (i - 1));
    return [v, n + 1];
  }

  private nameSeg(p: number): string {
    return String.fromCharCode(...this.b.subarray(p, p + 4)).replace(/_+$/, (m) => (m.length === 4 ? '_' : ''));
  }

  /** NameString at p; returns its length and sets this.name. */
  private nameString(p: number): number {
    let off = 0;
    let prefix = '';
    while (this.b[p + off] === 0x5c || this.b[p + off] === 0x5e) prefix += String.fromCharCode(this.b[p + off++]);
    const c = this.b[p + off];
    const segs: string[] = [];
    if (c === 0x00) off++;
    else if (c === 0x2e) { off++; segs.push(this.nameSeg(p + off), this.nameSeg(p + off + 4)); off += 8; }
    else if (c === 0x2f) { const n = this.b[p + off + 1]; off += 2; for (let i = 0; i < n; i++, off += 4) segs.push(this.nameSeg(p + off)); }
    else if ((c >= 0x41 && c <= 0x5a) || c === 0x5f) { segs.push(this.nameSeg(p + off)); off += 4; }
    else this.fail('parse_namestring', p + off);
    this.name = prefix + segs.join('.');
    return off;
  }

  /** The integer forms parse_termarg_int takes: Zero, One, Byte/Word/DWord. */
  private termArgInt(p: number): number {
    switch (this.b[p]) {
      case 0x00: case 0x01: return 1;
      case 0x0a: return 2;
      case 0x0b: return 3;
      case 0x0c: return 5;
      default: this.fail('parse_termarg_int', p); return 1;
    }
  }

  /** A package that is skipped whole (Method, Field, Package, ...). */
  private skipPkg(p: number, named: boolean): number {
    const [len, n] = this.pkgLength(p);
    if (named) this.nameString(p + n);
    return len;
  }

  termObj(p: number): number {
    if (this.depth === 16) { this.fail('parse_termobj: deep recursion', p); return 1; }
    this.depth++;
    let off = 1;
    const op = this.b[p];
    switch (op) {
      case 0x00: case 0x01: break;
      case 0x08: {
        off += this.nameString(p + off);
        const n = this.name;
        off += this.termObj(p + off);
        if (this.dev && n === '_HID') this.dev.hid = this.b.subarray(p + 5, p + off);
        break;
      }
      case 0x0a: off += 1; break;
      case 0x0b: off += 2; break;
      case 0x0c: off += 4; break;
      case 0x0d: while (this.b[p + off]) off++; off++; break;
      case 0x10: { // Scope
        const [len, n] = this.pkgLength(p + 1);
        const nl = this.nameString(p + 1 + n);
        this.termList(p + 1, n + nl, len);
        off += len;
        break;
      }
      case 0x11: { // Buffer: the _CRS data SeaBIOS keeps
        const [len, n] = this.pkgLength(p + 1);
        const il = this.termArgInt(p + 1 + n);
        if (this.dev && this.name === '_CRS') this.dev.crs = this.b.subarray(p + 1 + n + il, p + 1 + len);
        off += len;
        break;
      }
      case 0x12: case 0x13: off += this.skipPkg(p + 1, false); break;
      case 0x14: off += this.skipPkg(p + 1, true); break;
      case 0x5b: {
        off++;
        const ext = this.b[p + 1];
        if (ext === 0x01) { off += this.nameString(p + off) + 1; }
        else if (ext === 0x80) {
          off += this.nameString(p + off) + 1;
          off += this.termArgInt(p + off);
          off += this.termArgInt(p + off);
        } else if (ext === 0x81 || ext === 0x83 || ext === 0x84 || ext === 0x85) {
          off += this.skipPkg(p + off, true);
        } else if (ext === 0x82) {
          const [len, n] = this.pkgLength(p + off);
          const nl = this.nameString(p + off + n);
          this.dev = { name: this.name };
          this.devices.push(this.dev);
          this.termList(p + off, n + nl, len);
          this.dev = undefined; // as SeaBIOS, even inside an outer device
          off += len;
        } else this.fail('parse_termobj', p);
        break;
      }
      default: this.fail('parse_termobj', p);
    }
    this.depth--;
    return off;
  }

  /** Terms from base+start up to base+end; like SeaBIOS, parses at least one. */
  termList(base: number, start: number, end: number): void {
    let off = start;
    for (;;) {
      off += this.termObj(base + off);
      if (off === end) return;
      if (off > end) { this.errors.push(`parse_termlist: overrun: ${off}/${end}`); this.failed = true; return; }
      if (this.failed) { this.errors.push(`parse_termlist: parse error, skip from ${off}/${end}`); this.failed = false; return; }
    }
  }
}

function parseDsdt(dsdt: Uint8Array): SeaBiosDsdtModel {
  const m = new SeaBiosDsdtModel(dsdt);
  const length = dsdt[4] | (dsdt[5] << 8) | (dsdt[6] << 16) | (dsdt[7] << 24);
  m.termList(0, 0x24, length);
  return m;
}

/** The ACPI view of the platform built from `settings`; `intx` adds
 * virtio-rnd functions at 0:3.0 and 0:4.0 and 0:4.1, which take INTx pins. */
function platform(settings: Record<string, string>, intx: boolean): AcpiPlatform {
  return acpiPlatform(builtMachine({
    ...settings,
    ...(intx ? { 'pci.0.3.0.device': 'virtio-rnd', 'pci.0.4.0.device': 'virtio-rnd', 'pci.0.4.1.device': 'virtio-rnd' } : {}),
  }));
}

const eisa = (pnp: number): number[] => [0x0c, 0x41, 0xd0, pnp >> 8, pnp & 0xff];

describe("SeaBIOS's DSDT parser (dsdt_parser.c) reads our DSDT without errors", () => {
  const cases: Array<[string, Record<string, string>, boolean]> = [
    ['LPC, COM1-COM4, fw_cfg, INTx routes', {
      'pci.0.0.0.device': 'hostbridge', 'pci.0.1.0.device': 'lpc', 'lpc.com1.path': 'stdio', 'lpc.com2.path': '/dev/null',
      'lpc.com3.path': '/dev/null', 'lpc.com4.path': '/dev/null', 'lpc.fwcfg': 'qemu',
    }, true],
    ['LPC without fw_cfg or INTx', { 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc', 'lpc.com1.path': 'stdio' }, false],
    ['no LPC bridge', { 'pci.0.0.0.device': 'hostbridge' }, true],
  ];
  for (const [what, settings, intx] of cases) {
    it(what, () => {
      const p = platform(settings, intx);
      const m = parseDsdt(buildAcpiTables(p).tables.get('DSDT')!.bytes);
      expect(m.errors).toEqual([]);
      const byHid = (pnp: number): SeenDevice[] => m.devices.filter((d) => d.hid && Buffer.from(d.hid).equals(Buffer.from(eisa(pnp))));
      expect(byHid(0x0a08).map((d) => d.name)).toEqual(['PC00']);
      expect(byHid(0x0a08)[0].crs).toBeDefined();
      if (p.lpc) {
        // What SeaBIOS looks up: PS/2 keyboard and mouse, the serial ports.
        expect(byHid(0x0303).map((d) => d.name)).toEqual(['KBD']);
        expect(byHid(0x0f13).map((d) => d.name)).toEqual(['MOU']);
        expect(byHid(0x0501).map((d) => d.name)).toEqual(p.uarts.map((u) => u.name));
        // Every PIRQ link is read to its end (its _HID and all names).
        expect(byHid(0x0c0f).map((d) => d.name)).toEqual(['LNKA', 'LNKB', 'LNKC', 'LNKD', 'LNKE', 'LNKF', 'LNKG', 'LNKH']);
      }
    });
  }

  it('the model does flag a declaration SeaBIOS cannot read (CreateWordField at device scope)', () => {
    // Device (X) { Name (_HID, EisaId ("PNP0303")) CreateWordField (B, One, F) }
    const body = [0x58, 0x5f, 0x5f, 0x5f, 0x08, 0x5f, 0x48, 0x49, 0x44, ...eisa(0x0303), 0x8b, 0x42, 0x5f, 0x5f, 0x5f, 0x01, 0x46, 0x5f, 0x5f, 0x5f];
    const dev = [0x5b, 0x82, body.length + 1, ...body];
    const table = new Uint8Array(0x24 + dev.length);
    table.set(dev, 0x24);
    new DataView(table.buffer).setUint32(4, table.length, true);
    const m = parseDsdt(table);
    expect(m.errors).toHaveLength(2);
    expect(m.errors[0]).toMatch(/^parse_termobj at/);
    expect(m.errors[1]).toMatch(/^parse_termlist: parse error/);
  });
});
