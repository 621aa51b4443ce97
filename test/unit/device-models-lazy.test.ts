// Device models load on demand: each record names its model through an
// import() (devices/pci-device.ts), and nothing the VMM's two threads
// import at start reaches a model any other way, so a run loads the models
// of the devices its configuration names and no other (vCPU 0's thread,
// devices/registry.ts loadPciModels; the main thread none). Checked on the
// import graph esbuild bundles (scripts/bundle.mjs): a model reached by a
// static import from an entry would run in its thread's top level.
// test/integration/startup-modules.test.ts checks what a run loads.
import path from 'node:path';
import { build, type Metafile } from 'esbuild';
import { describe, expect, it } from 'vitest';
import { pciDevices } from '../../src/devices/registry.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const ENTRIES = ['src/cli/bhyve-main.ts', 'src/vmm/vcpu-thread.ts'];

async function importGraph(): Promise<Metafile> {
  const r = await build({
    absWorkingDir: ROOT, entryPoints: ENTRIES, bundle: true, write: false, format: 'cjs', platform: 'node',
    target: 'node20', packages: 'external', metafile: true, outdir: 'out', logLevel: 'silent',
    define: { 'import.meta.url': '__bundleUrl' },
  });
  return r.metafile;
}

/** The modules an entry imports without import(): they run when it starts. */
function staticClosure(meta: Metafile, entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (f: string): void => {
    if (seen.has(f) || !meta.inputs[f]) return;
    seen.add(f);
    for (const i of meta.inputs[f].imports) if (i.kind !== 'dynamic-import' && !i.external) visit(i.path);
  };
  visit(entry);
  return seen;
}

describe('device models load on demand', () => {
  it('every PCI record names a model loader and builds nothing itself', () => {
    for (const r of pciDevices()) {
      expect(r.alias !== undefined || typeof r.model === 'function', r.name).toBe(true);
      expect(Object.keys(r), r.name).not.toContain('create');
    }
  });

  it('each record file imports its model only through import(), and neither thread\'s entry reaches a model statically', async () => {
    const meta = await importGraph();
    const records = Object.keys(meta.inputs).filter((f) => /^src\/devices\/.*-record\.ts$/.test(f));
    expect(records.length).toBeGreaterThanOrEqual(18);
    const models = new Set<string>();
    for (const f of records) {
      for (const i of meta.inputs[f].imports) if (i.kind === 'dynamic-import') models.add(i.path);
    }
    // nvme, ahci, virtio-blk, ... one model module per record file.
    expect([...models]).toEqual(expect.arrayContaining([
      'src/devices/nvme/nvme.ts', 'src/devices/ahci/ahci.ts', 'src/devices/virtio/virtio-blk.ts',
      'src/devices/pci/hostbridge.ts', 'src/devices/pci/lpc-bridge.ts', 'src/devices/usb/xhci.ts',
    ]));
    expect(models.size).toBe(records.length);
    for (const entry of ENTRIES) {
      const start = staticClosure(meta, entry);
      const reached = [...models].filter((m) => start.has(m));
      expect(reached, `${entry} imports these models statically`).toEqual([]);
      // Nor the code only models use (the virtio transport, the block backend).
      for (const core of ['src/devices/virtio/virtio-pci.ts', 'src/devices/block/block-backend.ts']) {
        expect(start.has(core), `${entry} reaches ${core}`).toBe(false);
      }
    }
  });
});
