// Port 0x84, as bhyve's amd64/post.c: always present, byte reads return
// 0xff ("some garbage"; some guests read it for I/O delays). bhyve decodes
// it for input only; writes are ignored here.

import type { Device, DeviceContext } from '../device.js';

export const POST_PORT = 0x84;

export class PostPort implements Device {
  readonly name = 'post';

  constructor(ctx: DeviceContext) {
    ctx.io.registerPorts('post', POST_PORT, 1, {
      read: (_p, size) => (size === 1 ? 0xff : size === 2 ? 0xffff : 0xffffffff),
      write: () => {},
    });
  }
}
