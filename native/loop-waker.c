// The loop waker: lets vCPU 0 run on the main thread, in KVM_RUN, without
// starving the main thread's event loop (src/sys/loop-waker.ts).
//
// While vCPU 0 is in the guest, the main thread is blocked in KVM_RUN and
// libuv cannot run. Signals, fds and timers could each end KVM_RUN with a
// signal of their own, but the completions of work on libuv's threadpool
// (the APs' KVM_RUN calls, the tap wakers) and messages from other threads
// arrive through an eventfd, which cannot raise a signal, and no JavaScript
// runs on a pool thread to send one. So one small thread, which runs no
// JavaScript, watches the loop for the main thread: it waits in epoll_wait
// on libuv's backend fd (readable whenever the loop has an fd, a signal, an
// async wake-up or a pool completion to handle) with the loop's own timeout
// (its next timer), and when either comes it kicks vCPU 0 out of KVM_RUN
// the way the doorbell does (immediate_exit, then SIGUSR2 to the thread),
// once: the main thread runs one turn of the loop and arms it again.
//
// Built by `npm run build` (scripts/build-native.mjs) and loaded with koffi.
// The uv_* functions are Node's own (the node binary exports libuv's API for
// addons); they are called only on the main thread, in lw_arm.

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct uv_loop_s uv_loop_t;
extern uv_loop_t *uv_default_loop(void);
extern int uv_backend_fd(const uv_loop_t *);
extern int uv_backend_timeout(const uv_loop_t *);

enum { IDLE = 0, ARMED = 1, STOPPED = 2 };

struct loop_waker {
  _Atomic int32_t state;
  /** When the loop's next timer is due (CLOCK_MONOTONIC ms), or -1. */
  _Atomic int64_t deadline_ms;
  int epfd;
  /** Written by lw_stop, and by lw_arm when the deadline moves while the
   * thread waits: ends its epoll_wait, so that it looks again. */
  int ctlfd;
  pid_t pid, tid;
  int sig;
  /** vCPU 0's kvm_run immediate_exit byte. */
  volatile uint8_t *immediate_exit;
  /** How many times the thread kicked (for tests and statistics). */
  _Atomic uint64_t kicks;
  pthread_t thread;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void futex_wait(_Atomic int32_t *word, int32_t expected) {
  syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic int32_t *word) {
  syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/** Ends vCPU 0's KVM_RUN once, if armed: immediate_exit covers a KVM_RUN
 * not yet entered, the signal one that blocks. */
static void kick(struct loop_waker *w) {
  int32_t armed = ARMED;
  if (atomic_compare_exchange_strong(&w->state, &armed, IDLE)) {
    *w->immediate_exit = 1;
    atomic_fetch_add(&w->kicks, 1);
    syscall(SYS_tgkill, w->pid, w->tid, w->sig);
  }
}

static void *watch(void *arg) {
  struct loop_waker *w = arg;
  for (;;) {
    int32_t s = atomic_load(&w->state);
    if (s == STOPPED) return NULL;
    if (s == IDLE) { futex_wait(&w->state, IDLE); continue; }
    int64_t deadline = atomic_load(&w->deadline_ms);
    int timeout = -1;
    if (deadline >= 0) {
      int64_t left = deadline - now_ms();
      timeout = left <= 0 ? 0 : left > 60000 ? 60000 : (int)left;
    }
    struct epoll_event ev;
    int n = epoll_wait(w->epfd, &ev, 1, timeout);
    if (n < 0 && errno != EINTR) return NULL;
    if (atomic_load(&w->state) == STOPPED) return NULL;
    if (n > 0 && ev.data.u64 == 1) {
      uint64_t count;
      if (read(w->ctlfd, &count, sizeof count) < 0) { /* drained already */ }
      continue;
    }
    // Nothing ready and the deadline not yet reached (a wait cut short):
    // wait again. (A deadline lw_arm moved later meanwhile costs at most
    // one kick too many; one it moved earlier ends the wait through ctlfd.)
    if (n <= 0 && (deadline < 0 || now_ms() < deadline)) continue;
    kick(w);
  }
}

/** Starts the thread for the calling thread's loop (Node's main loop);
 * returns NULL with errno set when it cannot. */
struct loop_waker *lw_start(int sig, uint8_t *immediate_exit);
struct loop_waker *lw_start(int sig, uint8_t *immediate_exit) {
  struct loop_waker *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->pid = getpid();
  w->tid = (pid_t)syscall(SYS_gettid);
  w->sig = sig;
  w->immediate_exit = immediate_exit;
  atomic_store(&w->deadline_ms, -1);
  // Our own epoll set holding libuv's: readiness of an epoll fd says its set
  // has events, and waiting on it here takes none of them from libuv.
  w->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (w->epfd < 0) { free(w); return NULL; }
  w->ctlfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0 };
  struct epoll_event stop = { .events = EPOLLIN, .data.u64 = 1 };
  if (w->ctlfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, uv_backend_fd(uv_default_loop()), &ev) < 0
      || epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->ctlfd, &stop) < 0) {
    int e = errno; close(w->epfd); if (w->ctlfd >= 0) close(w->ctlfd); free(w); errno = e; return NULL;
  }
  // The library stays loaded for the life of the process: a thread of
  // ours must never return into code koffi unloaded at Node's teardown
  // (a process that exits without lw_stop leaves the thread waiting).
  Dl_info self;
  if (dladdr((void *)lw_start, &self) && self.dli_fname) dlopen(self.dli_fname, RTLD_NOW | RTLD_NODELETE);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old); // the thread takes no signals
  int r = pthread_create(&w->thread, NULL, watch, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r != 0) { close(w->epfd); close(w->ctlfd); free(w); errno = r; return NULL; }
  return w;
}

/** Main thread, before it enters KVM_RUN after a turn of its loop: watch
 * the loop until it has work, then kick once. Returns 0, or 1 when the loop
 * has work due now (a timer, an immediate): run it instead of the guest. */
int lw_arm(struct loop_waker *w) {
  uv_loop_t *loop = uv_default_loop();
  int timeout = uv_backend_timeout(loop);
  if (timeout == 0) return 1;
  int64_t deadline = timeout < 0 ? -1 : now_ms() + timeout;
  int64_t before = atomic_exchange(&w->deadline_ms, deadline);
  int32_t idle = IDLE;
  if (atomic_compare_exchange_strong(&w->state, &idle, ARMED)) futex_wake(&w->state);
  // The thread may be in epoll_wait with an older, later deadline: still
  // armed from before (nothing woke the loop since), or kicked by an AP's
  // lw_kvm_run while it waited. Have it look again.
  if (deadline >= 0 && (before < 0 || deadline < before)) {
    uint64_t one = 1;
    if (write(w->ctlfd, &one, sizeof one) < 0) { /* the counter is full: it will look */ }
  }
  return 0;
}

/** True (1) when the thread kicked since the last lw_arm: the loop has work. */
int lw_fired(struct loop_waker *w) {
  return atomic_load(&w->state) == IDLE;
}

uint64_t lw_kicks(struct loop_waker *w) {
  return atomic_load(&w->kicks);
}

/** An application processor's KVM_RUN, on a thread of libuv's pool
 * (src/vmm/ap-pool.ts): as it returns, vCPU 0 is kicked off the main thread
 * at once, one thread hand-off sooner than the watching thread would on
 * seeing the completion libuv posts after this call. Returns the result,
 * or -errno. (A kick that comes before the completion is posted costs one
 * more turn of the loop, not the exit: the watching thread still sees it.) */
int lw_kvm_run(struct loop_waker *w, int vcpu_fd) {
  int r = ioctl(vcpu_fd, _IO(0xAE, 0x80), 0); /* KVM_RUN */
  int e = errno;
  kick(w);
  return r < 0 ? -e : r;
}

/** Ends the thread and waits for it; it kicks no more. The memory stays
 * (an AP's lw_kvm_run may still be returning on a pool thread). */
void lw_stop(struct loop_waker *w) {
  atomic_store(&w->state, STOPPED);
  futex_wake(&w->state);
  uint64_t one = 1;
  if (write(w->ctlfd, &one, sizeof one) < 0) { /* the counter is full: already stopping */ }
  pthread_join(w->thread, NULL);
  close(w->epfd);
  close(w->ctlfd);
}
