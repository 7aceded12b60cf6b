// Why a host is out of the cluster besides its carrier, for HostDriver (host-driver.ts, whose
// header tells the story): a data plane that is lost (its table gone and not put back) and
// heartbeats that cannot leave. Either takes the host out (the machine is told `link down`); it
// comes back once carrier, data plane and heartbeats are all up again. Errors on the way are
// logged at most once per errorReportMs for each kind.
import { errorText } from '../core/error-text.js';
import type { Command } from '../core/protocol.js';
import { DataplaneLostError, type RestoreReport } from '../dataplane/dataplane.js';
import type { Clock } from './clock.js';
import type { EventRecord, EventSink } from './event-names.js';
import { errorReportMs, round } from './host-driver-port.js';

/** What the outage needs of its driver. */
export interface OutageHooks {
  readonly clock: Clock;
  readonly log: EventSink;
  readonly restoreRetryMs: number;
  readonly heartbeat: (() => { readonly periodMs: number; readonly tolerance: number }) | undefined;
  readonly onDataplaneLost: ((reason: string) => void | Promise<void>) | undefined;
  readonly onDataplaneRestored: (() => void | Promise<void>) | undefined;
  /** Steps a command before anything queued: the driver's side of `link`. */
  readonly stepFirst: (command: Command) => void;
  /** Forgets what the kernel holds: the next step programs the whole table again. */
  readonly reprogram: () => void;
  /** When the last heartbeat left, or undefined before the first. */
  readonly lastSentMs: () => number | undefined;
}

export class Outage {
  /** Set while the data plane is lost; `lastAttemptMs` paces the retries. */
  lost: { reason: string; sinceMs: number; lastAttemptMs: number } | undefined;
  /** The carrier as the daemon last reported it (`link` commands); up until told otherwise. */
  carrierUp = true;
  /** Set while heartbeats cannot leave and the machine was told the link is down for it. */
  private sendBlocked: { sinceMs: number } | undefined;
  private readonly lastErrorReport = new Map<string, { atMs: number; suppressed: number }>();
  readonly counts = { restores: 0, losses: 0, heartbeatsWithheld: 0, dataplaneErrors: 0 };

  constructor(private readonly hooks: OutageHooks) {}

  /** A lost data plane takes the host out; any other failure is logged and retried. */
  async failed(operation: string, error: unknown): Promise<void> {
    if (error instanceof DataplaneLostError) {
      await this.lose(error.reason);
    } else {
      this.dataplaneError(operation, error);
    }
  }

  restored(report: RestoreReport): void {
    this.counts.restores++;
    this.hooks.log({
      event: 'dataplane restored',
      problems: report.problems,
      detectedBy: report.detectedBy,
      goneMs: report.goneMs,
      restoreMs: report.restoreMs,
      hint: "another program changed or deleted nlbd's nftables tables (e.g. `nft flush ruleset`, nftables.service start or reload); nlbd put the whole table back. Keep other rulesets from flushing it: in /etc/nftables.conf replace `flush ruleset` by deleting only your own tables",
    });
  }

  /** Steps 1-3 of host-driver.ts's header: the host stops answering for the cluster IPs. */
  async lose(reason: string): Promise<void> {
    if (this.lost !== undefined) {
      this.lost.reason = reason;
      this.reportError({ event: 'dataplane still lost', reason });
      return;
    }
    const nowMs = this.hooks.clock.nowMs();
    this.lost = { reason, sinceMs: nowMs, lastAttemptMs: nowMs };
    this.counts.losses++;
    // Every step tries again (at most once per restoreRetryMs) until the kernel takes it.
    this.hooks.reprogram();
    const failClosed = this.hooks.onDataplaneLost !== undefined;
    this.hooks.log({
      event: 'dataplane lost',
      reason,
      failClosed,
      hint: `${
        failClosed
          ? 'the host left the cluster: its cluster IPs are removed and its own MAC is back'
          : 'the host stops sending heartbeats, so its peers take its buckets; it still holds the cluster IPs'
      }. Check that \`nft list ruleset\` works and that nothing else keeps deleting nlbd's tables; nlbd tries again every ${this.hooks.restoreRetryMs} ms and rejoins by itself`,
    });
    await this.detach(reason);
    // Peers count our silence from the last heartbeat we sent (heartbeats may have been
    // withheld for a while already): so does the link-down time (see protocol.ts, `link`).
    this.hooks.stepFirst({
      verb: 'link',
      up: false,
      ...(this.hooks.lastSentMs() === undefined ? {} : { silentSinceMs: this.hooks.lastSentMs() }),
    });
  }

  private async detach(reason: string): Promise<void> {
    if (this.hooks.onDataplaneLost === undefined) {
      return;
    }
    try {
      await this.hooks.onDataplaneLost(reason);
    } catch (error) {
      this.reportError({ event: 'dataplane lost: detach failed', error: errorText(error) });
    }
  }

  /** Steps 4-5 of host-driver.ts's header: the table is back; the host returns once attached. */
  async back(lost: { reason: string; sinceMs: number }): Promise<void> {
    if (this.hooks.onDataplaneRestored !== undefined) {
      try {
        await this.hooks.onDataplaneRestored();
      } catch (error) {
        // Out still: the next retry undoes what the attach did and tries both again.
        this.reportError({ event: 'dataplane restored: attach failed', error: errorText(error) });
        this.hooks.reprogram();
        await this.detach(lost.reason);
        return;
      }
    }
    this.lost = undefined;
    this.counts.restores++;
    this.hooks.log({
      event: 'dataplane restored',
      problems: [lost.reason],
      detectedBy: 'retry after the data plane was lost',
      goneMs: round(this.hooks.clock.nowMs() - lost.sinceMs),
      rejoining: this.carrierUp && this.outBecause() === undefined,
    });
    this.rejoinIfClear();
  }

  /**
   * What still keeps the host out besides its carrier, in the words of the `link up` reply;
   * undefined when nothing does.
   */
  outBecause(): string | undefined {
    if (this.lost !== undefined) return 'its data plane is restored';
    if (this.sendBlocked !== undefined) return 'its heartbeats can be sent again';
    return undefined;
  }

  /** The link is up for the machine once carrier, data plane and heartbeats all are. */
  private rejoinIfClear(): void {
    if (this.carrierUp && this.outBecause() === undefined) {
      this.hooks.stepFirst({ verb: 'link', up: true });
    }
  }

  /**
   * A heartbeat could not be sent. Once none has left for `tolerance - 2` periods, the host
   * takes itself out (see host-driver.ts's header), counting its silence from its last heartbeat.
   */
  heartbeatsFailing(error: string): void {
    if (this.sendBlocked !== undefined || this.hooks.heartbeat === undefined) return;
    const { periodMs, tolerance } = this.hooks.heartbeat();
    const nowMs = this.hooks.clock.nowMs();
    const silentSinceMs = this.hooks.lastSentMs() ?? nowMs;
    if (nowMs - silentSinceMs < Math.max(0, tolerance - 2) * periodMs) return;
    this.sendBlocked = { sinceMs: nowMs };
    this.hooks.log({
      event: 'heartbeats blocked',
      error,
      silentMs: round(nowMs - silentSinceMs),
      hint: "the host's heartbeats cannot leave, so it takes no buckets until they can (its peers take them over); check that the dedicated IP is on the cluster interface and the heartbeat group has a route",
    });
    this.hooks.stepFirst({ verb: 'link', up: false, silentSinceMs });
  }

  /** A heartbeat left: a host that had taken itself out for blocked heartbeats comes back. */
  heartbeatsFlowing(): void {
    const blocked = this.sendBlocked;
    if (blocked === undefined) return;
    this.sendBlocked = undefined;
    this.hooks.log({
      event: 'heartbeats flowing',
      blockedMs: round(this.hooks.clock.nowMs() - blocked.sinceMs),
      rejoining: this.carrierUp && this.outBecause() === undefined,
    });
    this.rejoinIfClear();
  }

  withhold(count: number, reason: string): void {
    this.counts.heartbeatsWithheld += count;
    this.reportError({ event: 'heartbeat withheld', reason });
  }

  dataplaneError(operation: string, error: unknown): void {
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
  reportError(record: EventRecord): void {
    const kind = `${record.event}/${String(record.operation ?? '')}`;
    const now = this.hooks.clock.nowMs();
    const last = this.lastErrorReport.get(kind);
    if (last === undefined || now - last.atMs >= errorReportMs) {
      this.lastErrorReport.set(kind, { atMs: now, suppressed: 0 });
      this.hooks.log(
        last === undefined || last.suppressed === 0
          ? record
          : { ...record, suppressed: last.suppressed },
      );
    } else {
      last.suppressed++;
    }
  }
}
