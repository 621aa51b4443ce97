// bhyve-xml: libvirt domain XML -> the bhyveload and bhyve command lines of
// libvirt's bhyve driver, and back. The fixtures in test/fixtures/libvirt
// are domains of the kinds libvirt's bhyvexml2argv tests cover, each with
// the command lines it must give (.args, libvirt's one-option-per-line
// layout); invalid/ holds domains that must be refused, with the lines
// bhyve-xml prints (.err).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { toArgv } from '../../src/cli/bhyve-xml-main.js';
import { parseCpuset, DomainError } from '../../src/libvirt/domain-def.js';
import { domainXmlFromArgv } from '../../src/libvirt/domain-from-argv.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const FIXTURES = path.join(ROOT, 'test/fixtures/libvirt');
const valid = fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.xml')).map((f) => f.slice(0, -4)).sort();
const invalid = fs.readdirSync(path.join(FIXTURES, 'invalid')).filter((f) => f.endsWith('.xml')).map((f) => f.slice(0, -4)).sort();

/** A .args file: commands separated by lines without a trailing backslash. */
function expectedLines(name: string): string[] {
  return fs.readFileSync(path.join(FIXTURES, `${name}.args`), 'utf8').replace(/ \\\n/g, ' ').trim().split('\n');
}

const xml = (name: string): string => fs.readFileSync(path.join(FIXTURES, `${name}.xml`), 'utf8');

describe('bhyve-xml to-argv', () => {
  it('has the fixtures', () => {
    expect(valid.length).toBeGreaterThanOrEqual(11);
    expect(invalid.length).toBeGreaterThanOrEqual(8);
  });

  it.each(valid)('%s.xml gives the command lines of its .args file', (name) => {
    const r = toArgv(xml(name), `${name}.xml`);
    expect(r.errors).toEqual([]);
    expect(r.lines).toEqual(expectedLines(name));
  });

  it.each(invalid)('invalid/%s.xml is refused with one line per problem', (name) => {
    const src = fs.readFileSync(path.join(FIXTURES, 'invalid', `${name}.xml`), 'utf8');
    const want = fs.readFileSync(path.join(FIXTURES, 'invalid', `${name}.err`), 'utf8').trim().split('\n');
    const r = toArgv(src, 'dom.xml');
    expect(r.lines).toEqual([]);
    expect(r.errors).toEqual(want.map((l) => `dom.xml: ${l}`));
  });

  it('UEFI domains have no loader command; bhyveload ones boot the disk libvirt picks', () => {
    expect(expectedLines('uefi-nvram-console')).toHaveLength(1);
    // <boot dev='cdrom'/>: the first CD, not the first disk.
    expect(toArgv(xml('bootorder-cdrom'), 'x').lines[0]).toBe('bhyveload -m 1024 -d /iso/FreeBSD-14.1-RELEASE-amd64-disc1.iso installer');
    // One disk with <boot order>: that one.
    const ordered = xml('base').replace("<target dev='sda' bus='sata'/>", "<target dev='sda' bus='sata'/><boot order='1'/>")
      .replace('</devices>', "<disk type='file'><source file='/other.img'/><target dev='vdb' bus='virtio'/></disk></devices>");
    expect(toArgv(ordered, 'x').lines[0]).toBe('bhyveload -m 512 -d /vm/fbsd14/disk0.img fbsd14');
    // Two with <boot order>: refused, as libvirt does for bhyveload.
    const two = ordered.replace("<target dev='vdb' bus='virtio'/>", "<target dev='vdb' bus='virtio'/><boot order='2'/>");
    expect(toArgv(two, 'x').errors).toEqual(['x: Only one boot device is supported']);
  });

  it('a custom boot loader runs with its own arguments; grub-bhyve is refused', () => {
    const custom = xml('base').replace('<os>', '<bootloader>/usr/local/sbin/myloader</bootloader><bootloader_args>-x --y fbsd14</bootloader_args><os>');
    expect(toArgv(custom, 'x').lines[0]).toBe('/usr/local/sbin/myloader -x --y fbsd14');
    const grub = xml('base').replace('<os>', '<bootloader>/usr/local/sbin/grub-bhyve</bootloader><os>');
    expect(toArgv(grub, 'x').errors[0]).toMatch(/grub-bhyve boot loader is not supported/);
  });

  it('quotes words a shell would split', () => {
    const spaced = xml('base').replaceAll('/vm/fbsd14/disk0.img', '/vm/my vm/it&apos;s.img');
    expect(toArgv(spaced, 'x').lines[0]).toBe(`bhyveload -m 512 -d '/vm/my vm/it'\\''s.img' fbsd14`);
  });

  it('an interface without a MAC gets the same 52:54:00 MAC every time', () => {
    const nomac = xml('base').replace("<mac address='52:54:00:1a:2b:3c'/>", '');
    const a = toArgv(nomac, 'x').lines[1], b = toArgv(nomac, 'x').lines[1];
    expect(a).toBe(b);
    expect(a).toMatch(/virtio-net,tap0,mac=52:54:00:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2} /);
  });

  it('memory units round up to MiB as libvirt does', () => {
    const mem = (m: string): string => toArgv(xml('base').replace("<memory unit='MiB'>512</memory>", m), 'x').lines[1].split(' ')[4];
    expect(mem('<memory>219136</memory>')).toBe('214');
    expect(mem("<memory unit='G'>2</memory>")).toBe('2048');
    expect(mem("<memory unit='bytes'>1048577</memory>")).toBe('2');
    expect(mem("<memory unit='MB'>1000</memory>")).toBe('954');
  });

  it('refuses malformed XML and other root elements with one line', () => {
    expect(() => toArgv('<domain><name>x</name>', 'x')).toThrow(/not well-formed XML/);
    expect(toArgv("<network><name>x</name></network>", 'x').errors).toEqual(['x: root element is <network>, not <domain>']);
    expect(toArgv("<domain type='kvm'><name>x</name><memory>1</memory></domain>", 'x').errors).toEqual(["x: domain type 'kvm' is not 'bhyve'"]);
  });

  it('refuses what would give a wrong command line (fuzz findings)', () => {
    // bhyve reads -m without a suffix as bytes from 1048576 on.
    expect(toArgv(xml('base').replace("<memory unit='MiB'>512</memory>", "<memory unit='TiB'>1</memory>"), 'x').errors)
      .toEqual(['x: memory of 1 TiB or more: bhyve would read the -m value in MiB as bytes']);
    const pins = xml('cputopology-pinning').replace("<vcpupin vcpu='1'", "<vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1'");
    expect(toArgv(pins, 'x').errors).toEqual(['x: duplicate vcpupin for same vcpu']);
    expect(toArgv(xml('cputopology-pinning').replace("cpuset='0'", "cpuset='0-9007199254740991'"), 'x').errors).toEqual(["x: invalid cpuset '0-9007199254740991'"]);
  });

  it('parses cpusets as virBitmapParse does', () => {
    expect(parseCpuset('0-3,^1,8')).toEqual([0, 2, 3, 8]);
    expect(() => parseCpuset('3-1')).toThrow(DomainError);
  });
});

describe('bhyve-xml from-argv', () => {
  const roundTrip = valid.filter((n) => n !== 'commandline');
  it.each(roundTrip)('%s: the bhyve command line -> domain XML -> the same command line', (name) => {
    const bhyve = expectedLines(name).at(-1)!;
    const back = toArgv(domainXmlFromArgv(bhyve.split(' ')), 'x');
    expect(back.errors).toEqual([]);
    expect(back.lines.at(-1)).toBe(bhyve);
  });

  it('writes the domain a libvirt user would write', () => {
    const out = domainXmlFromArgv('bhyve -c cpus=2,sockets=1,cores=2 -m 1G -A -u -H -P -s 0:0,hostbridge -s 1:0,lpc -l com1,/dev/nmdm5A -s 2,virtio-blk,/d.img vm1'.split(' '));
    expect(out).toContain('<name>vm1</name>');
    expect(out).toContain('<memory unit="KiB">1048576</memory>');
    expect(out).toContain('<vcpu>2</vcpu>');
    expect(out).toContain('<topology sockets="1" dies="1" cores="2" threads="1"/>');
    expect(out).toContain('<acpi/>');
    expect(out).toContain('<source master="/dev/nmdm5A" slave="/dev/nmdm5B"/>');
    expect(out).toContain('<clock offset="utc"/>');
  });

  it('the boot ROM is the first field of -l bootrom, whatever it holds', () => {
    const out = domainXmlFromArgv(['-l', 'bootrom,/fw/a=b.fd,/v.fd,fwcfg=qemu', 'vm']);
    expect(out).toContain('>/fw/a=b.fd</loader>');
    expect(out).toContain('<nvram>/v.fd</nvram>');
  });

  it('refuses what domain XML cannot say, with one line', () => {
    expect(() => domainXmlFromArgv('bhyve -s 0,hostbridge -s 4,passthru,1/0/0 vm'.split(' '))).toThrow('cannot express -s 4,passthru,1/0/0 in domain XML');
    expect(() => domainXmlFromArgv('bhyve -G 1234 vm'.split(' '))).toThrow('cannot express bhyve option -G 1234 in domain XML');
    expect(() => domainXmlFromArgv('bhyve -l com1,stdio vm'.split(' '))).toThrow(/nmdm or tcp/);
    expect(() => domainXmlFromArgv('bhyve -c 1'.split(' '))).toThrow(/one VM name/);
  });
});

const BUILT = fs.existsSync(path.join(ROOT, 'dist/bundle/bhyve-xml-main.js'));
describe.skipIf(!BUILT)('bin/bhyve-xml (needs npm run build)', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'bin/bhyve-xml'), ...args], { encoding: 'utf8' });

  it('prints the command lines, one per line', () => {
    const r = run('to-argv', path.join(FIXTURES, 'base.xml'));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${expectedLines('base').join('\n')}\n`);
  });

  it('prints one line per unsupported element and exits 1', () => {
    const f = path.join(FIXTURES, 'invalid/unsupported-elements.xml');
    const r = run('to-argv', f);
    expect(r.stdout).toBe('');
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual(
      fs.readFileSync(f.replace(/\.xml$/, '.err'), 'utf8').trim().split('\n').map((l) => `bhyve-xml: ${f}: ${l}`));
  });

  it('from-argv prints XML that to-argv turns back into the command line', () => {
    const bhyve = expectedLines('vnc-tablet')[0];
    const x = run('from-argv', '--', ...bhyve.split(' '));
    expect(x.status).toBe(0);
    const tmp = path.join(fs.mkdtempSync(path.join(ROOT, 'build', 'xml-')), 'd.xml');
    fs.writeFileSync(tmp, x.stdout);
    try {
      expect(run('to-argv', tmp).stdout).toBe(`${bhyve}\n`);
    } finally {
      fs.rmSync(path.dirname(tmp), { recursive: true });
    }
  });

  it('usage errors exit 1 with the usage', () => {
    const r = run('frobnicate');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^bhyve-xml: unknown command 'frobnicate'\nusage: bhyve-xml to-argv/);
  });

  it('a file it cannot read is one clear line and status 1', () => {
    const missing = run('to-argv', '/nonexistent.xml');
    expect(missing.stderr).toBe('bhyve-xml: /nonexistent.xml: No such file or directory\n');
    expect(missing.status).toBe(1);
    const dir = run('to-argv', FIXTURES);
    expect(dir.stderr).toBe(`bhyve-xml: ${FIXTURES}: Is a directory\n`);
    expect(dir.status).toBe(1);
  });
});
