// virtio-scsi (virtio spec 5.6), bhyve's pci_virtio_scsi.c: a control
// queue, an event queue and one request queue of 64 entries each, one
// target (0) with one logical unit (0). On FreeBSD bhyve hands each
// command to CAM's CTL; here the logical unit is a SCSI disk
// (../scsi/scsi-disk.ts) on the shared block backend, a file or block
// device:
//
//   -s N,virtio-scsi,/path/to/disk.img[,iid=N][,ro][,nocache]...
//
// sets pci.B.S.F.dev (bhyve's key: there the CTL device) and the blockif
// options. The configuration is bhyve's (num_queues 1, seg_max 64,
// cmd_per_lun 1, sense_size 96, cdb_size 32, max_channel 0, max_target 0,
// max_lun 16383) but for max_sectors: 0xffff rather than bhyve's 2, which
// would hold a Linux guest to 1 KiB requests. No feature bits, as bhyve.
//
// Requests: the virtio-scsi request header (LUN, tag, CDB) and any
// data-out in the device-readable part; the response header (sense,
// residual, status, response) and any data-in in the device-writable
// part. A LUN field not naming target 0 answers BAD_TARGET; a request with
// both data-out and data-in FAILURE; a chain too short for the headers is
// the driver breaking the protocol: the device needs a reset (as QEMU).
// Task management always completes (requests run to completion before the
// next is looked at: nothing is ever in flight to abort); asynchronous
// notification queries get no events; the event queue is never used
// (nothing is hot-plugged).

import { ConfigError, ConfigTree } from '../../config/tree.js';
// (The legacy parser moved with the record; importable from here.)
export { vtscsiLegacyConfig } from './virtio-scsi-record.js';
import {
  BlockDeviceError, BlockFile, bhyveSerial, blockBackendOptionsFromConfig,
} from '../block/block-backend.js';
import type { PciDeviceModel } from '../pci-device.js';
import { ScsiDisk, type ScsiBuffers } from '../scsi/scsi-disk.js';
import { VIRTIO_ID_SCSI } from './virtio-constants.js';
import { VirtioDeviceBase } from './virtio-device.js';
import { createVirtioPci } from './virtio-pci.js';
import { VirtqueueError, type DescriptorChain, type Virtqueue } from './virtqueue.js';

/** bhyve's VTSCSI_RINGSZ, VTSCSI_MAXSEG. */
export const VTSCSI_RINGSZ = 64;
export const VTSCSI_MAXSEG = 64;
export const VTSCSI_CDB_SIZE = 32;
export const VTSCSI_SENSE_SIZE = 96;
export const VIRTIO_SCSI_MAX_LUN = 16383;
/** lun[8] id[8] task_attr prio crn, then the CDB. */
export const VTSCSI_REQ_HDR = 19 + VTSCSI_CDB_SIZE;
/** sense_len[4] residual[4] status_qualifier[2] status response, then sense. */
export const VTSCSI_RESP_HDR = 12 + VTSCSI_SENSE_SIZE;

export const VIRTIO_SCSI_S_OK = 0;
export const VIRTIO_SCSI_S_OVERRUN = 1;
export const VIRTIO_SCSI_S_BAD_TARGET = 3;
export const VIRTIO_SCSI_S_FAILURE = 9;
export const VIRTIO_SCSI_S_FUNCTION_COMPLETE = 0;
export const VIRTIO_SCSI_T_TMF = 0;
export const VIRTIO_SCSI_T_AN_QUERY = 1;
export const VIRTIO_SCSI_T_AN_SUBSCRIBE = 2;

const CONTROLQ = 0;
const EVENTQ = 1;
const REQUESTQ = 2;

export class VirtioScsi extends VirtioDeviceBase {
  readonly deviceType = VIRTIO_ID_SCSI;
  readonly queueMaxSizes: readonly number[] = [VTSCSI_RINGSZ, VTSCSI_RINGSZ, VTSCSI_RINGSZ];
  protected readonly ownFeatures = 0n;
  protected readonly config = new Uint8Array(36);
  readonly stats = { requests: 0, badTarget: 0, failures: 0, taskManagement: 0 };
  private readonly reqHdr = new Uint8Array(VTSCSI_REQ_HDR);
  private readonly respHdr = new Uint8Array(VTSCSI_RESP_HDR);
  private readonly respView = new DataView(this.respHdr.buffer);
  private readonly bufs: ScsiBuffers = { dataOut: [], dataOutLength: 0, dataIn: [], dataInLength: 0 };

  constructor(readonly disk: ScsiDisk) {
    super();
    const c = new DataView(this.config.buffer);
    c.setUint32(0, 1, true); // num_queues
    c.setUint32(4, VTSCSI_MAXSEG, true); // seg_max
    c.setUint32(8, 0xffff, true); // max_sectors
    c.setUint32(12, 1, true); // cmd_per_lun
    c.setUint32(16, 16, true); // event_info_size
    c.setUint32(20, VTSCSI_SENSE_SIZE, true);
    c.setUint32(24, VTSCSI_CDB_SIZE, true);
    c.setUint16(28, 0, true); // max_channel
    c.setUint16(30, 0, true); // max_target
    c.setUint32(32, VIRTIO_SCSI_MAX_LUN, true);
  }

  protected processQueue(index: number, queue: Virtqueue): void {
    if (index === EVENTQ) return; // buffers wait for events that never come
    const chain = this.scratchChain;
    do {
      while (queue.pop(chain) !== null) {
        queue.pushUsed(chain.head, index === CONTROLQ ? this.control(chain) : this.request(chain));
      }
    } while (queue.enableNotification());
    this.signalUsed(index, queue);
  }

  private request(chain: DescriptorChain): number {
    if (chain.readableLength < VTSCSI_REQ_HDR || chain.writableLength < VTSCSI_RESP_HDR) {
      throw new VirtqueueError(`virtio-scsi: request chain of ${chain.readableLength}+${chain.writableLength} bytes `
        + `cannot hold the ${VTSCSI_REQ_HDR}-byte request and ${VTSCSI_RESP_HDR}-byte response headers`);
    }
    this.stats.requests++;
    chain.copyFromReadable(0, this.reqHdr);
    const h = this.reqHdr;
    const r = this.respHdr;
    r.fill(0);
    const b = this.bufs;
    b.dataOutLength = chain.readableLength - VTSCSI_REQ_HDR;
    b.dataInLength = chain.writableLength - VTSCSI_RESP_HDR;
    let dataIn = 0;
    if (h[0] !== 1 || h[1] !== 0) {
      // Not target 0 (single-level LUN structure, bus 0): no such target.
      r[11] = VIRTIO_SCSI_S_BAD_TARGET;
      this.stats.badTarget++;
    } else if (b.dataOutLength > 0 && b.dataInLength > 0) {
      r[11] = VIRTIO_SCSI_S_FAILURE; // bidirectional commands: none here
      this.stats.failures++;
    } else {
      const lun = ((h[2] << 8) | h[3]) & 0x3fff;
      chain.readableViews(VTSCSI_REQ_HDR, b.dataOutLength, b.dataOut);
      chain.writableViews(VTSCSI_RESP_HDR, b.dataInLength, b.dataIn);
      const res = this.disk.execute(h.subarray(19), lun, b);
      dataIn = res.dataIn;
      const v = this.respView;
      if (res.sense) {
        const n = Math.min(res.sense.length, VTSCSI_SENSE_SIZE);
        v.setUint32(0, n, true);
        r.set(res.sense.subarray(0, n), 12);
      }
      const transferable = b.dataOutLength > 0 ? b.dataOutLength : b.dataInLength;
      const moved = b.dataOutLength > 0 ? (res.status === 0 ? this.consumed(h.subarray(19), b.dataOutLength) : 0) : dataIn;
      v.setUint32(4, Math.max(0, transferable - moved), true); // residual
      r[10] = res.status;
      r[11] = VIRTIO_SCSI_S_OK;
    }
    chain.copyToWritable(0, r);
    return VTSCSI_RESP_HDR + dataIn;
  }

  /** Bytes of data-out a successful command took (its transfer length, or
   * the parameter list for UNMAP). */
  private consumed(cdb: Uint8Array, have: number): number {
    const bs = this.disk.blockSize;
    switch (cdb[0]) {
      case 0x0a: return Math.min(have, (cdb[4] === 0 ? 256 : cdb[4]) * bs);
      case 0x2a: return Math.min(have, ((cdb[7] << 8) | cdb[8]) * bs);
      case 0xaa: return Math.min(have, (((cdb[6] << 24) | (cdb[7] << 16) | (cdb[8] << 8) | cdb[9]) >>> 0) * bs);
      case 0x8a: return Math.min(have, (((cdb[10] << 24) | (cdb[11] << 16) | (cdb[12] << 8) | cdb[13]) >>> 0) * bs);
      case 0x42: return Math.min(have, (cdb[7] << 8) | cdb[8]);
      default: return 0;
    }
  }

  private control(chain: DescriptorChain): number {
    const head = new Uint8Array(4);
    if (chain.copyFromReadable(0, head) < 4 || chain.writableLength < 1) {
      throw new VirtqueueError(`virtio-scsi: control request of ${chain.readableLength}+${chain.writableLength} bytes`);
    }
    const type = new DataView(head.buffer).getUint32(0, true);
    this.stats.taskManagement++;
    if (type === VIRTIO_SCSI_T_TMF) {
      // Every request completed before this one was looked at: there is
      // nothing to abort, reset or query.
      return chain.copyToWritable(0, Uint8Array.of(VIRTIO_SCSI_S_FUNCTION_COMPLETE));
    }
    if (type === VIRTIO_SCSI_T_AN_QUERY || type === VIRTIO_SCSI_T_AN_SUBSCRIBE) {
      if (chain.writableLength < 5) throw new VirtqueueError('virtio-scsi: asynchronous notification reply does not fit');
      return chain.copyToWritable(0, Uint8Array.of(0, 0, 0, 0, VIRTIO_SCSI_S_OK)); // event_actual 0
    }
    return chain.copyToWritable(0, Uint8Array.of(VIRTIO_SCSI_S_FAILURE));
  }

  counters(): Record<string, number> {
    const s = this.disk.stats;
    return {
      'scsi commands': s.commands,
      'scsi reads': s.reads,
      'scsi writes': s.writes,
      'scsi bytes read': s.bytesRead,
      'scsi bytes written': s.bytesWritten,
      'scsi check conditions': s.checkConditions,
      'bad target': this.stats.badTarget,
      'task management': this.stats.taskManagement,
    };
  }

  close(): void {
    this.disk.file.close();
  }
}

/** Opens the logical unit a slot names. */
export function openScsi(config: ConfigTree, node: string): VirtioScsi {
  // The block backend reads `path`; virtio-scsi's disk is `dev`.
  const view = new ConfigTree();
  for (const [k, v] of config.toJSON()) if (k.startsWith(`${node}.`)) view.set(k, v);
  view.set(`${node}.path`, config.get(`${node}.dev`)!);
  const opts = blockBackendOptionsFromConfig(view, node, 'virtio-scsi');
  const file = new BlockFile(opts);
  if (opts.sectorSize !== undefined && file.size % opts.sectorSize !== 0) {
    file.close();
    throw new BlockDeviceError(`virtio-scsi: disk image ${opts.path} is not a whole number of ${opts.sectorSize}-byte blocks`);
  }
  const disk = new ScsiDisk(file, {
    blockSize: opts.sectorSize, physicalBlockSize: opts.physicalSectorSize,
    serial: opts.serial ?? bhyveSerial(opts.path), nodelete: opts.nodelete,
  });
  return new VirtioScsi(disk);
}

/** PCI class bhyve gives virtio-scsi (PCIC_STORAGE). */
const PCIC_STORAGE = 0x01;

/** The emulation of its record (virtio-scsi-record.ts). */
export const virtioScsiModel: PciDeviceModel = {
  create: (ctx, s, chipset) => createVirtioPci(ctx, s, chipset, 'virtio-scsi', PCIC_STORAGE, () => openScsi(ctx.config, s.node)),
};
