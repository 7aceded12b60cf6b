// Watching the ruleset: `MonitorParser` reads `nft monitor` output into committed
// transactions, and `RulesetMonitor` keeps one long-lived `nft monitor` running for a watch,
// telling its listener what changed, when it went blind and when it is live again.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import {
  type NftFamily,
  type NftTable,
  type RulesetListener,
  assertTableName,
  familyPattern,
} from './nft-api.js';
import { names } from './table-names.js';
import { errorText } from '../core/error-text.js';

/** A monitor that died is started again after this; a watch is blind meanwhile. */
export const monitorRestartMsDefault = 1_000;
/** How often a monitor that has not printed its first transaction yet is probed. */
export const monitorProbeMsDefault = 50;
/** Lines of one transaction kept to describe it; a `flush ruleset` of a big ruleset has thousands. */
export const monitorLinesKeptMax = 20;
/** A line longer than this is not nft monitor's: it is cut, and its transaction counts as relevant. */
const monitorLineCharsMax = 64 * 1024;
/** Error output from a running monitor asks for a comparison at most this often. */
const monitorErrorResyncMs = 1_000;

/** One committed transaction as nft monitor printed it. */
export interface MonitorBatch {
  /** The first `monitorLinesKeptMax` lines. */
  readonly lines: readonly string[];
  readonly lineCount: number;
  /** It touched the watched table (or printed something that could not be read as a change). */
  readonly relevant: boolean;
  /** The `sync` markers it added to the watched table (quick transactions carry one). */
  readonly markers: readonly string[];
  /** The watched tables it deleted and did not add again. */
  readonly deleted: readonly NftTable[];
}

const monitorEventPattern = new RegExp(
  `^(?:add|delete|destroy|flush|insert|replace|update|reset) \\w+ ${familyPattern} (\\S+)`,
);

/**
 * Reads `nft monitor` output into transactions. nft 1.0.6 prints one line per object added or
 * deleted, then `# new generation N by process P (comm)` once the transaction committed; the
 * kernel serialises commits, so the lines between two generation lines are one transaction.
 * Expired set elements print nothing (checked on kernel 6.18).
 */
export class MonitorParser {
  private lines: string[] = [];
  private lineCount = 0;
  private relevant = false;
  private markers: string[] = [];
  /** The family of each watched table -> deleted (true) or added (false), last wins. */
  private tables = new Map<NftFamily, boolean>();
  private readonly markerPattern: RegExp;
  private readonly tablePattern: RegExp;

  constructor(private readonly tableName: string) {
    assertTableName('MonitorParser', tableName);
    // A table name may hold '.', which a pattern must not take for "any character".
    const table = tableName.replace(/[.]/g, '\\.');
    this.markerPattern = new RegExp(
      `^add element inet ${table} ${names.sync} \\{ (0x[0-9a-f]{8})\\b`,
    );
    this.tablePattern = new RegExp(`^(add|delete) table ${familyPattern} ${table}$`);
  }

  /** Takes one line; returns the transaction it completes, if it is a generation line. */
  line(text: string): MonitorBatch | undefined {
    const line = text.length > monitorLineCharsMax ? text.slice(0, monitorLineCharsMax) : text;
    if (line.startsWith('# new generation')) {
      const batch: MonitorBatch = {
        lines: this.lines,
        lineCount: this.lineCount,
        relevant: this.relevant,
        markers: this.markers,
        deleted: [...this.tables]
          .filter(([, deleted]) => deleted)
          .map(([family]) => ({ family, name: this.tableName })),
      };
      this.lines = [];
      this.lineCount = 0;
      this.relevant = false;
      this.markers = [];
      this.tables = new Map();
      return batch;
    }
    if (line.trim() === '') {
      return undefined;
    }
    this.lineCount++;
    if (this.lines.length < monitorLinesKeptMax) {
      this.lines.push(line);
    }
    const event = monitorEventPattern.exec(line);
    if (event === null || event[2] === this.tableName || line !== text) {
      this.relevant = true;
    }
    const marker = this.markerPattern.exec(line);
    if (marker !== null) {
      this.markers.push(marker[1]!);
    }
    // nlbd's own whole-table apply deletes the table and adds it again in one transaction.
    const table = this.tablePattern.exec(line);
    if (table !== null) {
      this.tables.set(table[2] as NftFamily, table[1] === 'delete');
    }
    return undefined;
  }
}

/**
 * One long-lived `nft monitor`, restarted when it dies. It is live, and says so with `resync`,
 * once it printed its first transaction: only then is it surely subscribed (nft prints nothing
 * when it starts). Until then `probe` is called every `probeMs`: a harmless transaction of our
 * own (a marker in the `sync` set) that the monitor prints once it listens. Costs nothing while
 * the ruleset does not change: the heartbeats refresh the lease in the kernel, unreported.
 */
export class RulesetMonitor {
  private child: ChildProcessWithoutNullStreams | undefined;
  private stopped = false;
  private live = false;
  private started = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private stderr = '';
  private lastErrorResyncMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly spawn: () => ChildProcessWithoutNullStreams,
    private readonly tableName: string,
    private readonly isOwn: (marker: string) => boolean,
    private readonly listener: RulesetListener,
    private readonly restartMs: number,
    private readonly probe: () => void = () => undefined,
    private readonly probeMs = monitorProbeMsDefault,
  ) {}

  start(): void {
    if (this.stopped) {
      return;
    }
    this.started++;
    this.live = false;
    this.stderr = '';
    const parser = new MonitorParser(this.tableName);
    let child: ChildProcessWithoutNullStreams;
    try {
      child = this.spawn();
    } catch (error) {
      this.died(`could not start: ${errorText(error)}`);
      return;
    }
    this.child = child;
    child.stdin.on('error', () => {});
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    createInterface({ input: child.stdout, crlfDelay: Infinity }).on('line', (line) => {
      if (this.child !== child) return;
      const batch = parser.line(line);
      if (batch !== undefined) this.transaction(batch);
    });
    child.stderr.on('data', (text: string) => {
      if (this.child !== child) return;
      this.stderr = `${this.stderr}${text}`.slice(-2_000);
      // A monitor that reports an error (e.g. its socket overran) may have missed changes.
      const nowMs = performance.now();
      if (this.live && nowMs - this.lastErrorResyncMs >= monitorErrorResyncMs) {
        this.lastErrorResyncMs = nowMs;
        this.listener.resync(`nft monitor reported: ${text.trim().slice(0, 200)}`);
      }
    });
    child.on('error', (error) => {
      if (this.child === child) this.died(error.message);
    });
    child.on('close', (code, signal) => {
      if (this.child === child) this.died(`exited (${signal ?? `code ${code}`})`);
    });
    this.probeUntilLive();
  }

  /** Probes now and every `probeMs` until the monitor printed a transaction (or stopped). */
  private probeUntilLive(): void {
    this.stopProbing();
    const tick = (): void => {
      if (this.live || this.child === undefined || this.stopped) {
        this.probeTimer = undefined;
        return;
      }
      this.probe();
      this.probeTimer = setTimeout(tick, this.probeMs);
      this.probeTimer.unref();
    };
    tick();
  }

  private stopProbing(): void {
    if (this.probeTimer !== undefined) clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }

  private transaction(batch: MonitorBatch): void {
    if (!this.live) {
      this.live = true;
      this.stopProbing();
      this.listener.resync(this.started === 1 ? 'nft monitor started' : 'nft monitor restarted');
    }
    if (batch.relevant && !batch.markers.some((marker) => this.isOwn(marker))) {
      this.listener.change({ lines: batch.lines, deleted: batch.deleted });
    }
  }

  private died(problem: string): void {
    this.child = undefined;
    this.stopProbing();
    if (this.stopped) {
      return;
    }
    this.live = false;
    const stderr = this.stderr.trim();
    this.listener.blind(
      `nft monitor ${problem}${stderr === '' ? '' : `: ${stderr.slice(-200)}`}; restarting in ${this.restartMs} ms`,
    );
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.start();
    }, this.restartMs);
    this.restartTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    this.stopProbing();
    if (this.restartTimer !== undefined) clearTimeout(this.restartTimer);
    const child = this.child;
    this.child = undefined;
    if (child !== undefined) {
      child.stdin.end();
      child.kill('SIGKILL');
    }
  }
}
