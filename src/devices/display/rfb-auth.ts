// VNC authentication (RFB security type 2): the server sends a 16-byte
// random challenge, the client answers with it DES-encrypted (ECB, two
// blocks) under the password truncated or NUL-padded to 8 bytes, each key
// byte bit-reversed (the historical d3des convention every VNC client uses).
//
// OpenSSL 3 moved single DES to its legacy provider, so Node's des-ecb is
// usually missing; two-key triple DES with both keys equal (des-ede-ecb,
// E_K(D_K(E_K(x)))) is single DES, and stays in the default provider.

import crypto from 'node:crypto';

export const VNC_CHALLENGE_LENGTH = 16;
const KEY_LENGTH = 8;

function reverseBits(b: number): number {
  let r = 0;
  for (let i = 0; i < 8; i++) if (b & (1 << i)) r |= 0x80 >> i;
  return r;
}

/** The DES key a VNC password stands for (first 8 bytes, bits mirrored). */
export function vncKey(password: string): Buffer {
  const key = Buffer.alloc(KEY_LENGTH);
  Buffer.from(password, 'latin1').copy(key, 0, 0, KEY_LENGTH);
  for (let i = 0; i < KEY_LENGTH; i++) key[i] = reverseBits(key[i]);
  return key;
}

/** DES-ECB of `data` (a multiple of 8 bytes) under an 8-byte key. */
export function desEcb(key: Buffer, data: Buffer): Buffer {
  const c = crypto.createCipheriv('des-ede-ecb', Buffer.concat([key, key]), null);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(data), c.final()]);
}

/** The response a client holding `password` gives to `challenge`. */
export function vncAuthResponse(password: string, challenge: Buffer): Buffer {
  return desEcb(vncKey(password), challenge);
}

export function newChallenge(): Buffer {
  return crypto.randomBytes(VNC_CHALLENGE_LENGTH);
}

/** Compares a client's response in constant time. */
export function vncAuthCheck(password: string, challenge: Buffer, response: Buffer): boolean {
  const expected = vncAuthResponse(password, challenge);
  return response.length === expected.length && crypto.timingSafeEqual(expected, response);
}
