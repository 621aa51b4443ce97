// Virtio 1.x constants (OASIS virtio spec v1.2): device status bits, feature
// bits, device ids, split-virtqueue flags and the virtio-blk / virtio-rng
// device-specific values. Feature bits are bigints because the feature space
// is 64 bits wide (VIRTIO_F_VERSION_1 is bit 32).

/** 1n << bit, as a feature mask. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

/** True when `bit` is set in the feature mask. */
export function hasFeature(features: bigint, bit: number): boolean {
  return (features & featureBit(bit)) !== 0n;
}

// --- Device status field (spec 2.1) -------------------------------------
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 0x01;
export const VIRTIO_CONFIG_S_DRIVER = 0x02;
export const VIRTIO_CONFIG_S_DRIVER_OK = 0x04;
export const VIRTIO_CONFIG_S_FEATURES_OK = 0x08;
export const VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

// --- ISR status bits (spec 4.1.4.5) -------------------------------------
export const VIRTIO_ISR_QUEUE = 0x1;
export const VIRTIO_ISR_CONFIG = 0x2;

/** MSI-X "no vector" (spec 4.1.4.3). */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

// --- Reserved (transport/ring) feature bit numbers (spec 6) -------------
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24; // legacy only
export const VIRTIO_F_ANY_LAYOUT = 27; // legacy only
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_ORDER_PLATFORM = 36;
export const VIRTIO_F_SR_IOV = 37;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_RING_RESET = 40;

/** Features every transport of ours adds to a device's own offer: the split
 * ring with indirect descriptors and event-index suppression. */
export const VIRTIO_TRANSPORT_FEATURES =
  featureBit(VIRTIO_RING_F_INDIRECT_DESC) | featureBit(VIRTIO_RING_F_EVENT_IDX);

// --- Device ids (spec 5) --------------------------------------------------
export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_RNG = 4;
export const VIRTIO_ID_BALLOON = 5;
export const VIRTIO_ID_SCSI = 8;
export const VIRTIO_ID_9P = 9;
export const VIRTIO_ID_INPUT = 18;
export const VIRTIO_ID_IOMMU = 23;

/** bhyve's emulation name of each device id we model, for messages. */
export const VIRTIO_DEVICE_NAMES: Readonly<Record<number, string>> = {
  [VIRTIO_ID_NET]: 'virtio-net', [VIRTIO_ID_BLOCK]: 'virtio-blk', [VIRTIO_ID_CONSOLE]: 'virtio-console',
  [VIRTIO_ID_RNG]: 'virtio-rnd', [VIRTIO_ID_SCSI]: 'virtio-scsi', [VIRTIO_ID_9P]: 'virtio-9p',
  [VIRTIO_ID_INPUT]: 'virtio-input', [VIRTIO_ID_IOMMU]: 'virtio-iommu',
};

// --- Split virtqueue (spec 2.7) ------------------------------------------
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** Largest split-queue size the spec allows. */
export const VIRTQ_MAX_SIZE = 32768;
export const VIRTQ_DESC_SIZE = 16;
export const VIRTQ_USED_ELEM_SIZE = 8;

// --- virtio-blk (spec 5.2) --------------------------------------------------
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
/** Size of struct virtio_blk_req's header (type, reserved, sector). */
export const VIRTIO_BLK_HDR_SIZE = 16;
/** Size of struct virtio_blk_discard_write_zeroes. */
export const VIRTIO_BLK_DWZ_SEG_SIZE = 16;
/** GET_ID answers with up to 20 bytes, not NUL-terminated when full. */
export const VIRTIO_BLK_ID_BYTES = 20;
export const VIRTIO_BLK_SECTOR_SIZE = 512;
