// The lab's load generator: the engine of the demo and the integration tests. It runs inside a
// client namespace (spawned with `ip netns exec`, see runLoadgenInClient) and
//   - opens new short connections (`GET`) at a bounded rate, for a bounded count AND time, each
//     from a fresh ephemeral source port (and round-robin over the given source addresses),
//     recording source ip:port, which host answered, latency, or how it failed;
//   - holds K long-lived `HOLD` connections, pinging each one periodically, and records which
//     host holds each and whether and how it broke.
// It only ever connects to 198.18.0.0/15 (asserted), the lab's benchmarking range.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseHostReply } from './backend.js';
import {
  HeldConnection,
  type HoldOwner,
  classify,
  replyBytesMax,
  sourceOf,
} from './loadgen-hold.js';
import { assertLabSafeAddress, labHttpPort, labVip } from './naming.js';

/** Bounds that hold whatever the caller asks: a load loop must always end (helper rules). */
export const loadgenCountMax = 1_000_000;
export const loadgenDurationMsMax = 10 * 60 * 1000;
/** Two cores cannot open more than a few thousand connections/s; more is a typo. */
export const loadgenRatePerSecondMax = 20_000;
export const loadgenHoldsMax = 10_000;
export const loadgenConcurrencyMaxDefault = 512;
/** Longer than one SYN retransmission (1 s), so a SYN lost in a convergence gap still counts. */
export const loadgenTimeoutMsDefault = 3_000;

export type FailureKind =
  'timeout' | 'reset' | 'refused' | 'unreachable' | 'closed' | 'bad-reply' | 'error';

export interface LoadgenOptions {
  /** Default: the lab VIP 198.18.0.100. */
  readonly target?: string;
  readonly port?: number;
  readonly ratePerSecond: number;
  /** Mandatory bound: stop after this many new connections. */
  readonly countMax: number;
  /** Mandatory bound: stop opening connections after this long. */
  readonly durationMs: number;
  readonly timeoutMs?: number;
  /** New connections in flight at once; when reached, due connections are skipped and counted. */
  readonly concurrencyMax?: number;
  /** Local addresses to bind, round-robin; default: the kernel's choice (the client's own IP). */
  readonly sources?: readonly string[];
  readonly holds?: number;
  readonly holdPingIntervalMs?: number;
  readonly holdPingTimeoutMs?: number;
  readonly progressIntervalMs?: number;
  /** Keep every connection record in the summary (in-process use); default true. */
  readonly keepConnections?: boolean;
  /** Stops opening new connections early. */
  readonly signal?: AbortSignal;
}

export interface ConnectionRecord {
  readonly type: 'connection';
  readonly seq: number;
  /** Start time, ms since the run started. */
  readonly atMs: number;
  readonly sourceIp: string;
  /** 0 when the kernel never assigned one (the connect failed at once). */
  readonly sourcePort: number;
  readonly host?: number;
  /** From the first SYN to the reply (or to the failure). */
  readonly latencyMs: number;
  readonly failure?: FailureKind;
  readonly error?: string;
}

export interface HoldRecord {
  readonly index: number;
  sourceIp: string;
  sourcePort: number;
  host?: number;
  openedAtMs?: number;
  pingsOk: number;
  broken?: { readonly kind: FailureKind; readonly atMs: number; readonly error?: string };
}

export interface ProgressRecord {
  readonly type: 'progress';
  readonly atMs: number;
  readonly intervalMs: number;
  /** Answered connections in this interval, per host id. */
  readonly perHost: Record<string, number>;
  readonly failures: Partial<Record<FailureKind, number>>;
  readonly started: number;
  readonly inFlight: number;
  readonly holdsAlive: number;
  readonly holdsBroken: number;
}

export interface LatencySummary {
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

export interface LoadgenSummary {
  readonly type: 'summary';
  readonly target: string;
  readonly port: number;
  readonly elapsedMs: number;
  readonly stoppedBy: 'count' | 'duration' | 'abort';
  readonly started: number;
  readonly answered: number;
  readonly failed: number;
  readonly skippedAtConcurrencyMax: number;
  readonly perHost: Record<string, number>;
  readonly failures: Partial<Record<FailureKind, number>>;
  readonly latencyMs: LatencySummary | null;
  readonly holds: HoldRecord[];
  readonly holdsBroken: number;
  readonly connections?: ConnectionRecord[];
}

export interface LoadgenHooks {
  onProgress?(record: ProgressRecord): void;
  onConnection?(record: ConnectionRecord): void;
  onHoldBreak?(record: HoldRecord): void;
}

function checkBound(name: string, value: number, min: number, max: number): void {
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new RangeError(`loadgen ${name} must be between ${min} and ${max}, got ${value}`);
  }
}

function percentile(sorted: readonly number[], q: number): number {
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return Math.round((sorted[index] ?? 0) * 1000) / 1000;
}

/** p50, p90, p99 and max of latencies sorted ascending, or null when there are none. */
export function latencySummary(sorted: readonly number[]): LatencySummary | null {
  return sorted.length === 0
    ? null
    : {
        p50: percentile(sorted, 0.5),
        p90: percentile(sorted, 0.9),
        p99: percentile(sorted, 0.99),
        max: percentile(sorted, 1),
      };
}

function bump<K extends string>(counts: Partial<Record<K, number>>, key: K): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

/** A run's options with their defaults, every bound checked. */
export interface LoadgenSettings {
  readonly target: string;
  readonly port: number;
  readonly timeoutMs: number;
  readonly concurrencyMax: number;
  readonly holdsWanted: number;
  readonly pingIntervalMs: number;
  readonly pingTimeoutMs: number;
  readonly progressIntervalMs: number;
  readonly sources: readonly string[];
  readonly keepConnections: boolean;
}

function checkedSettings(options: LoadgenOptions): LoadgenSettings {
  const settings: LoadgenSettings = {
    target: options.target ?? labVip,
    port: options.port ?? labHttpPort,
    timeoutMs: options.timeoutMs ?? loadgenTimeoutMsDefault,
    concurrencyMax: options.concurrencyMax ?? loadgenConcurrencyMaxDefault,
    holdsWanted: options.holds ?? 0,
    pingIntervalMs: options.holdPingIntervalMs ?? 200,
    pingTimeoutMs: options.holdPingTimeoutMs ?? 1_000,
    progressIntervalMs: options.progressIntervalMs ?? 1_000,
    sources: options.sources ?? [],
    keepConnections: options.keepConnections ?? true,
  };
  assertLabSafeAddress(settings.target, 'loadgen target');
  for (const source of settings.sources) {
    assertLabSafeAddress(source, 'loadgen source address');
  }
  checkBound('port', settings.port, 1, 65535);
  checkBound('ratePerSecond', options.ratePerSecond, 0.001, loadgenRatePerSecondMax);
  checkBound('countMax', options.countMax, 0, loadgenCountMax);
  checkBound('durationMs', options.durationMs, 1, loadgenDurationMsMax);
  checkBound('timeoutMs', settings.timeoutMs, 10, 60_000);
  checkBound('concurrencyMax', settings.concurrencyMax, 1, 65_536);
  checkBound('holds', settings.holdsWanted, 0, loadgenHoldsMax);
  checkBound('holdPingIntervalMs', settings.pingIntervalMs, 10, 60_000);
  checkBound('holdPingTimeoutMs', settings.pingTimeoutMs, 10, 60_000);
  checkBound('progressIntervalMs', settings.progressIntervalMs, 10, 60_000);
  return settings;
}

export async function runLoadgen(
  options: LoadgenOptions,
  hooks: LoadgenHooks = {},
): Promise<LoadgenSummary> {
  return new LoadgenRun(options, checkedSettings(options), hooks).run();
}

/** One run: its counters, its short connections in flight and its held connections. */
class LoadgenRun implements HoldOwner {
  private readonly t0 = performance.now();
  private readonly records: ConnectionRecord[] = [];
  private readonly latencies: number[] = [];
  private readonly perHost: Record<string, number> = {};
  private readonly failures: Partial<Record<FailureKind, number>> = {};
  private intervalPerHost: Record<string, number> = {};
  private intervalFailures: Partial<Record<FailureKind, number>> = {};
  private started = 0;
  private answered = 0;
  private failed = 0;
  private skipped = 0;
  private inFlight = 0;
  private sourceNext = 0;
  /** Set once the run is over: closing the held connections then is not a break. */
  runOver = false;
  readonly holds: HoldRecord[] = [];
  private readonly held: HeldConnection[] = [];
  private holdsBroken = 0;

  constructor(
    private readonly options: LoadgenOptions,
    readonly settings: LoadgenSettings,
    private readonly hooks: LoadgenHooks,
  ) {}

  now(): number {
    return performance.now() - this.t0;
  }

  holdBroke(record: HoldRecord): void {
    this.holdsBroken++;
    this.hooks.onHoldBreak?.(record);
  }

  async run(): Promise<LoadgenSummary> {
    const { settings } = this;
    // Long-lived connections: opened first, pinged until the short connections are done.
    await Promise.all(
      Array.from(
        { length: settings.holdsWanted },
        (_, i) =>
          new Promise<void>((opened) => {
            this.held.push(new HeldConnection(settings, this, i, opened));
          }),
      ),
    );
    const progressTimer = setInterval(() => this.progress(), settings.progressIntervalMs);
    const stoppedBy = await this.arrivals();
    // Every short connection ends within timeoutMs of its start, so this wait is bounded.
    while (this.inFlight > 0) {
      await sleep(20);
    }
    this.runOver = true;
    clearInterval(progressTimer);
    for (const hold of this.held) {
      hold.cleanup();
    }
    for (const hold of this.held) {
      hold.socket.destroy();
    }
    const sorted = [...this.latencies].sort((a, b) => a - b);
    return {
      type: 'summary',
      target: settings.target,
      port: settings.port,
      elapsedMs: Math.round(this.now()),
      stoppedBy,
      started: this.started,
      answered: this.answered,
      failed: this.failed,
      skippedAtConcurrencyMax: this.skipped,
      perHost: this.perHost,
      failures: this.failures,
      latencyMs: latencySummary(sorted),
      holds: this.holds,
      holdsBroken: this.holdsBroken,
      ...(settings.keepConnections ? { connections: this.records } : {}),
    };
  }

  private progress(): void {
    this.hooks.onProgress?.({
      type: 'progress',
      atMs: Math.round(this.now()),
      intervalMs: this.settings.progressIntervalMs,
      perHost: this.intervalPerHost,
      failures: this.intervalFailures,
      started: this.started,
      inFlight: this.inFlight,
      holdsAlive: this.holds.filter((h) => h.host !== undefined && h.broken === undefined).length,
      holdsBroken: this.holdsBroken,
    });
    this.intervalPerHost = {};
    this.intervalFailures = {};
  }

  /**
   * Open-loop arrivals: connection k is due at k / rate seconds, whatever happened before, so a
   * slow cluster shows up as latency and skips instead of silently lowering the offered load.
   */
  private arrivals(): Promise<'count' | 'duration' | 'abort'> {
    const { options } = this;
    return new Promise((done) => {
      const tickMs = 5;
      const loadStart = this.now();
      const tick = (): void => {
        const elapsed = this.now() - loadStart;
        if (options.signal?.aborted) {
          return stop('abort');
        }
        if (this.started + this.skipped >= options.countMax) {
          return stop('count');
        }
        if (elapsed >= options.durationMs) {
          return stop('duration');
        }
        const due = Math.min(
          options.countMax,
          Math.floor((elapsed * options.ratePerSecond) / 1000) + 1,
        );
        while (this.started + this.skipped < due) {
          if (this.inFlight >= this.settings.concurrencyMax) {
            this.skipped++;
          } else {
            this.openShort(this.started++);
          }
        }
      };
      const timer = setInterval(tick, tickMs);
      const stop = (why: 'count' | 'duration' | 'abort'): void => {
        clearInterval(timer);
        done(why);
      };
      tick();
    });
  }

  private finish(record: ConnectionRecord): void {
    this.inFlight--;
    if (record.host !== undefined) {
      this.answered++;
      bump(this.perHost, String(record.host));
      bump(this.intervalPerHost, String(record.host));
      this.latencies.push(record.latencyMs);
    } else if (record.failure !== undefined) {
      this.failed++;
      bump(this.failures, record.failure);
      bump(this.intervalFailures, record.failure);
    }
    if (this.settings.keepConnections) {
      this.records.push(record);
    }
    this.hooks.onConnection?.(record);
  }

  private openShort(seq: number): void {
    const { sources, target, port, timeoutMs } = this.settings;
    const startedAt = performance.now();
    const atMs = startedAt - this.t0;
    const localAddress =
      sources.length > 0 ? sources[this.sourceNext++ % sources.length] : undefined;
    this.inFlight++;
    let source = { ip: localAddress ?? '', port: 0 };
    let reply = '';
    let settled = false;
    const socket = net.connect({ host: target, port, ...(localAddress ? { localAddress } : {}) });
    const timer = setTimeout(() => {
      settle({ failure: 'timeout' });
      socket.destroy();
    }, timeoutMs);
    const settle = (outcome: { host: number } | { failure: FailureKind; error?: string }): void => {
      if (settled) {
        return;
      }
      settled = true;
      clearTimeout(timer);
      if (source.port === 0) {
        source = sourceOf(socket);
      }
      this.finish({
        type: 'connection',
        seq,
        atMs: Math.round(atMs * 1000) / 1000,
        sourceIp: source.ip || localAddress || '',
        sourcePort: source.port,
        latencyMs: Math.round((performance.now() - startedAt) * 1000) / 1000,
        ...outcome,
      });
    };
    process.nextTick(() => {
      if (!settled) {
        source = sourceOf(socket);
      }
    });
    socket.setNoDelay(true);
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      socket.write('GET\n');
    });
    socket.on('data', (chunk: string) => {
      reply += chunk;
      const newline = reply.indexOf('\n');
      if (newline >= 0) {
        const host = parseHostReply(reply.slice(0, newline));
        settle(host === undefined ? { failure: 'bad-reply', error: reply.slice(0, 80) } : { host });
        socket.destroy();
      } else if (reply.length > replyBytesMax) {
        settle({ failure: 'bad-reply', error: 'reply too long' });
        socket.destroy();
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      settle({ failure: classify(error), error: error.code ?? error.message });
    });
    socket.on('close', () => {
      settle({ failure: 'closed' });
    });
  }
}
