// koffi's async calls pass a typed array's memory to the pool thread as a
// bare pointer and keep no reference: sys/libc.ts's libcFunc(...).async
// holds the arguments until the call ends. Without that, a buffer a read
// is still blocked on can be collected (and its memory reused) under the
// call; once seen as a sandbox start failure (a freed capset header read
// as another pid: "capset on a pool thread: errno 1").
import v8 from 'node:v8';
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { closeFd, EFD_CLOEXEC, eventfd, eventfdWrite } from '../../src/sys/eventfd.js';
import { holding, libcBind, libcFunc } from '../../src/sys/libc.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const readFn = libcFunc('int64_t read(int fd, _Out_ uint8_t *buf, size_t count)');
const pipeFn = libcFunc('int pipe(_Out_ int32_t *fds)');
const closeFn = libcFunc('int close(int fd)');

async function collect(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
}

describe('koffi async calls hold their arguments', () => {
  it('a buffer handed only to a pending read is not collected until the read ends', async () => {
    const efd = eventfd(0, EFD_CLOEXEC);
    let ref!: WeakRef<Uint8Array>;
    const read = new Promise<number>((resolve) => {
      const buf = new Uint8Array(8);
      ref = new WeakRef(buf);
      readFn.async(efd, buf, 8, (_e: unknown, r: number | bigint) => resolve(Number(r)));
    });
    await collect();
    expect(ref.deref()).toBeDefined();
    eventfdWrite(efd, 0x1234);
    expect(await read).toBe(8);
    // The read wrote into the very buffer it was given.
    expect(Buffer.from(ref.deref()!.buffer).readBigUInt64LE(0)).toBe(0x1234n);
    closeFd(efd);
  });

  it('the control: koffi itself does not hold it (so the test above can fail)', async () => {
    // The raw koffi function, with a callback that does not refer to the
    // buffer. A pipe, so the read ends at EOF without writing into it.
    const fds = new Int32Array(2);
    expect(pipeFn(fds)).toBe(0);
    let ref!: WeakRef<Uint8Array>;
    const read = new Promise<number>((resolve) => {
      const buf = new Uint8Array(8);
      ref = new WeakRef(buf);
      libcBind('int64_t read(int fd, _Out_ uint8_t *buf, size_t count)').async(fds[0], buf, 8, (_e: unknown, r: number | bigint) => resolve(Number(r)));
    });
    await collect();
    expect(ref.deref()).toBeUndefined();
    closeFn(fds[1]);
    expect(await read).toBe(0);
    closeFn(fds[0]);
  });

  it('holding() keeps what it is given and nothing else', async () => {
    let kept!: WeakRef<object>, other!: WeakRef<object>;
    const cb = (() => {
      const a = {}, b = {};
      kept = new WeakRef(a);
      other = new WeakRef(b);
      return holding([a], () => {});
    })();
    await collect();
    expect(kept.deref()).toBeDefined();
    expect(other.deref()).toBeUndefined();
    cb(null, undefined as never);
  });
});
