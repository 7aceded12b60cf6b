// The data plane as the daemon drives it: program an ownership (the cheapest way nft allows),
// hold the lease that every heartbeat refreshes in the kernel, read counters and per-bucket
// connections, drop the connections of given buckets, bring the cluster interface up and down
// in the safe order, and keep the kernel holding what was programmed.
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
//     (the heartbeats refresh the lease in the kernel, which nft monitor does not report);
//   - a report that our tables were deleted (`nft flush ruleset`) puts them back at once;
//     any other report, and each (re)start of the monitor, asks for a comparison of the
//     kernel with what was programmed: the table's structure against a normalised listing
//     taken after nlbd's own whole-table apply (table-image.ts: nothing has to predict how
//     nft prints a rule), and the ownership sets against the spec;
//   - a failed quick transaction (an ownership change) is compared too;
//   - once every `checkIntervalMs` (and on every heartbeat while the monitor is not live)
//     the comparison runs anyway, so a monitor that silently lost events cannot hide a change.
// A comparison costs two nft processes (~12 ms of CPU): per 200 ms heartbeat, ~6% of a core.
//
// A restore that nlbd decided on its own gives the lease only what it had left, so the lease
// still runs out when the daemon's last heartbeat allowed. If the restore fails (nft errors or
// hangs), the data plane is *lost*: every call throws DataplaneLostError until a whole-table
// apply succeeds again, which `program` retries at most once per `restoreRetryMs`. The host
// driver then takes the host out of the cluster (src/daemon/host-driver.ts).
//
// The parts: the watch and the kernel listing (table-watch.ts), the reference image
// (table-image.ts), the counter totals (counters.ts), and the cluster interface's attach,
// detach and cleanup (interface-setup.ts).
import type { Address } from '../core/address.js';
import { errorText } from '../core/error-text.js';
import { Serial } from '../core/serial.js';
import { type BucketConnections, type Conntrack, deleteBuckets } from './conntrack.js';
import { CounterTotals, type DataplaneCounters } from './counters.js';
import {
  type DataplaneHealth,
  DataplaneLostError,
  type DataplaneOptions,
  type LeaseRefresh,
  type ProgramResult,
  type ProgramTiming,
  RestoreLog,
  type RestoreReport,
  checkIntervalMsDefault,
  nftTimeoutMsDefault,
  restoreRetryMsDefault,
} from './dataplane-api.js';
import { type IpRoute } from './iproute.js';
import type { Nft, NftFamily } from './nft-api.js';
import { listTable } from './nft.js';
import { type DataplaneSpec, leaseTimeoutMsMin } from './dataplane-spec.js';
import { renderOwnershipUpdate, renderRemoval, renderTable } from './render.js';
import { ownershipElements as ownershipSets } from './render-routed.js';
import { TableWatch, deletedProblem, listKernelTables } from './table-watch.js';
import { type TableImage, compareImages } from './table-image.js';

// The modules the Dataplane is made of keep their exports available here, where the daemon and
// the CLI import them from.
export * from './counters.js';
export * from './dataplane-api.js';
export * from './interface-setup.js';

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
  private readonly totals: CounterTotals;
  /** Every nft operation runs alone, in call order: a restore never meets a half-done program. */
  private readonly operations = new Serial();
  private readonly nowMs: () => number;
  private readonly watch: TableWatch;
  private readonly checkIntervalMs: number;
  private readonly nftTimeoutMs: number;
  private readonly restoreRetryMs: number;
  /** A comparison asked for and not started yet; later requests join it. */
  private pendingCheck:
    { detectedBy: string; atMs: number; deleted: NftFamily[]; applies: number } | undefined;
  /** nlbd's whole-table applies so far. */
  private applies = 0;
  private lastCheckMs = Number.NEGATIVE_INFINITY;
  /** When the kernel's lease was last set to the spec's full length. */
  private lastLeaseMs: number | undefined;
  private lost: { reason: string; lastAttemptMs: number } | undefined;
  private readonly restores = new RestoreLog();
  private checks = 0;
  private listingRetries = 0;
  private programTiming: ProgramTiming | undefined;

  private lostListener: ((reason: string) => void) | undefined;

  constructor(
    private readonly nft: Nft,
    private readonly conntrack: Conntrack,
    private readonly ipRoute?: IpRoute,
    options: DataplaneOptions = {},
  ) {
    this.nowMs = options.nowMs ?? (() => performance.now());
    this.watch = new TableWatch(
      nft,
      options.watch ?? true,
      () => this.applied,
      (detectedBy, deleted) => this.request(detectedBy, deleted),
    );
    this.checkIntervalMs = options.checkIntervalMs ?? checkIntervalMsDefault;
    this.nftTimeoutMs = options.nftTimeoutMs ?? nftTimeoutMsDefault;
    this.restoreRetryMs = options.restoreRetryMs ?? restoreRetryMsDefault;
    this.totals = new CounterTotals((tableName) =>
      listTable(nft, { family: 'inet', name: tableName }, { timeoutMs: this.nftTimeoutMs }),
    );
  }

  /** The spec the kernel holds, as of the last successful program. */
  get current(): DataplaneSpec | undefined {
    return this.applied;
  }

  health(): DataplaneHealth {
    return {
      watch: this.watch.state,
      lost: this.lost?.reason,
      checks: this.checks,
      listingRetries: this.listingRetries,
      restores: this.restores.restores,
      reportsDropped: this.restores.reportsDropped,
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
   * long-lived nft process (one transaction, ~1 ms); a configuration change replaces the whole
   * table (~17-45 ms), with a fresh lease. Either way the change is atomic; when this
   * resolves the kernel has it, so the caller may announce a released bucket (release before
   * acquire). On failure the kernel keeps the previous configuration and the error says why,
   * unless the table was not there any more: then the whole table goes in ('table'), or the
   * data plane is lost (DataplaneLostError). While lost, this is the retry.
   */
  program(spec: DataplaneSpec): Promise<ProgramResult> {
    const calledMs = this.nowMs();
    return this.exclusive(async () => {
      const startedMs = this.nowMs();
      this.programTiming = undefined;
      const result = await this.programNow(spec);
      const kernelMs = round(this.nowMs() - startedMs);
      this.programTiming = { waitMs: round(startedMs - calledMs), kernelMs };
      return result;
    });
  }

  /** Where the time of the last successful `program` went. */
  lastProgramTiming = (): ProgramTiming | undefined => this.programTiming;

  private async programNow(spec: DataplaneSpec): Promise<ProgramResult> {
    const text = renderTable(spec);
    if (this.lost !== undefined) {
      return this.retryLost(spec);
    }
    if (this.applied !== undefined && text === this.appliedText) {
      return 'unchanged';
    }
    this.watch.start(spec.tableName);
    const startedMs = this.nowMs();
    const update =
      this.applied === undefined ? undefined : renderOwnershipUpdate(this.applied, spec);
    if (update !== undefined) {
      try {
        if (update !== '') await this.nft.applyQuick(spec.tableName, update);
      } catch (error) {
        await this.restoreIfAltered(error, spec, 'program', startedMs);
        this.lastLeaseMs = startedMs;
        return 'table';
      }
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
      await this.totals.retire(this.applied.tableName, how.countersRead === true);
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
    this.restores.count();
    return 'table';
  }

  /**
   * Says that a heartbeat just left: the kernel's output chain (`leaseRefreshChain`) refreshed
   * the lease as it passed, so no nft call is made here. Records when, so that a restore nlbd
   * decides on its own gives the lease only what it had left, and asks for a comparison of the
   * kernel with the programmed table while the monitor is not live (every heartbeat) or when one
   * is due (every `checkIntervalMs`). Hands over the restores done since the last call.
   */
  heartbeatSent(): LeaseRefresh {
    const nowMs = this.nowMs();
    if (this.applied !== undefined && this.lost === undefined) {
      this.lastLeaseMs = nowMs;
      if (this.watch.state !== 'live') {
        this.requestCheck('heartbeat (nft monitor not live)');
      } else if (nowMs - this.lastCheckMs >= this.checkIntervalMs) {
        this.requestCheck('periodic check');
      }
    }
    return { restored: this.takeReports() };
  }

  /** Restores done since the last call (`heartbeatSent` hands them over too). */
  takeReports(): RestoreReport[] {
    return this.restores.take();
  }

  // ---------------------------------------------------------------- keeping the table

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
      // A whole-table apply since (an ownership change that met the missing table) put them back.
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
      // HostDriver), not at its next program or heartbeat.
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
    this.checks++;
    this.lastCheckMs = this.nowMs();
    const list = (): ReturnType<typeof listKernelTables> =>
      listKernelTables(this.nft, spec, this.nftTimeoutMs, (json) =>
        this.totals.observeListing(json),
      );
    let listing = await list();
    if (typeof listing === 'string') {
      // Read once more before calling it a problem: on a starved machine one `nft list` can
      // time out, and a restore for that alone (a whole-table apply) is more load, not less.
      // A listing that fails twice running means nft itself may be broken.
      this.listingRetries++;
      listing = await list();
      if (typeof listing === 'string') return [listing];
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
    this.restores.add({
      problems,
      detectedBy,
      goneMs: round(doneMs - how.detectedAtMs),
      restoreMs: round(doneMs - startedMs),
    });
  }

  // ---------------------------------------------------------------- counters

  /** Counters since this Dataplane was created (totals survive whole-table replacements). */
  counters(): Promise<DataplaneCounters> {
    return this.exclusive(async () => {
      const spec = this.applied;
      if (spec === undefined) {
        throw new Error('counters: nothing programmed yet; call program(spec) first');
      }
      await this.totals.read(spec.tableName);
      return this.totals.of(spec);
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
  flush(rule: number, buckets: readonly number[]): Promise<number> {
    return deleteBuckets(this.conntrack, rule, buckets, this.applied?.portRules[rule]?.buckets);
  }

  /**
   * Drops every connection to the cluster IPs, marked or not, and kills their sockets: for a
   * host that comes back after its peers declared it dead
   * (docs/protocol.md#dead-hosts-orphans-and-rejoining, docs/data-plane.md#conntrack-marks).
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
    this.watch.stop();
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
