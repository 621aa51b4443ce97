// What a plain run (hostbridge, lpc, COM1, pc-testdev, a boot ROM) loads of
// Node's own modules on its two threads by the time the guest starts
// (BHYVE_TRACE_STARTUP=1 lists them): neither thread loads node:crypto (the
// SMBIOS UUID's MD5 is firmware/md5.ts, the runtime directory's temporary
// names need no random bytes), and vCPU 0's thread loads no sockets,
// processes, zlib or tty (scripts/bundle.mjs loads those on first use).
// And of our own device models, vCPU 0's thread loads those of the devices
// the command line names, no other (devices/registry.ts loadPciModels;
// test/unit/device-models-lazy.test.ts checks that nothing else reaches one).
import { describe, expect, it } from 'vitest';

import { bhyveArgs, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';

const skipWhy = kvmUnavailable();

describe.skipIf(skipWhy)(`Node modules at start-up${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 120_000 }, () => {
  it('a plain run loads no crypto, zlib or tty on the main thread (which runs vCPU 0)', async () => {
    const r = await runBhyve(bhyveArgs(rom('exit-testdev'), vmName('mods0')), { env: { BHYVE_TRACE_STARTUP: '1' }, timeout: 90_000 });
    expect(r.stdout).toContain('hello from testdev rom');
    const line = r.stderr.split('\n').find((l) => l.includes(' vcpu 0: go: Node modules '));
    expect(line, r.stderr).toBeDefined();
    const main = line!.split(': Node modules ')[1].trim().split(' ');
    for (const m of ['crypto', 'zlib', 'tty']) expect(main, `main thread loads ${m}`).not.toContain(m);
  });

  it('vcpu.bsp_model=thread: no crypto on either thread, and vCPU 0\'s thread no net, child_process, zlib or tty', async () => {
    const r = await runBhyve(bhyveArgs(rom('exit-testdev'), vmName('mods'), { extra: ['-o', 'vcpu.bsp_model=thread'] }),
      { env: { BHYVE_TRACE_STARTUP: '1' }, timeout: 90_000 });
    expect(r.stdout).toContain('hello from testdev rom');
    const modules = (who: string): string[] => {
      const line = r.stderr.split('\n').find((l) => l.includes(` ${who}: go: Node modules `));
      expect(line, `${who}: ${r.stderr}`).toBeDefined();
      return line!.split(': Node modules ')[1].trim().split(' ');
    };
    const main = modules('main');
    const vcpu = modules('vcpu 0');
    expect(main).toContain('worker_threads');
    expect(vcpu).toContain('worker_threads');
    for (const m of ['crypto', 'zlib', 'tty']) expect(main, `main thread loads ${m}`).not.toContain(m);
    for (const m of ['crypto', 'net', 'child_process', 'cluster', 'dgram', 'zlib', 'tty']) expect(vcpu, `vCPU 0's thread loads ${m}`).not.toContain(m);
  });

  it('vCPU 0\'s thread loads the device models the command line names, and no other', async () => {
    const models = async (extra: string[]): Promise<string[]> => {
      const r = await runBhyve(bhyveArgs(rom('exit-testdev'), vmName('models'), { extra }), { env: { BHYVE_TRACE_STARTUP: '1' }, timeout: 90_000 });
      expect(r.stdout).toContain('hello from testdev rom');
      const line = r.stderr.split('\n').find((l) => l.includes(' vcpu 0: device models loaded: '));
      expect(line, r.stderr).toBeDefined();
      return line!.split(': device models loaded: ')[1].trim().split(' ').sort();
    };
    expect(await models([])).toEqual(['hostbridge', 'lpc']);
    expect(await models(['-s', '3,virtio-rnd', '-s', '4,uart'])).toEqual(['hostbridge', 'lpc', 'uart', 'virtio-rnd']);
  });
});
