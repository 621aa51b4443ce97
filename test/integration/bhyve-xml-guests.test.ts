// Every command line bhyve-xml makes from the domain XML fixtures
// (test/fixtures/libvirt) starts on our bhyve and runs a guest to its exit
// status. Only what names host resources is swapped: the boot ROM for
// build/guests/exit-poweroff.rom (prints "powering off" on COM1, then
// powers off through ACPI: exit status 1), the NVRAM, disk, CD and 9p paths
// and hda's /dev/dsp devices for files the test makes, nmdm devices for stdio (COM1) or a TCP port,
// TCP ports for free ones, host CPUs of -p for ones this host has, and the
// VM name for a unique one; `-o x86.require_ept_rvi=false` is added as in
// every KVM test here. Domains booted by bhyveload get the ROM as
// `-l bootrom` too: our bhyveload loads Linux kernels (-e kernel=), not
// FreeBSD's loader from a disk image. Taps live in a network namespace the
// test makes. A VNC `wait` is released by logging in with the domain's
// password.
import { execa } from 'execa';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { toArgv } from '../../src/cli/bhyve-xml-main.js';
import { vncAuthResponse } from '../../src/devices/display/rfb-auth.js';
import { BHYVE, kvmUnavailable, ROOT, rom, vmName } from '../support/bhyve.js';
import { NO_TAP_NETNS } from '../support/probes.js';
import { freePort } from '../support/rfb-client.js';

const skip = kvmUnavailable();
if (skip) console.warn(`skipping bhyve-xml guest tests: ${skip}`);

const FIXTURES = path.join(ROOT, 'test/fixtures/libvirt');
const names = fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.xml')).map((f) => f.slice(0, -4)).sort();

/** PCI emulations this bhyve lists as not built yet (bhyve -s help). */
function unbuilt(): Set<string> {
  if (skip) return new Set();
  const r = spawnSync(BHYVE, ['-s', 'help'], { encoding: 'utf8' });
  return new Set([...`${r.stdout}${r.stderr}`.matchAll(/^(\S+) \(not supported yet\)$/gm)].map((m) => m[1]));
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-xml-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface HostRun { args: string[]; taps: string[]; com1: boolean; vnc?: { port: number; password?: string } }

/** The converted bhyve argv with host resources swapped (see the header). */
async function forThisHost(name: string, argv: string[]): Promise<HostRun> {
  const files = new Map<string, string>();
  const file = (orig: string, dir = false): string => {
    let p = files.get(orig);
    if (p === undefined) {
      p = path.join(tmp, `${name}-${files.size}${dir ? '' : '.img'}`);
      if (dir) fs.mkdirSync(p); else fs.writeFileSync(p, Buffer.alloc(1 << 20));
      files.set(orig, p);
    }
    return p;
  };
  const ncpu = os.cpus().length;
  const out: string[] = [];
  const taps: string[] = [];
  let com1 = false, hasRom = false;
  let vnc: HostRun['vnc'];
  const words = argv.slice(1, -1);
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    const arg = words[i + 1];
    if (w === '-l' && arg.startsWith('bootrom,')) {
      const vars = arg.split(',')[2];
      let spec = `bootrom,${rom('exit-poweroff')}`;
      if (vars !== undefined && !vars.includes('=')) {
        const v = path.join(tmp, `${name}-vars.fd`);
        fs.writeFileSync(v, Buffer.alloc(128 * 1024));
        spec += `,${v}`;
      }
      out.push(w, `${spec},fwcfg=qemu`);
      hasRom = true;
      i++;
    } else if (w === '-l' && /^com\d,/.test(arg)) {
      const [com] = arg.split(',');
      if (com === 'com1') { out.push(w, 'com1,stdio'); com1 = true; } else out.push(w, `${com},tcp=127.0.0.1:${await freePort()}`);
      i++;
    } else if (w === '-p') {
      const [v, c] = arg.split(':');
      out.push(w, `${v}:${Number(c) % ncpu}`);
      i++;
    } else if (w === '-s') {
      let spec = arg
        .replace(/(?<=[,:])\/(vm|iso)\/[^,]+/g, (p) => file(p))
        .replace(/(?<==)\/srv\/[^,]+/g, (p) => file(p, true))
        // hda's OSS devices: plain PCM files here (bhyve(8), hda)
        .replace(/(?<=,(?:play|rec)=)\/dev\/dsp[^,]*/g, (p) => file(p));
      const net = /^\d+:\d+,(?:virtio-net|e1000),([^,]+),/.exec(spec);
      if (net) taps.push(net[1]);
      const fb = /,fbuf,tcp=[^,]+/.exec(spec);
      if (fb) {
        const port = await freePort();
        spec = spec.replace(/tcp=[^,]+/, `tcp=127.0.0.1:${port}`);
        vnc = { port, ...(/,password=([^,]+)/.exec(spec) ? { password: /,password=([^,]+)/.exec(spec)![1] } : {}) };
        if (!/,wait(,|$)/.test(spec)) vnc = undefined;
      }
      out.push(w, spec);
      if (spec === '0:0,hostbridge' && !argv.some((a) => a.startsWith('bootrom,'))) {
        out.push('-l', `bootrom,${rom('exit-poweroff')}`);
        hasRom = true;
      }
      i++;
    } else {
      out.push(w);
    }
  }
  expect(hasRom).toBe(true);
  out.push('-o', 'x86.require_ept_rvi=false', vmName(name.slice(0, 12)));
  return { args: out, taps, com1, ...(vnc ? { vnc } : {}) };
}

/** Logs in to the VNC server (RFB 3.8, VNC authentication) and stays connected. */
async function vncLogin(port: number, password: string | undefined): Promise<net.Socket> {
  for (let tries = 0; ; tries++) {
    try {
      const sock = net.connect(port, '127.0.0.1');
      let got = Buffer.alloc(0);
      sock.on('data', (d) => { got = Buffer.concat([got, d]); });
      await new Promise<void>((res, rej) => { sock.once('connect', () => res()); sock.once('error', rej); });
      sock.on('error', () => undefined);
      const until = async (n: number): Promise<void> => {
        const t0 = Date.now();
        while (got.length < n) {
          if (Date.now() - t0 > 20_000) throw new Error(`RFB: ${got.length} of ${n} bytes`);
          await new Promise((r) => setTimeout(r, 10));
        }
      };
      await until(12);
      sock.write('RFB 003.008\n');
      await until(13);
      const types = [...got.subarray(13, 13 + got[12])];
      await until(13 + got[12]);
      const at = 13 + got[12];
      if (password !== undefined) {
        expect(types).toContain(2);
        sock.write(Buffer.from([2]));
        await until(at + 16);
        sock.write(vncAuthResponse(password, got.subarray(at, at + 16)));
        await until(at + 20);
        expect(got.readUInt32BE(at + 16)).toBe(0); // SecurityResult: OK
      } else {
        sock.write(Buffer.from([1]));
        await until(at + 4);
      }
      sock.write(Buffer.from([1])); // ClientInit, shared
      return sock;
    } catch (e) {
      if (tries > 200) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe.skipIf(skip !== undefined)('bhyve-xml command lines on our bhyve', () => {
  const notBuilt = unbuilt();
  for (const name of names) {
    const xml = fs.readFileSync(path.join(FIXTURES, `${name}.xml`), 'utf8');
    const conv = toArgv(xml, name);
    const bhyveArgv = conv.lines.at(-1)!.split(' ');
    const missing = bhyveArgv.map((a) => /^\d+(?::\d+)?,([a-z0-9-]+)/.exec(a)?.[1]).filter((e) => e !== undefined && notBuilt.has(e));
    const hasTap = /,(virtio-net|e1000),/.test(conv.lines.at(-1)!);
    if (missing.length > 0) {
      // Until this bhyve builds every device of the line, it must refuse
      // it as bhyve refuses a feature it lacks: one line, status 4.
      it(`${name}.xml: refused with "not supported yet: ... ${missing.join(', ')}" and status 4 while not built`, async () => {
        const run = await forThisHost(name, bhyveArgv);
        const r = await execa(BHYVE, run.args, { reject: false, timeout: 90_000, stdin: 'ignore' });
        expect(r.exitCode, r.stderr).toBe(4);
        const lines = r.stderr.split('\n').filter((l) => l.startsWith('bhyve:') && !l.includes('warning'));
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(/not supported yet/);
        for (const m of missing) expect(lines[0]).toContain(m);
      }, 120_000);
      continue;
    }
    const why = hasTap ? NO_TAP_NETNS : undefined;
    if (why) console.warn(`skipping bhyve-xml guest ${name}: ${why}`);
    it.skipIf(why !== undefined)(`${name}.xml: the bhyve command line boots exit-poweroff.rom to power-off (status 1)`, async () => {
      expect(conv.errors).toEqual([]);
      const run = await forThisHost(name, bhyveArgv);
      const rundir = path.join(ROOT, 'build', 'run');
      fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
      fs.chmodSync(rundir, 0o700);
      const ns = `bx${process.pid}${name.length}${name.charCodeAt(0)}`;
      let cmd = BHYVE, args = run.args;
      if (run.taps.length > 0) {
        await execa('ip', ['netns', 'add', ns]);
        for (const t of run.taps) await execa('ip', ['netns', 'exec', ns, 'ip', 'tuntap', 'add', 'dev', t, 'mode', 'tap']);
        cmd = 'ip';
        args = ['netns', 'exec', ns, BHYVE, ...run.args];
      }
      try {
        const p = execa(cmd, args, { reject: false, timeout: 90_000, stdin: 'ignore', env: { BHYVE_RUNDIR: rundir }, stripFinalNewline: false });
        let sock: net.Socket | undefined;
        if (run.vnc) sock = await vncLogin(run.vnc.port, run.vnc.password);
        const r = await p;
        sock?.destroy();
        expect(r.stderr).not.toMatch(/Error|at .*\.js/);
        expect(r.exitCode, r.stderr).toBe(1);
        if (run.com1) expect(r.stdout).toBe('powering off\r\n');
      } finally {
        if (run.taps.length > 0) await execa('ip', ['netns', 'delete', ns], { reject: false });
      }
    }, 120_000);
  }
});
