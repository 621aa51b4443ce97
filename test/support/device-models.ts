// Every PCI device's model loaded, for tests that build a platform or a
// served model from a config (buildPlatform builds synchronously with the
// models loadPciModels loaded; bhyve's vCPU 0 thread loads only those of
// its configuration, src/vmm/device-host.ts). Import it for its effect:
//   import '../support/device-models.js';
import { loadAllPciModels } from '../../src/devices/registry.js';

await loadAllPciModels();
