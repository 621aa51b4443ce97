// Host capability probe: what this host's KVM offers, and whether bhyve's
// hardware requirement (EPT on Intel, RVI/NPT on AMD) is met.

import { UserError } from '../user-error.js';
import fs from 'node:fs';
import { CAP } from '../sys/kvm-abi.js';
import type { Kvm } from '../sys/kvm.js';

export type PagingMode = 'ept' | 'rvi' | 'none';

export interface HostCapabilities {
  apiVersion: number;
  /** Loaded KVM vendor modules, e.g. ['kvm_intel'] or ['kvm_pvm']. */
  modules: string[];
  paging: PagingMode;
  irqchip: boolean;
  pit2: boolean;
  readonlyMemory: boolean;
  immediateExit: boolean;
  signalMsi: boolean;
  ioeventfd: boolean;
  irqfd: boolean;
  userSpaceMsr: boolean;
  binaryStats: boolean;
  maxVcpus: number;
  iommu: boolean;
  vfio: boolean;
}

const SYS_MODULE = '/sys/module';

function readParam(module: string, param: string): string | undefined {
  try {
    return fs.readFileSync(`${SYS_MODULE}/${module}/parameters/${param}`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

const enabled = (v: string | undefined): boolean => v === 'Y' || v === 'y' || v === '1';

/** Paging mode from kvm_intel's `ept` or kvm_amd's `npt` module parameter. */
export function detectPaging(read: (m: string, p: string) => string | undefined = readParam): PagingMode {
  if (enabled(read('kvm_intel', 'ept'))) return 'ept';
  if (enabled(read('kvm_amd', 'npt'))) return 'rvi';
  return 'none';
}

export function loadedKvmModules(): string[] {
  try {
    return fs.readdirSync(SYS_MODULE).filter((m) => m.startsWith('kvm_'));
  } catch {
    return [];
  }
}

export function probeHost(kvm: Kvm): HostCapabilities {
  let iommu = false;
  try { iommu = fs.readdirSync('/sys/class/iommu').length > 0; } catch { /* no IOMMU class */ }
  return {
    apiVersion: kvm.apiVersion(),
    modules: loadedKvmModules(),
    paging: detectPaging(),
    irqchip: kvm.checkExtension(CAP.IRQCHIP) > 0,
    pit2: kvm.checkExtension(CAP.PIT2) > 0,
    readonlyMemory: kvm.checkExtension(CAP.READONLY_MEM) > 0,
    immediateExit: kvm.checkExtension(CAP.IMMEDIATE_EXIT) > 0,
    signalMsi: kvm.checkExtension(CAP.SIGNAL_MSI) > 0,
    ioeventfd: kvm.checkExtension(CAP.IOEVENTFD) > 0,
    irqfd: kvm.checkExtension(CAP.IRQFD) > 0,
    userSpaceMsr: kvm.checkExtension(CAP.X86_USER_SPACE_MSR) > 0,
    binaryStats: kvm.checkExtension(CAP.BINARY_STATS_FD) > 0,
    maxVcpus: kvm.checkExtension(CAP.MAX_VCPUS) || kvm.checkExtension(CAP.NR_VCPUS) || 1,
    iommu,
    vfio: fs.existsSync('/dev/vfio/vfio'),
  };
}

export class HostRequirementError extends UserError { override readonly name: string = 'HostRequirementError'; }

/** Checks what bhyve needs; returns warnings to print, throws when unmet. */
export function checkRequirements(caps: HostCapabilities, requireEptRvi: boolean): string[] {
  if (caps.apiVersion !== 12) {
    throw new HostRequirementError(`unsupported KVM API version ${caps.apiVersion} (need 12)`);
  }
  const missing: string[] = [];
  if (!caps.irqchip) missing.push('in-kernel irqchip');
  if (!caps.immediateExit) missing.push('immediate exit');
  if (!caps.readonlyMemory) missing.push('read-only memory slots');
  if (!caps.pit2) missing.push('in-kernel PIT');
  if (missing.length) throw new HostRequirementError(`this host's KVM lacks ${missing.join(', ')}`);
  const where = caps.modules.length ? ` (KVM module ${caps.modules.join(', ')})` : '';
  if (caps.paging === 'none') {
    if (requireEptRvi) {
      throw new HostRequirementError(
        `this host has no EPT or RVI nested paging${where}; bhyve requires it. ` +
        `To run anyway on shadow paging, set -o x86.require_ept_rvi=false`,
      );
    }
    return [`warning: running without EPT/RVI nested paging${where} because x86.require_ept_rvi=false; guest kernel code may run slowly`];
  }
  return [];
}
