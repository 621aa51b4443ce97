// Issue 9 defect 8: file names that are not UTF-8 work. Node replaces
// invalid bytes in argv with U+FFFD, so bhyve reads its words from
// /proc/self/cmdline and opens such files by their bytes
// (src/config/raw-argv.ts): a boot ROM, a -k config file and a virtio-blk
// image, all in a directory whose name is not UTF-8 either; bhyveload's -d
// disk, and its -h host directory and -e kernel= file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

import { BHYVE, ROOT, kvmUnavailable, rom } from '../support/bhyve.js';
import { decodeBytes, fsPath, rawArgv } from '../../src/config/raw-argv.js';

const skipWhy = kvmUnavailable();
const KERNEL = path.join(ROOT, 'build/kernels/mb-echo.bin');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'non-utf8-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const bytes = (...parts: Array<string | number[]>): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
/** A printf(1) format that prints `b` exactly. */
const printfFormat = (b: Buffer): string => [...b].map((c) => (c >= 0x80 || c === 0x25 || c === 0x5c ? `\\${c.toString(8).padStart(3, '0')}` : String.fromCharCode(c))).join('');

describe('raw argv', () => {
  it('escapes bytes that are not UTF-8 and gives them back to fs', () => {
    const b = bytes('/x/caf', [0xe9], '/\u00e9t\u00e9-', [0xff, 0xfe, 0xc3], '.rom'); // latin-1 é, real UTF-8 é, junk
    const s = decodeBytes(b);
    expect(s).toBe('/x/caf\udce9/\u00e9t\u00e9-\udcff\udcfe\udcc3.rom');
    expect(Buffer.isBuffer(fsPath(s)) && (fsPath(s) as Buffer).equals(b)).toBe(true);
    expect(fsPath('/plain/\u00e9.rom')).toBe('/plain/\u00e9.rom');
    const cmdline = Buffer.concat([Buffer.from('node\0/bin/bhyve\0-l\0'), Buffer.from('bootrom,'), b, Buffer.from('\0vm\0')]);
    expect(rawArgv(['-l', `bootrom,${b.toString('utf8')}`, 'vm'], cmdline)).toEqual(['-l', `bootrom,${s}`, 'vm']);
  });
});

describe.skipIf(skipWhy)(`non-UTF-8 file names${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 60_000 }, () => {
  it('bhyve boots a ROM, reads a -k file and opens a disk image named in bytes', async () => {
    const dir = Buffer.concat([Buffer.from(`${tmp}/d`), Buffer.from([0xff, 0xfe])]);
    fs.mkdirSync(dir);
    const romPath = Buffer.concat([dir, bytes('/echo', [0xe9], '.rom')]);
    const cfgPath = Buffer.concat([dir, bytes('/vm', [0xa0], '.conf')]);
    const diskPath = Buffer.concat([dir, bytes('/disk', [0x80], '.img')]);
    fs.copyFileSync(rom('echo'), romPath);
    fs.writeFileSync(cfgPath, 'lpc.com1.path=stdio\nx86.require_ept_rvi=false\n');
    fs.writeFileSync(diskPath, Buffer.alloc(1024 * 1024));
    const script = 'exec "$0" -c 1 -m 64M -s 0,hostbridge -s 31,lpc -k "$(printf "$1")" -l pc-testdev -l "bootrom,$(printf "$2")" -s "4,virtio-blk,$(printf "$3")" nonutf8';
    const p = execa('sh', ['-c', script, BHYVE, printfFormat(cfgPath), printfFormat(romPath), printfFormat(diskPath)], {
      reject: false, env: { BHYVE_RUNDIR: path.join(tmp, 'run') }, timeout: 30_000, stripFinalNewline: false,
    });
    let out = '';
    p.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    const end = Date.now() + 25_000;
    while (!out.includes('echo ready') && p.exitCode === undefined && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    p.stdin!.write('xq');
    const r = await p;
    expect(r.stderr.split('\n').filter((l) => l !== '' && !/warning/.test(l))).toEqual([]);
    expect(r.exitCode).toBe(33);
    expect(out).toContain('echo ready');

    // bhyveload -d opens its disk by its bytes too (a FIFO: refused as one,
    // not "No such file or directory").
    const fifo = Buffer.concat([dir, bytes('/f', [0xff])]);
    await execa('sh', ['-c', 'mkfifo "$(printf "$0")"', printfFormat(fifo)]);
    const l = await execa('sh', ['-c', 'exec "$0" -m 64M -d "$(printf "$1")" -e kernel=/k nonutf8', path.join(path.dirname(BHYVE), 'bhyveload'), printfFormat(fifo)], {
      reject: false, env: { BHYVE_RUNDIR: path.join(tmp, 'run') }, timeout: 30_000,
    });
    expect(l.stderr).toMatch(/^bhyveload: disk image .*\/f\ufffd is neither a file nor a block device$/);
    expect(l.exitCode).toBe(1);
  });

  it.skipIf(!fs.existsSync(KERNEL))('bhyveload loads a kernel from a host directory and a kernel file named in bytes', async () => {
    const host = Buffer.concat([Buffer.from(`${tmp}/h`), Buffer.from([0xe9])]);
    fs.mkdirSync(Buffer.concat([host, Buffer.from('/boot')]), { recursive: true });
    const kernelName = bytes('/boot/k', [0xff]);
    fs.copyFileSync(KERNEL, Buffer.concat([host, kernelName]));
    const l = await execa('sh', ['-c', 'exec "$0" -m 64M -h "$(printf "$1")" -e "kernel=$(printf "$2")" loaded', path.join(path.dirname(BHYVE), 'bhyveload'),
      printfFormat(host), printfFormat(kernelName)], { reject: false, env: { BHYVE_RUNDIR: path.join(tmp, 'run') }, timeout: 30_000 });
    expect(l.stderr).toBe('');
    expect(l.exitCode).toBe(0);
    expect(fs.existsSync(path.join(tmp, 'run', 'loaded', 'boot-state.json'))).toBe(true);
  });
});
