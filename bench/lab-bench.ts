// The data-plane benchmarks, on real network namespaces (issue 4, item 8):
//   - failover time: crash (nlbd SIGKILLed, link cut) → every dead bucket serves new connections
//     again, at 1000 ms × 5, 200 ms × 5 and 50 ms × 4;
//   - planned changes under load (join, drainstop, rule drain, rule enable, stop): failed
//     requests, broken long-lived connections, retransmitted SYNs, and the gap during which a
//     moving bucket took no new connection (per bucket, from the kernels' side, and by a prober);
//   - decision → kernel programmed, from every nlbd's log over all the runs above;
//   - filter overhead: iperf3 to one host through the filter and without it, in one lab;
//   - UDP: packets/s of iperf3 -u to one host through the filter and without it, in one lab;
//   - requests per second of the 3-host cluster vs the same 3 backends behind haproxy and behind
//     a kernel director (IPVS; nftables DNAT beside it), alternating in one lab.
// Writes bench/results/lab.json and lab.md with the machine and a pass/fail verdict per target.
//
//   npm run bench:lab      (root; NLB_BENCH_QUICK=1: one repeat and shorter runs;
//                           NLB_LAB_BENCH_ONLY=failover,planned,filter,udp,proxy,steady: those parts only,
//                           results to the temp dir instead of bench/results;
//                           NLB_BENCH_KEEP_LOGS=<dir>: copy every lab's nlbd logs there;
//                           NLB_BENCH_CLIENT_CONCURRENCY=<n>: workers of the HTTP client, 32)
//
// Every lab gets a unique name and is taken down in a finally block and on SIGINT/SIGTERM; all
// traffic stays inside the lab's namespaces on 198.18.0.0/24, and every load is bounded.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { daemonMainPath, labDown, repoRoot } from '../src/lab/lab.js';
import { failoverSettings, judgeFailover, runFailoverRepeats } from './lab/failover.js';
import { plannedChangeCount, runPlanned } from './lab/planned.js';
import {
  type ProgramEntry,
  type ProgrammingSummary,
  judgeProgramming,
  summarizeProgramming,
} from './lab/programming.js';
import { type LabReport, renderMarkdown, type Target } from './lab/report.js';
import { fmt, labsUp, machineInfo, maxOf, quantile, round, withLab } from './lab/support.js';
import { runFilterOverhead, runProxyComparison } from './lab/throughput.js';
import {
  type FilterModeResult,
  filterVariants,
  judgeFilterModes,
  runFilterVariant,
} from './lab/filter-modes.js';
import { judgeUdp, runUdpOverhead, udpPort } from './lab/udp.js';
import { type SteadyResult, judgeSteady, steadyParts } from './lab/steady.js';

const quick = process.env.NLB_BENCH_QUICK === '1';
const partNames = ['failover', 'planned', 'filter', 'udp', 'proxy', 'steady'] as const;
const steadySeconds = Number(process.env.NLB_BENCH_STEADY_SECONDS ?? (quick ? 20 : 600)); // each
type PartName = (typeof partNames)[number];
const onlyEnv = process.env.NLB_LAB_BENCH_ONLY;
const parts: readonly PartName[] =
  onlyEnv === undefined || onlyEnv === ''
    ? partNames
    : partNames.filter((p) => onlyEnv.split(',').includes(p));

// Item 2 of issue 11: from the victim's last heartbeat heard, at most detection + 10 ms, p99
// over at least 10 crashes per profile.
const failoverRepeats = quick ? 1 : 10;
const failoverFromLastHeardMarginMs = 10;
/** The issue's target: failover at most this much longer than the detection time. */
const failoverMarginMaxMs = 20;
/** Item 3 of issue 11: decision → kernel programmed, p99. */
const programP99MsMax = 5;
const programMsMax = 20; // the first bench's bound on every sample, still reported
/** Item 1 of issue 11: per moved bucket, old owner's kernel release → new owner's acquire, p99. */
const handoffP99MsMax = 10;
const filterRatioMin = 0.95;
const proxyRatioMin = 1.0;

function log(line: string): void {
  const t = new Date().toISOString().slice(11, 23);
  process.stderr.write(`[${t}] ${line}\n`);
}

function labName(tag: string): string {
  return `lb${tag}_${process.pid}`.slice(0, 24);
}

// eslint-disable-next-line max-lines-per-function -- the benchmark's phases in run order, read top to bottom; to be split when issue 11 reworks the benchmarks
async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    const message =
      'bench:lab needs root: it builds network namespaces and nftables tables (run it as root)';
    if (process.env.NLB_REQUIRE_LAB === '1') throw new Error(message);
    log(`SKIPPED: ${message}`);
    return;
  }
  if (!existsSync(daemonMainPath)) {
    throw new Error(`${daemonMainPath} does not exist: build first with \`npm run build\``);
  }
  const abort = new AbortController();
  // vite-node's own SIGTERM listener exits at once; the labs must come down first.
  process.removeAllListeners('SIGTERM');
  const onSignal = (signal: string): void => {
    log(`${signal}: stopping; the labs come down`);
    abort.abort(new Error(`interrupted by ${signal}`));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  const started = performance.now();
  const machine = machineInfo();
  const errors: LabReport['errors'] = [];
  const program: ProgramEntry[] = [];
  const failover: LabReport['failover'] = [];
  let planned: LabReport['planned'] = null;
  let filter: LabReport['filter'] = null;
  const filterModes: FilterModeResult[] = [];
  let udp: LabReport['udp'] = null;
  let proxy: LabReport['proxy'] = null;
  const steady: SteadyResult[] = [];
  log(`lab bench: parts ${parts.join(', ')}${quick ? ' (quick)' : ''}`);

  const part = async (name: string, body: () => Promise<void>): Promise<void> => {
    if (abort.signal.aborted) return;
    try {
      await body();
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      errors.push({ part: name, error: text });
      log(`${name} FAILED: ${text}`);
    }
  };

  if (parts.includes('failover')) {
    for (const setting of failoverSettings) {
      await part(`failover ${setting.label}`, async () => {
        const repeats = quick ? 1 : (setting.repeats ?? failoverRepeats);
        log(`failover at ${setting.label}, ${repeats} crash(es)`);
        const out = await withLab(
          {
            name: labName(`fo${setting.periodMs}`),
            hosts: setting.hosts ?? 3,
            clients: 1,
            heartbeatPeriodMs: setting.periodMs,
            heartbeatTolerance: setting.tolerance,
            clusterMode: setting.mode ?? 'unicast',
            ipv6: setting.ipv6 ?? false,
          },
          (lab) => runFailoverRepeats(lab, setting, repeats, log, abort.signal),
          log,
        );
        failover.push({ setting, lab: out.labName, runs: out.value });
        program.push({
          lab: out.labName,
          hosts: setting.hosts ?? 3,
          samples: out.program,
          driver: out.driverProgram,
        });
      });
    }
  }
  if (parts.includes('planned')) {
    await part('planned changes', async () => {
      log(
        'planned changes under load: join, drainstop, rule drain, rule enable, stop (200 ms × 5)',
      );
      const out = await withLab(
        { name: labName('pl'), hosts: 3, clients: 2, clientExtraIps: 8 },
        (lab) =>
          runPlanned(
            lab,
            { ratePerSecond: quick ? 100 : 200, holds: 30, settleMs: quick ? 1_000 : 2_000 },
            log,
            abort.signal,
          ),
        log,
      );
      planned = { ...out.value, lab: out.labName };
      program.push({ lab: out.labName, samples: out.program, driver: out.driverProgram });
    });
  }
  if (parts.includes('filter')) {
    await part('filter overhead', async () => {
      log('filter overhead: iperf3 to host 1, dedicated IP vs VIP, alternating');
      const out = await withLab(
        { name: labName('if'), hosts: 3, clients: 1, startBackends: false },
        (lab) => runFilterOverhead(lab, quick ? 3 : 5, quick ? 1 : 6, log, abort.signal),
        log,
      );
      filter = { ...out.value, lab: out.labName };
      program.push({ lab: out.labName, samples: out.program, driver: out.driverProgram });
    });
    for (const variant of filterVariants) {
      await part(`filter ${variant.label}`, async () => {
        log(`filter overhead in ${variant.label}: iperf3 to host 1, own address vs VIP`);
        const out = await withLab(
          {
            name: labName(`if${variant.mode.slice(0, 2)}${variant.family}`),
            hosts: 3,
            clients: 1,
            startBackends: false,
            clusterMode: variant.mode,
            ipv6: variant.family === 6,
          },
          (lab) => runFilterVariant(lab, variant, quick, log, abort.signal),
          log,
        );
        filterModes.push({ ...variant, lab: out.labName, result: out.value });
        program.push({ lab: out.labName, samples: out.program, driver: out.driverProgram });
      });
    }
  }
  if (parts.includes('udp')) {
    await part('udp', async () => {
      log(`UDP: iperf3 -u to host 1 port ${udpPort}, dedicated IP vs VIP, alternating`);
      const out = await withLab(
        {
          name: labName('ud'),
          hosts: 3,
          clients: 1,
          startBackends: false,
          extraRulePort: udpPort,
        },
        (lab) => runUdpOverhead(lab, quick ? 3 : 5, quick ? 1 : 4, log, abort.signal),
        log,
      );
      udp = { ...out.value, lab: out.labName };
      program.push({ lab: out.labName, samples: out.program, driver: out.driverProgram });
    });
  }
  if (parts.includes('proxy')) {
    await part('cluster vs haproxy', async () => {
      log('requests/s: cluster VIP vs haproxy (tcp, http mode) vs IPVS, alternating');
      const out = await withLab(
        // c2 holds haproxy, c3 the kernel directors (IPVS, nftables DNAT): see bench/lab/ipvs.ts.
        { name: labName('px'), hosts: 3, clients: 3 },
        (lab) =>
          runProxyComparison(
            lab,
            {
              seconds: quick ? 3 : 5,
              rounds: quick ? 1 : 5,
              concurrency: Number(process.env.NLB_BENCH_CLIENT_CONCURRENCY ?? 32),
            },
            log,
            abort.signal,
          ),
        log,
      );
      proxy = { ...out.value, lab: out.labName };
      program.push({ lab: out.labName, samples: out.program, driver: out.driverProgram });
    });
  }

  for (const { variant, lab: labOptions, run } of parts.includes('steady') ? steadyParts() : []) {
    await part(`steady ${variant}`, async () => {
      log(`sub-100 ms profile under full load, nlbd ${variant}, ${steadySeconds} s`);
      const out = await withLab(
        { name: labName(`st${steady.length}`), ...labOptions },
        (lab) => run(lab, steadySeconds, log, abort.signal),
        log,
      );
      steady.push(out.value);
    });
  }

  // The 3-host labs are judged; the 32-host lab's changes (two cores shared by 32 daemons) are
  // reported and judged beside them.
  const programming = summarizeProgramming(
    program.filter((p) => (p.hosts ?? 3) <= 3),
    programMsMax,
  );
  const atScale = program.filter((p) => (p.hosts ?? 3) > 3);
  const programmingAtScale =
    atScale.length === 0 ? null : summarizeProgramming(atScale, programMsMax);
  const report: LabReport = {
    bench: 'lab',
    generatedAt: new Date().toISOString(),
    wallSeconds: Math.round((performance.now() - started) / 1000),
    quick,
    parts,
    machine: {
      ...machine,
      loadAverageAtEnd: os.loadavg().map((x) => round(x, 2)),
      note: 'load averages include whatever else ran on the machine meanwhile',
    },
    targets: [
      ...judge(failover, planned, programming, programmingAtScale, filter, proxy, errors),
      ...(parts.includes('filter')
        ? judgeFilterModes(
            filterModes,
            filterRatioMin,
            (label) => errors.find((e) => e.part === `filter ${label}`)?.error,
          )
        : []),
      ...(parts.includes('udp')
        ? judgeUdp(udp, filterRatioMin, errors.find((e) => e.part === 'udp')?.error)
        : []),
      ...(parts.includes('steady')
        ? judgeSteady(steady, errors.find((e) => e.part.startsWith('steady'))?.error)
        : []),
    ],
    failover,
    planned,
    programming,
    programmingAtScale,
    filter,
    filterModes,
    udp,
    proxy,
    steady,
    errors,
  };
  // A partial or interrupted run never replaces the committed results.
  const partial = parts.length !== partNames.length || abort.signal.aborted;
  const dir = partial
    ? path.join(os.tmpdir(), 'nlb-bench')
    : path.join(repoRoot, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'lab.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(path.join(dir, 'lab.md'), renderMarkdown(report));
  log(`wrote ${dir}/lab.json and lab.md in ${report.wallSeconds} s`);
  for (const t of report.targets) {
    log(
      `${t.pass ? 'PASS' : 'FAIL'}${t.diagnostic ? ' (diagnostic)' : ''}  ${t.target}: ${t.measured}`,
    );
  }
  if (abort.signal.aborted) process.exitCode = 130;
}

function judge(
  failover: LabReport['failover'],
  planned: LabReport['planned'],
  programming: LabReport['programming'],
  programmingAtScale: ProgrammingSummary | null,
  filter: LabReport['filter'],
  proxy: LabReport['proxy'],
  errors: LabReport['errors'],
): Target[] {
  const targets: Target[] = [];
  const failed = (name: string): string | undefined =>
    errors.find((e) => e.part.startsWith(name))?.error;
  if (parts.includes('failover')) {
    targets.push(
      ...judgeFailover(failover, failed, {
        marginMaxMs: failoverMarginMaxMs,
        fromLastHeardMarginMs: failoverFromLastHeardMarginMs,
      }),
    );
  }
  if (parts.includes('planned')) {
    const changes = planned?.changes ?? [];
    const failedRequests = changes.reduce((n, c) => n + c.requestsFailed, 0);
    const broken = changes.reduce((n, c) => n + c.holdsBroken, 0);
    const totalBroken = planned?.loadgen.holdsBroken ?? 0;
    const byStop = changes.reduce((n, c) => n + c.requestsDroppedByStop, 0);
    const done = planned !== null && changes.length === plannedChangeCount;
    const names = 'join, drainstop, rule drain, rule enable, stop';
    targets.push({
      id: 'planned-failed-requests',
      target: `planned changes (${names}) under load: 0 failed requests`,
      pass: done && failedRequests === 0,
      measured: done
        ? `${failedRequests} failed of ${changes.reduce((n, c) => n + c.requests, 0)}` +
          (byStop > 0
            ? ` (plus ${byStop} in flight on the stopped host, dropped by stop by design)`
            : '')
        : `not measured: ${failed('planned') ?? 'incomplete'}`,
    });
    targets.push({
      id: 'planned-broken-connections',
      target: 'planned changes under load: 0 broken long-lived connections',
      pass: done && broken === 0 && totalBroken === 0,
      measured: done
        ? `${totalBroken} broken of ${planned!.holdsOpened} held through the ${changes.length} changes`
        : `not measured: ${failed('planned') ?? 'incomplete'}`,
    });
    const gaps = changes.flatMap((c) => c.gap.kernelGapsMs);
    const gapP99 = quantile(gaps, 0.99);
    targets.push({
      id: 'handoff-gap',
      target: `handoff: old owner's kernel release → new owner's kernel acquire, p99 over every moved bucket ≤ ${handoffP99MsMax} ms`,
      pass: done && gapP99 !== null && gapP99 <= handoffP99MsMax,
      measured: done
        ? `p50 ${fmt(quantile(gaps, 0.5), 2)} ms, p99 ${fmt(gapP99, 2)} ms, max ${fmt(maxOf(gaps), 2)} ms over ${gaps.length} buckets in ${changes.length} changes`
        : `not measured: ${failed('planned') ?? 'incomplete'}`,
    });
    const retried = changes.map((c) => c.requestsSynRetried);
    targets.push({
      id: 'handoff-syn-retransmits',
      target: `handoff: 0 retransmitted SYNs per change at ${planned?.ratePerSecond ?? '?'} new connections/s (requests answered only after ≥ 900 ms)`,
      pass: done && retried.every((n) => n === 0),
      measured: done
        ? `${retried.reduce((a, b) => a + b, 0)} over ${changes.length} changes (${changes.map((c, i) => `${c.change} ${retried[i]}`).join(', ')})`
        : `not measured: ${failed('planned') ?? 'incomplete'}`,
    });
  }
  targets.push(...judgeProgramming(programming, programmingAtScale, programP99MsMax, programMsMax));
  if (parts.includes('filter')) {
    targets.push({
      id: 'filter-overhead',
      target: `filter overhead: iperf3 throughput with the filter / without ≥ ${filterRatioMin} (median of the rounds)`,
      pass: filter !== null && filter.ratio !== null && filter.ratio >= filterRatioMin,
      measured:
        filter === null
          ? `not measured: ${failed('filter') ?? 'no run'}`
          : `${fmt(filter.ratio, 3)} (rounds ${filter.roundRatios.map((r) => fmt(r, 2)).join(', ')}; medians VIP ${fmt(filter.vipGbps, 2)} Gbit/s, dedicated IP ${fmt(filter.dedicatedGbps, 2)} Gbit/s)`,
    });
  }
  if (parts.includes('proxy')) {
    const rates = proxy?.medianRequestsPerSecond;
    targets.push({
      id: 'cluster-vs-haproxy',
      target: `requests/s: 3-host cluster / the same backends behind haproxy (the faster of tcp and http mode, median of the rounds) ≥ ${proxyRatioMin}`,
      pass: proxy !== null && proxy.ratio !== null && proxy.ratio >= proxyRatioMin,
      measured:
        proxy === null
          ? `not measured: ${failed('cluster vs haproxy') ?? 'no run'}`
          : `${fmt(proxy.ratio, 3)} (rounds ${proxy.roundRatios.map((r) => fmt(r, 2)).join(', ')}; medians cluster ${fmt(rates?.cluster ?? null, 0)}/s, haproxy tcp ${fmt(rates?.['haproxy-tcp'] ?? null, 0)}/s, http ${fmt(rates?.['haproxy-http'] ?? null, 0)}/s)`,
    });
  }
  if (parts.includes('proxy')) targets.push(...judgeDirectors(proxy, failed('cluster vs haproxy')));
  return targets;
}

/** The cluster against the kernel directors: IPVS (a target), nftables DNAT (for insight). */
function judgeDirectors(proxy: LabReport['proxy'], failure: string | undefined): Target[] {
  const rates = proxy?.medianRequestsPerSecond;
  const p99 = proxy?.medianLatencyP99Ms;
  const row = (kind: 'ipvs' | 'nft-dnat', ratio: number | null, ratios: number[]): string => {
    if (proxy === null) return `not measured: ${failure ?? 'no run'}`;
    const status = proxy.directors.find((d) => d.kind === kind);
    if (status === undefined || !status.available) {
      return `not measured: ${status?.detail ?? 'the director did not run'}`;
    }
    return `${fmt(ratio, 3)} (rounds ${ratios.map((r) => fmt(r, 2)).join(', ')}; medians cluster ${fmt(rates?.cluster ?? null, 0)}/s p99 ${fmt(p99?.cluster ?? null, 2)} ms, ${kind} ${fmt(rates?.[kind] ?? null, 0)}/s p99 ${fmt(p99?.[kind] ?? null, 2)} ms)`;
  };
  const ratioIpvs = proxy?.ratioIpvs ?? null;
  const ratioNft = proxy?.ratioNft ?? null;
  return [
    {
      id: 'cluster-vs-ipvs',
      target: `requests/s: cluster / IPVS ≥ ${proxyRatioMin} (the same backends behind an IPVS director, round robin, NAT; median of the per-round ratios)`,
      pass: ratioIpvs !== null && ratioIpvs >= proxyRatioMin,
      measured: row('ipvs', ratioIpvs, proxy?.roundRatiosIpvs ?? []),
    },
    {
      id: 'cluster-vs-nft-dnat',
      target: `requests/s: cluster / an nftables DNAT director (kernel NAT, round robin) ≥ ${proxyRatioMin}`,
      pass: ratioNft !== null && ratioNft >= proxyRatioMin,
      measured: row('nft-dnat', ratioNft, proxy?.roundRatiosNft ?? []),
      diagnostic: true,
    },
  ];
}

main()
  .catch((error: unknown) => {
    log(`lab bench failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    // Belt and braces: a lab still up here (an error between labUp and its finally) comes down.
    for (const name of labsUp) await labDown(name).catch(() => undefined);
  });
