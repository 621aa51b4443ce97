// bhyvectl's formatting and argument handling, without a VM: text lines as
// FreeBSD's bhyvectl.c prints them, --libxo json/xml, getopt_long parsing,
// the VMX access-rights encoding and the register update built from --set-*.
import { XMLParser } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';

import { decodeAccess, encodeAccess } from '../../src/bhyvectl/descriptor.js';
import { humanizeBytes, parseLibxo, Report, statLines } from '../../src/bhyvectl/report.js';
import { resetState, stateFromBootState } from '../../src/bhyvectl/target.js';
import { buildUpdate, parseBhyvectlArgs, parseNumber } from '../../src/cli/bhyvectl-main.js';

describe('access rights (VMX encoding)', () => {
  it('encodes flat code and data segments as bhyve does', () => {
    const code64 = { type: 0xb, s: 1, dpl: 0, present: 1, avl: 0, l: 1, db: 0, g: 1, unusable: 0 };
    const data32 = { type: 0x3, s: 1, dpl: 0, present: 1, avl: 0, l: 0, db: 1, g: 1, unusable: 0 };
    expect(encodeAccess(code64)).toBe(0xa09b);
    expect(encodeAccess(data32)).toBe(0xc093);
    expect(encodeAccess({ ...data32, unusable: 1, dpl: 3, avl: 1 })).toBe(0x1d0f3);
  });

  it('decodes every field back', () => {
    for (const a of [0xa09b, 0xc093, 0x8b, 0x82, 0x1d0f3, 0x10000]) expect(encodeAccess(decodeAccess(a))).toBe(a);
  });
});

describe('humanize_number(8, "B", HN_AUTOSCALE, HN_NOSPACE)', () => {
  it.each([
    [65536, '65536B'], [16 * 1024 * 1024, '16384kB'], [64 * 1024 * 1024, '65536kB'],
    [256 * 1024 * 1024, '256MB'], [3 * 1024 ** 3, '3072MB'], [1024 ** 4, '1024GB'], [99999, '99999B'], [100000, '97kB'], [1024 * 1000, '1000kB'], [1024 * 99999 + 1000, '97MB'],
  ])('%i -> %s', (n, s) => expect(humanizeBytes(n)).toBe(s));
});

describe('text output, as bhyvectl.c prints it', () => {
  const st = resetState();
  st.regs.rip = '0x100020';
  st.regs.rflags = '0x46';

  it('registers: name[cpu], tabs, 0x%016lx (rflags with one tab)', () => {
    const r = new Report('vm', 1);
    r.state(1, st, ['rip', 'rflags', 'cr0'], [], []);
    expect(r.render({ format: 'text', pretty: false })).toBe(
      'cr0[1]\t\t0x0000000060000010\nrip[1]\t\t0x0000000000100020\nrflags[1]\t0x0000000000000046\n');
  });

  it('descriptors (base/limit/access), gdtr/idtr (base/limit) and selectors (0x%04lx), in bhyvectl order', () => {
    const r = new Report('vm', 0);
    r.state(0, st, [], ['cs', 'ds', 'gdtr'], ['ldtr', 'cs']);
    expect(r.lines).toEqual([
      'ds desc[0]\t0x0000000000000000/0x0000ffff/0x00000093',
      'cs desc[0]\t0x00000000ffff0000/0x0000ffff/0x0000009b',
      'gdtr[0]\t\t0x0000000000000000/0x0000ffff',
      'cs[0]\t\t0xf000',
      'ldtr[0]\t\t0x0000',
    ]);
  });

  it('memory map and segments with humanized lengths', () => {
    const map = [
      { gpa: '0x0', size: '0xc0000000', kind: 'lowmem', readonly: false },
      { gpa: '0x100000000', size: '0x40000000', kind: 'highmem', readonly: false },
      { gpa: '0xffff0000', size: '0x10000', kind: 'bootrom', readonly: true },
    ];
    const r = new Report('vm', 0);
    r.memseg(map);
    r.memmap(map);
    expect(r.lines).toEqual([
      'ID  Length      Name',
      '0   4096MB      sysmem',
      '1   65536B      bootrom',
      'Address     Length      Segment     Offset      Prot  Flags',
      '0           3072MB      sysmem      0           RWX   ',
      '100000000   1024MB      sysmem      C0000000    RWX   ',
      'FFFF0000    65536B      bootrom     0           R-X   ',
    ]);
  });

  it('cpus, stats and topology', () => {
    const r = new Report('vm', 0);
    r.activeCpus([0, 1, 3]);
    r.activeCpus([]);
    r.stats(0, { exits: { IO: 5, HLT: 2 }, kvm: { halt_exits: '2' } });
    r.topology({ cpus: 4, sockets: 2, cores: 2, threads: 1 });
    expect(r.lines).toEqual([
      'active cpus:\t 0, 1, 3',
      'active cpus:\t (none)',
      'vcpu0 stats:',
      `${'total number of vm exits'.padEnd(40)}\t7`,
      `${'vm exits due to IO'.padEnd(40)}\t5`,
      `${'vm exits due to HLT'.padEnd(40)}\t2`,
      `${'kvm halt_exits'.padEnd(40)}\t2`,
      'cpu_topology:\tsockets=2, cores=2, threads=1, maxcpus=4',
    ]);
    expect(statLines({ exits: {}, kvm: {} })).toEqual([{ description: 'total number of vm exits', value: '0' }]);
  });
});

describe('--libxo json and xml', () => {
  const build = (): Report => {
    const r = new Report('vm0', 0);
    r.state(0, resetState(), ['rip'], ['cs'], ['cs']);
    r.activeCpus([0, 1]);
    r.stats(0, { exits: { IO: 3 }, kvm: {} });
    return r;
  };

  it('json: one "bhyvectl" object, lists as arrays', () => {
    const j = JSON.parse(build().render({ format: 'json', pretty: false }));
    expect(j).toEqual({
      bhyvectl: {
        vm: 'vm0', vcpu: 0,
        register: { rip: '0x000000000000fff0' },
        descriptor: { cs: { base: '0x00000000ffff0000', limit: '0x0000ffff', access: '0x0000009b' } },
        segment: { cs: '0xf000' },
        'active-cpus': [0, 1],
        stats: { vcpu: 0, stat: [{ description: 'total number of vm exits', value: 3 }, { description: 'vm exits due to IO', value: 3 }] },
      },
    });
  });

  it('xml: the same facts, lists as repeated elements; pretty indents', () => {
    const xml = build().render({ format: 'xml', pretty: false });
    expect(xml).toMatch(/^<bhyvectl><vm>vm0<\/vm><vcpu>0<\/vcpu><register><rip>0x000000000000fff0<\/rip><\/register>/);
    expect(xml).toContain('<active-cpus>0</active-cpus><active-cpus>1</active-cpus>');
    const doc = new XMLParser({ parseTagValue: false }).parse(xml);
    expect(doc.bhyvectl.descriptor.cs.access).toBe('0x0000009b');
    expect(doc.bhyvectl.stats.stat).toHaveLength(2);
    expect(build().render({ format: 'xml', pretty: true })).toContain('\n  <vm>vm0</vm>\n');
  });

  it('parses --libxo arguments', () => {
    expect(parseLibxo('json')).toEqual({ format: 'json', pretty: false });
    expect(parseLibxo('xml,pretty')).toEqual({ format: 'xml', pretty: true });
    expect(parseLibxo('text')).toEqual({ format: 'text', pretty: false });
    expect(() => parseLibxo('html')).toThrow(/invalid --libxo option 'html'/);
  });
});

describe('argument handling', () => {
  it('getopt_long: --name=value, --name value, flags, unambiguous prefixes', () => {
    const o = parseBhyvectlArgs(['--vm=a', '--cpu', '2', '--get-rip', '--set-rax=0x10', '--destr']);
    expect(Object.fromEntries(o)).toEqual({ vm: 'a', cpu: '2', 'get-rip': true, 'set-rax': '0x10', destroy: true });
  });

  it.each([
    [['--vm'], /option '--vm' requires an argument/],
    [['--get-rip=1'], /doesn't allow an argument/],
    [['--get-r'], /ambiguous/],
    [['--nosuch'], /unrecognized option '--nosuch'/],
    [['-x'], /unrecognized option '-x'/],
    [['vm0'], /unexpected operand: vm0/],
  ])('%j is refused', (argv, re) => expect(() => parseBhyvectlArgs(argv)).toThrow(re));

  it('numbers as strtoul(.., 0) reads them, strictly', () => {
    expect(parseNumber('0x1F', 'x')).toBe(31n);
    expect(parseNumber('017', 'x')).toBe(15n);
    expect(parseNumber('0', 'x')).toBe(0n);
    expect(parseNumber('18446744073709551615', 'x')).toBe((1n << 64n) - 1n);
    expect(() => parseNumber('18446744073709551616', 'x')).toThrow(/does not fit in 64 bits/);
    expect(() => parseNumber('-1', 'set-rip')).toThrow(/invalid value '-1' for --set-rip/);
    expect(() => parseNumber('12z', 'x')).toThrow(/invalid value/);
    expect(() => parseNumber('0x10000', 'set-cs', 16)).toThrow(/16 bits/);
  });

  it('--set-* options become one register update', () => {
    const u = buildUpdate(parseBhyvectlArgs([
      '--vm=a', '--set-rip=0x1000', '--set-r15=7', '--set-cr3=0x9000', '--set-dr7=0x400', '--set-cs=0x10',
      '--set-desc-cs', '--desc-base=0', '--desc-limit=0xffffffff', '--desc-access=0xa09b',
      '--set-desc-gdtr', '--set-ldtr=0',
    ]));
    expect(u).toEqual({
      regs: { rip: '0x1000', r15: '0x7' },
      control: { cr3: '0x9000' },
      debug: { dr7: '0x400' },
      segments: {
        cs: { base: '0x0', limit: 0xffffffff, type: 0xb, s: 1, dpl: 0, present: 1, avl: 0, l: 1, db: 0, g: 1, unusable: 0, selector: 0x10 },
        ldt: { selector: 0 },
      },
      gdt: { base: '0x0', limit: 0xffffffff },
    });
    expect(buildUpdate(parseBhyvectlArgs(['--vm=a', '--get-all']))).toEqual({});
  });
});

describe('idle VM state', () => {
  it('comes from the stored boot state, other registers as at power-on', () => {
    const seg = { base: '0x0', limit: 0xffffffff, selector: 0x10, type: 0xb, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 };
    const st = stateFromBootState({
      version: 1, entry: 'multiboot', regs: { rip: '0x100020', rax: '0x2badb002' },
      sregs: { cs: seg, gdt: { base: '0x500', limit: 47 }, idt: { base: '0x0', limit: 0 }, cr0: '0x11', cr3: '0x0', cr4: '0x0', efer: '0x0' },
    });
    expect(st.regs.rip).toBe('0x100020');
    expect(st.regs.rbx).toBe('0x0');
    expect(st.segments.cs.selector).toBe(0x10);
    expect(st.segments.ds.selector).toBe(0); // absent: power-on value
    expect(st.control.cr0).toBe('0x11');
    expect(st.debug.dr7).toBe('0x400');
    expect(st.gdt).toEqual({ base: '0x500', limit: 47 });
  });
});
