// examples/systemd/bhyve@.service and examples/rc.d/vm, without systemd as
// PID 1: systemd-analyze verify on the unit as installed (its commands
// pointing at examples/vm), then its ExecStartPre, ExecStart and ExecStop
// lines run by hand as systemd would run them (%i = the VM, the unit's
// Environment), the exit status checked against SuccessExitStatus; the
// loop restarting a guest that reboots; and the rc script's start, status
// and stop over a vm_list.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUESTS, ROOT } from '../support/bhyve.js';
import { Site, TEST_FLAGS, VM, conf, examplesUnavailable, until, vmLog } from '../support/vm-manager.js';

const UNIT = path.join(ROOT, 'examples/systemd/bhyve@.service');
const RC = path.join(ROOT, 'examples/rc.d/vm');
const skip = examplesUnavailable([['systemd-analyze', 'systemd']]);
if (skip) console.warn(`skipping examples service tests: ${skip}`);

/** The unit's [Service] settings (last one wins, as systemd reads them). */
function service(text: string): Record<string, string> {
  const o: Record<string, string> = {};
  let inService = false;
  for (const line of text.split('\n')) {
    if (/^\[/.test(line)) inService = line.trim() === '[Service]';
    const m = /^(\w+)=(.*)$/.exec(line);
    if (inService && m) o[m[1]] = m[2];
  }
  return o;
}

describe.skipIf(skip !== undefined)('examples: systemd unit and rc script', { timeout: 120_000 }, () => {
  let site: Site;
  let dir: string;
  let unit: Record<string, string>;
  let installed: string;

  beforeAll(async () => {
    execFileSync('sh', [path.join(ROOT, 'scripts/build-kernels.sh')], { stdio: 'ignore' });
    site = new Site();
    dir = site.vmDir;
    // Installed as its comment says, with vm where this tree has it.
    installed = path.join(site.tmp, 'bhyve@.service');
    fs.writeFileSync(installed, fs.readFileSync(UNIT, 'utf8').replaceAll('/usr/local/sbin/vm', VM));
    unit = service(fs.readFileSync(installed, 'utf8'));
    await site.ok(['init']);
    const tpl = (name: string, o: Record<string, string | number>) =>
      fs.writeFileSync(path.join(dir, '.templates', `${name}.conf`), conf({ memory: '64M', console: 'log', bhyve_options: TEST_FLAGS, ...o }));
    tpl('pwrbtn', { bootrom: path.join(GUESTS, 'powerbutton.rom') });
    const kdir = path.join(site.tmp, 'kernel');
    fs.mkdirSync(path.join(kdir, 'boot'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'build/kernels/mb-echo.bin'), path.join(kdir, 'boot/mb-echo'));
    tpl('mbcycle', { loader: 'bhyveload', kernel: '/boot/mb-echo', kernel_host: kdir, kernel_cmdline: 'cycle' });
  });
  afterAll(() => site?.cleanup());

  /** A unit command line for instance NAME, run as systemd runs it (in the test's namespace). */
  function unitCommand(key: string, name: string) {
    const argv = unit[key].replaceAll('%i', name).split(/\s+/);
    const env = Object.fromEntries(
      (unit.Environment ?? '').split(/\s+/).filter(Boolean).map((kv) => kv.split('=') as [string, string]));
    // /etc/default/vm (the EnvironmentFile) points VM_DIR at the test's datastore.
    return execa('nsenter', [`--net=/run/netns/${site.ns}`, ...argv], {
      reject: false, timeout: 120_000, stdin: 'ignore',
      env: { ...env, ...site.env() },
    });
  }

  it('systemd-analyze verify accepts the unit', () => {
    const inst = path.join(site.tmp, 'bhyve@vm1.service');
    fs.copyFileSync(installed, inst);
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', inst], { encoding: 'utf8' });
    expect(r.stderr.split('\n').filter((l) => l.includes('bhyve@'))).toEqual([]);
    expect(r.status).toBe(0);
    expect(unit.ExecStart).toBe(`${VM} start -f %i`);
    expect(unit.ExecStop).toBe(`${VM} stop %i`);
    expect(unit.SuccessExitStatus.split(' ')).toEqual(['1', '2']);
  });

  it('ExecStart runs the VM in the foreground; ExecStop powers it off through ACPI; the status counts as success', async () => {
    await site.ok(['create', '-t', 'pwrbtn', 'svc1']);
    const pre = await unitCommand('ExecStartPre', 'svc1');
    expect(pre.exitCode).toBe(0);
    const main = unitCommand('ExecStart', 'svc1');
    let out = '';
    main.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    await until('acpi on', () => out.includes('acpi on'));
    const stop = await unitCommand('ExecStop', 'svc1');
    expect(stop.exitCode, stop.stderr as string).toBe(0);
    const r = await main;
    expect(r.stdout).toMatch(/acpi on\r\npower button/);
    expect(unit.SuccessExitStatus.split(' ')).toContain(String(r.exitCode));
    expect(vmLog(dir, 'svc1')).toMatch(/powered off \(status 1\)\n.*stopped\n$/);
  });

  it('systemd\'s own SIGTERM to the loop (KillMode=mixed) also powers the guest off through ACPI', async () => {
    expect(unit.KillMode).toBe('mixed');
    const main = unitCommand('ExecStart', 'svc1');
    let out = '';
    main.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    await until('acpi on', () => out.includes('acpi on'));
    // nsenter execs vm: its pid is the loop's.
    main.kill('SIGTERM');
    const r = await main;
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/acpi on\r\npower button/);
  });

  it('a guest that reboots is started again by ExecStart\'s loop', async () => {
    await site.ok(['create', '-t', 'mbcycle', 'svc2']);
    const r = await unitCommand('ExecStart', 'svc2');
    expect(r.stdout).toMatch(/boot 1\n[^]*boot 2/);
    expect(r.exitCode).toBe(1);
    expect(vmLog(dir, 'svc2')).toMatch(/rebooted \(status 0\)\n.*powered off \(status 1\)\n/);
  });

  it('rc script: start the vm_list, status, stop in reverse order through ACPI', async () => {
    await site.ok(['create', '-t', 'pwrbtn', 'rc1']);
    await site.ok(['create', '-t', 'pwrbtn', 'rc2']);
    const defaults = path.join(site.tmp, 'default-vm');
    fs.writeFileSync(defaults, `VM_DIR=${dir}\nvm_list="rc1 rc2"\nvm_delay=0\n`);
    const rc = (arg: string) => execa('nsenter', [`--net=/run/netns/${site.ns}`, RC, arg], {
      reject: false, timeout: 120_000, stdin: 'ignore', env: { ...site.env(), VM: VM, VM_DEFAULTS: defaults },
    });
    expect((await rc('status')).exitCode).toBe(3);
    const start = await rc('start');
    expect(start.exitCode, start.stderr as string).toBe(0);
    expect(start.stdout).toBe('Starting rc1\nStarting rc2');
    await until('acpi on', () => vmLog(dir, 'rc1').includes('acpi on') && vmLog(dir, 'rc2').includes('acpi on'));
    const status = await rc('status');
    expect(status.exitCode).toBe(0);
    expect(status.stdout).toMatch(/^rc1 .* running \(\d+\)/m);
    const stop = await rc('stop');
    expect(stop.exitCode).toBe(0);
    expect(stop.stdout).toBe('Sending ACPI shutdown to rc2\nSending ACPI shutdown to rc1');
    for (const v of ['rc1', 'rc2']) expect(vmLog(dir, v)).toMatch(/power button\r\n.*powered off \(status 1\)\n.*stopped\n$/);
    expect((await rc('status')).exitCode).toBe(3);
  });
});
