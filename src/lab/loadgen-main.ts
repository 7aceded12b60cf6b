#!/usr/bin/env node
// Entry point of the lab load generator, run inside a client namespace:
//   ip netns exec nlb-<lab>-c1 node dist/lab/loadgen-main.js --rate 200 --count 1000 --duration-ms 5000
// Output is JSON lines on stdout: `progress` once per interval, `connection` per connection
// (with --connections), `hold-break` when a held connection breaks, and one final `summary`.
// SIGTERM or SIGINT stops opening connections and still prints the summary.
import { Command, InvalidArgumentError } from 'commander';
import {
  loadgenCountMax,
  loadgenDurationMsMax,
  loadgenHoldsMax,
  loadgenRatePerSecondMax,
  runLoadgen,
} from './loadgen.js';
import { labHttpPort, labVip } from './naming.js';
import { errorText } from '../core/error-text.js';

function number(min: number, max: number, integer = true) {
  return (text: string): number => {
    const value = Number(text);
    if (
      !Number.isFinite(value) ||
      (integer && !Number.isInteger(value)) ||
      value < min ||
      value > max
    ) {
      throw new InvalidArgumentError(
        `expected ${integer ? 'an integer' : 'a number'} from ${min} to ${max}`,
      );
    }
    return value;
  };
}

function addresses(text: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...text
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
  ];
}

const program = new Command('nlb-lab-loadgen')
  .description('lab load generator: bounded short connections and long-lived HOLD connections')
  .option('--target <address>', 'address to connect to (198.18.0.0/15 only)', labVip)
  .option('--port <n>', 'TCP port', number(1, 65535), labHttpPort)
  .requiredOption(
    '--rate <perSecond>',
    'new connections per second',
    number(0.001, loadgenRatePerSecondMax, false),
  )
  .requiredOption(
    '--count <n>',
    'stop after this many connections (mandatory bound)',
    number(0, loadgenCountMax),
  )
  .requiredOption(
    '--duration-ms <ms>',
    'stop after this long (mandatory bound)',
    number(1, loadgenDurationMsMax),
  )
  .option('--timeout-ms <ms>', 'per-connection timeout', number(10, 60_000))
  .option('--concurrency <n>', 'new connections in flight at most', number(1, 65_536))
  .option('--source <addresses>', 'local source addresses, comma-separated, round-robin', addresses)
  .option('--holds <n>', 'long-lived HOLD connections to keep open', number(0, loadgenHoldsMax), 0)
  .option('--ping-interval-ms <ms>', 'ping period on each HOLD connection', number(10, 60_000))
  .option(
    '--ping-timeout-ms <ms>',
    'a HOLD connection whose echo takes longer is broken',
    number(10, 60_000),
  )
  .option('--progress-ms <ms>', 'progress line period', number(10, 60_000), 1000)
  .option('--connections', 'print one JSON line per connection', false)
  .parse();

const o = program.opts<{
  target: string;
  port: number;
  rate: number;
  count: number;
  durationMs: number;
  timeoutMs?: number;
  concurrency?: number;
  source?: string[];
  holds: number;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  progressMs: number;
  connections: boolean;
}>();

const emit = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value)}\n`);
};

const abort = new AbortController();
process.once('SIGTERM', () => abort.abort());
process.once('SIGINT', () => abort.abort());

try {
  const summary = await runLoadgen(
    {
      target: o.target,
      port: o.port,
      ratePerSecond: o.rate,
      countMax: o.count,
      durationMs: o.durationMs,
      ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
      ...(o.concurrency === undefined ? {} : { concurrencyMax: o.concurrency }),
      ...(o.source === undefined ? {} : { sources: o.source }),
      holds: o.holds,
      ...(o.pingIntervalMs === undefined ? {} : { holdPingIntervalMs: o.pingIntervalMs }),
      ...(o.pingTimeoutMs === undefined ? {} : { holdPingTimeoutMs: o.pingTimeoutMs }),
      progressIntervalMs: o.progressMs,
      keepConnections: false,
      signal: abort.signal,
    },
    {
      onProgress: emit,
      onConnection: o.connections ? emit : undefined,
      onHoldBreak: (hold) => emit({ type: 'hold-break', ...hold }),
    },
  );
  emit(summary);
} catch (error) {
  emit({ type: 'error', message: errorText(error) });
  process.exitCode = 2;
}
