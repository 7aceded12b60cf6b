// The data plane as the daemon drives it: program an ownership (the cheapest way nft allows),
// refresh the lease every heartbeat, read counters and per-bucket connections, drop the
// connections of given buckets, bring the cluster interface up and down in the safe order, and
// keep the kernel holding what was programmed.
//
// Order that keeps the host from ever taking VIP traffic unfiltered:
//   start: cleanupStale -> program(spec) -> attachInterface (MAC guard, MAC, then cluster IPs)
//   stop:  detachInterface (cluster IPs, then MAC, then MAC guard) -> remove
//
// Keeping the table. Other programs change the ruleset: Debian's nftables.service runs
// `flush ruleset` on start and reload, an operator deletes a rule or adds a bucket to `owned` by
// hand. Without its tables the host answers every flow and unmasks the cluster MAC, so the
// Dataplane watches for that and puts the whole table back in one transaction:
//   - `nft monitor` (Nft.watch) reports every transaction nlbd did not make itself through its
//     long-lived nft process at once, and costs nothing while the ruleset does not change
//     (0.15 ms of CPU per lease refresh: test/dataplane-heal-kernel.test.ts);
//   - a report that our tables were deleted (`nft flush ruleset`) puts them back at once;
//     any other report, and each (re)start of the monitor, asks for a comparison of the
//     kernel with what was programmed: the table's structure against a normalised listing
//     taken after nlbd's own whole-table apply (table-image.ts: nothing has to predict how
//     nft prints a rule), and the ownership sets against the spec;
//   - a failed quick transaction (lease refresh, ownership change) is compared too, so a
//     missing table is found on the next heartbeat even if the monitor missed it;
//   - once every `checkIntervalMs` (and on every lease refresh while the monitor is not live)
//     the comparison runs anyway, so a monitor that silently lost events cannot hide a change.
// A comparison costs two nft processes (~12 ms of CPU here): once per 200 ms heartbeat period
// that would be ~6% of a core, more than nlbd's whole idle load. The monitor makes detection
// immediate and leaves the listing for the rare moments something actually changed.
//
// A restore that nlbd decided on its own gives the lease only what it had left, so the lease
// still runs out when the daemon's last heartbeat allowed. If the restore fails (nft errors or
// hangs), the data plane is *lost*: every call throws DataplaneLostError until a whole-table
// apply succeeds again, which `program` retries at most once per `restoreRetryMs`. The host
// driver then takes the host out of the cluster (src/daemon/host-driver.ts).
import type { Address, Prefix } from '../core/address.js';
import { addressesEqual } from '../core/address.js';
import type { ClusterMode } from '../core/config.js';
import type { Conntrack } from './conntrack.js';
import { type BucketConnections } from './conntrack.js';
import { type IpRoute, clusterIpPrefix } from './iproute.js';
import { ctMark, ctMarkBase, ruleFieldMask, nlbMarkBit } from './mark.js';
import {
  type CounterValue,
  type Nft,
  NftError,
  type NftFamily,
  type RulesetListener,
  listTable,
  parseCounters,
} from './nft.js';
import {
  type DataplaneSpec,
  leaseTimeoutMsMin,
  names,
  ownershipSets,
  renderLeaseRefresh,
  renderOwnershipUpdate,
  renderRemoval,
  renderTable,
} from './render.js';
import { type TableImage, compareImages, tableImage } from './table-image.js';
import { errorText } from '../core/error-text.js';
import { Serial } from '../core/serial.js';

export interface RuleCounters {
  /** Packets and bytes let through: established TCP and new flows in owned buckets. */
  readonly accepted: CounterValue;
  /** Packets dropped: buckets not owned, non-SYN of unknown connections, disabled, expired lease. */
  readonly dropped: CounterValue;
  /** Non-SYN packets answered with a TCP reset in orphan buckets. */
  readonly reset: CounterValue;
}

export interface DataplaneCounters {
  /** One entry per port rule, in config order. */
  readonly rules: readonly RuleCounters[];
  readonly uncovered: { readonly accepted: CounterValue; readonly dropped: CounterValue };
  /** Packets dropped because the lease had run out (nlbd stopped refreshing it). */
  readonly leaseExpired: CounterValue;
}

/** How `program` got the kernel there. */
export type ProgramResult = 'table' | 'sets' | 'unchanged';

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

/** What a lease refresh found besides: restores done since the previous one. */
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
  /** `live`: nft monitor reports changes; `blind`: it does not (comparing every lease refresh). */
  readonly watch: 'off' | 'blind' | 'live';
  /** Why the data plane is lost, or undefined. */
  readonly lost: string | undefined;
  readonly checks: number;
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

const zero: CounterValue = { packets: 0, bytes: 0 };

interface CounterReading {
  readonly tableHandle: number | undefined;
  readonly counters: Map<string, CounterValue>;
}

/** The counters of an `nft -j list table inet` listing, and the table's handle. */
function counterReading(json: unknown): CounterReading {
  const items = (json as { nftables?: { table?: { handle?: unknown } }[] }).nftables ?? [];
  const handle = items.find((item) => item.table !== undefined)?.table?.handle;
  return {
    tableHandle: typeof handle === 'number' ? handle : undefined,
    counters: parseCounters(json),
  };
}

function add(a: CounterValue | undefined, b: CounterValue | undefined): CounterValue {
  return {
    packets: (a?.packets ?? 0) + (b?.packets ?? 0),
    bytes: (a?.bytes ?? 0) + (b?.bytes ?? 0),
  };
}

/** nft's answer for a table that is not there (as opposed to nft failing). */
function isMissing(error: unknown): boolean {
  return error instanceof NftError && /No such file or directory/.test(error.stderr);
}

/** The families of the tables `spec` renders: the netdev one masks MACs in unicast mode. */
function tableFamilies(spec: DataplaneSpec): NftFamily[] {
  return spec.mode === 'unicast' ? ['inet', 'netdev'] : ['inet'];
}

/** How a restore report names a table the monitor saw deleted. */
function deletedProblem(family: NftFamily, tableName: string): string {
  return `table ${family} ${tableName} was deleted`;
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

export class Dataplane {
  private applied: DataplaneSpec | undefined;
  private appliedText: string | undefined;
  /**
   * The kernel's listing soon after nlbd's whole-table apply of a structure (chains, sets,
   * counters; `referenceSpec` has it): what "unchanged" means. A foreign change in the few ms
   * before it is taken would go unseen; the monitor's report of it then finds nothing.
   */
  private reference: TableImage | undefined;
  private referenceSpec: DataplaneSpec | undefined;
  /** Counter totals from tables already replaced: a whole-table apply resets the kernel's. */
  private base = new Map<string, CounterValue>();
  /** The current table's counters as last read (not in `base` yet), and the table's handle. */
  private last = new Map<string, CounterValue>();
  private lastTableHandle: number | undefined;
  /** Every nft operation runs alone, in call order: a restore never meets a half-done program. */
  private readonly operations = new Serial();
  private readonly nowMs: () => number;
  private readonly watchEnabled: boolean;
  private readonly checkIntervalMs: number;
  private readonly nftTimeoutMs: number;
  private readonly restoreRetryMs: number;
  private stopWatch: (() => void) | undefined;
  private watchState: 'off' | 'blind' | 'live' = 'off';
  /** A comparison asked for and not started yet; later requests join it. */
  private pendingCheck:
    { detectedBy: string; atMs: number; deleted: NftFamily[]; applies: number } | undefined;
  /** nlbd's whole-table applies so far. */
  private applies = 0;
  private lastCheckMs = Number.NEGATIVE_INFINITY;
  /** When the kernel's lease was last set to the spec's full length. */
  private lastLeaseMs: number | undefined;
  private lost: { reason: string; lastAttemptMs: number } | undefined;
  private reports: RestoreReport[] = [];
  private counts = { checks: 0, restores: 0, reportsDropped: 0 };

  private lostListener: ((reason: string) => void) | undefined;

  constructor(
    private readonly nft: Nft,
    private readonly conntrack: Conntrack,
    private readonly ipRoute?: IpRoute,
    options: DataplaneOptions = {},
  ) {
    this.nowMs = options.nowMs ?? (() => performance.now());
    this.watchEnabled = options.watch ?? true;
    this.checkIntervalMs = options.checkIntervalMs ?? checkIntervalMsDefault;
    this.nftTimeoutMs = options.nftTimeoutMs ?? nftTimeoutMsDefault;
    this.restoreRetryMs = options.restoreRetryMs ?? restoreRetryMsDefault;
  }

  /** The spec the kernel holds, as of the last successful program. */
  get current(): DataplaneSpec | undefined {
    return this.applied;
  }

  health(): DataplaneHealth {
    return {
      watch: this.watchState,
      lost: this.lost?.reason,
      checks: this.counts.checks,
      restores: this.counts.restores,
      reportsDropped: this.counts.reportsDropped,
    };
  }

  /** Resolves once every operation asked for so far, background comparisons included, is done. */
  settled(): Promise<void> {
    return this.operations.idle();
  }

  /** Runs `body` after every operation called before it has finished. */
  private exclusive<T>(body: () => Promise<T>): Promise<T> {
    return this.operations.run(body);
  }

  /**
   * Makes the kernel filter `spec`. Every ownership change (buckets, orphans, default host,
   * active, drop established, disabled rules) is set elements only, so it goes through the
   * long-lived nft process (one transaction, ~2 ms); a configuration change replaces the whole
   * table (~17-45 ms). Either way the change is atomic and refreshes the lease; when this
   * resolves the kernel has it, so the caller may announce a released bucket (release before
   * acquire). On failure the kernel keeps the previous configuration and the error says why,
   * unless the table was not there any more: then the whole table goes in ('table'), or the
   * data plane is lost (DataplaneLostError). While lost, this is the retry.
   */
  program(spec: DataplaneSpec): Promise<ProgramResult> {
    return this.exclusive(async () => {
      const text = renderTable(spec);
      if (this.lost !== undefined) {
        return this.retryLost(spec);
      }
      if (this.applied !== undefined && text === this.appliedText) {
        return 'unchanged';
      }
      this.startWatch(spec.tableName);
      const startedMs = this.nowMs();
      const update =
        this.applied === undefined ? undefined : renderOwnershipUpdate(this.applied, spec);
      if (update !== undefined) {
        try {
          await this.nft.applyQuick(spec.tableName, update);
        } catch (error) {
          await this.restoreIfAltered(error, spec, 'program', startedMs);
          this.lastLeaseMs = startedMs;
          return 'table';
        }
        this.lastLeaseMs = startedMs;
        this.applied = spec;
        this.appliedText = text;
        return 'sets';
      }
      try {
        await this.replaceTable(spec);
      } catch (error) {
        if (this.applied === undefined) throw error;
        // The kernel keeps the previous table, unless it was not there any more.
        await this.restoreIfAltered(error, spec, 'program', startedMs);
      }
      this.lastLeaseMs = startedMs;
      return 'table';
    });
  }

  /**
   * Whole-table apply of `spec` (a fresh lease unless `leaseMs` says otherwise). A new structure
   * (not just other set elements) needs a new reference listing: the next comparison, asked
   * for here, takes it instead of the caller waiting for two more nft processes.
   */
  private async replaceTable(
    spec: DataplaneSpec,
    how: { leaseMs?: number; countersRead?: boolean } = {},
  ): Promise<void> {
    const leaseMs = how.leaseMs;
    if (this.applied !== undefined) {
      await this.keepCounters(this.applied.tableName, how.countersRead === true);
    }
    await this.nft.apply(
      renderTable(spec, leaseMs === undefined ? {} : { leaseMs }),
      this.applied === undefined ? {} : { timeoutMs: this.nftTimeoutMs },
    );
    this.applies++;
    this.applied = spec;
    this.appliedText = renderTable(spec);
    const referenceSpec = this.referenceSpec;
    if (referenceSpec === undefined || renderOwnershipUpdate(referenceSpec, spec) === undefined) {
      this.reference = undefined;
      this.referenceSpec = spec;
      this.requestCheck('reference listing');
    }
  }

  /**
   * After a failed quick transaction or apply: when the kernel holds what was programmed, the
   * failure was nft refusing the change, and the error goes to the caller as before; when it
   * does not, the table is put back with `spec` (or the data plane is lost).
   */
  private async restoreIfAltered(
    error: unknown,
    spec: DataplaneSpec,
    detectedBy: string,
    detectedAtMs: number,
  ): Promise<void> {
    const problems = await this.inspect();
    if (problems.length === 0) {
      throw error;
    }
    await this.restore(spec, [...problems, `nft said: ${errorText(error)}`], detectedBy, {
      detectedAtMs,
      lease: 'fresh',
      countersRead: true,
    });
  }

  private async retryLost(spec: DataplaneSpec): Promise<ProgramResult> {
    const lost = this.lost!;
    const nowMs = this.nowMs();
    if (nowMs - lost.lastAttemptMs < this.restoreRetryMs) {
      throw new DataplaneLostError(lost.reason);
    }
    lost.lastAttemptMs = nowMs;
    try {
      await this.replaceTable(spec);
    } catch (error) {
      throw new DataplaneLostError(`${lost.reason}; retry failed: ${errorText(error)}`);
    }
    // The caller asked for this and knows it worked: no report to hand over.
    this.lost = undefined;
    this.lastLeaseMs = nowMs;
    this.counts.restores++;
    return 'table';
  }

  /**
   * Extends the lease by the spec's leaseTimeoutMs; call it before each heartbeat is sent.
   * Returns the restores done since the last call. A table found missing or altered is put
   * back first (the restore carries a fresh lease); throws DataplaneLostError when it cannot be.
   */
  refreshLease(): Promise<LeaseRefresh> {
    return this.exclusive(async () => {
      const spec = this.applied;
      if (spec === undefined) {
        throw new Error('refreshLease: nothing programmed yet; call program(spec) first');
      }
      if (this.lost !== undefined) {
        throw new DataplaneLostError(this.lost.reason);
      }
      const startedMs = this.nowMs();
      try {
        await this.nft.applyQuick(spec.tableName, renderLeaseRefresh(spec));
        this.lastLeaseMs = startedMs;
      } catch (error) {
        await this.restoreIfAltered(error, spec, 'lease refresh', startedMs);
        this.lastLeaseMs = startedMs;
      }
      if (this.watchState !== 'live') {
        this.requestCheck(`lease refresh (nft monitor not live)`);
      } else if (startedMs - this.lastCheckMs >= this.checkIntervalMs) {
        this.requestCheck('periodic check');
      }
      return { restored: this.takeReports() };
    });
  }

  /** Restores done since the last call (the lease refresh hands them over too). */
  takeReports(): RestoreReport[] {
    return this.reports.splice(0);
  }

  private report(report: RestoreReport): void {
    this.counts.restores++;
    if (this.reports.length >= reportsMax) {
      this.counts.reportsDropped++;
      return;
    }
    this.reports.push(report);
  }

  // ---------------------------------------------------------------- keeping the table

  private startWatch(tableName: string): void {
    if (!this.watchEnabled || this.stopWatch !== undefined) {
      return;
    }
    this.watchState = 'blind';
    const listener: RulesetListener = {
      // Only the tables the spec has: in multicast mode nlbd's own apply deletes the netdev one.
      change: (change) => {
        const applied = this.applied;
        this.request(
          'nft monitor',
          change.deleted
            .filter(
              (table) =>
                applied !== undefined &&
                table.name === applied.tableName &&
                tableFamilies(applied).includes(table.family),
            )
            .map((table) => table.family),
        );
      },
      resync: (reason) => {
        this.watchState = 'live';
        this.request(reason, []);
      },
      blind: () => {
        this.watchState = 'blind';
      },
    };
    this.stopWatch = this.nft.watch(tableName, listener);
  }

  /** Compares the kernel with the programmed table soon, and restores it if they differ. */
  requestCheck(detectedBy: string): void {
    this.request(detectedBy, []);
  }

  /**
   * A comparison, or straight a restore when the monitor saw tables deleted: the usual case
   * (`nft flush ruleset`, nftables.service) is also the one where the host filters nothing,
   * and listing what is plainly gone would only add two nft processes to the time without a
   * filter. nlbd's own whole-table apply never counts as deleting its table (it adds it again
   * in the same transaction), so this cannot feed on itself.
   */
  private request(detectedBy: string, deleted: readonly NftFamily[]): void {
    if (this.pendingCheck !== undefined) {
      const known = this.pendingCheck.deleted;
      known.push(...deleted.filter((family) => !known.includes(family)));
      return;
    }
    const pending = {
      detectedBy,
      atMs: this.nowMs(),
      deleted: [...deleted],
      applies: this.applies,
    };
    this.pendingCheck = pending;
    void this.exclusive(async () => {
      this.pendingCheck = undefined;
      const spec = this.applied;
      if (spec === undefined || this.lost !== undefined) {
        return;
      }
      // A whole-table apply since (a lease refresh that met the missing table) put them back.
      const gone = pending.deleted.length > 0 && this.applies === pending.applies;
      const problems = gone
        ? pending.deleted.map((family) => deletedProblem(family, spec.tableName))
        : await this.inspect();
      if (problems.length > 0) {
        await this.restore(spec, problems, pending.detectedBy, {
          detectedAtMs: pending.atMs,
          lease: 'left',
          // The comparison read the counters; a deleted inet table has none left to read.
          countersRead: !gone || pending.deleted.includes('inet'),
        });
      }
    }).catch((error: unknown) => {
      // Found lost on its own: whoever drives the data plane must fail closed now (see
      // HostDriver), not at its next program or lease refresh.
      if (error instanceof DataplaneLostError) this.lostListener?.(error.reason);
    });
  }

  /** Called when a check or restore of its own (not a caller's) finds the data plane lost. */
  watchLost(listener: (reason: string) => void): void {
    this.lostListener = listener;
  }

  /**
   * What differs between the kernel and the programmed table (both tables, the ownership
   * sets); empty when nothing does. A listing that fails is a problem too: nft may be broken.
   */
  private async inspect(): Promise<string[]> {
    const spec = this.applied;
    if (spec === undefined) {
      return [];
    }
    this.counts.checks++;
    this.lastCheckMs = this.nowMs();
    const listing = await this.list(spec);
    if (typeof listing === 'string') {
      return [listing];
    }
    const problems = [...listing.missing];
    const image = listing.image;
    if (this.reference === undefined) {
      // The first listing after a whole-table apply: it is the reference, unless the sets or
      // the tables are visibly not what was programmed.
      const sets = compareImages(undefined, image, ownershipSets(spec));
      if (problems.length === 0 && sets.length === 0) this.reference = image;
      return [...problems, ...sets];
    }
    return [...problems, ...compareImages(this.reference, image, ownershipSets(spec))];
  }

  /**
   * Both tables as the kernel has them (listed at once: a restore waits for this), or what
   * could not be read. The counters in the `inet` listing are taken as a reading too, so a
   * restore that follows need not read them again.
   */
  private async list(
    spec: DataplaneSpec,
  ): Promise<{ image: TableImage; missing: string[] } | string> {
    const listings = await Promise.all(
      tableFamilies(spec).map((family) =>
        listTable(
          this.nft,
          { family, name: spec.tableName },
          { timeoutMs: this.nftTimeoutMs },
        ).then(
          (json) => ({ family, json }),
          (error: unknown) => ({ family, error }),
        ),
      ),
    );
    const items: unknown[] = [];
    const missing: string[] = [];
    for (const listing of listings) {
      if ('error' in listing) {
        if (!isMissing(listing.error)) {
          return `table ${listing.family} ${spec.tableName} could not be read: ${errorText(listing.error)}`;
        }
        missing.push(`table ${listing.family} ${spec.tableName} is missing`);
      } else {
        if (listing.family === 'inet') this.observe(counterReading(listing.json));
        items.push(...(((listing.json as { nftables?: unknown[] }).nftables ?? []) as unknown[]));
      }
    }
    return { image: tableImage({ nftables: items }), missing };
  }

  /**
   * Puts the whole table of `spec` back in one transaction. `lease: 'left'` gives the lease
   * what it had left (nothing if it ran out), for a restore no heartbeat asked for.
   */
  private async restore(
    spec: DataplaneSpec,
    problems: readonly string[],
    detectedBy: string,
    how: { detectedAtMs: number; lease: 'fresh' | 'left'; countersRead: boolean },
  ): Promise<void> {
    const startedMs = this.nowMs();
    let leaseMs: number | undefined;
    if (how.lease === 'left') {
      const left =
        this.lastLeaseMs === undefined
          ? 0
          : Math.floor(spec.leaseTimeoutMs - (startedMs - this.lastLeaseMs));
      leaseMs = left >= leaseTimeoutMsMin ? Math.min(left, spec.leaseTimeoutMs) : 0;
    }
    try {
      await this.replaceTable(spec, {
        ...(leaseMs === undefined ? {} : { leaseMs }),
        countersRead: how.countersRead,
      });
    } catch (error) {
      const reason = `${problems.join('; ')}; restoring the table failed: ${errorText(error)}`;
      this.lost = { reason, lastAttemptMs: this.nowMs() };
      throw new DataplaneLostError(reason);
    }
    const doneMs = this.nowMs();
    this.report({
      problems,
      detectedBy,
      goneMs: round(doneMs - how.detectedAtMs),
      restoreMs: round(doneMs - startedMs),
    });
  }

  // ---------------------------------------------------------------- counters

  /**
   * Takes a reading of the current table's counters. A table made again behind nlbd's back (a
   * new table handle), or a counter lower than last read, started counting from 0 again: what
   * the old one had counted goes to the totals, so they never go down nor count twice.
   */
  private observe(read: CounterReading): void {
    if (this.lastTableHandle !== undefined && read.tableHandle !== this.lastTableHandle) {
      this.retireLast();
    }
    this.lastTableHandle = read.tableHandle;
    for (const [name, value] of read.counters) {
      const last = this.last.get(name);
      if (last !== undefined && (value.packets < last.packets || value.bytes < last.bytes)) {
        this.base.set(name, add(this.base.get(name), last));
      }
      this.last.set(name, value);
    }
  }

  /** The current table's counts, as last read, go to the totals. */
  private retireLast(): void {
    for (const [name, value] of this.last) {
      this.base.set(name, add(this.base.get(name), value));
    }
    this.last.clear();
    this.lastTableHandle = undefined;
  }

  /**
   * Before nlbd replaces the table: its counters go to the totals, as read now, or as last read
   * when the table is gone (what it counted since that read is lost with it).
   */
  private async keepCounters(tableName: string, alreadyRead: boolean): Promise<void> {
    try {
      if (!alreadyRead) this.observe(await this.readCounters(tableName));
    } catch (error) {
      // Losing a few counts is better than not applying; a missing table has nothing to read.
      if (!(error instanceof NftError)) {
        throw error;
      }
    }
    this.retireLast();
  }

  /** The whole table rather than just its counters: the table's handle says which table it is. */
  private async readCounters(tableName: string): Promise<CounterReading> {
    const json = await listTable(
      this.nft,
      { family: 'inet', name: tableName },
      { timeoutMs: this.nftTimeoutMs },
    );
    return counterReading(json);
  }

  /** Counters since this Dataplane was created (totals survive whole-table replacements). */
  counters(): Promise<DataplaneCounters> {
    return this.exclusive(async () => {
      const spec = this.applied;
      if (spec === undefined) {
        throw new Error('counters: nothing programmed yet; call program(spec) first');
      }
      this.observe(await this.readCounters(spec.tableName));
      const get = (name: string): CounterValue =>
        add(this.base.get(name), this.last.get(name) ?? zero);
      return {
        rules: spec.portRules.map((_, i) => ({
          accepted: get(names.accepted(i)),
          dropped: get(names.dropped(i)),
          reset: get(names.reset(i)),
        })),
        uncovered: { accepted: get(names.uncoveredAccepted), dropped: get(names.uncoveredDropped) },
        leaseExpired: get(names.leaseExpired),
      };
    });
  }

  // ---------------------------------------------------------------- connections

  /** Live connections per rule and bucket, from the conntrack marks. */
  connections(): Promise<BucketConnections[]> {
    return this.conntrack.connectionsByBucket();
  }

  /**
   * Drops the established connections of `buckets` of port rule `rule` (Ready.flush): their
   * conntrack entries go, so the filter treats their next packet as unknown. All buckets of
   * the rule take one command; otherwise one per bucket. Returns how many entries went.
   */
  async flush(rule: number, buckets: readonly number[]): Promise<number> {
    const spec = this.applied;
    const count = spec?.portRules[rule]?.buckets;
    if (count !== undefined && buckets.length === count) {
      return this.conntrack.deleteByMark(ctMarkBase(rule), (nlbMarkBit | ruleFieldMask) >>> 0);
    }
    let deleted = 0;
    for (const bucket of buckets) {
      deleted += await this.conntrack.deleteByMark(ctMark(rule, bucket));
    }
    return deleted;
  }

  /**
   * Drops every connection to the cluster IPs, marked or not, and kills their sockets: for a
   * host that comes back after its peers declared it dead (DESIGN.md §4).
   */
  async flushClusterIps(clusterIps: readonly Address[]): Promise<number> {
    let deleted = 0;
    for (const ip of clusterIps) {
      deleted += await this.conntrack.deleteByDestination(ip);
      await this.ipRoute?.killSockets(ip);
    }
    return deleted;
  }

  /** Stops watching and removes both tables (safe when absent). */
  remove(tableName = this.applied?.tableName): Promise<void> {
    if (tableName === undefined) {
      return Promise.reject(new Error('remove: no table name given and nothing programmed'));
    }
    this.stopWatch?.();
    this.stopWatch = undefined;
    this.watchState = 'off';
    return this.exclusive(async () => {
      await this.nft.apply(renderRemoval(tableName));
      this.applied = undefined;
      this.appliedText = undefined;
      this.reference = undefined;
      this.referenceSpec = undefined;
      this.lost = undefined;
    });
  }
}

export interface InterfaceSetup {
  readonly interface: string;
  readonly clusterIps: readonly Address[];
  readonly mode: ClusterMode;
  /** Unicast mode: the cluster MAC the interface takes. */
  readonly clusterMac?: string;
}

export interface AttachedInterface {
  /** The MAC before attach; detach puts it back. Persist it to survive a crash. */
  readonly originalMac: string;
  /** The cluster IPs attach added (those already present are left alone on detach too). */
  readonly added: readonly Prefix[];
  /** Set when the MAC guard could not be installed (the host works without it); why. */
  readonly warning?: string;
}

/**
 * Gives the cluster interface the cluster MAC (unicast mode) and the cluster IPs. Call it after
 * `program`, so the filter is in place before the first VIP packet can arrive. In unicast mode
 * the MAC guard (iproute.ts macGuardBytecode) goes on first: should the masking table ever be
 * missing, the host sends nothing rather than frames from the cluster MAC. A kernel without
 * it (no clsact or cls_bpf) still attaches, with a warning.
 */
export async function attachInterface(
  ipRoute: IpRoute,
  setup: InterfaceSetup,
): Promise<AttachedInterface> {
  const link = await ipRoute.link(setup.interface);
  let warning: string | undefined;
  if (setup.mode === 'unicast') {
    if (setup.clusterMac === undefined) {
      throw new Error('attachInterface: unicast mode needs clusterMac');
    }
    try {
      await ipRoute.addMacGuard(setup.interface, setup.clusterMac);
    } catch (error) {
      warning = `no MAC guard on ${setup.interface}: ${errorText(error)}; if nlbd's nftables tables are flushed, frames from the cluster MAC may reach the switch until they are back`;
    }
    if (link.mac !== setup.clusterMac) {
      await ipRoute.setMac(setup.interface, setup.clusterMac);
    }
  }
  // Multicast and IGMP modes (ip maddr add, IGMP joins) are not implemented yet.
  const added: Prefix[] = [];
  for (const ip of setup.clusterIps) {
    const prefix = clusterIpPrefix(ip);
    if (await ipRoute.addAddress(setup.interface, prefix)) {
      added.push(prefix);
    }
  }
  return { originalMac: link.mac, added, ...(warning === undefined ? {} : { warning }) };
}

/**
 * Undoes attachInterface: the cluster IPs first (no more VIP traffic), then the MAC, then the
 * MAC guard (nothing leaves from the cluster MAC any more).
 */
export async function detachInterface(
  ipRoute: IpRoute,
  setup: InterfaceSetup,
  attached: AttachedInterface,
): Promise<void> {
  for (const prefix of attached.added) {
    await ipRoute.deleteAddress(setup.interface, prefix);
  }
  const link = await ipRoute.link(setup.interface);
  if (link.mac !== attached.originalMac) {
    await ipRoute.setMac(setup.interface, attached.originalMac);
  }
  if (setup.mode === 'unicast') {
    await ipRoute.removeMacGuard(setup.interface);
  }
}

export interface StaleSetup extends InterfaceSetup {
  readonly tableName: string;
  /** The MAC to restore if the interface still has the cluster MAC, e.g. from a state file. */
  readonly originalMac?: string;
}

export interface CleanupReport {
  readonly removedAddresses: readonly string[];
  /** The MAC put back, or undefined when the interface did not carry the cluster MAC. */
  readonly restoredMac: string | undefined;
  /** Set when the cluster MAC is still there because no original MAC was known. */
  readonly warning: string | undefined;
}

/**
 * Removes what a crashed predecessor left: the cluster IPs on the interface (first, so no VIP
 * traffic is taken unfiltered), the cluster MAC (back to the burned-in one, or
 * `originalMac`), the MAC guard, and both tables. Never touches the dedicated IP or any other
 * address.
 */
export async function cleanupStale(
  nft: Nft,
  ipRoute: IpRoute,
  setup: StaleSetup,
): Promise<CleanupReport> {
  const removedAddresses: string[] = [];
  const present = await ipRoute.addresses(setup.interface);
  for (const ip of setup.clusterIps) {
    const prefix = present.find((p) => addressesEqual(p.address, ip));
    if (prefix !== undefined && (await ipRoute.deleteAddress(setup.interface, prefix))) {
      removedAddresses.push(`${prefix.address.text}/${prefix.length}`);
    }
  }
  let restoredMac: string | undefined;
  let warning: string | undefined;
  const link = await ipRoute.link(setup.interface);
  if (setup.clusterMac !== undefined && link.mac === setup.clusterMac) {
    const original = link.permanentMac ?? setup.originalMac;
    if (original !== undefined && original !== link.mac) {
      await ipRoute.setMac(setup.interface, original);
      restoredMac = original;
    } else {
      warning = `${setup.interface} keeps the cluster MAC ${link.mac}: its original MAC is unknown (no permanent address); set one with 'ip link set dev ${setup.interface} address <mac>'`;
    }
  }
  if (setup.mode === 'unicast') {
    await ipRoute.removeMacGuard(setup.interface);
  }
  await nft.apply(renderRemoval(setup.tableName));
  return { removedAddresses, restoredMac, warning };
}
