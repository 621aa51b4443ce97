// `bhyve`'s run: from a frozen config tree to a running VM and back to a
// bhyve(8) exit status. The main thread is the control plane (signals, host
// backends, the halt watchdog); each vCPU runs on its own worker thread.

import type { Worker } from 'node:worker_threads';
import { retireVcpuThread, spawnVcpuThread, spawnVcpuThreads } from './vcpu-threads.js';
import type { ConfigTree } from '../config/tree.js';
import { openUartBackend, restoreTerminal, type UartBackendHost, type UartStreamTransfer } from '../devices/lpc/uart-backend.js';
import { pciUartBackends } from '../devices/pci-uart-record.js';
import { openHostPorts, type HostPorts } from '../devices/virtio/host-ports.js';
import { openDisplay, type DisplayHost } from '../devices/display/fbuf-host.js';
import { Mailbox } from './ap-mailbox.js';
import { ControlServer } from './control-socket.js';
import { controlHandlers } from './control-ops.js';
import { exitNotice, exitStatusOf, type ExitRequest } from './exit-status.js';
import { createTimerTable, DeviceTimerHost } from './device-timers.js';
import { HALT_WATCH_MS, watchHalts } from './halt-watch.js';
import { KvmStats } from '../sys/kvm.js';
import { cleanupMachine, createMachine, legacyWindowFor, VmSetupError } from './machine.js';
import { Kicker, VcpuControl, type KickTarget } from './vcpu-control.js';
import { ApPool, poolForAps } from './ap-pool.js';
import { DEVICE_REQUEST, Doorbell } from '../sys/doorbell.js';
import { installKickHandler } from '../sys/kick-signal.js';
import { VcpuRequester } from './vcpu-requests.js';
import type { VcpuThreadData, VcpuThreadMessage } from './vcpu-thread-data.js';
import { calcTopology, parseCpuset } from '../config/topology.js';
import { errorLine, userErrorWithPrefix } from '../user-error.js';
import { SignalRouter, signalStatus, type StopSignal } from './startup-signals.js';
import { enterSandbox, sandboxPlan } from './sandbox/sandbox.js';
import { confinePool } from './sandbox/pool-threads.js';
import { bspModel, MainThreadVcpu } from './main-thread-vcpu.js';
import { loadDeviceModels } from './device-host.js';
import { trace, traceMemory, traceModules } from './startup-trace.js';
import { GdbStub } from './gdb-stub.js';
import type { VcpuStateJson, VcpuStateUpdate } from './vcpu-state.js';

const STOP_GRACE_MS = 2000;

/** Runs the VM described by `config`; resolves to bhyve(8)'s exit status. */
/** What the command line gives besides the config tree (bhyve keeps `-f`
 * fw_cfg files outside it). */
export interface RunExtras {
  fwcfgFiles?: ReadonlyArray<{ name: string; data: Uint8Array }>;
  /** vCPU threads already started (spawnVcpuThreads); runVm owns them. */
  threads?: Worker[];
  /** SIGINT/SIGTERM/SIGHUP since the process began (bhyve-main.ts). */
  signals?: SignalRouter;
}

export async function runVm(config: ConfigTree, extras: RunExtras = {}): Promise<number> {
  // Start the vCPU threads first (unless the caller already did): their
  // module loading overlaps our setup.
  // vCPU 0 on the main thread (the default) has no worker; its device
  // models start loading now, as a worker's would while it waits.
  const bspOnMain = bspModel(config) === 'main';
  const threads: Worker[] = extras.threads ?? (bspOnMain ? [] : spawnVcpuThreads(config.get('cpus')));
  let mainVcpu: MainThreadVcpu | undefined;
  if (bspOnMain) {
    const modelsLoading = loadDeviceModels(config.toJSON());
    modelsLoading.catch(() => undefined); // reported by vCPU 0 (its error), or unused when set-up fails first
    mainVcpu = new MainThreadVcpu(modelsLoading);
    threads.unshift(mainVcpu as unknown as Worker);
  }
  // The search for libuv's pool threads (-c 2 and more, APs on the pool)
  // starts first: the pool's threads start and park while createMachine
  // runs, so the search mostly finds them waiting when it looks.
  const poolWarnings: string[] = [];
  const poolSearch = searchPoolForAps(config, poolWarnings);
  let created: ReturnType<typeof createMachine>;
  try {
    created = createMachine(config);
  } catch (e) {
    for (const t of threads) void retireVcpuThread(t);
    throw e;
  }
  const { machine, ncpus, warnings } = created;
  trace('main: machine created');
  const signals = extras.signals ?? new SignalRouter();
  if (signals.first) {
    // Stopped before the VM ran: undo what createMachine made.
    for (const t of threads) void retireVcpuThread(t);
    cleanupMachine(machine, machine.vmObject.createdHere);
    if (!extras.signals) signals.dispose();
    return signalStatus(signals.first);
  }
  // vCPU 0's thread runs the devices; the APs share libuv's threadpool
  // (ap-pool.ts) unless vcpu.ap_model=thread, pinning or the pool's size
  // give each its own thread.
  let poolThreads: number[] | undefined;
  try {
    poolThreads = await poolSearch;
    warnings.push(...poolWarnings);
  } catch (e) {
    for (const t of threads) void retireVcpuThread(t);
    cleanupMachine(machine, machine.vmObject.createdHere);
    throw e;
  }
  trace('main: ap pool');
  const threadCount = poolThreads ? 1 : ncpus;
  while (threads.length < threadCount) threads.push(spawnVcpuThread());
  while (threads.length > threadCount) void retireVcpuThread(threads.pop()!);
  for (const w of warnings) process.stderr.write(`bhyve: ${w}\n`);

  const control = VcpuControl.create(ncpus);
  const kickTargets = new Map<number, KickTarget>(machine.vcpus.map((v, i) => [i, v]));
  const kicker = new Kicker(control, kickTargets);
  let apPool: ApPool | undefined;
  const doorbell = Doorbell.create(machine.vcpus[0]);
  const kickDeviceThread = (bits: number): void => doorbell.ring(bits);
  const requester = new VcpuRequester(ncpus, control, kicker);
  const timerSab = createTimerTable();
  const timerHost = new DeviceTimerHost(timerSab, () => kickDeviceThread(DEVICE_REQUEST.TIMERS));
  let controlServer: ControlServer | undefined;
  // Before any thread can be kicked (they learn their work below), for the
  // rest of the process's life (sys/kick-signal.ts).
  installKickHandler();

  const backends: UartBackendHost[] = [];
  let hostPorts: HostPorts | undefined;
  let display: DisplayHost | undefined;
  let gdb: GdbStub | undefined;
  let outcome: ExitRequest | undefined;
  let resolveOutcome!: (r: ExitRequest) => void;
  const outcomePromise = new Promise<ExitRequest>((r) => { resolveOutcome = r; });
  const finish = (req: ExitRequest): void => {
    if (outcome) return;
    outcome = req;
    control.stop();
    kicker.kickAll();
    resolveOutcome(req);
  };
  const claimAndFinish = (req: ExitRequest): void => { if (control.claimExit()) finish(req); };

  let guestRuns = false;
  signals.handleWith((sig: StopSignal) => {
    // SIGTERM presses the ACPI power button, as bhyve does, and the guest
    // decides; before the guest runs nobody could have enabled ACPI, and a
    // kick could find no vCPU thread to take it: it ends the run.
    if (sig === 'SIGTERM' && guestRuns) kickDeviceThread(DEVICE_REQUEST.POWER_BUTTON);
    else claimAndFinish({ kind: 'signal', signal: sig });
  });

  let watchdog: NodeJS.Timeout | undefined;
  const stats: Array<KvmStats | undefined> = [];
  try {
    trace('main: control set up');
    const streams: Record<string, UartStreamTransfer> = {};
    for (const com of ['com1', 'com2', 'com3', 'com4']) {
      const path = config.get(`lpc.${com}.path`);
      if (path === undefined) continue;
      const host = await openUartBackend(path, () => kickDeviceThread(DEVICE_REQUEST.POLL))
        .catch((e: unknown) => { throw userErrorWithPrefix(e, `${com}: `); });
      backends.push(host);
      streams[`lpc.${com}`] = host.transfer;
    }
    trace('main: uarts');
    // PCI UARTs (-s N,uart,path): the same backends, keyed by slot node.
    for (const u of pciUartBackends(config)) {
      const host = await openUartBackend(u.path, () => kickDeviceThread(DEVICE_REQUEST.POLL))
        .catch((e: unknown) => { throw userErrorWithPrefix(e, `uart at pci slot ${u.where}: `); });
      backends.push(host);
      streams[u.node] = host.transfer;
    }
    // virtio-net taps and virtio-console sockets, by slot node.
    hostPorts = await openHostPorts(config, () => kickDeviceThread(DEVICE_REQUEST.POLL), doorbell.transfer)
      .catch((e: unknown) => { throw userErrorWithPrefix(e, ''); });
    trace('main: host ports');
    // fbuf: the framebuffer file and its VNC server (devices/display).
    display = await openDisplay(config, machine.vmObject.dir, config.get('name') ?? '', () => kickDeviceThread(DEVICE_REQUEST.POLL),
      (m) => process.stderr.write(`bhyve: ${m}\n`), (slot, bitmap) => machine.vm.getDirtyLog(slot, bitmap))
      .catch((e: unknown) => { throw userErrorWithPrefix(e, ''); });

    trace('main: display');
    // -G: the debug server's socket is opened before the sandbox.
    gdb = await openGdbServer(config, machine, control, kicker, requester);
    trace('main: backends open');
    const mailboxes = machine.vcpus.map(() => Mailbox.create().sab);
    const sandbox = sandboxPlan(config, machine.vmObject);
    trace('main: sandbox planned');
    const started: Promise<void>[] = [];
    const stoppedAll: Promise<void>[] = [];
    threads.forEach((w, i) => {
      const cpusetSpec = config.get(`vcpu.${i}.cpuset`);
      const data: VcpuThreadData = {
        id: i,
        vcpuCount: ncpus,
        vcpuFd: machine.vcpus[i].fd,
        mmapSize: machine.vcpus[i].run.length,
        controlSab: control.sab,
        doorbell: doorbell.transfer,
        mailbox: i === 0 ? undefined : mailboxes[i],
        strictIo: config.getBool('x86.strictio', false),
        requestPort: requester.portFor(i),
        cpuset: cpusetSpec === undefined ? undefined : parseCpuset(i, cpusetSpec),
        sandbox,
        deviceHost: i !== 0 ? undefined : {
          vmFd: machine.vm.fd,
          mailboxes,
          memoryPath: machine.vmObject.memoryPath,
          legacyWindow: legacyWindowFor(config, machine.layout),
          bootromPath: machine.bootrom.find((b) => b.seg.kind === 'rom')?.seg.path,
          layout: machine.layout,
          config: config.toJSON(),
          streams,
          framebufferPath: display?.framebufferPath,
          hostPorts: { ...(hostPorts?.transfers ?? { net: {}, console: {} }), display: display?.transfers ?? {} },
          timerSab,
          fwcfgFiles: [...(extras.fwcfgFiles ?? [])],
          smbios: created.smbios,
        },
      };
      started.push(new Promise((resolve, reject) => {
        w.on('message', (m: VcpuThreadMessage) => {
          if (m.type === 'ready') resolve();
          else if (m.type === 'exit') finish(m.request);
          else if (m.type === 'debug') {
            if (gdb) gdb.onDebugExit(m.id, m.exception, BigInt(m.dr6));
            else { control.setDebugHold(m.id, false); }
          }
        });
        w.once('error', (e) => {
          reject(e);
          claimAndFinish({ kind: 'error', message: `vCPU ${i}: ${errorLine(e)}` });
        });
      }));
      stoppedAll.push(new Promise((resolve) => w.once('exit', () => resolve())));
      w.postMessage(data, [data.requestPort]);
    });
    if (poolThreads) {
      apPool = new ApPool({
        control, vcpus: machine.vcpus, mailboxes, ringDeviceThread: () => doorbell.ring(), deviceBus: mainVcpu?.bus, kvmRunAsync: mainVcpu?.kvmRunAsync,
        strictIo: config.getBool('x86.strictio', false), requestPort: (id) => requester.portFor(id),
        poolThreads, exit: claimAndFinish,
        debugExit: (id, exception, dr6) => { if (gdb) gdb.onDebugExit(id, exception, dr6); else control.setDebugHold(id, false); },
      });
      for (const [id, t] of apPool.targets()) kickTargets.set(id, t);
      stoppedAll.push(apPool.stopped);
    }
    trace('main: data posted');
    // While the vCPU threads build their devices: libuv's pool takes its part
    // of the sandbox, and the vCPUs' statistics and the control socket open
    // (bhyvectl; a request made before the guest runs waits for its vCPU to
    // serve it).
    const poolConfined = sandbox && confinePool(sandbox);
    poolConfined?.catch(() => undefined); // reported by enterSandbox
    for (const v of machine.vcpus) {
      const fd = v.statsFd();
      stats.push(fd >= 0 ? new KvmStats(fd) : undefined);
    }
    trace('main: stats fds');
    if (!outcome) {
      controlServer = await ControlServer.listen(machine.vmObject.controlSocketPath, controlHandlers({
        config, machine, control, requester, stats, finish: claimAndFinish, hostStats: () => display?.stats() ?? {},
      }));
    }
    trace('main: control socket');
    await Promise.race([Promise.all(started), outcomePromise]);
    trace('main: all ready');
    if (display?.wait && !outcome) await Promise.race([display.ready, outcomePromise]); // fbuf `wait`
    if (!outcome) {
      // Everything is open: the sandbox goes up before the guest runs.
      if (sandbox) {
        try { await enterSandbox(sandbox, poolConfined!); } catch (e) { throw new VmSetupError((e as Error).message); }
      }
      trace('main: sandboxed');
      timerHost.start();
      if (gdb && config.getBool('gdb.wait', false)) {
        // -G w: the vCPUs start held; the guest's first instruction waits
        // for the debugger.
        gdb.holdAtStart();
        process.stderr.write(`bhyve: waiting for a debugger on port ${gdb.port}\n`);
      }
      trace('main: go');
      traceModules('main: go');
      control.go();
      apPool?.start();
      guestRuns = true;
      // (vCPU 0 on this thread is never in KVM_RUN while the watchdog runs:
      // its `blocking` statistic says nothing then, so it is asked each time.)
      const haltStats = bspOnMain ? [undefined, ...stats.slice(1)] : stats;
      watchdog = setInterval(() => watchHalts(control, kicker, haltStats, claimAndFinish), HALT_WATCH_MS);
    }

    const req = await outcomePromise;
    trace('main: outcome');
    traceMemory('main: outcome');
    apPool?.stop();
    if (watchdog) clearInterval(watchdog);
    const grace = new Promise<void>((r) => setTimeout(r, STOP_GRACE_MS).unref());
    await Promise.race([Promise.all(stoppedAll), grace]);
    const notice = exitNotice(req);
    trace('main: threads stopped');
    if (req.kind === 'error') process.stderr.write(`bhyve: ${req.message}\n`);
    else if (notice !== undefined) process.stderr.write(`bhyve: ${notice}\n`);
    else if (process.env.BHYVE_DEBUG) process.stderr.write(`bhyve: ${describe(req)}\n`);
    const destroy = machine.vmObject.createdHere
      || (req.kind === 'poweroff' && config.getBool('destroy_on_poweroff', false));
    controlServer?.close(); // before the VM directory (and its descriptor) goes
    cleanupMachine(machine, destroy);
    trace('main: cleaned up');
    return exitStatusOf(req);
  } catch (e) {
    control.stop();
    kicker.kickAll();
    apPool?.stop();
    controlServer?.close();
    // The first error is the one to report; a clean-up that fails after it
    // (e.g. the normal path's clean-up already ran) must not replace it.
    try { cleanupMachine(machine, machine.vmObject.createdHere); } catch { /* reported below */ }
    throw e;
  } finally {
    if (watchdog) clearInterval(watchdog);
    controlServer?.close();
    gdb?.close();
    timerHost.stop();
    requester.close();
    for (const w of threads) void retireVcpuThread(w);
    for (const b of backends) await b.close();
    await hostPorts?.close();
    await display?.close();
    restoreTerminal();
    signals.release();
    if (!extras.signals) signals.dispose();
    for (const s of stats) s?.close();
  }
}

/** poolForAps, started before the VM is created (its vCPU count from the
 * config; an invalid one finds no pool here and createMachine reports
 * it). Its warnings go to `warnings`. */
function searchPoolForAps(config: ConfigTree, warnings: string[]): Promise<number[] | undefined> {
  let ncpus: number;
  try {
    ncpus = calcTopology(config).cpus;
  } catch {
    return Promise.resolve(undefined);
  }
  const search = poolForAps(config, ncpus, (w) => warnings.push(w));
  search.catch(() => undefined); // awaited (and reported) once the VM exists; not when its creation fails
  return search;
}

async function openGdbServer(config: ConfigTree, machine: ReturnType<typeof createMachine>['machine'],
  control: VcpuControl, kicker: Kicker, requester: VcpuRequester): Promise<GdbStub | undefined> {
  const port = Number(config.get('gdb.port') ?? '0');
  if (port === 0) return undefined;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new VmSetupError(`gdb: invalid port '${config.get('gdb.port')}'`);
  let address = config.get('gdb.address') ?? 'localhost';
  if (address === 'localhost') address = '127.0.0.1'; // bhyve's default bind
  const target = {
    vcpuCount: machine.vcpus.length,
    getState: async (id: number) => await requester.request(id, { op: 'get-state' }) as VcpuStateJson,
    setState: async (id: number, update: VcpuStateUpdate) => { await requester.request(id, { op: 'set-state', update }); },
    setGuestDebug: async (id: number, c: number, debugregs: bigint[] = []) => {
      await requester.request(id, { op: 'set-guest-debug', control: c, debugregs: debugregs.map((x) => `0x${x.toString(16)}`) });
    },
    hold: (id: number, held: boolean) => { control.setDebugHold(id, held); if (held) kicker.kick(id); },
    ram: (gpa: number) => {
      for (const c of machine.ram) {
        if (gpa >= c.gpa && gpa < c.gpa + c.map.length) return { bytes: c.map.bytes, offset: gpa - c.gpa };
      }
      for (const b of machine.bootrom) {
        if (gpa >= b.seg.gpa && gpa < b.seg.gpa + b.map.length) return { bytes: b.map.bytes, offset: gpa - b.seg.gpa, readonly: true };
      }
      return undefined;
    },
  };
  try {
    return await GdbStub.listen(address, port, target, (m) => process.stderr.write(`bhyve: ${m}\n`));
  } catch (e) {
    throw new VmSetupError(`gdb: cannot listen on ${address}:${port}: ${(e as Error).message}`);
  }
}

function describe(req: ExitRequest): string {
  switch (req.kind) {
    case 'reset': case 'poweroff': case 'halt': return `${req.kind}: ${req.why}`;
    case 'triplefault': return `triple fault on vCPU ${req.vcpu}`;
    case 'testdev': return `pc-testdev exit with value ${req.value}`;
    case 'signal': return `ended by ${req.signal}`;
    case 'error': return req.message;
  }
}

