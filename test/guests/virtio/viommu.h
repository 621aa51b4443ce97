/*
 * viommu.h - a virtio-iommu driver for the test ROMs (viommu.c), shared by
 * virtio-iommu.rom (guest-iommu.c) and virtio-iommu-dma.rom
 * (guest-iommu-dma.c): the topology from the ACPI VIOT, bring-up as
 * Linux's viommu_probe, PROBE, ATTACH/DETACH, MAP/UNMAP, fault events.
 */
#ifndef VIOMMU_H
#define VIOMMU_H
#include "vlib.h"

#define VIOMMU_F_INPUT_RANGE	0
#define VIOMMU_F_DOMAIN_RANGE	1
#define VIOMMU_F_MAP_UNMAP	2
#define VIOMMU_F_PROBE		4
#define VIOMMU_F_BYPASS_CONFIG	6

#define VIOMMU_MAP_READ		1
#define VIOMMU_MAP_WRITE	2

#define VIOMMU_FAULT_R_DOMAIN	1
#define VIOMMU_FAULT_R_MAPPING	2
#define VIOMMU_FAULT_F_READ	1
#define VIOMMU_FAULT_F_WRITE	2
#define VIOMMU_FAULT_F_ADDRESS	0x100

extern struct vdev *viommu;		/* the virtio-iommu, after viommu_up */

/* The IOMMU's requester ID (*iommu_bdf) and the endpoint ID of `bdf`
 * (named `what` in the failure when the VIOT does not list it). The table
 * is printed on the first call. */
void viot_endpoint(const char *what, int bdf, int *iommu_bdf, uint32_t *endpoint);
/* Features, queues (request: 64, event: 16 with 8 buffers posted),
 * config printed and checked, bypass off; interrupts as `irqmode` (INTx
 * when it has no MSI-X). */
void viommu_up(struct pci_virtio pci, int irqmode);
/* PROBE: prints the reserved regions. */
void viommu_probe(uint32_t endpoint);
/* Return the request's status (0: OK). */
uint8_t viommu_attach(uint32_t domain, uint32_t endpoint);
uint8_t viommu_detach(uint32_t domain, uint32_t endpoint);
/* Fail on a status other than OK. */
void viommu_map(uint32_t domain, uint64_t iova, uint64_t gpa, uint64_t size, uint32_t flags);
void viommu_unmap(uint32_t domain, uint64_t iova, uint64_t size);

struct viommu_fault { uint8_t reason; uint32_t flags, endpoint; uint64_t address; uint32_t len; };
/* Waits for the next fault event (fails after ~10 s), reposts its buffer. */
struct viommu_fault viommu_next_fault(void);
/* A fault event already there? (polls once, does not wait) */
int viommu_fault_pending(void);

#endif
