// The bucket prober of the lab benchmark, run inside a client namespace of a lab
// (`ip netns exec nlb-<lab>-c<J> node vite-node.mjs bench/lab/prober.ts`).
//
// For each bucket it is given, it opens a fresh connection every `intervalMs` from a source port
// that hashes into that bucket (the ports are chosen by the caller with the cluster's flow hash),
// sends `GET`, and records when the attempt started and which host answered, or how it failed.
// A short connect timeout and a fresh socket per attempt mean no SYN retransmission ever blurs
// the timeline: the SYN was either accepted at once or the attempt counts as failed. Once
// connected, the reply (which names the host) may take longer: a backend starved of CPU for a
// moment answers late, but the bucket did take the connection when the SYN went out.
//
// Protocol: one JSON line of ProberConfig on stdin, then commands, one JSON line each:
//   {"cmd":"interval","intervalMs":5}              probe faster or slower from now on
//   {"cmd":"until","afterEpochMs":…,"expect":{…},"tailMs":…}
//       stop once every bucket had an attempt started at or after `afterEpochMs` answered by
//       one of its expected hosts, `tailMs` later (to see that service stays)
//   {"cmd":"stop"}
// On stdout: {"type":"ready"} once probing, then exactly one {"type":"result",…} (or
// {"type":"error",…}). `durationMsMax` bounds the whole run whatever the commands say.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { parseHostReply } from '../../src/lab/backend.js';
import { assertLabSafeAddress } from '../../src/lab/naming.js';

export interface ProberConfig {
  readonly target: string;
  readonly port: number;
  readonly sourceIp: string;
  readonly buckets: readonly { readonly bucket: number; readonly ports: readonly number[] }[];
  readonly intervalMs: number;
  /** For the SYN: no connection within this is a failed attempt ('timeout'). */
  readonly timeoutMs: number;
  /** For the reply once connected ('no-reply' after it). */
  readonly replyTimeoutMs: number;
  readonly durationMsMax: number;
}

export type ProberCommand =
  | { readonly cmd: 'interval'; readonly intervalMs: number }
  | {
      readonly cmd: 'until';
      readonly afterEpochMs: number;
      /** Bucket → the hosts whose answer counts as "served again". */
      readonly expect: Readonly<Record<string, readonly number[]>>;
      readonly tailMs: number;
    }
  | { readonly cmd: 'stop' };

/**
 * An attempt: start time in ms after `originEpochMs` (0.01 ms); the host that answered, or why
 * not; and how long the connect took (null when it never connected).
 */
export type Attempt = readonly [
  startMs: number,
  outcome: number | string,
  connectMs: number | null,
];

export interface ProberResult {
  readonly type: 'result';
  readonly originEpochMs: number;
  readonly stoppedBy: 'done' | 'stop' | 'duration';
  readonly buckets: readonly { readonly bucket: number; readonly attempts: Attempt[] }[];
  /** Attempts that could not even be started (source port busy): never counted as failures. */
  readonly skipped: number;
}

/** Bounds whatever the caller asks: a probe loop must end (helper rules). */
const bucketsMax = 1024;
const intervalMsMin = 1;
const durationMsLimit = 120_000;
/** 200 buckets probed every 5 ms would be 40,000 connections/s: far beyond two cores. */
const attemptsPerSecondMax = 20_000;
const replyBytesMax = 256;

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new RangeError(`prober: ${message}`);
}

function nowEpochMs(): number {
  return performance.timeOrigin + performance.now();
}

function validate(config: ProberConfig): void {
  assertLabSafeAddress(config.target, 'prober target');
  assertLabSafeAddress(config.sourceIp, 'prober source address');
  check(Number.isInteger(config.port) && config.port > 0 && config.port < 65536, 'bad port');
  check(config.buckets.length > 0 && config.buckets.length <= bucketsMax, 'bad bucket count');
  for (const b of config.buckets) {
    check(b.ports.length > 0, `bucket ${b.bucket} has no source port`);
  }
  check(config.intervalMs >= intervalMsMin, `intervalMs must be at least ${intervalMsMin}`);
  check(config.timeoutMs >= 5 && config.timeoutMs <= 5_000, 'timeoutMs must be 5..5000');
  check(
    config.replyTimeoutMs >= 5 && config.replyTimeoutMs <= 10_000,
    'replyTimeoutMs must be 5..10000',
  );
  check(
    config.durationMsMax > 0 && config.durationMsMax <= durationMsLimit,
    `durationMsMax must be 1..${durationMsLimit}`,
  );
}

function checkRate(buckets: number, intervalMs: number): void {
  check(
    (buckets * 1000) / intervalMs <= attemptsPerSecondMax,
    `${buckets} buckets every ${intervalMs} ms exceeds ${attemptsPerSecondMax} attempts/s`,
  );
}

function failureOf(error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    case 'ECONNREFUSED':
      return 'refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'unreachable';
    default:
      return error.code ?? 'error';
  }
}

// eslint-disable-next-line max-lines-per-function -- one measurement from set-up to teardown, each step in order; to be split when issue 11 reworks the benchmarks
export function runProber(
  config: ProberConfig,
  commands: AsyncIterable<ProberCommand>,
  onReady: () => void,
): Promise<ProberResult> {
  validate(config);
  let intervalMs = config.intervalMs;
  checkRate(config.buckets.length, intervalMs);
  const originEpochMs = nowEpochMs();
  const rel = (epochMs: number): number => Math.round((epochMs - originEpochMs) * 100) / 100;
  const state = config.buckets.map((b) => ({
    bucket: b.bucket,
    ports: b.ports,
    nextPort: 0,
    // Spread the first attempts over one interval so the buckets do not fire in one burst.
    dueMs: 0,
    attempts: [] as Attempt[],
  }));
  state.forEach((s, i) => (s.dueMs = (i * intervalMs) / state.length));
  let skipped = 0;
  let inFlight = 0;
  let until: Extract<ProberCommand, { cmd: 'until' }> | undefined;
  let doneAtMs: number | undefined;

  const attempt = (s: (typeof state)[number]): void => {
    const localPort = s.ports[s.nextPort++ % s.ports.length]!;
    const startedEpochMs = nowEpochMs();
    let settled = false;
    let connectMs: number | null = null;
    let timer: NodeJS.Timeout | undefined;
    const record = (outcome: number | string): void => {
      if (settled) return;
      settled = true;
      inFlight--;
      clearTimeout(timer);
      s.attempts.push([rel(startedEpochMs), outcome, connectMs]);
    };
    inFlight++;
    const socket = net.connect({
      host: config.target,
      port: config.port,
      localAddress: config.sourceIp,
      localPort,
    });
    timer = setTimeout(() => {
      // A connect the kernel completed while this process waited for the CPU is only seen in
      // the poll phase, which runs after timers: decide after it (setImmediate), not before.
      setImmediate(() => {
        if (connectMs === null) {
          record('timeout');
          socket.destroy();
        }
      });
    }, config.timeoutMs);
    let reply = '';
    socket.setEncoding('utf8');
    socket.setNoDelay(true);
    socket.on('connect', () => {
      connectMs = Math.round((nowEpochMs() - startedEpochMs) * 100) / 100;
      clearTimeout(timer);
      timer = setTimeout(() => {
        record('no-reply');
        socket.destroy();
      }, config.replyTimeoutMs);
      socket.write('GET\n');
    });
    socket.on('data', (chunk: string) => {
      reply += chunk;
      const newline = reply.indexOf('\n');
      if (newline >= 0) {
        const host = parseHostReply(reply.slice(0, newline));
        record(host ?? 'bad-reply');
        // The backend closes first; ending our side after its FIN keeps TIME_WAIT off the
        // client, so the same source port is free again for the next round.
        socket.end();
      } else if (reply.length > replyBytesMax) {
        record('bad-reply');
        socket.destroy();
      }
    });
    socket.on('end', () => socket.destroy());
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (!settled && (error.code === 'EADDRINUSE' || error.code === 'EADDRNOTAVAIL')) {
        // The port is still held by an earlier attempt: nothing was sent, so it is no data.
        settled = true;
        inFlight--;
        clearTimeout(timer);
        skipped++;
        return;
      }
      record(failureOf(error));
    });
    socket.on('close', () => record('closed'));
  };

  const served = (s: (typeof state)[number], u: NonNullable<typeof until>): boolean => {
    const hosts = u.expect[String(s.bucket)] ?? [];
    const after = rel(u.afterEpochMs);
    return s.attempts.some(([at, outcome]) => at >= after && hosts.includes(outcome as number));
  };

  return new Promise((resolve, reject) => {
    let stoppedBy: ProberResult['stoppedBy'] | undefined;
    const finish = (why: ProberResult['stoppedBy']): void => {
      stoppedBy ??= why;
    };
    const tick = setInterval(() => {
      const now = nowEpochMs() - originEpochMs;
      if (now >= config.durationMsMax) finish('duration');
      if (until !== undefined && doneAtMs === undefined && state.every((s) => served(s, until!))) {
        doneAtMs = now + until.tailMs;
      }
      if (doneAtMs !== undefined && now >= doneAtMs) finish('done');
      if (stoppedBy !== undefined) {
        clearInterval(tick);
        // Every attempt ends within timeoutMs + replyTimeoutMs; wait so none is cut short.
        const waitStart = now;
        const drain = setInterval(() => {
          if (
            inFlight === 0 ||
            nowEpochMs() - originEpochMs >
              waitStart + config.timeoutMs + config.replyTimeoutMs + 100
          ) {
            clearInterval(drain);
            resolve({
              type: 'result',
              originEpochMs,
              stoppedBy: stoppedBy!,
              buckets: state.map((s) => ({ bucket: s.bucket, attempts: s.attempts })),
              skipped,
            });
          }
        }, 5);
        return;
      }
      for (const s of state) {
        if (s.dueMs <= now) {
          attempt(s);
          // Catching up after a stall would fire a burst; skip ahead to the next slot instead.
          s.dueMs = Math.max(s.dueMs + intervalMs, now);
        }
      }
    }, 1);
    onReady();
    void (async () => {
      try {
        for await (const command of commands) {
          if (command.cmd === 'interval') {
            checkRate(state.length, command.intervalMs);
            check(command.intervalMs >= intervalMsMin, 'bad intervalMs');
            intervalMs = command.intervalMs;
            const now = nowEpochMs() - originEpochMs;
            for (const s of state) s.dueMs = Math.min(s.dueMs, now + intervalMs);
          } else if (command.cmd === 'until') {
            until = command;
          } else {
            finish('stop');
          }
        }
      } catch (error) {
        clearInterval(tick);
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    })();
  });
}

async function* commandsFrom(lines: AsyncIterator<string>): AsyncIterable<ProberCommand> {
  for (;;) {
    const next = await lines.next();
    if (next.done === true) return;
    if (next.value.trim() !== '') yield JSON.parse(next.value) as ProberCommand;
  }
}

async function main(): Promise<void> {
  const emit = (value: unknown): void => {
    process.stdout.write(`${JSON.stringify(value)}\n`);
  };
  const lines = createInterface({ input: process.stdin });
  const iterator = lines[Symbol.asyncIterator]();
  const firstLine = await iterator.next();
  if (firstLine.done === true) throw new Error('prober: no config line on stdin');
  const config = JSON.parse(firstLine.value) as ProberConfig;
  const result = await runProber(config, commandsFrom(iterator), () => emit({ type: 'ready' }));
  emit(result);
  // stdin may stay open; the result is all the caller waits for.
  process.exit(0);
}

main().catch((error: unknown) => {
  process.stdout.write(
    `${JSON.stringify({ type: 'error', message: error instanceof Error ? error.message : String(error) })}\n`,
  );
  process.exit(2);
});
