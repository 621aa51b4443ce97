// Issue 9 defect 7: what a VM may ask of the host (src/vmm/guest-limits.ts):
// guest memory a multiple of 4K, at least 1M, at most RAM + swap, and a new
// memory file that fits its file system (no EFBIG, nothing left behind);
// vCPUs at most min(KVM's limit, 255).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { checkGuestMemorySize, checkVcpuCount, formatSize, GuestLimitError, hostMemory, maxVcpus } from '../../src/vmm/guest-limits.js';
import { VmObject } from '../../src/vmm/vm-object.js';

const G = 1024 ** 3;
const host = { ram: 24 * G, swap: 2 * G };
const why = (f: () => void): string => {
  try { f(); return 'accepted'; } catch (e) { expect(e).toBeInstanceOf(GuestLimitError); return (e as Error).message; }
};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'guest-limits-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('guest memory size', () => {
  it.each([
    ['1K', 1024, 'guest memory size 1K: must be a multiple of 4K and at least 1M'],
    ['5000', 5000, 'guest memory size 5000: must be a multiple of 4K and at least 1M'],
    ['512K', 512 * 1024, 'guest memory size 512K: must be a multiple of 4K and at least 1M'],
    ['1M', 1024 * 1024, 'accepted'],
    ['26G', 26 * G, 'accepted'],
    ['26G+4K', 26 * G + 4096, 'guest memory size 26G+4K: more than this host has (24G of RAM and 2G of swap)'],
    ['1T', 1024 * G, 'guest memory size 1T: more than this host has (24G of RAM and 2G of swap)'],
    ['17T', 17 * 1024 * G, 'guest memory size 17T: more than this host has (24G of RAM and 2G of swap)'],
  ])('%s', (spec, bytes, expected) => {
    expect(why(() => checkGuestMemorySize(bytes, spec, host))).toBe(expected);
  });

  it('reads RAM and swap from /proc/meminfo', () => {
    expect(hostMemory('MemTotal:       24576000 kB\nMemFree: 1 kB\nSwapTotal:       1024 kB\n')).toEqual({ ram: 24576000 * 1024, swap: 1024 * 1024 });
    expect(hostMemory().ram).toBeGreaterThan(0);
  });

  it('a memory file larger than its file system can hold: one line, no EFBIG, nothing left behind', () => {
    const root = path.join(tmp, 'run');
    let msg = '';
    try {
      VmObject.acquire('big', 17 * 1024 * G, root);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(new RegExp(`^guest memory size 17T: the file system of ${root}/big has only \\d+(\\.\\d)?[KMGT]? free for the memory file$`));
    expect(fs.readdirSync(root)).toEqual([]);
  });

  it('formats sizes', () => {
    expect([512 * 1024 * 1024, 1.5 * G, 17 * 1024 * G, 1000].map(formatSize)).toEqual(['512M', '1.5G', '17T', '1000']);
  });
});

describe('vCPU count', () => {
  it('is limited by KVM and by the 255 xAPIC IDs, in one consistent line', () => {
    expect(maxVcpus(1024)).toBe(255);
    expect(maxVcpus(64)).toBe(64);
    expect(why(() => checkVcpuCount(255, 1024))).toBe('accepted');
    expect(why(() => checkVcpuCount(256, 1024))).toBe('256 vCPUs requested, but a VM can have at most 255 (vCPUs get the xAPIC IDs 0-254)');
    expect(why(() => checkVcpuCount(65, 64))).toBe("65 vCPUs requested, but a VM can have at most 64 (this host's KVM limit)");
  });
});
