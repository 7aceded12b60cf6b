// The closed-loop HTTP client of the lab benchmark, run inside a client namespace of a lab
// (`ip netns exec nlb-<lab>-c<J> node vite-node.mjs bench/lab/http-client.ts`).
//
// `concurrency` workers each repeat, until the deadline: open a new connection, send one
// `GET / HTTP/1.0` request, read the reply to the end, close. Closed loop, so the rate it reports
// is what the path behind the target can sustain with that many requests in flight, not an
// offered load: the same client measures the cluster IP and a proxy alike.
//
// Protocol: {"type":"ready"} on stdout once started; then for each JSON line of HttpClientConfig
// on stdin, one run and one {"type":"result",…} line (or {"type":"error",…}); it exits at the end
// of stdin. One process serves all the runs of a comparison, so they alternate quickly.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { latencySummary } from '../../src/lab/loadgen.js';
import { assertLabSafeAddress } from '../../src/lab/naming.js';

export interface HttpClientConfig {
  readonly target: string;
  readonly port: number;
  readonly concurrency: number;
  readonly durationMs: number;
  readonly timeoutMs: number;
}

export interface HttpClientResult {
  readonly type: 'result';
  readonly durationMs: number;
  /** Requests answered with a host's reply, completed within the window. */
  readonly completed: number;
  readonly failed: number;
  readonly failures: Record<string, number>;
  readonly perHost: Record<string, number>;
  readonly latencyMs: { p50: number; p90: number; p99: number; max: number } | null;
}

/** Bounds whatever the caller asks (helper rules): a load loop must end. */
const concurrencyMax = 1_024;
const durationMsMax = 60_000;
const replyBytesMax = 4_096;
const request = 'GET / HTTP/1.0\r\nHost: nlb-bench\r\n\r\n';

function nowEpochMs(): number {
  return performance.timeOrigin + performance.now();
}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new RangeError(`http-client: ${message}`);
}

/** One request on a new connection: the host that answered, or why it failed. */
function oneRequest(config: HttpClientConfig): Promise<number | string> {
  return new Promise((resolve) => {
    let reply = '';
    let settled = false;
    const socket = net.connect({ host: config.target, port: config.port });
    const settle = (outcome: number | string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => settle('timeout'), config.timeoutMs);
    socket.setEncoding('utf8');
    socket.setNoDelay(true);
    socket.on('connect', () => socket.write(request));
    socket.on('data', (chunk: string) => {
      reply += chunk;
      if (reply.length > replyBytesMax) settle('bad-reply');
    });
    // HTTP/1.0 without keep-alive: the reply ends when the server closes.
    socket.on('end', () => {
      const match = /^HTTP\/1\.[01] 200 [\s\S]*\r\n\r\nhost (\d{1,2})\n$/.exec(reply);
      settle(match ? Number(match[1]) : 'bad-reply');
    });
    socket.on('error', (error: NodeJS.ErrnoException) => settle(error.code ?? 'error'));
    socket.on('close', () => settle('closed'));
  });
}

export async function runHttpClient(config: HttpClientConfig): Promise<HttpClientResult> {
  assertLabSafeAddress(config.target, 'http-client target');
  check(config.concurrency >= 1 && config.concurrency <= concurrencyMax, 'bad concurrency');
  check(config.durationMs >= 100 && config.durationMs <= durationMsMax, 'bad durationMs');
  check(config.timeoutMs >= 10 && config.timeoutMs <= 10_000, 'bad timeoutMs');
  const start = nowEpochMs();
  const deadline = start + config.durationMs;
  let completed = 0;
  let failed = 0;
  const failures: Record<string, number> = {};
  const perHost: Record<string, number> = {};
  const latencies: number[] = [];
  const worker = async (): Promise<void> => {
    while (nowEpochMs() < deadline) {
      const began = nowEpochMs();
      const outcome = await oneRequest(config);
      const ended = nowEpochMs();
      if (ended > deadline) break;
      if (typeof outcome === 'number') {
        completed++;
        perHost[String(outcome)] = (perHost[String(outcome)] ?? 0) + 1;
        latencies.push(ended - began);
      } else {
        failed++;
        failures[outcome] = (failures[outcome] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: config.concurrency }, () => worker()));
  const sorted = latencies.sort((a, b) => a - b);
  return {
    type: 'result',
    durationMs: config.durationMs,
    completed,
    failed,
    failures,
    perHost,
    latencyMs: latencySummary(sorted),
  };
}

/** Runs are bounded each; so is their number, so a runaway caller cannot loop forever. */
const runsMax = 100;

async function main(): Promise<void> {
  const emit = (value: unknown): void => {
    process.stdout.write(`${JSON.stringify(value)}\n`);
  };
  emit({ type: 'ready' });
  let runs = 0;
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === '') continue;
    check(++runs <= runsMax, `more than ${runsMax} runs`);
    emit(await runHttpClient(JSON.parse(line) as HttpClientConfig));
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stdout.write(
      `${JSON.stringify({ type: 'error', message: error instanceof Error ? error.message : String(error) })}\n`,
    );
    process.exit(2);
  },
);
