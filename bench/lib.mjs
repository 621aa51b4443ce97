// Shared helpers of the side-by-side benchmarks (bench/*.mjs):
// building and patching the test ROMs, the two VMM command lines, timed runs,
// and writing result sections into BENCHMARKS.md.
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const GUESTS = join(ROOT, 'build', 'guests');
export const BENCH_TMP = join(ROOT, 'build', 'bench');
export const PARAM_OFFSET = 0xffe0; // see test/guests/lib16.inc
export const TESTDEV_OK = 33; // (0x10 << 1) | 1
// BHYVE_BIN overrides the bhyve launcher (default: bin/bhyve, run as a
// program through its #! line, as a user's shell runs it; BENCH_BHYVE_BY_NODE=1
// runs `node bin/bhyve` instead).
const BHYVE_BIN = process.env.BHYVE_BIN ?? join(ROOT, 'bin', 'bhyve');
const RUN_TIMEOUT_MS = Number(process.env.BENCH_TIMEOUT_MS ?? 300_000);

/** Build the ROMs (idempotent) and return the path of one of them. */
export async function buildGuests() {
  try {
    await execa(join(ROOT, 'scripts', 'build-guests.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
  } catch (e) {
    console.error(`bench: scripts/build-guests.sh failed (${e.shortMessage ?? e.message})`);
    process.exit(4);
  }
  mkdirSync(BENCH_TMP, { recursive: true });
}

export function rom(name) {
  return join(GUESTS, `${name}.rom`);
}

/** Copy ROM `name` to build/bench/ with its 32-bit parameter set and, when
 * given, its interrupt mode word (PARAM_OFFSET + 4, test/guests/README.md). */
export function patchedRom(name, param, mode) {
  const out = join(BENCH_TMP, `${name}-${param}${mode === undefined ? '' : `-m${mode}`}.rom`);
  copyFileSync(rom(name), out);
  const buf = readFileSync(out);
  // in the last 64 KiB: a larger ROM (tcp.rom) ends with the usual one
  const tail = buf.length - 0x10000;
  buf.writeUInt32LE(param >>> 0, tail + PARAM_OFFSET);
  if (mode !== undefined) buf.writeUInt32LE(mode >>> 0, tail + PARAM_OFFSET + 4);
  writeFileSync(out, buf);
  return out;
}

let vmSeq = 0;

/** A bhyve VMM run from launcher `bin` (BHYVE_BIN by default; another
 * build's bin/bhyve for A/B runs, e.g. BENCH_BHYVE_B in the net benches). */
export function bhyveVmm(bin = BHYVE_BIN, label = 'bhyve-kvm (bin/bhyve)', extraArgs = []) {
  return {
    label,
    argv(romPath) {
      const vm = `bench-${process.pid}-${++vmSeq}`;
      this.lastVm = vm;
      const prof = process.env.BHYVE_PROF;
      const args = [
        ...(prof ? ['-o', 'security.sandbox=false'] : []),
        ...extraArgs,
        '-c', '1', '-m', '256M',
        '-s', '0,hostbridge', '-s', '31,lpc',
        '-l', 'com1,stdio', '-l', 'pc-testdev', '-l', `bootrom,${romPath}`,
        '-o', 'x86.require_ept_rvi=false',
        vm,
      ];
      // BHYVE_PROF=DIR: node --cpu-prof of the VMM's threads (needs node on the command line).
      if (prof) return [process.execPath, ['--cpu-prof', `--cpu-prof-dir=${prof}`, bin, ...args]];
      return this.byNode || process.env.BENCH_BHYVE_BY_NODE === '1' ? [process.execPath, [bin, ...args]] : [bin, args];
    },
    async cleanup() {
      // bhyve keeps the VM object after the process exits (like /dev/vmm/NAME).
      const ctl = join(ROOT, 'bin', 'bhyvectl');
      if (this.lastVm && existsSync(ctl)) {
        await execa(process.execPath, [ctl, '--destroy', `--vm=${this.lastVm}`], { reject: false, stdio: 'ignore' });
      }
    },
    available() {
      return existsSync(bin) ? null : `${bin} does not exist yet`;
    },
  };
}

/** QEMU on a ROM, with `extraArgs` first (e.g. `-sandbox on`). */
export function qemuVmm(label = 'QEMU (qemu-system-x86_64 -accel kvm)', extraArgs = []) {
  return {
    label,
    argv(romPath) {
      return [
        'qemu-system-x86_64',
        [
          ...extraArgs,
          '-accel', 'kvm', '-machine', 'pc', '-smp', '1', '-m', '256M',
          '-nodefaults', '-display', 'none', '-monitor', 'none',
          '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
          '-no-reboot', '-bios', romPath,
        ],
      ];
    },
    async cleanup() {},
    available() {
      return null;
    },
  };
}

/** The VMMs under comparison: name, argv for a ROM, optional cleanup. */
export const VMMS = {
  bhyve: bhyveVmm(),
  qemu: qemuVmm(),
};

/**
 * Run one VMM on one ROM. Resolves with { code, wallMs, firstMs, stdout,
 * stderr, maxRssKb, cpuMs }: firstMs is the time from spawn until `marker`
 * first appears on stdout (null if it never does); maxRssKb is the peak RSS
 * from GNU time (largest of the process and its waited-for children), cpuMs
 * its user + system CPU time.
 */
export function runVmm(vmm, romPath, { marker = null, input = null, timeoutMs = RUN_TIMEOUT_MS } = {}) {
  const [cmd, args] = vmm.argv(romPath);
  const useTime = existsSync('/usr/bin/time');
  const rssFile = join(BENCH_TMP, `rss-${process.pid}.txt`);
  const file = useTime ? '/usr/bin/time' : cmd;
  const argv = useTime ? ['-q', '-f', '%U %S %M', '-o', rssFile, cmd, ...args] : args;
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    // own process group, so a timeout kills the VMM and not only GNU time
    const child = spawn(file, argv, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    let firstMs = null;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.stdout.on('data', (d) => {
      const now = process.hrtime.bigint();
      stdout += d.toString('latin1');
      if (marker !== null && firstMs === null && stdout.includes(marker)) {
        firstMs = Number(now - t0) / 1e6;
      }
    });
    child.stderr.on('data', (d) => {
      stderr += d.toString();
    });
    if (input !== null) child.stdin.end(input);
    child.on('error', (e) => {
      stderr += String(e);
    });
    child.on('close', async (code, signal) => {
      clearTimeout(timer);
      const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      let maxRssKb = null;
      let cpuMs = null;
      if (useTime && existsSync(rssFile)) {
        const m = readFileSync(rssFile, 'utf8').match(/([\d.]+) ([\d.]+) (\d+)\s*$/);
        if (m) {
          maxRssKb = Number(m[3]);
          cpuMs = (Number(m[1]) + Number(m[2])) * 1000;
        }
        rmSync(rssFile, { force: true });
      }
      await vmm.cleanup();
      if (timedOut) stderr += `\ntimed out after ${timeoutMs / 1000} s`;
      resolve({ code: signal || timedOut ? null : code, signal: timedOut ? 'SIGKILL (timeout)' : signal, wallMs, firstMs, stdout, stderr, maxRssKb, cpuMs });
    });
  });
}

/** One line explaining a failed run: exit code and the first stderr line. */
export function describeFailure(r, expect) {
  // the last stderr line that is not a warning usually names the problem
  const lines = r.stderr.split('\n').map((s) => s.trim()).filter((s) => s);
  const why = lines.filter((s) => !/warning/i.test(s)).pop() ?? lines.pop();
  const how = r.signal ? `killed by ${r.signal}` : `exit status ${r.code}`;
  return `${how}, expected ${expect}${why ? `: ${why}` : ''}`;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

export function mdTable(header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export async function hostInfo() {
  const q = await execa('qemu-system-x86_64', ['--version'], { reject: false });
  const qemu = (q.stdout ?? '').split('\n')[0].replace(/^QEMU emulator version\s*/, '') || 'unknown';
  const mods = ['kvm_intel', 'kvm_amd', 'kvm_pvm'].filter((m) => existsSync(`/sys/module/${m}`));
  const cpu = (os.cpus()[0]?.model ?? 'unknown').trim();
  return `${new Date().toISOString().slice(0, 10)}, Linux ${os.release()}, ${cpu} x${os.cpus().length}, ` +
    `KVM module ${mods.join('+') || 'none'}, Node ${process.version}, QEMU ${qemu}`;
}

const HEADER = `# Benchmarks

Side-by-side measurements of bhyve-kvm (\`bin/bhyve\`, run as a program) against QEMU
(\`qemu-system-x86_64 -accel kvm\`) on the same host, booting the same test
boot ROMs (built from test/guests/ by scripts/build-guests.sh). Each section
below is written by the script named in it; rerun the script to refresh it.
Wall times are measured from spawning the VMM process to its exit.
`;

/** Replace (or append) the section `id` of BENCHMARKS.md with `body`. */
export function writeSection(id, body) {
  const file = join(ROOT, 'BENCHMARKS.md');
  let text = existsSync(file) ? readFileSync(file, 'utf8') : HEADER;
  const start = `<!-- bench:${id}:start -->`;
  const end = `<!-- bench:${id}:end -->`;
  const block = `${start}\n${body.trim()}\n${end}`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i >= 0 && j > i) {
    text = text.slice(0, i) + block + text.slice(j + end.length);
  } else {
    text = `${text.trimEnd()}\n\n${block}\n`;
  }
  writeFileSync(file, text);
  return file;
}
