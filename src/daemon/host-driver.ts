/* eslint-disable max-lines -- the carry-out order is in core now; the driver is split next (issue 10) */
// The daemon's side of the driver contract (src/core/protocol.ts): feed the host machine its
// inputs (a tick when it asked to be woken, every heartbeat datagram, operator commands) one at
// a time, and carry out each Ready completely, in the order of `carryOutSteps`
// (src/core/carry-out.ts), before the next input is stepped. The daemon's part in each step:
// flush through conntrack (and `ss -K` on a rejoin), program through nft and wait for the
// kernel, refresh the lease before the heartbeats leave (a program already did), log the
// events, and keep one timer, set to the wake time.
//
// Failures of the data plane are operating errors: the kernel keeps its previous state, the
// driver logs why, and it withholds heartbeats until the kernel matches what the machine
// decided. A host that cannot program its kernel thus falls silent; its lease runs out before
// its peers declare it dead and take its buckets, so no bucket is ever served twice.
//
// A table someone else deleted or changed is put back by the Dataplane itself (its lease
// refresh hands over what it restored, logged as `dataplane restored`). When it cannot be put
// back (nft fails or hangs) the data plane is *lost*, and the host must not answer for the
// cluster IPs without its filter:
//   1. `dataplane lost` is logged with the reason and what to do,
//   2. onDataplaneLost: the daemon detaches the interface (cluster IPs, then the MAC),
//   3. the machine is told `link down`: it takes no buckets, and heartbeats stay withheld, so
//      the peers declare the host dead and take its buckets;
// then, at most once per restoreRetryMs, the whole table is tried again. Once it is back:
//   4. onDataplaneRestored: the daemon attaches the interface again (the filter is in place),
//   5. `link up` (if the carrier is up): a host silent longer than the detection time drops
//      its old connections to the cluster IPs before it takes buckets again, as after a link
//      that was down that long.
// Heartbeats that cannot leave (the dedicated IP removed, no route: the send fails) are the
// same danger seen from the peers: they declare the host dead and take its buckets while its
// kernel, whose lease every attempt refreshes, still takes new flows for them. Once sends have
// failed for `tolerance - 2` periods since the last one that left, the machine is told `link
// down` (it takes no buckets; established connections stay), well before the peers' detection
// time; the first heartbeat that leaves again brings the link back up (event `heartbeats
// blocked`, then `heartbeats flowing`).
// The carrier (the daemon's `link` commands), the data plane and the heartbeats' way out all
// decide whether the link is up for the machine: it is up only when all three are.
import { carryOutSteps } from '../core/carry-out.js';
import type { HostDetails, HostMachine } from '../core/host.js';
import type { EventRecord, EventSink } from './event-names.js';
import type {
  Command,
  CommandReply,
  Input,
  Ownership,
  ProtocolEvent,
  Ready,
} from '../core/protocol.js';
import type { BucketConnections } from '../dataplane/conntrack.js';
import {
  DataplaneLostError,
  type LeaseRefresh,
  type ProgramResult,
  type RestoreReport,
} from '../dataplane/dataplane.js';
import type { DataplaneSpec } from '../dataplane/render.js';
import type { Clock } from './clock.js';
import type { DatagramSource, Transport } from './transport.js';
import { errorText } from '../core/error-text.js';
import type { DriverView, LatencyView } from '../control/protocol.js';

/** What the driver needs of the data plane; `Dataplane` (src/dataplane) is the real one. */
export interface DataplanePort {
  /** Throws DataplaneLostError while the data plane is lost and this retry did not bring it back. */
  program(spec: DataplaneSpec): Promise<ProgramResult>;
  /**
   * Refreshes the lease; `Dataplane.refreshLease` also hands over the tables it restored since
   * the last call. Throws DataplaneLostError when the table is gone and cannot be put back.
   */
  refreshLease(): Promise<LeaseRefresh>;
  flush(rule: number, buckets: readonly number[]): Promise<number>;
  /**
   * Drops every connection to the cluster IPs and kills their sockets (conntrack by
   * destination, `ss -K`): what a host that rejoins after its peers declared it dead owes
   * them (DESIGN.md §4). The daemon binds it to `Dataplane.flushClusterIps`.
   */
  flushAll(): Promise<number>;
  connections(): Promise<readonly BucketConnections[]>;
  /**
   * Subscribes to a data plane found lost on its own (a restore it started itself, on what
   * nft monitor reported, failed): the driver fails closed at once instead of at its next
   * heartbeat, a period later, during which the host would answer for the cluster IPs
   * without a filter. `Dataplane.watchLost`.
   */
  watchLost?(listener: (reason: string) => void): void;
}

/** One log record; `event` is a stable name (DESIGN.md vocabulary), the rest depends on it. */

/**
 * 32 hosts × one heartbeat per period is 32 datagrams; 1,024 queued is 32 periods of backlog,
 * which only a flood or a stuck kernel produces. Beyond it datagrams are dropped and counted:
 * a lost heartbeat is something the protocol already survives.
 */
export const datagramsQueuedMax = 1_024;
/** Commands come from the control socket, one per connection; more than this is a runaway script. */
export const commandsQueuedMax = 64;
/** How often a draining host counts its remaining connections (conntrack -L costs ~5 ms). */
export const drainPollMsDefault = 500;
/** Program latencies kept for the percentiles `params` shows. */
const latencySamplesMax = 256;
/** A data plane failing on every heartbeat logs once per this interval, not 5 times a second. */
const errorReportMs = 5_000;
/**
 * While the data plane is lost, the whole table is tried again this often: a whole-table apply
 * costs ~20 ms, so a second apart is ~2% of a core while nft keeps failing, and a host that
 * comes back a second later than it could have costs nothing its peers do not already cover.
 */
export const restoreRetryMsDefault = 1_000;

export interface HostDriverOptions {
  readonly machine: HostMachine;
  readonly clock: Clock;
  readonly transport: Transport;
  readonly dataplane: DataplanePort;
  /** The data plane spec for an ownership (dataplaneSpecFor with the daemon's config). */
  readonly specFor: (ownership: Ownership) => DataplaneSpec;
  readonly log: EventSink;
  readonly drainPollMs?: number;
  /** Called when the host machine throws: an assertion, a bug; the daemon shuts down. */
  readonly onFatal?: (error: Error) => void;
  /**
   * Called when the machine accepted a `reload`, in the same step and before its Ready is
   * carried out: the daemon switches `specFor` to the new config there, so the kernel gets the
   * new port rules together with the ownership the machine decided under them.
   */
  readonly onReload?: (command: Command & { readonly verb: 'reload' }) => void;
  /**
   * Called with every command the machine answered, once its Ready is carried out and before
   * the reply reaches whoever asked (the daemon retains the suspended state there, so once
   * `nlb suspend` answers, a restart keeps it).
   */
  readonly onReply?: (command: Command, reply: CommandReply) => void;
  /**
   * Called when the data plane is lost (its table is gone or altered and cannot be put back):
   * the host must stop answering for the cluster IPs, so the daemon detaches the interface
   * (removes the cluster IPs, restores the original MAC). Awaited before anything else is
   * stepped; called again to undo an onDataplaneRestored that threw. Without it the host keeps
   * its cluster IPs, unfiltered, while it is lost. An error is logged, not retried.
   */
  readonly onDataplaneLost?: (reason: string) => void | Promise<void>;
  /**
   * Called when a lost data plane is back (the whole table committed): the daemon attaches the
   * interface again. Awaited before the machine is told the link is up. When it throws, the
   * data plane counts as lost still: onDataplaneLost undoes what it did at once, and both are
   * tried again at the next retry.
   */
  readonly onDataplaneRestored?: () => void | Promise<void>;
  /** How often a lost data plane is tried again. */
  readonly restoreRetryMs?: number;
  /**
   * The heartbeat period and tolerance in force (the config may change on reload): how long
   * heartbeats may fail to leave before the host takes itself out. Without it, never.
   */
  readonly heartbeat?: () => { readonly periodMs: number; readonly tolerance: number };
}

type Job =
  | { readonly kind: 'tick' }
  /** A command of the driver's own (the data plane's side of `link`), stepped before the rest. */
  | { readonly kind: 'internal'; readonly command: Command }
  /** The data plane reported itself lost between steps: fail closed before anything else. */
  | { readonly kind: 'lost'; readonly reason: string }
  | { readonly kind: 'datagram'; readonly bytes: Uint8Array; readonly queuedAtMs: number }
  | {
      readonly kind: 'command';
      readonly command: Command;
      readonly resolve: (reply: CommandReply) => void;
      readonly reject: (error: Error) => void;
    };

// The driver's statistics are part of the control protocol (`params`), so their shape is defined
// there, once.
export type LatencyStats = LatencyView;
export type DriverStats = DriverView;

/** The kernel tables' story, for `params` and metrics. */
export interface DataplaneState {
  /** Tables put back after someone else deleted or changed them (and lost ones brought back). */
  readonly restores: number;
  /** Times the data plane was lost (its table could not be put back). */
  readonly losses: number;
  /** Why the data plane is lost now, or null. */
  readonly lost: string | null;
}

class Latency {
  private samples: number[] = [];
  count = 0;
  last: number | null = null;
  max: number | null = null;

  add(ms: number): void {
    this.count++;
    this.last = ms;
    this.max = this.max === null ? ms : Math.max(this.max, ms);
    this.samples.push(ms);
    if (this.samples.length > latencySamplesMax) {
      this.samples.shift();
    }
  }

  stats(): LatencyStats {
    const sorted = [...this.samples].sort((a, b) => a - b);
    const at = (q: number): number | null =>
      sorted.length === 0
        ? null
        : round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);
    return {
      count: this.count,
      lastMs: this.last === null ? null : round(this.last),
      maxMs: this.max === null ? null : round(this.max),
      p50Ms: at(0.5),
      p99Ms: at(0.99),
    };
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

export class HostDriver {
  private readonly machine: HostMachine;
  private readonly clock: Clock;
  private readonly transport: Transport;
  private readonly dataplane: DataplanePort;
  private readonly specFor: (ownership: Ownership) => DataplaneSpec;
  private readonly log: EventSink;
  private readonly drainPollMs: number;
  private readonly onFatal: (error: Error) => void;
  private readonly onReload: (command: Command & { readonly verb: 'reload' }) => void;
  private readonly onReply: (command: Command, reply: CommandReply) => void;
  private readonly onDataplaneLost: ((reason: string) => void | Promise<void>) | undefined;
  /** When the last heartbeat left (clock ms), or undefined before the first. */
  private lastSentMs: number | undefined;
  private readonly heartbeat:
    (() => { readonly periodMs: number; readonly tolerance: number }) | undefined;
  /** Set while heartbeats cannot leave and the machine was told the link is down for it. */
  private sendBlocked: { sinceMs: number } | undefined;
  private readonly onDataplaneRestored: (() => void | Promise<void>) | undefined;
  private readonly restoreRetryMs: number;

  private readonly queue: Job[] = [];
  private datagramsQueued = 0;
  private commandsQueued = 0;
  private tickQueued = false;
  private running = false;
  private started = false;
  private closing = false;
  private fatal: Error | undefined;
  private idleWaiters: (() => void)[] = [];
  private cancelTimer: (() => void) | undefined;
  private cancelDrainPoll: (() => void) | undefined;
  private drainPolling = false;

  /** What the machine last asked the kernel to do, and what the kernel has (JSON keys). */
  private wanted: Ownership;
  private wantedKey: string;
  private programmedKey: string | undefined;
  private readonly lastErrorReport = new Map<string, { atMs: number; suppressed: number }>();
  /** Set while the data plane is lost; `lastAttemptMs` paces the retries. */
  private lost: { reason: string; sinceMs: number; lastAttemptMs: number } | undefined;
  /** The carrier as the daemon last reported it (`link` commands); up until told otherwise. */
  private carrierUp = true;

  private readonly programLatency = new Latency();
  private readonly queueWait = new Latency();
  private counts = {
    ticks: 0,
    datagrams: 0,
    commands: 0,
    sets: 0,
    table: 0,
    queueDepthMax: 0,
    datagramsDropped: 0,
    heartbeatsWithheld: 0,
    leaseRefreshes: 0,
    dataplaneErrors: 0,
    sendErrors: 0,
    dataplaneRestores: 0,
    dataplaneLosses: 0,
  };

  constructor(options: HostDriverOptions) {
    this.machine = options.machine;
    this.clock = options.clock;
    this.transport = options.transport;
    this.dataplane = options.dataplane;
    this.specFor = options.specFor;
    this.log = options.log;
    this.drainPollMs = options.drainPollMs ?? drainPollMsDefault;
    this.onFatal = options.onFatal ?? (() => undefined);
    this.onReload = options.onReload ?? (() => undefined);
    this.onReply = options.onReply ?? (() => undefined);
    this.onDataplaneLost = options.onDataplaneLost;
    this.onDataplaneRestored = options.onDataplaneRestored;
    this.restoreRetryMs = options.restoreRetryMs ?? restoreRetryMsDefault;
    this.heartbeat = options.heartbeat;
    options.dataplane.watchLost?.((reason) => {
      if (!this.closing) this.enqueueFirst({ kind: 'lost', reason });
    });
    this.wanted = this.machine.status().ownership;
    this.wantedKey = JSON.stringify(this.wanted);
  }

  /**
   * Programs the ownership the machine starts with (nothing owned) as a whole table: the
   * daemon calls this before it gives the interface the cluster IPs, so no VIP packet ever
   * meets an unfiltered host. Throws when the kernel refuses: the daemon cannot run then.
   */
  async programInitial(): Promise<ProgramResult> {
    const result = await this.dataplane.program(this.specFor(this.wanted));
    this.programmedKey = this.wantedKey;
    return result;
  }

  /** The datagram handler to give the transport; datagrams queue until `start`. */
  readonly onDatagram = (bytes: Uint8Array, _from: DatagramSource): void => {
    if (this.closing) {
      return;
    }
    if (this.datagramsQueued >= datagramsQueuedMax) {
      this.counts.datagramsDropped++;
      return;
    }
    this.enqueue({ kind: 'datagram', bytes, queuedAtMs: this.clock.nowMs() });
  };

  /** Starts stepping: a first tick now, then whenever the machine asks to be woken. */
  start(): void {
    if (this.started) {
      throw new Error('HostDriver.start: already started');
    }
    this.started = true;
    this.scheduleDrainPoll();
    this.enqueueTick();
  }

  /** Steps an operator command; resolves with the machine's reply once its Ready is carried out. */
  command(command: Command): Promise<CommandReply> {
    if (this.closing) {
      return Promise.reject(new Error('nlbd is shutting down: commands are no longer accepted'));
    }
    if (this.commandsQueued >= commandsQueuedMax) {
      return Promise.reject(
        new Error(`${commandsQueuedMax} commands are already waiting; try again in a moment`),
      );
    }
    return new Promise((resolve, reject) => {
      this.enqueue({ kind: 'command', command, resolve, reject });
    });
  }

  /**
   * Announces the stop to the peers (they take over at once instead of after the detection
   * time), carries it out, then stops stepping. The caller then detaches the interface.
   */
  async shutdown(): Promise<CommandReply | undefined> {
    let reply: CommandReply | undefined;
    if (!this.closing && this.fatal === undefined) {
      try {
        reply = await this.command({ verb: 'stop' });
      } catch {
        reply = undefined;
      }
    }
    this.closing = true;
    this.cancelTimer?.();
    this.cancelDrainPoll?.();
    await this.idle();
    return reply;
  }

  /** Resolves once no input is queued or being carried out. */
  idle(): Promise<void> {
    if (!this.running && (this.queue.length === 0 || !this.started)) {
      return Promise.resolve();
    }
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  status(): ReturnType<HostMachine['status']> {
    return this.machine.status();
  }

  details(): HostDetails {
    return this.machine.details();
  }

  /** True when the kernel holds what the machine last decided. */
  get dataplaneInSync(): boolean {
    return this.programmedKey === this.wantedKey;
  }

  stats(): DriverStats {
    const c = this.counts;
    return {
      steps: { ticks: c.ticks, datagrams: c.datagrams, commands: c.commands },
      program: { ...this.programLatency.stats(), sets: c.sets, table: c.table },
      datagramQueueWait: this.queueWait.stats(),
      queueDepthMax: c.queueDepthMax,
      datagramsDropped: c.datagramsDropped,
      heartbeatsWithheld: c.heartbeatsWithheld,
      leaseRefreshes: c.leaseRefreshes,
      dataplaneErrors: c.dataplaneErrors,
      sendErrors: c.sendErrors,
    };
  }

  dataplaneState(): DataplaneState {
    return {
      restores: this.counts.dataplaneRestores,
      losses: this.counts.dataplaneLosses,
      lost: this.lost?.reason ?? null,
    };
  }

  // ---------------------------------------------------------------- the loop

  private enqueue(job: Job): void {
    if (job.kind === 'tick') {
      if (this.tickQueued) {
        return;
      }
      this.tickQueued = true;
    }
    if (job.kind === 'datagram') this.datagramsQueued++;
    if (job.kind === 'command') this.commandsQueued++;
    this.queue.push(job);
    this.counts.queueDepthMax = Math.max(this.counts.queueDepthMax, this.queue.length);
    if (this.started) {
      void this.pump();
    }
  }

  private enqueueTick(): void {
    this.enqueue({ kind: 'tick' });
  }

  /** Steps `command` before anything already queued: the data plane's side of `link`. */
  private stepFirst(command: Command): void {
    this.enqueueFirst({ kind: 'internal', command });
  }

  /** Runs `job` before anything already queued (the driver's own urgent work). */
  private enqueueFirst(job: Job): void {
    this.queue.unshift(job);
    if (this.started) {
      void this.pump();
    }
  }

  private async pump(): Promise<void> {
    if (this.running) {
      return;
    }
    this.running = true;
    try {
      for (;;) {
        const job = this.queue.shift();
        if (job === undefined) {
          break;
        }
        if (job.kind === 'datagram') this.datagramsQueued--;
        if (job.kind === 'command') this.commandsQueued--;
        await this.run(job);
      }
    } finally {
      this.running = false;
      for (const wake of this.idleWaiters.splice(0)) {
        wake();
      }
    }
  }

  private async run(job: Job): Promise<void> {
    if (this.fatal !== undefined) {
      if (job.kind === 'command') job.reject(this.fatal);
      return;
    }
    const nowMs = this.clock.nowMs();
    let input: Input;
    switch (job.kind) {
      case 'tick':
        this.tickQueued = false;
        this.counts.ticks++;
        input = { kind: 'tick', nowMs };
        break;
      case 'datagram':
        this.counts.datagrams++;
        this.queueWait.add(nowMs - job.queuedAtMs);
        input = { kind: 'datagram', nowMs, bytes: job.bytes };
        break;
      case 'command':
        this.counts.commands++;
        if (job.command.verb === 'link') {
          this.carrierUp = job.command.up;
          const out = this.outBecause();
          if (job.command.up && out !== undefined) {
            // The link is up for the machine only once the data plane is back and heartbeats
            // leave again too.
            job.resolve({ code: 'ok', message: `carrier up: the host stays out until ${out}` });
            return;
          }
        }
        input = { kind: 'command', nowMs, command: job.command };
        break;
      case 'internal':
        input = { kind: 'command', nowMs, command: job.command };
        break;
      case 'lost':
        if (this.lost === undefined) await this.dataplaneLost(job.reason);
        return;
    }
    let ready: Ready;
    try {
      ready = this.machine.step(input);
    } catch (error) {
      // The machine asserts its own invariants: a throw is a bug, and nothing it decided can
      // be trusted any more. Stop stepping; the daemon takes the host out of the cluster.
      this.fatal = error instanceof Error ? error : new Error(String(error));
      if (job.kind === 'command') job.reject(this.fatal);
      this.log({ event: 'fatal', error: this.fatal.message, stack: this.fatal.stack });
      this.onFatal(this.fatal);
      return;
    }
    if (job.kind === 'command' && job.command.verb === 'reload' && ready.reply?.code === 'ok') {
      this.onReload(job.command);
      // The spec now comes from the new config even where the ownership did not change: the
      // kernel must take the new rules (one whole-table transaction) before anything is sent.
      this.programmedKey = undefined;
    }
    await this.carryOut(ready);
    if (job.kind === 'command') {
      const reply = ready.reply ?? { code: 'ok', message: '' };
      this.onReply(job.command, reply);
      job.resolve(reply);
    }
  }

  private armTimer(wakeAtMs: number): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    if (this.closing) {
      return;
    }
    this.cancelTimer = this.clock.at(wakeAtMs, () => {
      this.cancelTimer = undefined;
      this.enqueueTick();
    });
  }

  /** Carries out one Ready, step by step in the order of `carryOutSteps`. */
  private async carryOut(ready: Ready): Promise<void> {
    const decidedAtMs = this.clock.nowMs();
    let leaseFresh = false;
    for (const step of carryOutSteps(ready)) {
      switch (step.step) {
        case 'flush':
          await this.flushStep(step.flush, step.rejoined);
          break;
        case 'program':
          leaseFresh = await this.programStep(step.ownership, decidedAtMs);
          break;
        case 'send':
          await this.sendStep(step.datagrams, leaseFresh);
          break;
        case 'record':
          for (const event of step.events) this.log(eventRecord(event));
          break;
        case 'wake':
          this.armTimer(step.atMs);
          break;
      }
    }
  }

  private async flushStep(flush: Ready['flush'], rejoined: boolean): Promise<void> {
    if (rejoined) {
      // A rejoin after a partition: the peers reset these clients meanwhile, so every
      // connection to the cluster IPs goes, sockets included, not only the marked entries.
      try {
        const dropped = await this.dataplane.flushAll();
        this.log({ event: 'connections flushed', rule: 'all', dropped, socketsKilled: true });
      } catch (error) {
        this.dataplaneError('flush', error);
      }
      return;
    }
    for (const { rule, buckets } of flush) {
      try {
        const dropped = await this.dataplane.flush(rule, buckets);
        this.log({ event: 'connections flushed', rule, buckets: buckets.length, dropped });
      } catch (error) {
        this.dataplaneError('flush', error);
      }
    }
  }

  /**
   * Programs the decided ownership, or retries one the kernel does not hold yet (at most once
   * per restoreRetryMs while the data plane is lost). Returns whether that refreshed the lease.
   */
  private async programStep(
    ownership: Ownership | undefined,
    decidedAtMs: number,
  ): Promise<boolean> {
    if (ownership !== undefined) {
      this.wanted = ownership;
      this.wantedKey = JSON.stringify(ownership);
    }
    const lost = this.lost;
    const retryDue = lost === undefined || decidedAtMs - lost.lastAttemptMs >= this.restoreRetryMs;
    if (this.programmedKey === this.wantedKey || !retryDue) return false;
    if (lost !== undefined) lost.lastAttemptMs = decidedAtMs;
    try {
      const result = await this.dataplane.program(this.specFor(this.wanted));
      const programMs = this.clock.nowMs() - decidedAtMs;
      this.programmedKey = this.wantedKey;
      if (result === 'sets') this.counts.sets++;
      if (result === 'table') this.counts.table++;
      this.programLatency.add(programMs);
      this.log({
        event: 'ownership programmed',
        how: result,
        programMs: round(programMs),
        active: this.wanted.active,
        isDefault: this.wanted.isDefault,
        owned: this.wanted.rules.map((r) => r.owned.length),
        orphan: this.wanted.rules.map((r) => r.orphan.length),
      });
      if (lost !== undefined) {
        await this.dataplaneBack(lost);
      }
      // Both kinds of program refresh the lease in the same transaction.
      return result !== 'unchanged';
    } catch (error) {
      await this.dataplaneFailed('program', error);
      return false;
    }
  }

  /** Sends the heartbeats, or withholds them while the kernel does not hold what they say. */
  private async sendStep(datagrams: readonly Uint8Array[], leaseFresh: boolean): Promise<void> {
    if (this.lost !== undefined) {
      this.withhold(datagrams.length, 'the data plane is lost');
    } else if (this.programmedKey !== this.wantedKey) {
      this.withhold(datagrams.length, 'the kernel does not hold the decided ownership yet');
    } else if (!leaseFresh && !(await this.refreshLease())) {
      this.withhold(datagrams.length, 'the lease could not be refreshed');
    } else {
      for (const bytes of datagrams) {
        try {
          await this.transport.send(bytes);
          this.lastSentMs = this.clock.nowMs();
          this.heartbeatsFlowing();
        } catch (error) {
          this.counts.sendErrors++;
          this.reportError({ event: 'heartbeat send failed', error: errorText(error) });
          this.heartbeatsFailing(errorText(error));
        }
      }
    }
  }

  private async refreshLease(): Promise<boolean> {
    try {
      const refreshed = await this.dataplane.refreshLease();
      this.counts.leaseRefreshes++;
      for (const report of refreshed.restored) {
        this.restored(report);
      }
      return true;
    } catch (error) {
      await this.dataplaneFailed('lease refresh', error);
      return false;
    }
  }

  /** A lost data plane takes the host out; any other failure is logged and retried. */
  private async dataplaneFailed(operation: string, error: unknown): Promise<void> {
    if (error instanceof DataplaneLostError) {
      await this.dataplaneLost(error.reason);
    } else {
      this.dataplaneError(operation, error);
    }
  }

  // ---------------------------------------------------------------- a table lost and restored

  private restored(report: RestoreReport): void {
    this.counts.dataplaneRestores++;
    this.log({
      event: 'dataplane restored',
      problems: report.problems,
      detectedBy: report.detectedBy,
      goneMs: report.goneMs,
      restoreMs: report.restoreMs,
      hint: "another program changed or deleted nlbd's nftables tables (e.g. `nft flush ruleset`, nftables.service start or reload); nlbd put the whole table back. Keep other rulesets from flushing it: in /etc/nftables.conf replace `flush ruleset` by deleting only your own tables",
    });
  }

  /** Steps 1-3 of the header: the host stops answering for the cluster IPs. */
  private async dataplaneLost(reason: string): Promise<void> {
    if (this.lost !== undefined) {
      this.lost.reason = reason;
      this.reportError({ event: 'dataplane still lost', reason });
      return;
    }
    const nowMs = this.clock.nowMs();
    this.lost = { reason, sinceMs: nowMs, lastAttemptMs: nowMs };
    this.counts.dataplaneLosses++;
    // Every step tries again (at most once per restoreRetryMs) until the kernel takes it.
    this.programmedKey = undefined;
    const failClosed = this.onDataplaneLost !== undefined;
    this.log({
      event: 'dataplane lost',
      reason,
      failClosed,
      hint: `${
        failClosed
          ? 'the host left the cluster: its cluster IPs are removed and its own MAC is back'
          : 'the host stops sending heartbeats, so its peers take its buckets; it still holds the cluster IPs'
      }. Check that \`nft list ruleset\` works and that nothing else keeps deleting nlbd's tables; nlbd tries again every ${this.restoreRetryMs} ms and rejoins by itself`,
    });
    await this.detach(reason);
    // Peers count our silence from the last heartbeat we sent (heartbeats may have been
    // withheld for a while already): so does the link-down time (see protocol.ts, `link`).
    this.stepFirst({
      verb: 'link',
      up: false,
      ...(this.lastSentMs === undefined ? {} : { silentSinceMs: this.lastSentMs }),
    });
  }

  private async detach(reason: string): Promise<void> {
    if (this.onDataplaneLost === undefined) {
      return;
    }
    try {
      await this.onDataplaneLost(reason);
    } catch (error) {
      this.reportError({ event: 'dataplane lost: detach failed', error: errorText(error) });
    }
  }

  /** Steps 4-5 of the header: the table is back; the host returns once attached. */
  private async dataplaneBack(lost: { reason: string; sinceMs: number }): Promise<void> {
    if (this.onDataplaneRestored !== undefined) {
      try {
        await this.onDataplaneRestored();
      } catch (error) {
        // Out still: the next retry undoes what the attach did and tries both again.
        this.reportError({ event: 'dataplane restored: attach failed', error: errorText(error) });
        this.programmedKey = undefined;
        await this.detach(lost.reason);
        return;
      }
    }
    this.lost = undefined;
    this.counts.dataplaneRestores++;
    this.log({
      event: 'dataplane restored',
      problems: [lost.reason],
      detectedBy: 'retry after the data plane was lost',
      goneMs: round(this.clock.nowMs() - lost.sinceMs),
      rejoining: this.carrierUp && this.outBecause() === undefined,
    });
    this.rejoinIfClear();
  }

  /**
   * What still keeps the host out besides its carrier, in the words of the `link up` reply;
   * undefined when nothing does.
   */
  private outBecause(): string | undefined {
    if (this.lost !== undefined) return 'its data plane is restored';
    if (this.sendBlocked !== undefined) return 'its heartbeats can be sent again';
    return undefined;
  }

  /** The link is up for the machine once carrier, data plane and heartbeats all are. */
  private rejoinIfClear(): void {
    if (this.carrierUp && this.outBecause() === undefined) {
      this.stepFirst({ verb: 'link', up: true });
    }
  }

  /**
   * A heartbeat could not be sent. Once none has left for `tolerance - 2` periods, the host
   * takes itself out (see the header), counting its silence from its last heartbeat.
   */
  private heartbeatsFailing(error: string): void {
    if (this.sendBlocked !== undefined || this.heartbeat === undefined) return;
    const { periodMs, tolerance } = this.heartbeat();
    const nowMs = this.clock.nowMs();
    const silentSinceMs = this.lastSentMs ?? nowMs;
    if (nowMs - silentSinceMs < Math.max(0, tolerance - 2) * periodMs) return;
    this.sendBlocked = { sinceMs: nowMs };
    this.log({
      event: 'heartbeats blocked',
      error,
      silentMs: round(nowMs - silentSinceMs),
      hint: "the host's heartbeats cannot leave, so it takes no buckets until they can (its peers take them over); check that the dedicated IP is on the cluster interface and the heartbeat group has a route",
    });
    this.stepFirst({ verb: 'link', up: false, silentSinceMs });
  }

  /** A heartbeat left: a host that had taken itself out for blocked heartbeats comes back. */
  private heartbeatsFlowing(): void {
    const blocked = this.sendBlocked;
    if (blocked === undefined) return;
    this.sendBlocked = undefined;
    this.log({
      event: 'heartbeats flowing',
      blockedMs: round(this.clock.nowMs() - blocked.sinceMs),
      rejoining: this.carrierUp && this.outBecause() === undefined,
    });
    this.rejoinIfClear();
  }

  private withhold(count: number, reason: string): void {
    this.counts.heartbeatsWithheld += count;
    this.reportError({ event: 'heartbeat withheld', reason });
  }

  private dataplaneError(operation: string, error: unknown): void {
    this.counts.dataplaneErrors++;
    this.reportError({
      event: 'dataplane error',
      operation,
      error: errorText(error),
      hint: 'the kernel keeps its previous filter; heartbeats are withheld until it takes the new one',
    });
  }

  /**
   * Logs an error record at most once per errorReportMs for each kind (event and operation),
   * with how many were suppressed since, so a failure on every heartbeat cannot flood the log.
   */
  private reportError(record: EventRecord): void {
    const kind = `${record.event}/${String(record.operation ?? '')}`;
    const now = this.clock.nowMs();
    const last = this.lastErrorReport.get(kind);
    if (last === undefined || now - last.atMs >= errorReportMs) {
      this.lastErrorReport.set(kind, { atMs: now, suppressed: 0 });
      this.log(
        last === undefined || last.suppressed === 0
          ? record
          : { ...record, suppressed: last.suppressed },
      );
    } else {
      last.suppressed++;
    }
  }

  // ---------------------------------------------------------------- drainstop

  private scheduleDrainPoll(): void {
    if (this.closing) {
      return;
    }
    this.cancelDrainPoll = this.clock.at(this.clock.nowMs() + this.drainPollMs, () => {
      this.cancelDrainPoll = undefined;
      void this.pollDrain().finally(() => this.scheduleDrainPoll());
    });
  }

  /** While draining, reports `connectionsEnded` to the machine once no connection is left. */
  private async pollDrain(): Promise<void> {
    if (this.drainPolling || this.closing || this.machine.status().state !== 'draining') {
      return;
    }
    this.drainPolling = true;
    try {
      const buckets = await this.dataplane.connections();
      const left = buckets.reduce((sum, b) => sum + b.connections, 0);
      if (left === 0 && !this.closing && this.machine.status().state === 'draining') {
        const reply = await this.command({ verb: 'connectionsEnded' });
        this.log({ event: 'drainstop finished', reply: reply.code, message: reply.message });
      }
    } catch (error) {
      this.dataplaneError('count connections', error);
    } finally {
      this.drainPolling = false;
    }
  }
}

/** A protocol event as a log record: the name first, `by` dropped (the logger names the host). */
export function eventRecord(event: ProtocolEvent): EventRecord {
  const { event: name, by: _by, ...fields } = event;
  return { event: name, ...fields };
}
