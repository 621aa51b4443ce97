// Guest memory mappings that device models change at run time (chipset
// shadow RAM and BIOS aliases, the UEFI VARS flash going in and out of
// read-array mode): KVM memory slots owned by the device thread, backed by
// this thread's own mappings of the RAM file, the boot ROM and the VARS file.

import { fsPath } from '../config/raw-argv.js';
import fs from 'node:fs';
import type { MemoryBacking, MemoryMapControl } from '../devices/device.js';
import type { Vm } from '../sys/kvm.js';
import { mmap, PROT_READ, PROT_WRITE, type Mapping } from '../sys/libc.js';
import { PAGE_SIZE } from '../sys/memory-map.js';

/** Slots below this belong to the main thread's fixed layout. */
const FIRST_DEVICE_SLOT = 16;
const MAX_SLOTS = 256;

export class DeviceMemoryMap implements MemoryMapControl {
  private readonly slots = new Map<number, { slot: number; size: number }>();
  private readonly free: number[] = [];
  private next = FIRST_DEVICE_SLOT;
  private rom: Mapping | undefined;
  private vars: Mapping | undefined;
  private fb: Mapping | undefined;

  constructor(private readonly vm: Vm, private readonly ram: Mapping, private readonly bootromPath?: string,
    private readonly bootvarsPath?: string, private readonly framebufferPath?: string) {}

  map(gpa: number, size: number, backing: MemoryBacking, readonly: boolean, logDirty = false): void {
    if (gpa % PAGE_SIZE || size % PAGE_SIZE || size <= 0) throw new RangeError(`mapping 0x${gpa.toString(16)}+0x${size.toString(16)} is not page aligned`);
    this.unmap(gpa);
    const { address, limit } = this.host(backing);
    if (backing.offset < 0 || backing.offset + size > limit) throw new RangeError(`mapping 0x${gpa.toString(16)}+0x${size.toString(16)} exceeds its ${backing.kind} backing`);
    const slot = this.free.pop() ?? this.next++;
    if (slot >= MAX_SLOTS) throw new RangeError('out of KVM memory slots for device mappings');
    this.vm.setMemoryRegion(slot, gpa, size, address + BigInt(backing.offset), readonly || backing.kind === 'bootrom', logDirty);
    this.slots.set(gpa, { slot, size });
  }

  /** Maps `size` bytes of this process's memory at host `address` (page
   * aligned, e.g. a device's register pages) at `gpa`. */
  mapHost(gpa: number, size: number, address: bigint, readonly: boolean): void {
    if (gpa % PAGE_SIZE || size % PAGE_SIZE || size <= 0 || address % BigInt(PAGE_SIZE)) throw new RangeError(`mapping 0x${gpa.toString(16)}+0x${size.toString(16)} is not page aligned`);
    this.unmap(gpa);
    const slot = this.free.pop() ?? this.next++;
    if (slot >= MAX_SLOTS) throw new RangeError('out of KVM memory slots for device mappings');
    try {
      this.vm.setMemoryRegion(slot, gpa, size, address, readonly);
    } catch (e) {
      this.free.push(slot);
      throw e;
    }
    this.slots.set(gpa, { slot, size });
  }

  slotAt(gpa: number): number | undefined {
    return this.slots.get(gpa)?.slot;
  }

  unmap(gpa: number): void {
    const s = this.slots.get(gpa);
    if (!s) return;
    this.vm.setMemoryRegion(s.slot, gpa, 0, 0n, false); // size 0 deletes the slot
    this.slots.delete(gpa);
    this.free.push(s.slot);
  }

  view(backing: MemoryBacking, size: number): Uint8Array {
    const m = this.mapping(backing);
    if (backing.offset < 0 || backing.offset + size > m.length) throw new RangeError(`view exceeds its ${backing.kind} backing`);
    return m.bytes.subarray(backing.offset, backing.offset + size);
  }

  private host(b: MemoryBacking): { address: bigint; limit: number } {
    const m = this.mapping(b);
    return { address: m.address, limit: m.length };
  }

  private mapping(b: MemoryBacking): Mapping {
    if (b.kind === 'framebuffer') return this.framebufferMapping();
    return b.kind === 'ram' ? this.ram : b.kind === 'bootrom' ? this.romMapping() : this.varsMapping();
  }

  /** The fbuf framebuffer file, shared with the VNC server on the main thread. */
  private framebufferMapping(): Mapping {
    if (!this.fb) {
      if (!this.framebufferPath) throw new RangeError('no framebuffer to map');
      const fd = fs.openSync(this.framebufferPath, 'r+');
      try {
        this.fb = mmap(fs.fstatSync(fd).size, PROT_READ | PROT_WRITE, fd, 0, this.framebufferPath);
      } finally {
        fs.closeSync(fd);
      }
    }
    return this.fb;
  }

  /** Maps the boot ROM, VARS and framebuffer files now rather than at first
   * use (the sandbox allows no file opens later). */
  mapFiles(): void {
    // A failure here is reported at first use, as before.
    try { if (this.bootromPath) this.romMapping(); } catch { /* later */ }
    try { if (this.bootvarsPath) this.varsMapping(); } catch { /* later */ }
    try { if (this.framebufferPath) this.framebufferMapping(); } catch { /* later */ }
  }

  /** The VARS file, mapped shared and writable: stores through view() reach the file. */
  private varsMapping(): Mapping {
    if (!this.vars) {
      if (!this.bootvarsPath) throw new RangeError('no boot variables file to map');
      const fd = fs.openSync(fsPath(this.bootvarsPath), 'r+');
      try {
        this.vars = mmap(fs.fstatSync(fd).size, PROT_READ | PROT_WRITE, fd, 0, this.bootvarsPath);
      } finally {
        fs.closeSync(fd);
      }
    }
    return this.vars;
  }

  private romMapping(): Mapping {
    if (!this.rom) {
      if (!this.bootromPath) throw new RangeError('no boot ROM to map');
      const fd = fs.openSync(fsPath(this.bootromPath), 'r');
      try {
        this.rom = mmap(fs.fstatSync(fd).size, PROT_READ, fd, 0, this.bootromPath);
      } finally {
        fs.closeSync(fd);
      }
    }
    return this.rom;
  }
}
