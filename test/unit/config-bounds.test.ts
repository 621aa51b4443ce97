// Issue 9 defect 6, host side: inputs read at start-up are bounded. A -k
// file of endless bytes (/dev/zero) and a huge -f fw_cfg file are refused
// after a bounded read; %(var) values that double at each level are
// refused quickly instead of growing to gigabytes.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { initConfig, parseConfigFile, parseFwCfgOption } from '../../src/config/bhyve-args.js';
import { ConfigTree } from '../../src/config/tree.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'config-bounds-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const message = (f: () => unknown): string => { try { f(); return 'accepted'; } catch (e) { return (e as Error).message; } };

describe('bounded start-up inputs', () => {
  it('-k /dev/zero is refused after reading at most 1 MiB', () => {
    const rss = process.memoryUsage().rss;
    expect(message(() => parseConfigFile(initConfig(), '/dev/zero')))
      .toBe('configuration file /dev/zero is larger than 1048576 bytes (a -k file is key=value lines)');
    expect(process.memoryUsage().rss - rss).toBeLessThan(64 * 1024 * 1024);
  });

  it('-k from a pipe still works (bhyve -k <(...))', () => {
    const fifo = path.join(tmp, 'k.fifo');
    execFileSync('mkfifo', [fifo]);
    // A writer that opens the FIFO after we do, as a shell's <(...) would.
    const writer = execFileSync('sh', ['-c', `(printf 'name=fromfifo\\n' > ${fifo}) >/dev/null 2>&1 & echo $!`], { encoding: 'utf8' });
    const config = initConfig();
    parseConfigFile(config, fifo);
    expect(config.get('name')).toBe('fromfifo');
    expect(Number(writer)).toBeGreaterThan(0);
  });

  it('a -f fw_cfg file larger than 64 MiB is refused', () => {
    const big = path.join(tmp, 'big');
    fs.writeFileSync(big, '');
    fs.truncateSync(big, 64 * 1024 * 1024 + 1);
    expect(message(() => parseFwCfgOption(`opt/big,file=${big}`))).toBe(`invalid fwcfg item 'opt/big,file=${big}': "${big}" is larger than 67108864 bytes`);
  });

  it('%(var) values doubling at each level are refused in well under a second', () => {
    const t = new ConfigTree();
    t.set('a0', 'x');
    for (let i = 1; i <= 30; i++) t.set(`a${i}`, `%(a${i - 1})%(a${i - 1})`);
    t.set('name', '%(a30)');
    const t0 = Date.now();
    expect(message(() => t.get('name'))).toMatch(/^config value of 'name' expands too much \(more than (4096 %\(var\) references|65536 characters)\)$/);
    expect(message(() => t.entries())).toMatch(/expands too much/);
    // Empty values: no output to bound, but the work is.
    const e = new ConfigTree();
    e.set('b0', '');
    for (let i = 1; i <= 30; i++) e.set(`b${i}`, `%(b${i - 1})%(b${i - 1})`);
    expect(message(() => e.get('b30'))).toBe("config value of 'b30' expands too much (more than 4096 %(var) references)");
    // Long chains are bounded in depth.
    const d = new ConfigTree();
    for (let i = 0; i < 40; i++) d.set(`c${i}`, `%(c${i + 1})`);
    expect(message(() => d.get('c0'))).toBe("config value of 'c0' expands too much (variables nested more than 32 deep)");
    expect(Date.now() - t0).toBeLessThan(1000);
    // Ordinary use is untouched.
    const ok = new ConfigTree();
    ok.set('dir', '/vm');
    ok.set('disk', '%(dir)/disk.img,%(dir)/%%(x)');
    expect(ok.get('disk')).toBe('/vm/disk.img,/vm/%(x)');
  });
});
