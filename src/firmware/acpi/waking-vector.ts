// The FACS firmware waking vector, found the way firmware finds it on an
// S3 wake: the RSDP in 0xE0000-0xFFFFF (16-byte aligned, checksummed), its
// RSDT (or XSDT), the FADT ("FACP"), its X_FIRMWARE_CTRL or FIRMWARE_CTRL,
// the FACS and its FirmwareWakingVector (offset 12). Every pointer comes
// from guest memory: anything out of range or malformed gives undefined.

import { GuestMemoryError, type GuestMemory } from '../../sys/guest-memory.js';

const RSDP_SCAN_START = 0xe0000;
const RSDP_SCAN_END = 0x100000;
const FADT_FIRMWARE_CTRL = 36;
const FADT_X_FIRMWARE_CTRL = 132;
const FACS_WAKING_VECTOR = 12;
const MAX_TABLES = 64;

const sig = (m: GuestMemory, at: number): string => String.fromCharCode(...m.read(at, 4));

function checksumOk(m: GuestMemory, at: number, len: number): boolean {
  let s = 0;
  for (const b of m.read(at, len)) s = (s + b) & 0xff;
  return s === 0;
}

function findRsdp(m: GuestMemory): number | undefined {
  for (let a = RSDP_SCAN_START; a < RSDP_SCAN_END; a += 16) {
    if (m.readU32(a) === 0x20445352 && m.readU32(a + 4) === 0x20525450 && checksumOk(m, a, 20)) return a;
  }
  return undefined;
}

/** The FADT's address from the RSDP's XSDT (revision 2+) or RSDT. */
function findFadt(m: GuestMemory, rsdp: number): number | undefined {
  const tables: number[] = [];
  const rev = m.readU8(rsdp + 15);
  const xsdt = rev >= 2 ? Number(m.readU64(rsdp + 24)) : 0;
  if (xsdt !== 0 && Number.isSafeInteger(xsdt) && sig(m, xsdt) === 'XSDT') {
    const n = Math.min(Math.floor((m.readU32(xsdt + 4) - 36) / 8), MAX_TABLES);
    for (let i = 0; i < n; i++) tables.push(Number(m.readU64(xsdt + 36 + 8 * i)));
  } else {
    const rsdt = m.readU32(rsdp + 16);
    if (sig(m, rsdt) !== 'RSDT') return undefined;
    const n = Math.min(Math.floor((m.readU32(rsdt + 4) - 36) / 4), MAX_TABLES);
    for (let i = 0; i < n; i++) tables.push(m.readU32(rsdt + 36 + 4 * i));
  }
  return tables.find((t) => Number.isSafeInteger(t) && sig(m, t) === 'FACP');
}

/** The FACS address of the guest's ACPI tables, or undefined. */
export function findFacs(m: GuestMemory): number | undefined {
  try {
    const rsdp = findRsdp(m);
    if (rsdp === undefined) return undefined;
    const fadt = findFadt(m, rsdp);
    if (fadt === undefined) return undefined;
    const len = m.readU32(fadt + 4);
    const x = len >= FADT_X_FIRMWARE_CTRL + 8 ? Number(m.readU64(fadt + FADT_X_FIRMWARE_CTRL)) : 0;
    const facs = x !== 0 ? x : m.readU32(fadt + FADT_FIRMWARE_CTRL);
    if (!Number.isSafeInteger(facs) || facs === 0 || sig(m, facs) !== 'FACS') return undefined;
    return facs;
  } catch (e) {
    if (e instanceof GuestMemoryError) return undefined;
    throw e;
  }
}

/** The FACS FirmwareWakingVector the guest set, or undefined (none, or 0). */
export function findWakingVector(m: GuestMemory): number | undefined {
  const facs = findFacs(m);
  if (facs === undefined) return undefined;
  try {
    const v = m.readU32(facs + FACS_WAKING_VECTOR);
    return v === 0 ? undefined : v;
  } catch (e) {
    if (e instanceof GuestMemoryError) return undefined;
    throw e;
  }
}
