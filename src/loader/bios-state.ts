// The state a PC BIOS leaves behind when its boot loader (GRUB on BIOS)
// starts a kernel, for kernels bhyveload loads directly: code that drops
// back to real mode expects it (kvm-unit-tests' realmode, old guests that
// call int 0x1c or wait for the BIOS tick with `sti; hlt`).
//
// In guest memory (written here, by bhyveload):
//   0x000-0x3ff  the real-mode IVT: every vector on an `iret` stub, the
//                8259 vectors 0x08-0x0f and 0x70-0x77 on stubs that send
//                the EOI (a BIOS's handlers do), vector 8 on the timer
//                handler: it counts ticks in the BDA (0x46c, with the
//                midnight flag at 0x470 after 0x1800b0 ticks), calls int
//                0x1c, EOI.
//   0x400-0x4ff  the BIOS data area: COM1 at 0x3f8, the equipment word,
//                640 KiB of base memory (0x413), the tick count.
//   0x600-0x644  the handlers above (16-bit code).
// Both lie in the e820 RAM below 640 KiB the kernel is told about, as a
// BIOS's do; a kernel that reuses that memory loses them, as on hardware.
//
// In the devices (applied by bhyve when the boot state says `bios`,
// src/vmm/bios-devices.ts): the 8259s initialised with vector bases 0x08
// and 0x70 (IRQ 0-2 unmasked on the master, IRQ 8 on the slave, as SeaBIOS
// leaves them), PIT channel 0 in mode 3 with the full count (18.2 Hz),
// the BSP's LINT0 as ExtINT and LINT1 as NMI (virtual wire mode).

import { LoaderError, hex } from './errors.js';
import { GuestAllocator, type Placement } from './guest-layout.js';
import type { GuestMemory } from '../sys/guest-memory.js';
import type { MemoryLayout } from '../sys/memory-map.js';

export const IVT_BASE = 0;
export const BDA_BASE = 0x400;
export const BDA_END = 0x500;
export const BIOS_STUBS = 0x600;

/** BDA offsets (from 0x400). */
export const BDA = {
  com1: 0x00, equipment: 0x10, baseMemKiB: 0x13, ticks: 0x6c, midnight: 0x70,
} as const;

export const BASE_MEMORY_KIB = 640;
/** Equipment word: one serial port (bits 9-11), 80x25 colour (bits 4-5 = 10b). */
export const EQUIPMENT_WORD = (1 << 9) | (2 << 4);

// The handlers, 16-bit real-mode code.
const IRET = [0xcf];
const EOI_MASTER = [
  0x50, // push ax
  0xb0, 0x20, // mov al, 0x20
  0xe6, 0x20, // out 0x20, al
  0x58, // pop ax
  0xcf, // iret
];
const EOI_SLAVE = [
  0x50, // push ax
  0xb0, 0x20, // mov al, 0x20
  0xe6, 0xa0, // out 0xa0, al
  0xe6, 0x20, // out 0x20, al
  0x58, // pop ax
  0xcf, // iret
];
const TIMER = [
  0x1e, // push ds
  0x50, // push ax
  0x31, 0xc0, // xor ax, ax
  0x8e, 0xd8, // mov ds, ax
  0x83, 0x06, 0x6c, 0x04, 0x01, // add word [0x46c], 1
  0x83, 0x16, 0x6e, 0x04, 0x00, // adc word [0x46e], 0
  0x83, 0x3e, 0x6e, 0x04, 0x18, // cmp word [0x46e], 0x18
  0x72, 0x0f, // jb .eoi
  0x81, 0x3e, 0x6c, 0x04, 0xb0, 0x00, // cmp word [0x46c], 0xb0
  0x72, 0x07, // jb .eoi
  0x31, 0xc0, // xor ax, ax (a day has passed: 0x1800b0 ticks)
  0xa3, 0x6c, 0x04, // mov [0x46c], ax
  0xa3, 0x6e, 0x04, // mov [0x46e], ax
  0xfe, 0x06, 0x70, 0x04, // inc byte [0x470] (the midnight flag)
];
// The midnight path above falls through to here; the normal path jumps.
const TIMER_TAIL = [
  0xcd, 0x1c, // int 0x1c
  0xb0, 0x20, // mov al, 0x20
  0xe6, 0x20, // out 0x20, al
  0x58, // pop ax
  0x1f, // pop ds
  0xcf, // iret
];

export interface BiosStubs {
  iret: number;
  eoiMaster: number;
  eoiSlave: number;
  timer: number;
  bytes: Uint8Array;
}

/** The handler code laid out from `base`, with each entry's address. */
export function biosStubs(base = BIOS_STUBS): BiosStubs {
  const timerBody = [...TIMER];
  // jb .eoi (twice) must land on TIMER_TAIL: patch the rel8 displacements.
  const tailAt = timerBody.length;
  const jb1 = timerBody.indexOf(0x72);
  timerBody[jb1 + 1] = tailAt - (jb1 + 2);
  const jb2 = timerBody.indexOf(0x72, jb1 + 2);
  timerBody[jb2 + 1] = tailAt - (jb2 + 2);
  const parts = [IRET, EOI_MASTER, EOI_SLAVE, [...timerBody, ...TIMER_TAIL]];
  const offsets: number[] = [];
  let off = 0;
  for (const p of parts) { offsets.push(base + off); off += p.length; }
  const bytes = Uint8Array.from(parts.flat());
  return { iret: offsets[0], eoiMaster: offsets[1], eoiSlave: offsets[2], timer: offsets[3], bytes };
}

/** The IVT as a BIOS leaves it, pointing at `stubs` (segment 0). */
export function biosIvt(stubs: BiosStubs): Uint8Array {
  const ivt = new Uint8Array(256 * 4);
  const dv = new DataView(ivt.buffer);
  for (let v = 0; v < 256; v++) {
    let h = stubs.iret;
    if (v === 0x08) h = stubs.timer;
    else if (v > 0x08 && v <= 0x0f) h = stubs.eoiMaster;
    else if (v >= 0x70 && v <= 0x77) h = stubs.eoiSlave;
    dv.setUint16(v * 4, h, true);
    dv.setUint16(v * 4 + 2, 0, true);
  }
  return ivt;
}

/** The BIOS data area (0x400-0x4ff). */
export function biosDataArea(): Uint8Array {
  const bda = new Uint8Array(BDA_END - BDA_BASE);
  const dv = new DataView(bda.buffer);
  dv.setUint16(BDA.com1, 0x3f8, true);
  dv.setUint16(BDA.equipment, EQUIPMENT_WORD, true);
  dv.setUint16(BDA.baseMemKiB, BASE_MEMORY_KIB, true);
  return bda;
}

/** Writes the IVT, the BDA and the handlers into guest memory beside what a
 * loader placed; a clear error when the kernel itself asked for that memory. */
export function writeBiosState(memory: GuestMemory, layout: MemoryLayout, placed: readonly Placement[]): Placement[] {
  const alloc = new GuestAllocator(memory, layout);
  alloc.placements.push(...placed);
  const stubs = biosStubs();
  try {
    alloc.reserve(IVT_BASE, BDA_END, 'BIOS interrupt vectors and data area');
    alloc.reserve(BIOS_STUBS, stubs.bytes.length, 'BIOS interrupt handlers');
  } catch (e) {
    if (e instanceof LoaderError) throw new LoaderError(`${e.message}: the kernel leaves no room for the BIOS state at ${hex(0)}-${hex(BIOS_STUBS + stubs.bytes.length)}`);
    throw e;
  }
  alloc.write(IVT_BASE, biosIvt(stubs));
  alloc.write(BDA_BASE, biosDataArea());
  alloc.write(BIOS_STUBS, stubs.bytes);
  return alloc.placements.slice(placed.length);
}
