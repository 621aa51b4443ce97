// Runs the built launchers (npm run build first) and checks what a user sees.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function run(tool: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [`${ROOT}/bin/${tool}`, ...args], { encoding: 'utf8', env: { ...process.env, BHYVE_DEBUG: '' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const EXAMPLE = '-c 2 -m 1G -s 0,hostbridge -s 1,lpc -l com1,stdio -l bootrom,/path/BHYVE_UEFI.fd,/path/vars.fd '
  + '-s 3:1,virtio-blk,/img/disk.img,ro -s 4,virtio-net,tap0,mac=52:54:00:12:34:56 -o config.dump=true vm0';

describe('bhyve', () => {
  it('-o config.dump=true prints the variables bhyve would set, exit status 1', () => {
    const r = run('bhyve', EXAMPLE.split(' '));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(1);
    expect(r.stdout).toBe([
      'acpi_tables=true',
      'acpi_tables_in_memory=true',
      'memory.size=1G',
      'x86.strictmsr=true',
      'lpc.fwcfg=bhyve',
      'lpc.com1.path=stdio',
      'lpc.bootrom=/path/BHYVE_UEFI.fd',
      'lpc.bootvars=/path/vars.fd',
      'cpus=2',
      'pci.0.0.0.device=hostbridge',
      'pci.0.1.0.device=lpc',
      'pci.0.3.1.device=virtio-blk',
      'pci.0.3.1.path=/img/disk.img',
      'pci.0.3.1.ro=true',
      'pci.0.4.0.device=virtio-net',
      'pci.0.4.0.backend=tap0',
      'pci.0.4.0.mac=52:54:00:12:34:56',
      'config.dump=true',
      'name=vm0',
      '',
    ].join('\n'));
  });

  it('a replaced value moves to the end of its node, as in bhyve', () => {
    const r = run('bhyve', ['-w', '-o', 'config.dump=1', 'vm0']);
    expect(r.stdout.split('\n').slice(0, 5)).toEqual([
      'acpi_tables=true', 'acpi_tables_in_memory=true', 'memory.size=256M', 'x86.strictmsr=false', 'lpc.fwcfg=bhyve']);
  });

  it('a bad vcpu.ap_model or vcpu.bsp_model is one line and status 4, before any VM exists', () => {
    for (const [key, allowed] of [['vcpu.ap_model', 'pool or thread'], ['vcpu.bsp_model', 'main or thread']]) {
      const r = run('bhyve', ['-c', '1', '-o', `${key}=fast`, 'vm0']);
      expect(r.status).toBe(4);
      expect(r.stderr).toBe(`bhyve: invalid ${key} 'fast' (${allowed})\n`);
    }
  });

  it('-h prints the usage on stderr and exits 0', () => {
    const r = run('bhyve', ['-h']);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^Usage: bhyve \[-aCDeHhPSuWwxY\]/);
  });

  it('-s help and -l help list the registry on stdout', () => {
    expect(run('bhyve', ['-s', 'help']).stdout).toContain('virtio-blk\n');
    expect(run('bhyve', ['-l', 'help'])).toMatchObject({ status: 0, stdout: 'bootrom\ncom1\ncom2\ncom3\ncom4\ntpm (not supported yet)\npc-testdev\n' });
  });

  it.each([
    [['-z', 'vm0'], 1, /illegal option -- z/],
    [['-m'], 1, /option requires an argument -- m/],
    [[], 1, /missing vmname/],
    [['-c', '2'], 1, /missing vmname/],
    [['vm0', 'vm1'], 1, /too many operands/],
    [['-s', '3,nosuch', 'vm0'], 4, /unknown device "nosuch"/],
    [['-s', '32,hostbridge', 'vm0'], 4, /Invalid PCI slot info field/],
    [['-s', '1:8,hostbridge', 'vm0'], 4, /Invalid PCI slot info field/],
    [['-s', '0,hostbridge', '-s', '0:0,lpc', 'vm0'], 4, /pci slot 0:0:0 already occupied/],
    [['-s', '3,virtio-blk', 'vm0'], 4, /virtio-blk requires a path/],
    [['-l', 'com9,stdio', 'vm0'], 64, /invalid lpc device configuration 'com9,stdio'/],
    [['-l', 'com1', 'vm0'], 64, /invalid lpc device configuration/],
    [['-m', '1Z', 'vm0'], 64, /invalid memsize '1Z'/],
    [['-c', '0', 'vm0'], 4, /Invalid value for cpus: '0'/],
    [['-c', '3,sockets=2', 'vm0'], 4, /does not match 3 vCPUs/],
    [['-c', 'foo=1', 'vm0'], 64, /invalid cpu topology/],
    [['-k', '/nonexistent/vm.conf', 'vm0'], 4, /Failed to open configuration file \/nonexistent\/vm.conf: No such file or directory$/],
    [['-k', '/dev/null/vm.conf', 'vm0'], 4, /Failed to open configuration file \/dev\/null\/vm.conf: Not a directory$/],
    [['-o', 'novalue', 'vm0'], 64, /invalid configuration option 'novalue'/],
    [['-o', 'x=', 'vm0'], 64, /invalid configuration option/],
    [['-p', '0', 'vm0'], 64, /invalid vcpu pinning configuration/],
    [['-p', '0:99999', 'vm0'], 64, /hostcpu '99999' outside valid range/],
    [['-U', 'not-a-uuid', 'vm0'], 4, /Invalid UUID/],
    [['-f', 'noval', 'vm0'], 64, /invalid fwcfg item/],
    [['-o', 'config.dump=maybe', 'vm0'], 4, /invalid boolean value 'maybe'/],
    [['-s', '3,passthru,pci1:0:0', 'vm0'], 4, /^bhyve: passthru: no IOMMU: /],
    [['-G', 'w127.0.0.1:notaport', 'vm0'], 4, /gdb address resolution: invalid port 'notaport'/],
    [['-G', '70000', 'vm0'], 4, /gdb address resolution: invalid port '70000'/],
    [['-r', '/tmp/snap', 'vm0'], 4, /not supported yet: -r/],
    [['-n', 'id=0,size=1G', 'vm0'], 4, /Missing CPU set for domain 0/],
    [['-K', 'us', 'vm0'], 4, /unknown keyboard layout 'us' \(-K\): no such file in .*kbdlayout/],
    [['-l', 'tpm,swtpm,/tmp/s', 'vm0'], 4, /not supported yet: LPC device tpm/],
    [['-l', 'bootrom,/rom,fwcfg=bogus', 'vm0'], 4, /invalid lpc.fwcfg 'bogus'/],
  ])('%j -> exit %i, one line on stderr', (args, status, re) => {
    const r = run('bhyve', args);
    expect(r.status).toBe(status);
    expect(r.stdout).toBe('');
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^bhyve: /);
    expect(lines[0]).toMatch(re);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('bhyveload and bhyvectl', () => {
  // Argument errors only: they never reach a VM object. Behaviour on VMs is in
  // test/unit/bhyvectl*.test.ts, bhyveload*.test.ts and test/integration/lifecycle.test.ts.
  it.each([
    ['bhyveload', [], 1, /missing vmname/],
    ['bhyveload', ['-m', '1Q', 'vm0'], 64, /invalid memsize/],
    ['bhyveload', ['-d', '/nonexistent.img', 'vm0'], 1, /disk \/nonexistent.img: No such file/],
    ['bhyveload', ['-z', 'vm0'], 1, /illegal option -- z/],
    ['bhyveload', ['-l', '/boot/userboot.so', 'vm0'], 1, /not supported yet: loader modules/],
    ['bhyvectl', ['--create'], 1, /missing --vm=NAME/],
    ['bhyvectl', ['--vm=vm0', '--bogus'], 1, /unrecognized option '--bogus'/],
    ['bhyvectl', ['--vm=vm0', '--set-rip=xyz'], 1, /invalid value 'xyz' for --set-rip/],
    ['bhyvectl', ['--vm=vm0', '--suspend=/tmp/x'], 1, /not supported yet: snapshots/],
  ])('%s %j -> exit %i', (tool, args, status, re) => {
    const r = run(tool, args);
    expect(r.status).toBe(status);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(re);
  });
});
