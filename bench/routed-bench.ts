// Routed mode, measured (issue item 6), in one run of two routed labs (src/lab/router.ts) with
// 3 hosts and one client each:
//   1. failover: a host hangs → the router drops its path (BFD), and its buckets serve again;
//   2. 90 long-lived connections across a host withdrawing, re-announcing and hanging, for nlb
//      routed and for ECMP alone (the same lab without nlbd: plain BGP anycast);
//   3. one TCP stream direct vs forwarded over VXLAN (iperf3), and the same in a third lab whose
//      hosts share one segment and forward without encapsulation (`forward: segment`);
//   4. the share of packets that take the extra hop under ordinary load.
// bench/lab/routed-*.ts hold the parts. Writes bench/results/routed.json and routed.md.
//
//   npm run bench:routed   (root, FRR and iperf3; NLB_ROUTED_TRIALS=<n> hangs, default 5;
//                           NLB_BENCH_KEEP_LOGS=<dir> keeps the nlbd logs)
//
// Each lab gets a unique name (`rb` + random hex) and is taken down in a finally block; all
// traffic stays inside its namespaces (198.18.0.0/15). The lab-test lock is held throughout, so
// no lab test shares the two cores with a measurement.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { leaseTimeoutMsFor } from '../src/dataplane/spec.js';
import { type LabState, daemonMainPath, labDown, repoRoot } from '../src/lab/lab.js';
import { acquireLabTestLock } from '../src/lab/lock.js';
import { readState } from '../src/lab/state.js';
import { type RoutedLabUpOptions, routedLabUp } from '../src/lab/router.js';
import { loadConfigFile } from '../src/node/config-file.js';
import {
  type Change,
  type ChangeAct,
  type FailoverTrial,
  type HoldTrial,
  type System,
  failoverTrial,
  holdsAcrossChange,
  wholeTimeoutMs,
} from './lab/routed-failover.js';
import {
  type Hang,
  announceWithoutNlb,
  assertRoutedLabAddresses,
  hang,
  setMarker,
  waitWhole,
  wake,
} from './lab/routed-lab.js';
import {
  type RoutedReport,
  type RoutedSettings,
  judge,
  renderRoutedReport,
} from './lab/routed-report.js';
import {
  type ShareResult,
  type ThroughputResult,
  iperfPort,
  runShare,
  runThroughput,
} from './lab/routed-traffic.js';
import { machineInfo, nowEpochMs, round } from './lab/support.js';

const trials = Number(process.env.NLB_ROUTED_TRIALS ?? 5);
const victims = [2, 3, 1] as const;
const iperfSeconds = 5;
const iperfRounds = 3;
const shareRatePerSecond = 200;
const shareDurationMs = 5_000;
const routerOutTargetMs = 1_000;
/** A lab's cluster converged and every host in the router's FIB, from `up`. */
const labWholeMs = 30_000;

function log(line: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 23)}] ${line}\n`);
}

let aborted = false;
const errors: { part: string; error: string }[] = [];

/** Runs one part; a failure is recorded and the run goes on with the next part. */
async function part(name: string, body: () => Promise<void>): Promise<void> {
  if (aborted) return;
  try {
    await body();
  } catch (error) {
    const text = error instanceof Error ? error.message : String(error);
    errors.push({ part: name, error: text });
    log(`${name} FAILED: ${text}`);
  }
}

/** NLB_BENCH_KEEP_LOGS=<dir>: the nlbd logs, which go with the lab, are copied there first. */
function keepLogs(labName: string): void {
  const keepDir = process.env.NLB_BENCH_KEEP_LOGS;
  if (keepDir === undefined || keepDir === '') return;
  const lab = readState(labName);
  if (lab === undefined) return;
  mkdirSync(path.join(keepDir, labName), { recursive: true });
  for (const host of lab.hosts) {
    if (existsSync(host.daemonLog)) {
      copyFileSync(host.daemonLog, path.join(keepDir, labName, path.basename(host.daemonLog)));
    }
  }
}

async function withRoutedLab(
  options: RoutedLabUpOptions & { name: string },
  body: (lab: LabState) => Promise<void>,
): Promise<void> {
  try {
    const lab = await routedLabUp(options);
    assertRoutedLabAddresses(lab);
    const kind = options.segment === true ? 'nlb routed, forward: segment' : 'nlb routed';
    log(`lab ${lab.name} up (${options.startDaemons === false ? 'ECMP alone' : kind})`);
    await body(lab);
  } finally {
    keepLogs(options.name);
    await labDown(options.name).catch((error: unknown) =>
      log(`labDown ${options.name} failed: ${String(error)}`),
    );
  }
}

/**
 * h1 withdraws, h1 re-announces, h3 hangs (woken after), each with 90 holds across it. Both are
 * at an end of the router's hash-threshold group, where a change moves other hosts' flows too
 * (routed-report.ts says why); the middle host's would not.
 */
async function changes(lab: LabState, system: System): Promise<HoldTrial[]> {
  const nlb = system === 'nlb';
  const out: HoldTrial[] = [];
  const marker =
    (action: 'add' | 'del'): ChangeAct =>
    async () => {
      const atEpochMs = nowEpochMs();
      await setMarker(lab, 1, action);
      return { atEpochMs, fibShows: (h) => h.includes(1) === (action === 'add') };
    };
  // Set by the hang step, woken as soon as its measurement is over.
  const frozen: { hang?: Hang } = {};
  const steps: [Change, number, ChangeAct][] = [
    ['withdraw', 1, marker('del')],
    ['re-announce', 1, marker('add')],
    [
      'hang',
      3,
      async () => {
        frozen.hang = await hang(lab, 3);
        return { atEpochMs: frozen.hang.atEpochMs, fibShows: (h) => !h.includes(3) };
      },
    ],
  ];
  for (const [change, host, act] of steps) {
    try {
      const trial = await holdsAcrossChange(lab, system, change, host, act);
      out.push(trial);
      log(
        `  ${system} h${host} ${change}: ${trial.broken} of ${trial.holdsWanted} broken (${trial.brokenOnHost} on h${host}, ${trial.brokenElsewhere} elsewhere), router ${trial.routerMs ?? '-'} ms`,
      );
    } finally {
      if (frozen.hang !== undefined) await wake(lab, frozen.hang);
      delete frozen.hang;
    }
    if (change !== 'withdraw') await waitWhole(lab, nlb, wholeTimeoutMs);
    await sleep(500);
  }
  return out;
}

async function settingsOf(lab: LabState): Promise<RoutedSettings> {
  const loaded = await loadConfigFile(lab.hosts[0]!.config);
  if (!loaded.ok) throw new Error(`the lab's config ${lab.hosts[0]!.config} does not load`);
  const { heartbeat, routed } = loaded.config.cluster;
  if (routed === undefined) throw new Error('the routed lab config has no cluster.routed');
  const version = (argv: string[]): string => {
    try {
      return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' }).split('\n')[0]!.trim();
    } catch {
      return 'unknown';
    }
  };
  return {
    hosts: lab.hosts.length,
    heartbeatPeriodMs: heartbeat.periodMs,
    heartbeatTolerance: heartbeat.tolerance,
    detectionMs: heartbeat.periodMs * heartbeat.tolerance,
    leaseMs: leaseTimeoutMsFor(heartbeat),
    bfd: routed.bfd,
    bgpTimers: routed.timers,
    frr: version(['dpkg-query', '-W', '-f', '${Version}', 'frr']),
    iperf3: version(['iperf3', '--version']),
  };
}

/** Part 3 again in a lab whose hosts share one segment and forward without encapsulation. */
async function segmentLabThroughput(name: string): Promise<ThroughputResult | null> {
  let result: ThroughputResult | null = null;
  const options = { name, hosts: 3, clients: 1, extraRulePort: iperfPort, segment: true };
  await withRoutedLab(options, async (lab) => {
    await waitWhole(lab, true, labWholeMs);
    log('throughput on one segment (forward: segment)');
    result = await runThroughput(lab, iperfSeconds, iperfRounds, log);
  });
  return result;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:routed needs root (network namespaces)');
  if (!existsSync(daemonMainPath)) throw new Error(`${daemonMainPath} missing: npm run build`);
  // vite-node's own SIGTERM listener exits at once; the labs must come down first.
  process.removeAllListeners('SIGTERM');
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      log(`${signal}: stopping after the current step; the labs come down`);
      aborted = true;
    });
  }
  const started = nowEpochMs();
  const machine = machineInfo();
  const suffix = randomBytes(2).toString('hex');
  let settings: RoutedSettings | undefined;
  const failover: FailoverTrial[] = [];
  const holds: HoldTrial[] = [];
  let throughput: ThroughputResult | null = null;
  let segmentThroughput: ThroughputResult | null = null;
  let share: ShareResult | null = null;
  const release = await acquireLabTestLock();
  try {
    await part('nlb routed lab', () =>
      withRoutedLab(
        { name: `rbn${suffix}`, hosts: 3, clients: 1, extraRulePort: iperfPort },
        async (lab) => {
          await waitWhole(lab, true, labWholeMs);
          settings = await settingsOf(lab);
          await part('share', async () => {
            share = await runShare(lab, shareRatePerSecond, shareDurationMs);
            log(`share: ${share.packetShare} of packets, ${share.connectionShare} of connections`);
          });
          await part('throughput', async () => {
            throughput = await runThroughput(lab, iperfSeconds, iperfRounds, log);
          });
          await part('holds nlb', async () => void holds.push(...(await changes(lab, 'nlb'))));
          for (let n = 1; n <= trials && !aborted; n++) {
            await part(`failover trial ${n}`, async () => {
              const victim = victims[(n - 1) % victims.length]!;
              const t = await failoverTrial(lab, n, victim, settings!.detectionMs);
              failover.push(t);
              log(
                `  hang h${victim}: router out ${t.routerOutMs ?? 'never'} ms, buckets served ${t.servedMs ?? 'never'} ms, for good ${t.servedForGoodMs ?? 'never'} ms (${t.failedAfterServed} failed after; declared dead ${t.declaredDeadMs ?? '-'} ms), whole again ${t.wholeAgainMs} ms`,
              );
              await sleep(500);
            });
          }
        },
      ),
    );
    await part('segment lab', async () => {
      segmentThroughput = await segmentLabThroughput(`rbs${suffix}`);
    });
    await part('ECMP-alone lab', () =>
      withRoutedLab(
        { name: `rbe${suffix}`, hosts: 3, clients: 1, startDaemons: false },
        async (lab) => {
          await announceWithoutNlb(lab);
          await waitWhole(lab, false, labWholeMs);
          await part(
            'holds ECMP alone',
            async () => void holds.push(...(await changes(lab, 'ecmp'))),
          );
        },
      ),
    );
  } finally {
    release();
  }
  if (settings === undefined) throw new Error(`no lab came up: ${JSON.stringify(errors)}`);
  const body = {
    machine,
    settings,
    targets: { routerOutMs: routerOutTargetMs, servedMs: settings.detectionMs + 500 },
    failover,
    holds,
    throughput,
    segmentThroughput,
    share,
    errors,
  };
  const report: RoutedReport = {
    writtenAt: new Date().toISOString(),
    loadAverageAtEnd: os.loadavg().map((x) => round(x, 2)),
    runSeconds: round((nowEpochMs() - started) / 1000, 1),
    ...body,
    verdicts: judge(body, trials),
  };
  const dir = path.join(repoRoot, 'bench', 'results');
  writeFileSync(path.join(dir, 'routed.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(path.join(dir, 'routed.md'), renderRoutedReport(report));
  for (const v of report.verdicts) {
    log(`${v.pass === null ? 'FIGURE' : v.pass ? 'PASS' : 'FAIL'} ${v.id}: ${v.measured}`);
  }
  log(`wrote ${path.join(dir, 'routed.md')} in ${report.runSeconds} s`);
}

await main();
