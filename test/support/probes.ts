// What the host offers the tests, probed once: each probe is undefined
// when the thing is there, else the reason a test skips (printed, and a
// failure under BHYVE_TEST_NO_SKIP=1: no-skip-reporter.ts).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

/** /dev/kvm readable and writable by this user. */
export const KVM_UNUSABLE: string | undefined = (() => {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return undefined;
  } catch {
    return '/dev/kvm is missing or not read/writable by this user';
  }
})();

/** qemu-system-x86_64 on PATH. */
export const QEMU_MISSING: string | undefined = onPath('qemu-system-x86_64') ? undefined : 'qemu-system-x86_64 is not installed';
export const HAVE_QEMU = QEMU_MISSING === undefined;

/** iasl (acpica-tools) on PATH. */
export const IASL_MISSING: string | undefined = onPath('iasl') ? undefined : 'iasl is not installed (apt-get install acpica-tools)';

/** Running as root. */
export const NOT_ROOT: string | undefined = process.getuid?.() === 0 ? undefined : 'needs root';

/** A tap device in a network namespace: root, iproute2, /dev/net/tun. */
export const NO_TAP_NETNS: string | undefined = process.getuid?.() !== 0 ? 'needs root for ip netns and a tap device'
  : !onPath('ip') ? 'iproute2 (ip) missing'
    : !fs.existsSync('/dev/net/tun') ? '/dev/net/tun missing' : undefined;
