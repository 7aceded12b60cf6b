// The sub-100 ms profile under full load (issue 11, item 4): a 3-host lab at 20 ms × 4
// (detection 80 ms) runs for minutes while the load generator opens new connections through the
// VIP and iperf3 pushes one bulk TCP stream to host 2's dedicated IP, everything on the same two
// cores as the daemons. No host fails, so every `host declared dead` is a false detection and
// every convergence one too many. Run once with nlbd at its default realtime priority and, for
// the comparison, once with `--realtime-priority 0` (normal priority).
import os from 'node:os';
import { type LabState, type LabUpOptions } from '../../src/lab/lab.js';
import { daemonCommandDefault } from '../../src/lab/daemons.js';
import { runLoadgenInClient } from '../../src/lab/loadgen-client.js';
import { labVip } from '../../src/lab/naming.js';
import { execNs, spawnNs } from './ns-exec.js';
import type { Target } from './report.js';
import { daemonLog, nowEpochMs, round, waitConverged } from './support.js';

export interface SteadyResult {
  readonly variant: string;
  readonly seconds: number;
  readonly periodMs: number;
  readonly tolerance: number;
  /** `host declared dead` records while no host failed. */
  readonly falseDetections: number;
  /** `converged` records after the start: each one is a membership change nobody made. */
  readonly convergences: number;
  readonly requests: number;
  readonly requestsFailed: number;
  readonly iperfGbps: number | null;
  readonly loadAverageAtEnd: readonly number[];
  /** Each false detection: who declared whom dead, after how long a silence. */
  readonly detections: readonly { host: number; peer: number; silentMs: number }[];
}

export interface SteadyOptions {
  readonly variant: string;
  readonly seconds: number;
  readonly ratePerSecond: number;
  readonly periodMs: number;
  readonly tolerance: number;
}

export async function runSteady(
  lab: LabState,
  options: SteadyOptions,
  log: (line: string) => void,
  signal: AbortSignal,
): Promise<SteadyResult> {
  const ids = lab.hosts.map((h) => h.id);
  await waitConverged(lab, ids, 20_000, signal);
  const startedAt = nowEpochMs();
  const durationMs = options.seconds * 1000;
  const target = lab.hosts[1]!;
  const server = spawnNs(lab, 'h2', ['iperf3', '-s', '-p', '5201']);
  try {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const client = lab.clients[0]!;
    const iperf = execNs(
      lab,
      'c1',
      ['iperf3', '-c', target.ip, '-p', '5201', '-t', String(options.seconds), '-J'],
      durationMs + 30_000,
    );
    const load = runLoadgenInClient(lab, 1, {
      target: labVip,
      port: 80,
      ratePerSecond: options.ratePerSecond,
      countMax: Math.ceil(options.ratePerSecond * options.seconds),
      durationMs,
      timeoutMs: 3_000,
      progressIntervalMs: 10_000,
      sources: [client.ip, ...client.extraIps],
      signal,
    });
    const [iperfOut, summary] = await Promise.all([iperf, load]);
    let gbps: number | null = null;
    try {
      const parsed = JSON.parse(iperfOut.stdout) as {
        end?: { sum_received?: { bits_per_second?: number } };
      };
      const bps = parsed.end?.sum_received?.bits_per_second;
      gbps = bps === undefined ? null : round(bps / 1e9, 2);
    } catch {
      gbps = null;
    }
    const records = ids.flatMap((id) =>
      daemonLog(lab, id).filter(
        (r) => typeof r.time === 'string' && Date.parse(r.time) >= startedAt,
      ),
    );
    const detections = records
      .filter((r) => r.event === 'host declared dead')
      .map((r) => ({ host: r.by!, peer: Number(r.host), silentMs: Number(r.silentMs) }));
    const result: SteadyResult = {
      variant: options.variant,
      seconds: options.seconds,
      periodMs: options.periodMs,
      tolerance: options.tolerance,
      falseDetections: detections.length,
      convergences: records.filter((r) => r.event === 'converged').length,
      requests: summary.started,
      requestsFailed: summary.failed,
      iperfGbps: gbps,
      loadAverageAtEnd: os.loadavg().map((x) => round(x, 2)),
      detections,
    };
    log(
      `  ${options.variant}: ${options.seconds} s at ${options.periodMs} ms × ${options.tolerance}: ` +
        `${result.falseDetections} false detections, ${result.convergences} convergences, ` +
        `${result.requests} requests (${result.requestsFailed} failed), iperf3 ${gbps ?? '-'} Gbit/s`,
    );
    return result;
  } finally {
    server.kill('SIGKILL');
  }
}

/** Target rows: 0 false detections in each variant (the realtime one is the target). */
export function judgeSteady(
  results: readonly SteadyResult[],
  failure: string | undefined,
): Target[] {
  if (results.length === 0) {
    return [
      {
        id: 'steady-fast-profile',
        target: 'sub-100 ms profile (20 ms × 4) under full load: 0 false detections',
        pass: false,
        measured: `not measured: ${failure ?? 'no run'}`,
      },
    ];
  }
  return results.map((r, i) => ({
    id: `steady-fast-profile${i === 0 ? '' : `-${r.variant.replace(/\W+/g, '-')}`}`,
    target: `sub-100 ms profile (${r.periodMs} ms × ${r.tolerance}) under full load for ${r.seconds} s, nlbd ${r.variant}: 0 false detections`,
    pass: r.falseDetections === 0 && r.convergences === 0,
    measured: `${r.falseDetections} false detections, ${r.convergences} convergences; ${r.requests} requests (${r.requestsFailed} failed), iperf3 ${r.iperfGbps ?? '-'} Gbit/s, load ${r.loadAverageAtEnd.join(', ')}`,
    ...(i === 0 ? {} : { diagnostic: true }),
  }));
}

export function renderSteady(results: readonly SteadyResult[]): string[] {
  if (results.length === 0) return [];
  return [
    '## The sub-100 ms profile under full load',
    '',
    'A 3-host lab at 20 ms × 4 (detection 80 ms) while the load generator opens new connections',
    "through the VIP and iperf3 pushes one TCP stream to host 2's dedicated IP, all on the same two",
    'cores as the daemons. No host fails: every `host declared dead` is a false detection. nlbd runs',
    'at its default realtime priority (`--realtime-priority 10`) and, for comparison, at normal',
    'priority (`--realtime-priority 0`).',
    '',
    '| nlbd | seconds | false detections | convergences | requests | failed | iperf3 Gbit/s | load at end |',
    '|---|---|---|---|---|---|---|---|',
    ...results.map(
      (r) =>
        `| ${r.variant} | ${r.seconds} | ${r.falseDetections} | ${r.convergences} | ${r.requests} | ${r.requestsFailed} | ${r.iperfGbps ?? '-'} | ${r.loadAverageAtEnd.join(', ')} |`,
    ),
    '',
    ...results.flatMap((r) =>
      r.detections.length === 0
        ? []
        : [
            `${r.variant}: ${r.detections
              .slice(0, 10)
              .map((d) => `h${d.host} declared h${d.peer} dead after ${d.silentMs} ms`)
              .join('; ')}${r.detections.length > 10 ? '; …' : ''}.`,
            '',
          ],
    ),
  ];
}

/**
 * The two runs of the part: nlbd at its default realtime priority (the target) and at normal
 * priority (the comparison), each in a lab of its own at 20 ms × 4.
 */
export function steadyParts(): {
  variant: string;
  lab: Omit<LabUpOptions, 'name'>;
  run: (
    lab: LabState,
    seconds: number,
    log: (line: string) => void,
    signal: AbortSignal,
  ) => Promise<SteadyResult>;
}[] {
  const variants: [string, readonly string[]][] = [
    ['realtime (default)', []],
    ['normal priority', ['--realtime-priority', '0']],
  ];
  return variants.map(([variant, extra]) => ({
    variant,
    lab: {
      hosts: 3,
      clients: 1,
      clientExtraIps: 8,
      heartbeatPeriodMs: 20,
      heartbeatTolerance: 4,
      daemonCommand: [...daemonCommandDefault, ...extra],
    },
    run: (lab, seconds, log, signal) =>
      runSteady(
        lab,
        { variant, seconds, ratePerSecond: 200, periodMs: 20, tolerance: 4 },
        log,
        signal,
      ),
  }));
}
