// nlbd's life, start to exit: one `Daemon` whose phases run in order, and whose every change to
// the host registers its undo the moment it is made (resource-stack.ts). Whatever ends the life
// (SIGTERM or SIGINT in any phase, a refusal, a data plane failure, a fatal error in the host
// machine), the undo runs newest first from where it got to, so a host is never left with the
// cluster MAC, the cluster IPs, the table or the run files of an nlbd that is gone:
//
//   (signals)  SIGTERM/SIGINT/SIGHUP handlers, before anything changes on the host: a signal in
//              any phase stops the start-up at the next phase boundary and undoes it (exit 0);
//   load       config, key file, token file;
//   preflight  root, nft/conntrack/ip present, interface and dedicated IP there. Nothing on the
//              host has changed when nlbd refuses here, and the message says what to do;
//   claim      the network namespace's nlbd lock (netns-lock.ts: a second nlbd, of any cluster,
//              is refused before it touches the first's table), the retained state (a new
//              incarnation, synced to disk before any heartbeat can go out; the suspended state
//              kept across restarts), then the control socket, the heartbeat port and the
//              optional listeners;
//   clean      what a crashed predecessor left: cluster IPs, cluster MAC, the nftables tables,
//              and every connection to the cluster IPs (its clients were reset by the peers
//              that took its buckets);
//   program    the filter with nothing owned: it is in place before the first VIP packet;
//   attach     the run file with the interface's own MAC, then the cluster MAC, then the
//              cluster IPs (cluster-interface.ts);
//   run        the host driver steps the protocol core with real timers and UDP multicast;
//              `nlb reload` (or SIGHUP) re-reads the config and applies it atomically;
//   stop       the undo: the link watch, `stop` announced to the peers (they take over at once),
//              the cluster IPs and MAC, the tables, the sockets, the lock, the signal handlers.
//
// NLBD_TEST_PAUSE_AT=<phase> (tests only, README "Development") makes nlbd wait before that
// phase until a signal arrives, so a test can stop it at an exact point of its start-up.
import path from 'node:path';
import type { CommandReply } from '../core/protocol.js';
import { cleanupStale } from '../dataplane/dataplane.js';
import { localRunner, type Runner } from '../dataplane/exec.js';
import { IpRoute } from '../dataplane/iproute.js';
import { MonotonicClock } from './clock.js';
import type { ReloadReply } from '../control/protocol.js';
import { ControlSocketError } from './control-server.js';
import { type DaemonParts, buildParts } from './daemon-parts.js';
import { EventJournal } from './events.js';
import type { EventRecord, EventSink } from './event-names.js';
import { watchInterfaces } from './interface-events.js';
import { guardInterface, interfaceCheckMsDefault } from './interface-guard.js';
import { hasCarrier, linkPollMsDefault, watchLink } from './link-watch.js';
import { createDaemonLog, type DaemonLog } from './log.js';
import { NetnsLockBusy, claimDaemonLocks } from './netns-lock.js';
import { defaultSocketPath, stateDirOf, stateFilePath } from './paths.js';
import { type DaemonPhase, daemonPhases, testPauseEnv } from './phases.js';
import { ResourceStack } from './resource-stack.js';
import { realtimePriorityDefault, scheduleDaemon } from './scheduling.js';
import { RetainedHostState } from './daemon-retained.js';
import {
  type DaemonInputs,
  type DaemonOptions,
  type ListenAddress,
  StartRefused,
  daemonExitCodes,
  loadInputs,
  preflight,
} from './start-checks.js';
import { TransportError } from './transport.js';

export { type ListenAddress, daemonExitCodes } from './start-checks.js';
import { errorText } from '../core/error-text.js';

/** A stop was requested before the start-up finished: unwind from there. */
class Interrupted extends Error {
  constructor(phase: DaemonPhase) {
    super(`stopped before phase '${phase}'`);
    this.name = 'Interrupted';
  }
}

/**
 * Runs nlbd until SIGTERM/SIGINT (or a fatal error) and resolves with the exit code. Refusals
 * to start print `nlbd: <problem>` and `hint: <fix>` on stderr.
 */
export async function runDaemon(options: DaemonOptions): Promise<number> {
  return new Daemon(options).run();
}

class Daemon {
  private readonly resources = new ResourceStack();
  private readonly journal = new EventJournal();
  private log: DaemonLog | undefined;
  /** The phase running, or about to run when a stop interrupts the start-up. */
  private phase: DaemonPhase = 'load';
  private stopReason: string | undefined;
  private nftPriority: number | undefined; // for the long-lived nft process (scheduling.ts)
  private wakeStopWaiter: () => void = () => undefined;
  private readonly stopRequested = new Promise<void>((resolve) => {
    this.wakeStopWaiter = resolve;
  });
  private fatalError: Error | undefined;
  private readonly retained = new RetainedHostState((record) => this.logEvent(record));
  private stopReply: CommandReply | undefined;
  private reload: (() => Promise<ReloadReply>) | undefined;

  constructor(private readonly options: DaemonOptions) {}

  async run(): Promise<number> {
    this.installSignalHandlers();
    let refusal: StartRefused | undefined;
    try {
      await this.lifeCycle();
    } catch (error) {
      if (error instanceof StartRefused) {
        refusal = error;
      } else if (!(error instanceof Interrupted)) {
        // A bug: undo what can be undone, then let main.ts report it.
        await this.releaseAll();
        throw error;
      }
    }
    return this.finish(refusal);
  }

  private async lifeCycle(): Promise<void> {
    const pauseAt = testPausePhase();
    const inputs = await this.enter('load', pauseAt, () => loadInputs(this.options));
    const config = inputs.config;
    this.log = createDaemonLog({ by: config.host.id, cluster: config.cluster.name });
    const runner = localRunner();
    const ipRoute = new IpRoute(runner);
    // Realtime priority before anything else runs, so every helper started later inherits it.
    const priority = this.options.realtimePriority ?? realtimePriorityDefault;
    this.nftPriority = await scheduleDaemon(runner, priority, this.logEvent);
    await this.enter('preflight', pauseAt, () => preflight(config, runner, ipRoute));
    const parts = await this.enter('claim', pauseAt, () => this.claim(inputs, runner, ipRoute));
    await this.enter('clean', pauseAt, () => settingUp(() => this.clean(parts, ipRoute)));
    await this.enter('program', pauseAt, () => settingUp(() => this.program(parts)));
    await this.enter('attach', pauseAt, () => settingUp(() => this.attach(parts)));
    await this.enter('run', pauseAt, () => this.serve(parts));
  }

  /** Starts a phase, unless a stop was requested (then it unwinds from here). */
  private async enter<T>(
    phase: DaemonPhase,
    pauseAt: DaemonPhase | undefined,
    body: () => Promise<T>,
  ): Promise<T> {
    this.phase = phase;
    if (pauseAt === phase && this.stopReason === undefined) {
      process.stderr.write(`nlbd: test pause before phase '${phase}' (${testPauseEnv})\n`);
      this.logEvent({ event: 'test pause', phase });
      // Nothing else may keep the event loop alive yet: without this node would just exit.
      const keepAlive = setInterval(() => undefined, 60_000);
      await this.stopRequested;
      clearInterval(keepAlive);
    }
    if (this.stopReason !== undefined) {
      throw new Interrupted(phase);
    }
    return body();
  }

  // ---------------------------------------------------------------- phases

  /** The lock, the retained state, then the sockets: a second nlbd stops at the first. */
  private async claim(
    inputs: DaemonInputs,
    runner: Runner,
    ipRoute: IpRoute,
  ): Promise<DaemonParts> {
    const config = inputs.config;
    const clusterName = config.cluster.name;
    const hostId = config.host.id;
    const socketPath = this.options.socketPath ?? defaultSocketPath(clusterName, hostId);
    try {
      const locks = await claimDaemonLocks(config, {
        cluster: clusterName,
        hostId,
        pid: process.pid,
        socket: socketPath,
        configPath: path.resolve(this.options.configPath),
      });
      for (const lock of locks) {
        this.resources.push(`release the lock @${lock.name.slice(1)}`, () => lock.release());
      }
    } catch (error) {
      if (error instanceof NetnsLockBusy) throw new StartRefused(error.message, error.hint);
      throw error;
    }

    const { incarnation, initialState } = this.retained.begin(
      stateDirOf(this.options.stateDir),
      clusterName,
      hostId,
    );
    const parts = buildParts({
      options: this.options,
      inputs,
      incarnation,
      initialState,
      clock: new MonotonicClock(),
      runner,
      ipRoute,
      nftPriority: this.nftPriority,
      socketPath,
      runFile: stateFilePath(clusterName, hostId),
      journal: this.journal,
      log: this.logEvent,
      onFatal: (error) => {
        this.fatalError = error;
        this.requestStop('fatal error');
      },
      onReply: (command, reply) => {
        // The suspended state is kept across restarts (NLB's "retain suspended state").
        if (reply.code !== 'ok') return;
        if (command.verb === 'suspend') this.retained.setSuspended(true);
        if (command.verb === 'resume') this.retained.setSuspended(false);
      },
    });
    this.reload = parts.reload;

    try {
      await parts.server.listen(socketPath);
      this.resources.push('close the control socket', () => parts.server.close());
      await parts.transport.start(parts.driver.onDatagram);
      this.resources.push('close the heartbeat socket', () => parts.transport.close());
    } catch (error) {
      if (error instanceof ControlSocketError || error instanceof TransportError) {
        throw new StartRefused(error.message, error.hint);
      }
      throw error;
    }
    const { controlListen, metricsListen } = this.options;
    const remote = parts.remoteServer;
    if (controlListen !== undefined && remote !== undefined) {
      await listenOrRefuse('remote control', '--control-listen', controlListen, () =>
        remote.listenTcp(controlListen.address, controlListen.port),
      );
      this.resources.push('close the remote control listener', () => remote.close());
    }
    if (metricsListen !== undefined) {
      const server = await listenOrRefuse('metrics', '--metrics-listen', metricsListen, () =>
        parts.metrics.listen(metricsListen.address, metricsListen.port),
      );
      this.resources.push('close the metrics listener', () => {
        server.closeAllConnections();
        return new Promise<void>((resolve) => server.close(() => resolve()));
      });
    }
    return parts;
  }

  /** Removes what a crashed predecessor left, and its connections. */
  private async clean(parts: DaemonParts, ipRoute: IpRoute): Promise<void> {
    const config = parts.config();
    const iface = parts.clusterInterface;
    // Registered before the first nft command: the long-lived nft process may start on any.
    this.resources.push('stop nft', () => parts.nft.close());
    const cleaned = await cleanupStale(parts.nft, ipRoute, {
      ...parts.clusterInterface.setup,
      tableName: parts.tableName,
      ...(iface.rememberedMac === undefined ? {} : { originalMac: iface.rememberedMac }),
    });
    const flushed = await parts.dataplane.flushClusterIps(config.cluster.clusterIps);
    if (cleaned.removedAddresses.length > 0 || cleaned.restoredMac !== undefined || flushed > 0) {
      this.logEvent({
        event: 'stale state cleaned',
        removedAddresses: cleaned.removedAddresses,
        restoredMac: cleaned.restoredMac ?? null,
        connectionsDropped: flushed,
      });
    }
    if (cleaned.warning !== undefined) {
      this.logEvent({ event: 'shutdown problem', problem: cleaned.warning });
    } else {
      iface.discardRemembered();
    }
  }

  /** The filter with nothing owned, before the interface takes the cluster IPs. */
  private async program(parts: DaemonParts): Promise<void> {
    // Registered first: removing an absent table is a no-op, a half-applied one cannot exist.
    this.resources.push('remove the nftables tables', () =>
      parts.dataplane.remove(parts.tableName),
    );
    await parts.driver.programInitial();
  }

  private async attach(parts: DaemonParts): Promise<void> {
    const iface = parts.clusterInterface;
    // Registered first: detach also undoes an attach that failed half-way (and the route
    // announcer's guard process goes after it, once the routes are withdrawn).
    if (parts.routed !== undefined)
      this.resources.push('stop the route announcer', () => parts.routed?.close());
    this.resources.push('detach the cluster interface', () => iface.detach());
    await iface.attach();
    if (iface.guardWarning !== undefined) {
      this.logEvent({ event: 'mac guard missing', warning: iface.guardWarning });
    }
    if (iface.announceProblem !== undefined) {
      this.logEvent({ event: 'announce failed', warning: iface.announceProblem });
    }
  }

  /** Runs the protocol until a stop is requested. */
  private async serve(parts: DaemonParts): Promise<void> {
    const { driver } = parts;
    driver.start();
    this.resources.push('announce the stop to the peers', async () => {
      this.stopReply = await driver.shutdown();
    });
    // Every link and address change in the namespace, as it happens (interface-events.ts).
    const events = watchInterfaces();
    this.resources.push('stop the interface monitor', () => events.stop());
    // Carrier loss on the cluster interface: take no buckets until it is back (link-watch.ts).
    const stopLinkWatch = watchLink(
      parts.clusterInterface.setup.interface,
      (up) => {
        driver.command({ verb: 'link', up }).catch(() => undefined);
      },
      linkPollMsDefault,
      hasCarrier,
      events,
    );
    this.resources.push('stop watching the link', stopLinkWatch);
    // Cluster IPs or the cluster MAC taken away by hand are put back (interface-guard.ts).
    this.resources.push(
      'stop guarding the interface',
      guardInterface(
        parts.clusterInterface,
        (record) => this.logEvent(record),
        interfaceCheckMsDefault,
        events,
      ),
    );
    const config = parts.config();
    // The port rules' health checks (health.ts): reports reach peers with the next heartbeat.
    parts.health.start(config);
    this.resources.push('stop the health checks', () => parts.health.stop());
    const { controlListen, metricsListen } = this.options;
    this.logEvent({
      event: 'nlbd started',
      incarnation: parts.identity.incarnation,
      pid: process.pid,
      socket: parts.identity.socket,
      controlListen:
        controlListen === undefined ? null : `${controlListen.address}:${controlListen.port}`,
      metricsListen:
        metricsListen === undefined ? null : `${metricsListen.address}:${metricsListen.port}`,
      config: parts.identity.configPath,
      interface: parts.clusterInterface.setup.interface,
      clusterIps: config.cluster.clusterIps.map((ip) => ip.text),
      heartbeat: `${config.cluster.heartbeat.group.text}:${config.cluster.heartbeat.port}`,
      retainedState: this.retained.file ?? null,
      version: parts.identity.version,
    });
    await this.stopRequested;
  }

  // ---------------------------------------------------------------- stop

  private requestStop(reason: string): void {
    if (this.stopReason !== undefined) {
      return;
    }
    this.stopReason = reason;
    this.wakeStopWaiter();
  }

  /** Undoes everything registered and logs what could not be undone. */
  private async releaseAll(): Promise<string[]> {
    const problems = await this.resources.releaseAll();
    for (const problem of problems) {
      this.logEvent({ event: 'shutdown problem', problem });
    }
    return problems;
  }

  private async finish(refusal: StartRefused | undefined): Promise<number> {
    if (refusal !== undefined) {
      process.stderr.write(`nlbd: ${refusal.message}\nhint: ${refusal.hint}\n`);
      this.log?.event({ event: 'start refused', problem: refusal.message, hint: refusal.hint });
      await this.releaseAll();
      return refusal.exitCode;
    }
    const reason = this.stopReason ?? 'unknown';
    this.logEvent({ event: 'nlbd stopping', reason, phase: this.phase });
    const problems = await this.releaseAll();
    this.logEvent({
      event: 'nlbd stopped',
      reason,
      phase: this.phase,
      stopReply: this.stopReply?.code ?? null,
      problems: problems.length,
    });
    return this.fatalError !== undefined || problems.length > 0
      ? daemonExitCodes.failed
      : daemonExitCodes.ok;
  }

  // ---------------------------------------------------------------- events and signals

  /** Every event goes to the log and to the journal `nlb display` and `nlb events` read. */
  private readonly logEvent: EventSink = (record: EventRecord) => {
    this.log?.event(record);
    this.journal.record(record);
  };

  /**
   * Installed before anything changes on the host, removed last. The first SIGTERM or SIGINT
   * stops nlbd from whatever phase it is in; a second one, while it is stopping, exits at once
   * (the next start cleans up). SIGHUP reloads the config once nlbd runs; by default it would
   * kill the process without any cleanup, so it is caught from the start.
   */
  private installSignalHandlers(): void {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        this.logEvent({ event: 'nlbd forced exit', signal });
        process.exit(daemonExitCodes.failed);
      }
      this.requestStop(signal);
    };
    const onHangup = (): void => {
      const reload = this.reload;
      if (reload === undefined || this.phase !== 'run' || this.stopReason !== undefined) {
        this.logEvent({
          event: 'reload on SIGHUP',
          code: 'refused',
          message: `nlbd is not running (phase ${this.phase}${this.stopReason === undefined ? '' : ', stopping'})`,
        });
        return;
      }
      // The same as `nlb reload`, whose answer the log then carries as 'config reloaded' or
      // 'config rejected'.
      reload().then(
        (reply) =>
          this.logEvent({ event: 'reload on SIGHUP', code: reply.code, message: reply.message }),
        (error: unknown) =>
          this.logEvent({ event: 'reload on SIGHUP', code: 'failed', message: errorText(error) }),
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    process.on('SIGHUP', onHangup);
    this.resources.push('remove the signal handlers', () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      process.off('SIGHUP', onHangup);
    });
  }
}

/** NLBD_TEST_PAUSE_AT, checked: a misspelt phase would silently test nothing. */
function testPausePhase(): DaemonPhase | undefined {
  const value = process.env[testPauseEnv];
  if (value === undefined || value === '') {
    return undefined;
  }
  if (!(daemonPhases as readonly string[]).includes(value)) {
    throw new StartRefused(
      `${testPauseEnv}=${value} names no phase`,
      `use one of ${daemonPhases.join(', ')}, or unset it (it is for tests only)`,
      daemonExitCodes.usage,
    );
  }
  return value as DaemonPhase;
}

/** A failure while changing the data plane is a refusal: it was undone, the message says why. */
async function settingUp(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    if (error instanceof StartRefused || error instanceof Interrupted) {
      throw error;
    }
    throw new StartRefused(
      `could not set up the data plane: ${errorText(error)}`,
      'what was set up has been undone (any problem is logged as a shutdown problem); check that the kernel has nftables and conntrack support',
    );
  }
}

/** Binds an optional listener exactly where told, or refuses saying what to change. */
async function listenOrRefuse<T>(
  what: string,
  flag: string,
  where: ListenAddress,
  body: () => Promise<T>,
): Promise<T> {
  try {
    return await body();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new StartRefused(
      `cannot listen for ${what} on ${where.address}:${where.port}: ${code ?? String(error)}`,
      code === 'EADDRNOTAVAIL'
        ? `${where.address} is not an address of this host; give ${flag} one of its addresses`
        : code === 'EADDRINUSE'
          ? `another process listens there; give ${flag} another port`
          : `check ${flag}`,
    );
  }
}
