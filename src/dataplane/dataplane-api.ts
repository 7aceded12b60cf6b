// What the Dataplane's callers see (dataplane.ts): how a program went, the restores it made on
// its own, its health, its options and their defaults, and the error that says it is lost.

/** How `program` got the kernel there. */
export type ProgramResult = 'table' | 'sets' | 'unchanged';

/** Where the time of the last `program` went, for the log and the benchmark. */
export interface ProgramTiming {
  /** Waiting for nft work asked for earlier (a check, a counter read, a restore) to finish. */
  readonly waitMs: number;
  /** Rendering, the nft transaction, and its confirmation. */
  readonly kernelMs: number;
}

/** A table put back after someone else changed or deleted it. */
export interface RestoreReport {
  /** What differed, e.g. 'table inet nlb is missing', 'set rule0_owned holds 7 (not programmed)'. */
  readonly problems: readonly string[];
  /** What noticed it: 'nft monitor', 'lease refresh', 'program', 'periodic check', ... */
  readonly detectedBy: string;
  /** From noticing the problem to the restored table committed. */
  readonly goneMs: number;
  /** The whole-table apply itself. */
  readonly restoreMs: number;
}

/** What `Dataplane.heartbeatSent` hands over: the restores done since the previous call. */
export interface LeaseRefresh {
  readonly restored: readonly RestoreReport[];
}

/**
 * The kernel does not hold the programmed table and it could not be put back (nft failed or
 * hung). The host must stop answering for the cluster IPs until a restore succeeds.
 */
export class DataplaneLostError extends Error {
  constructor(readonly reason: string) {
    super(`the data plane is lost: ${reason}`);
    this.name = 'DataplaneLostError';
  }
}

export interface DataplaneHealth {
  /** `live`: nft monitor reports changes; `blind`: it does not (comparing after every heartbeat). */
  readonly watch: 'off' | 'blind' | 'live';
  /** Why the data plane is lost, or undefined. */
  readonly lost: string | undefined;
  readonly checks: number;
  /** Listings that failed once and were read again before counting as a problem. */
  readonly listingRetries: number;
  readonly restores: number;
  readonly reportsDropped: number;
}

export interface DataplaneOptions {
  /** Milliseconds on a monotonic clock, for the lease left and for durations. */
  readonly nowMs?: () => number;
  /** Watch the ruleset with nft monitor (default true). */
  readonly watch?: boolean;
  /** Compare the kernel with the programmed table at least this often. */
  readonly checkIntervalMs?: number;
  /** A restore, or a listing for a comparison, that takes longer has failed. */
  readonly nftTimeoutMs?: number;
  /** While lost, `program` tries a whole-table apply at most this often. */
  readonly restoreRetryMs?: number;
}

/**
 * The safety net behind the monitor: two `nft -j list table` every 10 s cost ~0.15% of a core,
 * and a change the monitor missed (it prints an error, or nothing, when its socket overruns) is
 * found within that.
 */
export const checkIntervalMsDefault = 10_000;
/**
 * A whole-table apply takes ~17-45 ms here; one that has not finished in a second is stuck,
 * and every moment without a filter the host answers flows that are not its own.
 */
export const nftTimeoutMsDefault = 1_000;
/**
 * A floor under the retries of a lost data plane, whoever calls `program`: each costs a
 * whole-table apply (~20 ms). The host driver paces its own at 1 s; this is half that, so the
 * two clocks never make the driver's retry fall just short of the floor and skip a second.
 */
export const restoreRetryMsDefault = 500;
/** Restore reports kept until a lease refresh hands them over; more are counted and dropped. */
const reportsMax = 16;

/** The restores a Dataplane made, and the reports of those it made on its own. */
export class RestoreLog {
  restores = 0;
  reportsDropped = 0;
  private reports: RestoreReport[] = [];

  /** A restore the caller asked for and knows worked: counted, nothing to hand over. */
  count(): void {
    this.restores++;
  }

  /** A restore made on its own, reported to whoever takes the reports next. */
  add(report: RestoreReport): void {
    this.restores++;
    if (this.reports.length >= reportsMax) {
      this.reportsDropped++;
      return;
    }
    this.reports.push(report);
  }

  /** The reports since the last call. */
  take(): RestoreReport[] {
    return this.reports.splice(0);
  }
}
