// The launchers in bin/ when their command cannot be loaded (a checkout
// without `npm run build`, a damaged dist/): one line on stderr and the
// command's error status, not Node's stack trace, and no process left
// running.
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'launcher-'));
fs.mkdirSync(path.join(tmp, 'bin'));
fs.mkdirSync(path.join(tmp, 'dist/bundle'), { recursive: true });
for (const f of fs.readdirSync(path.join(root, 'bin'))) fs.copyFileSync(path.join(root, 'bin', f), path.join(tmp, 'bin', f));
// vCPU 0's thread file exists (so bin/bhyve starts it early) but the
// command's bundle does not: the early thread must not keep bhyve alive.
fs.copyFileSync(path.join(root, 'dist/bundle/vcpu-thread.js'), path.join(tmp, 'dist/bundle/vcpu-thread.js'));
if (fs.existsSync(path.join(root, 'dist/bundle/package.json'))) {
  fs.copyFileSync(path.join(root, 'dist/bundle/package.json'), path.join(tmp, 'dist/bundle/package.json'));
}
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('a launcher whose command cannot be loaded', () => {
  const cases: [string, string[], number][] = [
    ['bhyve', ['-c', '1', '-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc', 'vm1'], 4],
    ['bhyveload', ['-m', '64M', '-d', '/nonexistent.img', 'vm1'], 1],
    ['bhyvectl', ['--vm=vm1', '--get-stats'], 1],
    ['bhyve-xml', ['to-argv', '/nonexistent.xml'], 1],
    ['bhyve-vfio-user', ['-d', 'test-dma', '/nonexistent.sock'], 4],
  ];
  for (const [cmd, args, status] of cases) {
    it(`${cmd}: one line and status ${status}`, async () => {
      const r = await execa(path.join(tmp, 'bin', cmd), args, { reject: false, timeout: 20_000, env: { BHYVE_BUNDLE: '1' } });
      expect(r.timedOut).toBe(false);
      expect(r.exitCode).toBe(status);
      expect(r.stderr).toMatch(new RegExp(`^${cmd}: Cannot find module '\\.\\./dist/bundle/${cmd}-main\\.js'$`));
    }, 30_000);
  }
});
