// Every fuzz target, by name.
import type { FuzzTarget } from '../harness.js';
import { virtioTarget } from './virtio.js';
import { PLATFORM_SPECS, platformTarget } from './platform.js';
import { HOST_CONFIG_TARGETS } from './host-config.js';
import { CONTROL_SOCKET_TARGET } from './control-socket.js';
import { GDB_STUB_TARGET } from './gdb-stub.js';
import { AHCI_TARGET } from './ahci.js';
import { NVME_TARGET } from './nvme.js';
import { E1000_TARGET } from './e1000.js';
import { RFB_TARGET } from './rfb.js';
import { XHCI_TARGET } from './xhci.js';
import { HDA_TARGET } from './hda.js';
import { VIRTIO_9P_TARGET } from './virtio-9p.js';
import { VIRTIO_SCSI_TARGET } from './virtio-scsi.js';
import { DOMAIN_XML_TARGET } from './domain-xml.js';
import { VFIO_USER_TARGET } from './vfio-user.js';
import { VIRTIO_IOMMU_TARGET } from './virtio-iommu.js';
import { VIRTQUEUE_SCATTERED_TARGET } from './virtqueue-scattered.js';
import { PASSTHRU_VFIO_TARGET } from './passthru-vfio.js';

export const TARGETS: readonly FuzzTarget[] = [
  virtioTarget('blk'),
  virtioTarget('net'),
  virtioTarget('rnd'),
  virtioTarget('console'),
  virtioTarget('input'),
  ...PLATFORM_SPECS.map(platformTarget),
  AHCI_TARGET,
  NVME_TARGET,
  E1000_TARGET,
  RFB_TARGET,
  XHCI_TARGET,
  HDA_TARGET,
  VIRTIO_9P_TARGET,
  VIRTIO_SCSI_TARGET,
  VIRTIO_IOMMU_TARGET,
  VIRTQUEUE_SCATTERED_TARGET,
  ...HOST_CONFIG_TARGETS,
  DOMAIN_XML_TARGET,
  CONTROL_SOCKET_TARGET,
  GDB_STUB_TARGET,
  VFIO_USER_TARGET,
  PASSTHRU_VFIO_TARGET,
];

export function targetByName(name: string): FuzzTarget | undefined {
  return TARGETS.find((t) => t.name === name);
}
