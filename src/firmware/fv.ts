// UEFI firmware volumes (PI spec vol. 3, EFI_FIRMWARE_VOLUME_HEADER): the
// structure of OVMF / EDK II boot ROM images. bhyve maps whatever file it is
// given; we additionally check, at load, that an image which looks like a
// firmware-volume image (the "_FVH" signature at offset 40) is whole, so a
// truncated download or a corrupted file ends in one clear line instead of
// a guest that dies in its first instructions.
//
//   offset  size  field
//        0    16  ZeroVector
//       16    16  FileSystemGuid
//       32     8  FvLength (header included)
//       40     4  Signature "_FVH"
//       44     4  Attributes
//       48     2  HeaderLength (header + block map)
//       50     2  Checksum (the 16-bit words of the header sum to 0)
//       52     2  ExtHeaderOffset (0: none)
//       54     1  Reserved
//       55     1  Revision (2)
//       56   8*n  BlockMap: {NumBlocks u32, Length u32}..., ended by {0, 0}
//
// An image is a sequence of volumes, each starting where the previous one
// ends (OVMF_CODE.fd: DXEFV + PEIFV/SECFV; OVMF.fd: NVRAM + those); blank
// padding (all 0x00 or all 0xff) after the last volume is accepted.

import { UserError } from '../user-error.js';

export const FVH_SIGNATURE = '_FVH';
export const FVH_SIGNATURE_OFFSET = 40;
export const FVH_MIN_LENGTH = 56 + 8;
export const FVH_REVISION = 2;

/** File-system GUIDs an EDK II image uses, by name. */
export const KNOWN_FV_GUIDS: Readonly<Record<string, string>> = {
  '7a9354d9-0468-444a-81ce-0bf617d890df': 'FFS1',
  '8c8ce578-8a3d-4f1c-9935-896185c32dd3': 'FFS2',
  '5473c07a-3dcb-4dca-bd6f-1e9689e7349a': 'FFS3',
  'fff12b8d-7696-4c8b-a985-2747075b4f50': 'NV storage',
};

export interface FirmwareVolume {
  /** Byte offset of the volume in the image. */
  offset: number;
  length: number;
  headerLength: number;
  attributes: number;
  revision: number;
  /** FileSystemGuid in registry form (lower case). */
  guid: string;
  /** KNOWN_FV_GUIDS name, or undefined for another file system. */
  kind?: string;
  blockMap: Array<{ numBlocks: number; length: number }>;
  extHeaderOffset: number;
}

export class FirmwareVolumeError extends UserError { override readonly name: string = 'FirmwareVolumeError'; }

/** EFI_GUID bytes (little-endian first three fields) as a registry string. */
export function guidString(b: Uint8Array): string {
  const hex = (i: number, n: number, le: boolean): string => {
    const bytes = Array.from(b.subarray(i, i + n));
    if (le) bytes.reverse();
    return bytes.map((x) => x.toString(16).padStart(2, '0')).join('');
  };
  return `${hex(0, 4, true)}-${hex(4, 2, true)}-${hex(6, 2, true)}-${hex(8, 2, false)}-${hex(10, 6, false)}`;
}

/** True when the image starts with a firmware volume header (signature at 40). */
export function looksLikeFirmwareVolume(image: Uint8Array): boolean {
  return image.length >= FVH_SIGNATURE_OFFSET + 4 && hasSignature(image, 0);
}

function hasSignature(image: Uint8Array, off: number): boolean {
  const s = off + FVH_SIGNATURE_OFFSET;
  if (s + 4 > image.length) return false;
  for (let i = 0; i < 4; i++) if (image[s + i] !== FVH_SIGNATURE.charCodeAt(i)) return false;
  return true;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/** Checks one volume header at `off`; throws FirmwareVolumeError naming what is wrong. */
export function parseFirmwareVolume(image: Uint8Array, off: number): FirmwareVolume {
  const at = `firmware volume at offset ${hex(off)}`;
  if (off + FVH_MIN_LENGTH > image.length) {
    throw new FirmwareVolumeError(`${at}: header runs past the end of the ${image.length}-byte image (truncated)`);
  }
  if (!hasSignature(image, off)) throw new FirmwareVolumeError(`${at}: no "_FVH" signature (corrupt image)`);
  const v = new DataView(image.buffer, image.byteOffset + off);
  const lengthBig = v.getBigUint64(32, true);
  const attributes = v.getUint32(44, true);
  const headerLength = v.getUint16(48, true);
  const extHeaderOffset = v.getUint16(52, true);
  const revision = v.getUint8(55);
  if (headerLength < FVH_MIN_LENGTH || headerLength % 2 !== 0) {
    throw new FirmwareVolumeError(`${at}: header length ${headerLength} is invalid (corrupt image)`);
  }
  if (off + headerLength > image.length) {
    throw new FirmwareVolumeError(`${at}: header runs past the end of the ${image.length}-byte image (truncated)`);
  }
  let sum = 0;
  for (let i = 0; i < headerLength; i += 2) sum = (sum + v.getUint16(i, true)) & 0xffff;
  if (sum !== 0) throw new FirmwareVolumeError(`${at}: header checksum is wrong (the header sums to ${hex(sum)}, not 0; corrupt image)`);
  if (revision !== FVH_REVISION) throw new FirmwareVolumeError(`${at}: header revision ${revision}, expected ${FVH_REVISION} (corrupt or unsupported image)`);
  if (lengthBig < BigInt(headerLength) || lengthBig > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new FirmwareVolumeError(`${at}: volume length ${hex(Number(lengthBig & 0xffffffffffffn))} is invalid (corrupt image)`);
  }
  const length = Number(lengthBig);
  if (off + length > image.length) {
    throw new FirmwareVolumeError(`${at}: volume is ${hex(length)} bytes but the image ends ${hex(image.length - off)} bytes after its start (truncated)`);
  }
  const blockMap: FirmwareVolume['blockMap'] = [];
  let mapped = 0;
  for (let p = 56; ; p += 8) {
    if (p + 8 > headerLength) throw new FirmwareVolumeError(`${at}: block map has no terminating entry (corrupt image)`);
    const numBlocks = v.getUint32(p, true);
    const blockLength = v.getUint32(p + 4, true);
    if (numBlocks === 0 && blockLength === 0) break;
    if (numBlocks === 0 || blockLength === 0) throw new FirmwareVolumeError(`${at}: block map entry ${(p - 56) / 8} is empty (corrupt image)`);
    blockMap.push({ numBlocks, length: blockLength });
    mapped += numBlocks * blockLength;
  }
  if (mapped !== length) {
    throw new FirmwareVolumeError(`${at}: block map covers ${hex(mapped)} bytes, volume length is ${hex(length)} (corrupt image)`);
  }
  if (extHeaderOffset !== 0 && (extHeaderOffset < headerLength || extHeaderOffset + 20 > length)) {
    throw new FirmwareVolumeError(`${at}: extended header offset ${hex(extHeaderOffset)} is outside the volume (corrupt image)`);
  }
  const guid = guidString(image.subarray(off + 16, off + 32));
  return { offset: off, length, headerLength, attributes, revision, guid, kind: KNOWN_FV_GUIDS[guid], blockMap, extHeaderOffset };
}

function blank(image: Uint8Array, from: number): boolean {
  if (from >= image.length) return true;
  const fill = image[from];
  if (fill !== 0 && fill !== 0xff) return false;
  for (let i = from; i < image.length; i++) if (image[i] !== fill) return false;
  return true;
}

/** Walks and checks every volume of a firmware-volume image. */
export function parseFirmwareVolumes(image: Uint8Array): FirmwareVolume[] {
  const out: FirmwareVolume[] = [];
  let off = 0;
  while (off < image.length) {
    if (out.length > 0 && !hasSignature(image, off)) {
      if (blank(image, off)) break;
      throw new FirmwareVolumeError(`no firmware volume header at offset ${hex(off)}, where the previous volume ends (corrupt image)`);
    }
    const fv = parseFirmwareVolume(image, off);
    out.push(fv);
    off += fv.length;
  }
  return out;
}
