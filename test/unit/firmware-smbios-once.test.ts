// The SMBIOS image is built once per run: createMachine's fit check
// (smbiosImage) builds it on the main thread, and vCPU 0's thread writes
// that image (FirmwareOptions.smbiosImage) instead of building it again.
// What it writes must be what it would have built.
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { buildFirmwareInMemory, smbiosImage } from '../../src/firmware/index.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { builtMachine } from '../support/built-machine.js';

describe('SMBIOS built once', () => {
  const layout = computeLayout(256 << 20);
  const config = (): ConfigTree => {
    const c = new ConfigTree();
    c.set('cpus', '2');
    c.set('name', 'vm1');
    c.set('system.serial_number', 'S123');
    return c;
  };
  const smbiosOf = (opts: Parameters<typeof buildFirmwareInMemory>[3]): Uint8Array =>
    buildFirmwareInMemory(config(), layout, builtMachine({}, { ncpu: 2 }), opts).find((r) => r.name === 'smbios')!.bytes;

  it('the fit check\'s image is what the firmware would build from the same config, layout and host name', () => {
    expect(Array.from(smbiosImage(config(), layout, 'host1'))).toEqual(Array.from(smbiosOf({ hostname: 'host1' })));
    // The host name is part of it (the default UUID): a different one differs.
    expect(Array.from(smbiosImage(config(), layout, 'host2'))).not.toEqual(Array.from(smbiosOf({ hostname: 'host1' })));
  });

  it('a given image is written as is', () => {
    const image = Uint8Array.of(0x5f, 0x53, 0x4d, 0x5f);
    expect(smbiosOf({ hostname: 'host1', smbiosImage: image })).toBe(image);
  });
});
