import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { byteSum, getU16, getU32, getU64 } from '../../src/firmware/bytes.js';
import {
  buildSmbiosInMemory, buildSmbiosStructures, defaultUuid, encodeUuidLe, SMBIOS_BASE, smbiosFwCfgFiles,
  smbiosOptionsFromConfig, uuidBytesBe,
} from '../../src/firmware/smbios.js';
import { computeLayout } from '../../src/sys/memory-map.js';

const GiB = 1024 * 1024 * 1024;

interface Struct { type: number; handle: number; formatted: Uint8Array; strings: string[] }

function parse(bytes: Uint8Array): Struct[] {
  const out: Struct[] = [];
  let off = 0;
  while (off < bytes.length) {
    const type = bytes[off];
    const len = bytes[off + 1];
    const formatted = bytes.subarray(off, off + len);
    let p = off + len;
    const strings: string[] = [];
    if (bytes[p] === 0 && bytes[p + 1] === 0) p += 2;
    else {
      while (bytes[p] !== 0) {
        let s = '';
        while (bytes[p] !== 0) s += String.fromCharCode(bytes[p++]);
        strings.push(s);
        p++;
      }
      p++;
    }
    out.push({ type, handle: getU16(bytes, off + 2), formatted, strings });
    off = p;
    if (type === 127) break;
  }
  return out;
}
const str = (s: Struct, idx: number) => (idx === 0 ? '' : s.strings[idx - 1]);

function opts(settings: Record<string, string> = {}, mem = 6 * GiB) {
  const c = new ConfigTree();
  c.set('name', 'vm0');
  for (const [k, v] of Object.entries(settings)) c.set(k, v);
  return smbiosOptionsFromConfig(c, computeLayout(mem), 'host.example');
}

describe('SMBIOS', () => {
  it('has bhyve\'s structures with the config strings and defaults', () => {
    const st = buildSmbiosStructures(opts({ 'bios.vendor': 'ACME', 'system.serial_number': 'S123', sockets: '2', cores: '2', threads: '2' }));
    const ss = parse(st.bytes);
    expect(ss.map((s) => s.type)).toEqual([0, 1, 2, 3, 4, 4, 16, 17, 19, 19, 32, 127]);
    expect(st.count).toBe(12);
    expect(new Set(ss.map((s) => s.handle)).size).toBe(12);
    const [t0, t1, t2, t3, t4] = ss;
    expect(str(t0, t0.formatted[4])).toBe('ACME');
    expect(str(t0, t0.formatted[5])).toBe('14.0');
    expect(str(t0, t0.formatted[8])).toBe('10/17/2021');
    expect(t0.formatted[0x13] & 0x10).toBe(0x10); // virtual machine
    expect(str(t1, t1.formatted[4])).toBe('FreeBSD');
    expect(str(t1, t1.formatted[5])).toBe('BHYVE');
    expect(str(t1, t1.formatted[7])).toBe('S123');
    expect(str(t1, t1.formatted[0x1a])).toBe('Virtual Machine');
    expect(getU16(t2.formatted, 0x0b)).toBe(t3.handle); // board -> chassis
    expect(str(t4, t4.formatted[4])).toBe('CPU #0');
    expect(str(ss[5], ss[5].formatted[4])).toBe('CPU #1');
    expect([t4.formatted[0x23], t4.formatted[0x25]]).toEqual([2, 4]); // cores, threads per socket
    const t16 = ss[6];
    expect(Number(getU64(t16.formatted, 0x0f))).toBe(6 * GiB);
    expect(getU16(ss[7].formatted, 4)).toBe(t16.handle);
    expect(getU16(ss[7].formatted, 0x0c)).toBe(6 * 1024); // MB, top bit clear
    expect(Number(getU64(ss[8].formatted, 0x0f))).toBe(0);
    expect(Number(getU64(ss[8].formatted, 0x17))).toBe(3 * GiB - 1);
    expect(Number(getU64(ss[9].formatted, 0x0f))).toBe(4 * GiB);
    expect(Number(getU64(ss[9].formatted, 0x17))).toBe(7 * GiB - 1);
    expect(st.maxSize).toBeGreaterThan(0);
  });

  it('uses -U for the UUID (SMBIOS byte order) and bhyve\'s MD5 default otherwise', () => {
    const u = '01234567-89ab-cdef-0123-456789abcdef';
    expect([...encodeUuidLe(u)]).toEqual([0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
    expect([...uuidBytesBe(u)]).toEqual([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
    const t1 = parse(buildSmbiosStructures(opts({ uuid: u })).bytes)[1];
    expect([...t1.formatted.subarray(8, 24)]).toEqual([...encodeUuidLe(u)]);
    // bhyve's smbios_type1_initializer: MD5 of the VM name, then of the
    // host name in its MAXHOSTNAMELEN (256) byte buffer (zero-filled here),
    // version 3 in digest[6], the RFC 4122 variant in digest[8].
    const bhyveUuid = (vm: string, host: string): string => {
      const h = Buffer.alloc(256);
      h.write(host, 'latin1');
      const d = createHash('md5').update(vm, 'latin1').update(h).digest();
      d[6] = (d[6] & 0x0f) | 0x30;
      d[8] = (d[8] & 0x3f) | 0x80;
      return d.toString('hex');
    };
    expect(bhyveUuid('vm0', 'host.example')).toBe('c1422c51d4eb3ed98c1a06ee05b55001');
    expect(Buffer.from(defaultUuid('vm0', 'host.example')).toString('hex')).toBe(bhyveUuid('vm0', 'host.example'));
    expect(Buffer.from(defaultUuid('vm1', 'other')).toString('hex')).toBe(bhyveUuid('vm1', 'other'));
    expect(Buffer.from(parse(buildSmbiosStructures(opts()).bytes)[1].formatted.subarray(8, 24)).toString('hex'))
      .toBe(bhyveUuid('vm0', 'host.example'));
    expect(() => opts({ uuid: 'not-a-uuid' })).toThrow(/invalid uuid/);
  });

  it('2.x entry point in memory: anchors, checksums, table address and length', () => {
    const m = buildSmbiosInMemory(opts({}, 512 * 1024 * 1024));
    const ep = m.image.subarray(0, 31);
    expect(String.fromCharCode(...ep.subarray(0, 4))).toBe('_SM_');
    expect(String.fromCharCode(...ep.subarray(16, 21))).toBe('_DMI_');
    expect(byteSum(ep, 0, 31)).toBe(0);
    expect(byteSum(ep, 16, 15)).toBe(0);
    expect(getU32(ep, 0x18)).toBe(SMBIOS_BASE + 31);
    expect(getU16(ep, 0x16)).toBe(m.image.length - 31);
    expect(getU16(ep, 0x1c)).toBe(10); // one socket, no highmem: one type 19
    expect(ep[0x1e]).toBe(0x28);
  });

  it('3.0 entry point and the fw_cfg files', () => {
    const m = buildSmbiosInMemory(opts(), '3');
    const ep = m.image.subarray(0, 24);
    expect(String.fromCharCode(...ep.subarray(0, 5))).toBe('_SM3_');
    expect(byteSum(ep, 0, 24)).toBe(0);
    expect(Number(getU64(ep, 0x10))).toBe(SMBIOS_BASE + 24);
    expect(getU32(ep, 0x0c)).toBe(m.image.length - 24);
    const files = smbiosFwCfgFiles(opts());
    expect(files.map((f) => f.name)).toEqual(['etc/smbios/smbios-tables', 'etc/smbios/smbios-anchor']);
    const anchor = files[1].data;
    expect(anchor.length).toBe(31);
    expect(getU32(anchor, 0x18)).toBe(0);
    expect(getU16(anchor, 0x16)).toBe(files[0].data.length);
    expect(byteSum(anchor)).toBe(0);
  });
});
