// The daemon's side of the driver contract (src/core/protocol.ts): feed the host machine its
// inputs (a tick when it asked to be woken, every heartbeat datagram, operator commands) one at
// a time, and carry out each Ready completely, in the order of `carryOutSteps`
// (src/core/carry-out.ts), before the next input is stepped. The daemon's part in each step:
// flush through conntrack (and `ss -K` on a rejoin), program through nft and wait for the
// kernel, send the heartbeats (each refreshes the kernel's lease as it leaves: no nft call),
// log the events, and keep one timer, set to the wake time.
//
// Failures of the data plane are operating errors: the kernel keeps its previous state, the
// driver logs why, and it withholds heartbeats until the kernel matches what the machine
// decided. A host that cannot program its kernel thus falls silent; its lease runs out before
// its peers declare it dead and take its buckets, so no bucket is ever served twice.
//
// A table someone else deleted or changed is put back by the Dataplane itself (told of each
// batch of heartbeats sent, it hands over what it restored, logged as `dataplane restored`). When it cannot be put
// back (nft fails or hangs) the data plane is *lost*, and the host must not answer for the
// cluster IPs without its filter:
//   1. `dataplane lost` is logged with the reason and what to do,
//   2. onDataplaneLost: the daemon detaches the interface (cluster IPs, then the MAC),
//   3. the machine is told `link down`: it takes no buckets, and heartbeats stay withheld, so
//      the peers declare the host dead and take its buckets;
// then, at most once per restoreRetryMs, the whole table is tried again. Once it is back:
//   4. onDataplaneRestored: the daemon attaches the interface again (the filter is in place),
//   5. `link up` (if the carrier is up): a host silent longer than the detection time drops its
//      old connections to the cluster IPs before it takes buckets again (as after a long link loss).
// Heartbeats that cannot leave (the dedicated IP removed, no route: the send fails) are the
// same danger seen from the peers: they declare the host dead and take its buckets while its
// kernel, whose lease runs out only if the failing sends never reach the output hook, may
// still take new flows for them. Once sends have failed for `tolerance - 2` periods since the
// last one that left, the machine is told `link down` (it takes no buckets; established
// connections stay), well before the peers' detection time; the first heartbeat that leaves
// again brings the link back up (event `heartbeats blocked`, then `heartbeats flowing`).
// The carrier (the daemon's `link` commands), the data plane and the heartbeats' way out all
// decide whether the link is up for the machine: it is up only when all three are.
import { carryOutSteps } from '../core/carry-out.js';
import { errorText } from '../core/error-text.js';
import type { HostDetails, HostMachine } from '../core/host.js';
import type { Command, CommandReply, Input, Ownership, Ready } from '../core/protocol.js';
import type { ProgramResult } from '../dataplane/dataplane.js';
import type { DataplaneSpec } from '../dataplane/render.js';
import { type Clock, atAfterInput } from './clock.js';
import type { EventSink } from './event-names.js';
import {
  type DataplanePort,
  type DataplaneState,
  type DriverStats,
  type HostDriverOptions,
  Latency,
  commandsQueuedMax,
  datagramsQueuedMax,
  drainPollMsDefault,
  eventRecord,
  programmedRecord,
  restoreRetryMsDefault,
} from './host-driver-port.js';
import { ConnectionPoll } from './connection-poll.js';
import { Outage } from './host-outage.js';
import { InputQueue, type Job, datagramInput } from './input-queue.js';
import type { DatagramSource, Transport } from './transport.js';

export * from './host-driver-port.js';

export class HostDriver {
  private readonly machine: HostMachine;
  private readonly clock: Clock;
  private readonly transport: Transport;
  private readonly dataplane: DataplanePort;
  private readonly specFor: (ownership: Ownership) => DataplaneSpec;
  private readonly log: EventSink;
  private readonly onFatal: (error: Error) => void;
  private readonly onReload: (command: Command & { readonly verb: 'reload' }) => void;
  private readonly onReply: (command: Command, reply: CommandReply) => void;
  /** When the last heartbeat left (clock ms), or undefined before the first. */
  private lastSentMs: number | undefined;
  private readonly restoreRetryMs: number;
  /** Why the host is out besides its carrier: a lost data plane, blocked heartbeats. */
  private readonly outage: Outage;

  private readonly queue = new InputQueue((job) => this.run(job));
  private closing = false;
  private fatal: Error | undefined;
  private cancelTimer: (() => void) | undefined;
  /** The wake time `cancelTimer`'s timer is set for. */
  private armedAtMs = Number.NaN;
  /** Counts connections while draining, or holding released buckets (routed mode). */
  private readonly connectionPoll: ConnectionPoll;

  /** What the machine last asked the kernel to do, and what the kernel has (JSON keys). */
  private wanted: Ownership;
  private wantedKey: string;
  private programmed: Ownership | undefined;
  private programmedKey: string | undefined;

  /** How long the input being carried out waited in the queue (0 unless a datagram). */
  private inputWaitMs = 0;
  private readonly programLatency = new Latency();
  private readonly queueWait = new Latency();
  private counts = {
    ticks: 0,
    datagrams: 0,
    commands: 0,
    sets: 0,
    table: 0,
    datagramsDropped: 0,
    leaseRefreshes: 0,
    sendErrors: 0,
  };

  constructor(options: HostDriverOptions) {
    this.machine = options.machine;
    this.clock = options.clock;
    this.transport = options.transport;
    this.dataplane = options.dataplane;
    this.specFor = options.specFor;
    this.log = options.log;
    this.onFatal = options.onFatal ?? (() => undefined);
    this.onReload = options.onReload ?? (() => undefined);
    this.onReply = options.onReply ?? (() => undefined);
    this.restoreRetryMs = options.restoreRetryMs ?? restoreRetryMsDefault;
    this.outage = new Outage({
      clock: this.clock,
      log: this.log,
      restoreRetryMs: this.restoreRetryMs,
      heartbeat: options.heartbeat,
      onDataplaneLost: options.onDataplaneLost,
      onDataplaneRestored: options.onDataplaneRestored,
      stepFirst: (command) => this.stepFirst(command),
      reprogram: () => {
        this.programmedKey = undefined;
      },
      lastSentMs: () => this.lastSentMs,
    });
    options.dataplane.watchLost((reason) => {
      if (!this.closing) this.queue.pushFirst({ kind: 'lost', reason });
    });
    this.connectionPoll = new ConnectionPoll({
      clock: this.clock,
      everyMs: options.drainPollMs ?? drainPollMsDefault,
      status: () => this.machine.status(),
      connections: () => this.dataplane.connections(),
      barrier: () =>
        new Promise((resolve, reject) => {
          if (this.closing) reject(new Error('nlbd is shutting down'));
          else this.queue.push({ kind: 'barrier', resolve });
        }),
      command: (command) => this.command(command),
      log: this.log,
      countFailed: (error) => {
        if (!this.closing) this.outage.dataplaneError('count connections', error);
      },
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
    this.programmed = this.wanted;
    return result;
  }

  /** The datagram handler to give the transport; datagrams queue until `start`. */
  readonly onDatagram = (bytes: Uint8Array, from: DatagramSource): void => {
    if (this.closing) {
      return;
    }
    if (this.queue.datagrams >= datagramsQueuedMax) {
      this.counts.datagramsDropped++;
      return;
    }
    const queuedAtMs = this.clock.nowMs();
    this.queue.push({ kind: 'datagram', bytes, from: from.address, queuedAtMs });
  };

  /** Starts stepping: a first tick now, then whenever the machine asks to be woken. */
  start(): void {
    this.queue.start();
    this.connectionPoll.start();
    this.queue.push({ kind: 'tick' });
  }

  /** Steps an operator command; resolves with the machine's reply once its Ready is carried out. */
  command(command: Command): Promise<CommandReply> {
    if (this.closing) {
      return Promise.reject(new Error('nlbd is shutting down: commands are no longer accepted'));
    }
    if (this.queue.commands >= commandsQueuedMax) {
      return Promise.reject(
        new Error(`${commandsQueuedMax} commands are already waiting; try again in a moment`),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ kind: 'command', command, resolve, reject });
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
    this.connectionPoll.stop();
    await this.idle();
    return reply;
  }

  /** Resolves once no input is queued or being carried out. */
  idle(): Promise<void> {
    return this.queue.idle();
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
      queueDepthMax: this.queue.depthMax,
      datagramsDropped: c.datagramsDropped,
      heartbeatsWithheld: this.outage.counts.heartbeatsWithheld,
      leaseRefreshes: c.leaseRefreshes,
      dataplaneErrors: this.outage.counts.dataplaneErrors,
      sendErrors: c.sendErrors,
    };
  }

  dataplaneState(): DataplaneState {
    return {
      restores: this.outage.counts.restores,
      losses: this.outage.counts.losses,
      lost: this.outage.lost?.reason ?? null,
    };
  }

  // ---------------------------------------------------------------- the loop

  /** Steps `command` before anything already queued: the data plane's side of `link`. */
  private stepFirst(command: Command): void {
    this.queue.pushFirst({ kind: 'internal', command });
  }

  private async run(job: Job): Promise<void> {
    if (this.fatal !== undefined) {
      if (job.kind === 'command') job.reject(this.fatal);
      if (job.kind === 'barrier') job.resolve(this.clock.nowMs());
      return;
    }
    const nowMs = this.clock.nowMs();
    let input: Input;
    this.inputWaitMs = job.kind === 'datagram' ? nowMs - job.queuedAtMs : 0;
    switch (job.kind) {
      case 'tick':
        this.counts.ticks++;
        input = { kind: 'tick', nowMs };
        break;
      case 'datagram':
        this.counts.datagrams++;
        this.queueWait.add(this.inputWaitMs);
        input = datagramInput(job, nowMs, this.inputWaitMs, this.queue.datagrams > 0);
        break;
      case 'command':
        this.counts.commands++;
        if (job.command.verb === 'link') {
          this.outage.carrierUp = job.command.up;
          const out = this.outage.outBecause();
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
        if (this.outage.lost === undefined) await this.outage.lose(job.reason);
        return;
      case 'barrier':
        job.resolve(nowMs);
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
    // Most steps (a routine heartbeat) ask for the wake-up already set: keep that timer.
    if (this.cancelTimer !== undefined && this.armedAtMs === wakeAtMs && !this.closing) {
      return;
    }
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    if (this.closing) {
      return;
    }
    this.armedAtMs = wakeAtMs;
    // The heartbeats that arrived while it was due go first (MonotonicClock.afterInput).
    this.cancelTimer = atAfterInput(
      this.clock,
      wakeAtMs,
      () => this.queue.datagramsQueued,
      () => {
        this.cancelTimer = undefined;
        this.queue.push({ kind: 'tick' });
      },
    );
  }

  /** Carries out one Ready, step by step in the order of `carryOutSteps`. */
  private async carryOut(ready: Ready): Promise<void> {
    const decidedAtMs = this.clock.nowMs();
    for (const step of carryOutSteps(ready)) {
      switch (step.step) {
        case 'flush':
          await this.flushStep(step.flush, step.rejoined);
          break;
        case 'program':
          await this.programStep(step.ownership, decidedAtMs);
          break;
        case 'send':
          await this.sendStep(step.datagrams);
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
        this.outage.dataplaneError('flush', error);
      }
      return;
    }
    for (const { rule, buckets } of flush) {
      try {
        const dropped = await this.dataplane.flush(rule, buckets);
        this.log({ event: 'connections flushed', rule, buckets: buckets.length, dropped });
      } catch (error) {
        this.outage.dataplaneError('flush', error);
      }
    }
  }

  /**
   * Programs the decided ownership, or retries one the kernel does not hold yet (at most once
   * per restoreRetryMs while the data plane is lost).
   */
  private async programStep(ownership: Ownership | undefined, decidedAtMs: number): Promise<void> {
    if (ownership !== undefined) {
      this.wanted = ownership;
      this.wantedKey = JSON.stringify(ownership);
    }
    const lost = this.outage.lost;
    const retryDue = lost === undefined || decidedAtMs - lost.lastAttemptMs >= this.restoreRetryMs;
    if (this.programmedKey === this.wantedKey || !retryDue) return;
    if (lost !== undefined) lost.lastAttemptMs = decidedAtMs;
    try {
      const result = await this.dataplane.program(this.specFor(this.wanted));
      const programMs = this.clock.nowMs() - decidedAtMs;
      this.programmedKey = this.wantedKey;
      if (result === 'sets') this.counts.sets++;
      if (result === 'table') this.counts.table++;
      this.programLatency.add(programMs);
      this.log(
        programmedRecord({
          result,
          programMs,
          inputWaitMs: this.inputWaitMs,
          timing: this.dataplane.lastProgramTiming?.(),
          before: this.programmed,
          after: this.wanted,
        }),
      );
      this.programmed = this.wanted;
      if (lost !== undefined) {
        await this.outage.back(lost);
      }
    } catch (error) {
      await this.outage.failed('program', error);
    }
  }

  /**
   * Sends the heartbeats, or withholds them while the kernel does not hold what they say. Each
   * one refreshes the kernel's lease as it leaves (the output chain does it), so nothing stands
   * between the decision and the wire but the sends themselves.
   */
  private async sendStep(datagrams: readonly Uint8Array[]): Promise<void> {
    if (this.outage.lost !== undefined) {
      this.outage.withhold(datagrams.length, 'the data plane is lost');
      return;
    }
    if (this.programmedKey !== this.wantedKey) {
      this.outage.withhold(datagrams.length, 'the kernel does not hold the decided ownership yet');
      return;
    }
    let sent = 0;
    for (const bytes of datagrams) {
      try {
        await this.transport.send(bytes);
        sent++;
        this.lastSentMs = this.clock.nowMs();
        this.outage.heartbeatsFlowing();
      } catch (error) {
        this.counts.sendErrors++;
        this.outage.reportError({ event: 'heartbeat send failed', error: errorText(error) });
        this.outage.heartbeatsFailing(errorText(error));
      }
    }
    if (sent > 0) {
      this.counts.leaseRefreshes += sent;
      for (const report of this.dataplane.heartbeatSent().restored) {
        this.outage.restored(report);
      }
    }
  }
}
