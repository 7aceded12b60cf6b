// What HostDriver (host-driver.ts) is given and what it reports: the data plane port it drives,
// its options, its bounds and its statistics.
import type { DriverView, LatencyView } from '../control/protocol.js';
import type { Command, CommandReply, Ownership, ProtocolEvent } from '../core/protocol.js';
import type { HostMachine } from '../core/host.js';
import type { BucketConnections } from '../dataplane/conntrack.js';
import type { LeaseRefresh, ProgramResult, ProgramTiming } from '../dataplane/dataplane.js';
import { performance } from 'node:perf_hooks';
import type { DataplaneSpec } from '../dataplane/render.js';
import type { Clock } from './clock.js';
import type { EventRecord, EventSink } from './event-names.js';
import type { Transport } from './transport.js';

/** What the driver needs of the data plane; `Dataplane` (src/dataplane) is the real one. */
export interface DataplanePort {
  /** Throws DataplaneLostError while the data plane is lost and this retry did not bring it back. */
  program(spec: DataplaneSpec): Promise<ProgramResult>;
  /** Where the last successful `program`'s time went (`Dataplane.lastProgramTiming`). */
  lastProgramTiming?(): ProgramTiming | undefined;
  /**
   * Told after heartbeats left (each refreshed the lease in the kernel on its way out):
   * `Dataplane.heartbeatSent` keeps its own checks going and hands over the tables it restored
   * since the last call.
   */
  heartbeatSent(): LeaseRefresh;
  flush(rule: number, buckets: readonly number[]): Promise<number>;
  /**
   * Drops every connection to the cluster IPs and kills their sockets (conntrack by
   * destination, `ss -K`): what a host that rejoins after its peers declared it dead owes
   * them (docs/protocol.md#dead-hosts-orphans-and-rejoining). The daemon binds it to `Dataplane.flushClusterIps`.
   */
  flushAll(): Promise<number>;
  connections(): Promise<readonly BucketConnections[]>;
  /**
   * Subscribes to a data plane found lost on its own (a restore it started itself, on what
   * nft monitor reported, failed): the driver fails closed at once instead of at its next
   * heartbeat, a period later, during which the host would answer for the cluster IPs
   * without a filter. `Dataplane.watchLost`. It is the only way the driver learns of it
   * between two programs: a heartbeat makes no nft call that could fail.
   */
  watchLost(listener: (reason: string) => void): void;
}

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
export const errorReportMs = 5_000;
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

export class Latency {
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

export function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** The buckets in `after` but not in `before`, ascending (both ascending). */
function added(before: readonly number[], after: readonly number[]): number[] {
  const had = new Set(before);
  return after.filter((bucket) => !had.has(bucket));
}

/**
 * The `ownership programmed` record: how the kernel got there, how long it took and where the
 * time went (the input's wait in the queue before the decision, the wait behind earlier nft
 * work, the kernel transaction), when it was done (`atMs`, wall clock with µs: hosts on one
 * machine compare these to measure a handoff), and per rule the buckets the kernel took
 * (`gained`) and gave up (`released`) with it.
 */
export function programmedRecord(fields: {
  readonly result: ProgramResult;
  readonly programMs: number;
  readonly inputWaitMs: number;
  readonly timing: ProgramTiming | undefined;
  readonly before: Ownership | undefined;
  readonly after: Ownership;
}): EventRecord {
  const { after, before, timing } = fields;
  return {
    event: 'ownership programmed',
    how: fields.result,
    programMs: round(fields.programMs),
    inputWaitMs: round(fields.inputWaitMs),
    ...(timing === undefined ? {} : { waitMs: timing.waitMs, kernelMs: timing.kernelMs }),
    atMs: Math.round((performance.timeOrigin + performance.now()) * 1000) / 1000,
    active: after.active,
    isDefault: after.isDefault,
    owned: after.rules.map((r) => r.owned.length),
    orphan: after.rules.map((r) => r.orphan.length),
    gained: after.rules.map((r, i) => added(before?.rules[i]?.owned ?? [], r.owned)),
    released: after.rules.map((r, i) => added(r.owned, before?.rules[i]?.owned ?? [])),
  };
}

/** A protocol event as a log record: the name first, `by` dropped (the logger names the host). */
export function eventRecord(event: ProtocolEvent): EventRecord {
  const { event: name, by: _by, ...fields } = event;
  return { event: name, ...fields };
}
