// The Linux VFIO and iommufd ABI that PCI passthrough needs, in one place:
// ioctl numbers, flags and the byte layouts of the structures (from
// <linux/vfio.h> and <linux/iommufd.h>). test/unit/vfio-abi checks every
// value against the kernel headers installed here; the iommufd and the
// VFIO cdev parts are checked where the headers have them (Linux 6.6+).
//
// Every VFIO and iommufd ioctl is _IO(';', n) with no size encoded: the
// structure's first u32 (argsz / size) tells the kernel how much it was
// given, so a structure grown by a newer kernel still accepts our shorter
// one. The sizes below are the ones we pass.

const VFIO_TYPE = 0x3b; // ';'
const VFIO_BASE = 100;
const IOMMUFD_CMD_BASE = 0x80;

const io = (nr: number): number => ((VFIO_TYPE << 8) | nr) >>> 0;

/** VFIO_API_VERSION: what VFIO_GET_API_VERSION answers. */
export const VFIO_API_VERSION = 0;

export const VFIO = {
  GET_API_VERSION: io(VFIO_BASE + 0),
  CHECK_EXTENSION: io(VFIO_BASE + 1),
  SET_IOMMU: io(VFIO_BASE + 2),
  GROUP_GET_STATUS: io(VFIO_BASE + 3),
  GROUP_SET_CONTAINER: io(VFIO_BASE + 4),
  GROUP_UNSET_CONTAINER: io(VFIO_BASE + 5),
  GROUP_GET_DEVICE_FD: io(VFIO_BASE + 6),
  DEVICE_GET_INFO: io(VFIO_BASE + 7),
  DEVICE_GET_REGION_INFO: io(VFIO_BASE + 8),
  DEVICE_GET_IRQ_INFO: io(VFIO_BASE + 9),
  DEVICE_SET_IRQS: io(VFIO_BASE + 10),
  DEVICE_RESET: io(VFIO_BASE + 11),
  IOMMU_GET_INFO: io(VFIO_BASE + 12),
  IOMMU_MAP_DMA: io(VFIO_BASE + 13),
  IOMMU_UNMAP_DMA: io(VFIO_BASE + 14),
} as const;

/** The cdev path (/dev/vfio/devices/vfioN bound to an iommufd), Linux 6.6+. */
export const VFIO_CDEV = {
  DEVICE_BIND_IOMMUFD: io(VFIO_BASE + 18),
  DEVICE_ATTACH_IOMMUFD_PT: io(VFIO_BASE + 19),
  DEVICE_DETACH_IOMMUFD_PT: io(VFIO_BASE + 20),
} as const;

/** /dev/iommu ioctls, Linux 6.2+. */
export const IOMMUFD = {
  DESTROY: io(IOMMUFD_CMD_BASE + 0),
  IOAS_ALLOC: io(IOMMUFD_CMD_BASE + 1),
  IOAS_IOVA_RANGES: io(IOMMUFD_CMD_BASE + 4),
  IOAS_MAP: io(IOMMUFD_CMD_BASE + 5),
  IOAS_UNMAP: io(IOMMUFD_CMD_BASE + 6),
} as const;

/** IOMMU types for VFIO_CHECK_EXTENSION / VFIO_SET_IOMMU. */
export const VFIO_IOMMU_TYPE = { TYPE1: 1, TYPE1v2: 3 } as const;

/** Structure sizes in bytes (the argsz/size we pass). */
export const VFIO_SIZEOF = {
  vfio_group_status: 8,
  vfio_device_info: 20,
  vfio_region_info: 32,
  vfio_irq_info: 16,
  vfio_irq_set: 20, // plus the data[] array
  vfio_iommu_type1_dma_map: 32,
  vfio_iommu_type1_dma_unmap: 24,
} as const;

/** Sizes of the cdev/iommufd structures as first introduced (what we pass). */
export const IOMMUFD_SIZEOF = {
  vfio_device_bind_iommufd: 16,
  vfio_device_attach_iommufd_pt: 12,
  iommu_destroy: 8,
  iommu_ioas_alloc: 12,
  iommu_ioas_map: 40,
  iommu_ioas_unmap: 24,
} as const;

export const GROUP_STATUS = { argsz: 0, flags: 4 } as const;
export const GROUP_FLAGS = { VIABLE: 1 << 0, CONTAINER_SET: 1 << 1 } as const;

export const DEVICE_INFO = { argsz: 0, flags: 4, num_regions: 8, num_irqs: 12, cap_offset: 16 } as const;
export const DEVICE_FLAGS = { RESET: 1 << 0, PCI: 1 << 1, CAPS: 1 << 7 } as const;

export const REGION_INFO = { argsz: 0, flags: 4, index: 8, cap_offset: 12, size: 16, offset: 24 } as const;
export const REGION_INFO_FLAG = { READ: 1 << 0, WRITE: 1 << 1, MMAP: 1 << 2, CAPS: 1 << 3 } as const;

/** The capability chain of GET_REGION_INFO (and GET_INFO): each entry
 * starts with this header, `next` is an offset from the start of the
 * structure (0 ends the chain). */
export const INFO_CAP_HEADER = { id: 0, version: 2, next: 4 } as const;
/** Capability ids of a region (VFIO_REGION_INFO_CAP_*). */
export const REGION_INFO_CAP = { SPARSE_MMAP: 1, TYPE: 2 } as const;
/** vfio_region_info_cap_sparse_mmap: the parts of a region that may be
 * mapped (a BAR holding the MSI-X table: the rest of it). */
export const CAP_SPARSE_MMAP = { header: 0, nr_areas: 8, reserved: 12, areas: 16 } as const;
export const SPARSE_MMAP_AREA = { offset: 0, size: 8 } as const;
export const SPARSE_MMAP_SIZEOF = { vfio_region_info_cap_sparse_mmap: 16, vfio_region_sparse_mmap_area: 16 } as const;

export const IRQ_INFO = { argsz: 0, flags: 4, index: 8, count: 12 } as const;
export const IRQ_INFO_FLAG = { EVENTFD: 1 << 0, MASKABLE: 1 << 1, AUTOMASKED: 1 << 2, NORESIZE: 1 << 3 } as const;

export const IRQ_SET = { argsz: 0, flags: 4, index: 8, start: 12, count: 16, data: 20 } as const;
export const IRQ_SET_FLAG = {
  DATA_NONE: 1 << 0, DATA_BOOL: 1 << 1, DATA_EVENTFD: 1 << 2,
  ACTION_MASK: 1 << 3, ACTION_UNMASK: 1 << 4, ACTION_TRIGGER: 1 << 5,
} as const;

export const DMA_MAP = { argsz: 0, flags: 4, vaddr: 8, iova: 16, size: 24 } as const;
export const DMA_MAP_FLAG = { READ: 1 << 0, WRITE: 1 << 1 } as const;
export const DMA_UNMAP = { argsz: 0, flags: 4, iova: 8, size: 16 } as const;

/** Region indices of a vfio-pci device (VFIO_PCI_*_REGION_INDEX). */
export const PCI_REGION = { BAR0: 0, BAR5: 5, ROM: 6, CONFIG: 7, VGA: 8 } as const;
/** Interrupt indices of a vfio-pci device (VFIO_PCI_*_IRQ_INDEX). */
export const PCI_IRQ = { INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4 } as const;

export const BIND_IOMMUFD = { argsz: 0, flags: 4, iommufd: 8, out_devid: 12 } as const;
export const ATTACH_IOMMUFD_PT = { argsz: 0, flags: 4, pt_id: 8 } as const;

export const IOMMU_DESTROY = { size: 0, id: 4 } as const;
export const IOAS_ALLOC = { size: 0, flags: 4, out_ioas_id: 8 } as const;
export const IOAS_MAP = { size: 0, flags: 4, ioas_id: 8, __reserved: 12, user_va: 16, length: 24, iova: 32 } as const;
export const IOAS_MAP_FLAG = { FIXED_IOVA: 1 << 0, WRITEABLE: 1 << 1, READABLE: 1 << 2 } as const;
export const IOAS_UNMAP = { size: 0, ioas_id: 4, iova: 8, length: 16 } as const;
