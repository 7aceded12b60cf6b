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
/** A reply line longer than this is not from a lab backend. */
const replyBytesMax = 1024;

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

function classify(error: NodeJS.ErrnoException): FailureKind {
  switch (error.code) {
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'unreachable';
    default:
      return 'error';
  }
}

function checkBound(name: string, value: number, min: number, max: number): void {
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new RangeError(`loadgen ${name} must be between ${min} and ${max}, got ${value}`);
  }
}

/**
 * The source port of a connecting socket. Node caches getsockname on first read, so this is
 * only asked once connect() has been issued. For an IP literal, net.connect issues it from a
 * process.nextTick scheduled at the call, so a nextTick scheduled right after net.connect runs
 * just after it, before any I/O callback: a setImmediate would run after the poll phase, where a
 * fast refusal or reset may already have closed the handle (the port then read as 0).
 */
function sourceOf(socket: net.Socket): { ip: string; port: number } {
  return { ip: socket.localAddress ?? '', port: socket.localPort ?? 0 };
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

export async function runLoadgen(
  options: LoadgenOptions,
  hooks: LoadgenHooks = {},
): Promise<LoadgenSummary> {
  const target = options.target ?? labVip;
  const port = options.port ?? labHttpPort;
  const timeoutMs = options.timeoutMs ?? loadgenTimeoutMsDefault;
  const concurrencyMax = options.concurrencyMax ?? loadgenConcurrencyMaxDefault;
  const holdsWanted = options.holds ?? 0;
  const pingIntervalMs = options.holdPingIntervalMs ?? 200;
  const pingTimeoutMs = options.holdPingTimeoutMs ?? 1_000;
  const progressIntervalMs = options.progressIntervalMs ?? 1_000;
  const sources = options.sources ?? [];
  const keepConnections = options.keepConnections ?? true;

  assertLabSafeAddress(target, 'loadgen target');
  for (const source of sources) {
    assertLabSafeAddress(source, 'loadgen source address');
  }
  checkBound('port', port, 1, 65535);
  checkBound('ratePerSecond', options.ratePerSecond, 0.001, loadgenRatePerSecondMax);
  checkBound('countMax', options.countMax, 0, loadgenCountMax);
  checkBound('durationMs', options.durationMs, 1, loadgenDurationMsMax);
  checkBound('timeoutMs', timeoutMs, 10, 60_000);
  checkBound('concurrencyMax', concurrencyMax, 1, 65_536);
  checkBound('holds', holdsWanted, 0, loadgenHoldsMax);
  checkBound('holdPingIntervalMs', pingIntervalMs, 10, 60_000);
  checkBound('holdPingTimeoutMs', pingTimeoutMs, 10, 60_000);
  checkBound('progressIntervalMs', progressIntervalMs, 10, 60_000);

  const t0 = performance.now();
  const now = (): number => performance.now() - t0;
  const records: ConnectionRecord[] = [];
  const latencies: number[] = [];
  const perHost: Record<string, number> = {};
  const failures: Partial<Record<FailureKind, number>> = {};
  let intervalPerHost: Record<string, number> = {};
  let intervalFailures: Partial<Record<FailureKind, number>> = {};
  let started = 0;
  let answered = 0;
  let failed = 0;
  let skipped = 0;
  let inFlight = 0;
  let sourceNext = 0;
  /** Set once the run is over: closing the held connections then is not a break. */
  let runOver = false;

  const finish = (record: ConnectionRecord): void => {
    inFlight--;
    if (record.host !== undefined) {
      answered++;
      bump(perHost, String(record.host));
      bump(intervalPerHost, String(record.host));
      latencies.push(record.latencyMs);
    } else if (record.failure !== undefined) {
      failed++;
      bump(failures, record.failure);
      bump(intervalFailures, record.failure);
    }
    if (keepConnections) {
      records.push(record);
    }
    hooks.onConnection?.(record);
  };

  const openShort = (seq: number): void => {
    const startedAt = performance.now();
    const atMs = startedAt - t0;
    const localAddress = sources.length > 0 ? sources[sourceNext++ % sources.length] : undefined;
    inFlight++;
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
      finish({
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
  };

  // Long-lived connections: opened first, pinged until the short connections are done.
  const holds: HoldRecord[] = [];
  const holdSockets: net.Socket[] = [];
  const holdCleanups: Array<() => void> = [];
  let holdsBroken = 0;
  const openHold = (index: number): Promise<void> =>
    new Promise((opened) => {
      const localAddress = sources.length > 0 ? sources[index % sources.length] : undefined;
      const record: HoldRecord = { index, sourceIp: localAddress ?? '', sourcePort: 0, pingsOk: 0 };
      holds.push(record);
      const socket = net.connect({ host: target, port, ...(localAddress ? { localAddress } : {}) });
      holdSockets.push(socket);
      socket.setNoDelay(true);
      socket.setEncoding('utf8');
      let buffered = '';
      let pingSent = 0;
      /** Pending while a ping awaits its echo; firing means the connection is broken. */
      let echoTimer: NodeJS.Timeout | undefined;
      const breakHold = (kind: FailureKind, error?: string): void => {
        if (record.broken !== undefined || runOver) {
          return;
        }
        record.broken = { kind, atMs: Math.round(now()), ...(error ? { error } : {}) };
        holdsBroken++;
        hooks.onHoldBreak?.(record);
        socket.destroy();
        opened();
      };
      const openTimer = setTimeout(() => breakHold('timeout', 'no HOLD reply'), timeoutMs);
      process.nextTick(() => {
        const s = sourceOf(socket);
        record.sourceIp = s.ip || record.sourceIp;
        record.sourcePort = s.port;
      });
      socket.on('connect', () => socket.write('HOLD\n'));
      socket.on('data', (chunk: string) => {
        buffered += chunk;
        let newline: number;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          if (record.host === undefined) {
            const host = parseHostReply(line);
            if (host === undefined) {
              breakHold('bad-reply', line.slice(0, 80));
              return;
            }
            clearTimeout(openTimer);
            record.host = host;
            record.openedAtMs = Math.round(now());
            opened();
          } else if (line === `ping ${pingSent}`) {
            record.pingsOk++;
            clearTimeout(echoTimer);
            echoTimer = undefined;
          } else {
            breakHold('bad-reply', line.slice(0, 80));
            return;
          }
        }
        if (buffered.length > replyBytesMax) {
          breakHold('bad-reply', 'line too long');
        }
      });
      socket.on('error', (error: NodeJS.ErrnoException) =>
        breakHold(classify(error), error.code ?? error.message),
      );
      socket.on('close', () => breakHold('closed'));
      const pinger = setInterval(() => {
        if (record.host === undefined || record.broken !== undefined || echoTimer !== undefined) {
          return;
        }
        pingSent++;
        const sent = pingSent;
        echoTimer = setTimeout(
          () => breakHold('timeout', `no echo of ping ${sent} within ${pingTimeoutMs} ms`),
          pingTimeoutMs,
        );
        socket.write(`ping ${sent}\n`);
      }, pingIntervalMs);
      holdCleanups.push(() => {
        clearTimeout(openTimer);
        clearInterval(pinger);
        clearTimeout(echoTimer);
      });
    });

  await Promise.all(Array.from({ length: holdsWanted }, (_, i) => openHold(i)));

  const progressTimer = setInterval(() => {
    hooks.onProgress?.({
      type: 'progress',
      atMs: Math.round(now()),
      intervalMs: progressIntervalMs,
      perHost: intervalPerHost,
      failures: intervalFailures,
      started,
      inFlight,
      holdsAlive: holds.filter((h) => h.host !== undefined && h.broken === undefined).length,
      holdsBroken,
    });
    intervalPerHost = {};
    intervalFailures = {};
  }, progressIntervalMs);

  // Open-loop arrivals: connection k is due at k / rate seconds, whatever happened before, so a
  // slow cluster shows up as latency and skips instead of silently lowering the offered load.
  const stoppedBy = await new Promise<'count' | 'duration' | 'abort'>((done) => {
    const tickMs = 5;
    const loadStart = now();
    const tick = (): void => {
      const elapsed = now() - loadStart;
      if (options.signal?.aborted) {
        return stop('abort');
      }
      if (started + skipped >= options.countMax) {
        return stop('count');
      }
      if (elapsed >= options.durationMs) {
        return stop('duration');
      }
      const due = Math.min(
        options.countMax,
        Math.floor((elapsed * options.ratePerSecond) / 1000) + 1,
      );
      while (started + skipped < due) {
        if (inFlight >= concurrencyMax) {
          skipped++;
        } else {
          openShort(started++);
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

  // Every short connection ends within timeoutMs of its start, so this wait is bounded.
  while (inFlight > 0) {
    await sleep(20);
  }
  runOver = true;
  clearInterval(progressTimer);
  for (const cleanup of holdCleanups) {
    cleanup();
  }
  for (const socket of holdSockets) {
    socket.destroy();
  }

  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    type: 'summary',
    target,
    port,
    elapsedMs: Math.round(now()),
    stoppedBy,
    started,
    answered,
    failed,
    skippedAtConcurrencyMax: skipped,
    perHost,
    failures,
    latencyMs: latencySummary(sorted),
    holds,
    holdsBroken,
    ...(keepConnections ? { connections: records } : {}),
  };
}
