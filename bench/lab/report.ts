// The lab benchmark's report: its shape (lab.json) and its rendering for people (lab.md).
import { type FilterModeResult, renderFilterModes } from './filter-modes.js';
import { renderProgramming } from './programming.js';
import type { FailoverRun, FailoverSetting } from './failover.js';
import type { PlannedResult } from './planned.js';
import { type SteadyResult, renderSteady } from './steady.js';
import type { FilterResult, ProxyResult } from './throughput.js';
import type { UdpResult } from './udp.js';
import { fmt } from './support.js';

export interface Target {
  readonly id: string;
  readonly target: string;
  readonly pass: boolean;
  readonly measured: string;
  /** A stricter reading than the issue asks, shown for insight; not part of the verdict. */
  readonly diagnostic?: boolean;
}

export interface LabReport {
  readonly bench: 'lab';
  readonly generatedAt: string;
  readonly wallSeconds: number;
  readonly quick: boolean;
  readonly parts: readonly string[];
  readonly machine: Record<string, unknown>;
  readonly targets: Target[];
  readonly failover: {
    readonly setting: FailoverSetting;
    readonly lab: string;
    readonly runs: FailoverRun[];
  }[];
  readonly planned: (PlannedResult & { lab: string }) | null;
  readonly programming: {
    readonly samples: number;
    readonly bySets: number;
    readonly byTable: number;
    readonly p50Ms: number | null;
    readonly p90Ms: number | null;
    readonly p99Ms: number | null;
    readonly maxMs: number | null;
    /** Samples above `overTargetMs`, the bound every sample is held to. */
    readonly overTarget: number;
    readonly overTargetMs: number;
    /** Samples per bin: up to `upToMs` (null: everything above the last edge). */
    readonly histogram: { upToMs: number | null; count: number }[];
    /** Where the time went: queue wait before the decision, wait behind nft work, the kernel. */
    readonly parts: {
      part: string;
      p50Ms: number | null;
      p99Ms: number | null;
      maxMs: number | null;
    }[];
    readonly slowest: { lab: string; hostId: number; programMs: number; how: string }[];
    readonly perLab: { lab: string; samples: number; maxMs: number | null; driver: unknown }[];
  };
  /** The same over the labs of more than 3 hosts (the 32-host failover lab), when one ran. */
  readonly programmingAtScale?: LabReport['programming'] | null;
  readonly filter: (FilterResult & { lab: string }) | null;
  /** The filter's overhead in the other modes and families (filter-modes.ts). */
  readonly filterModes: readonly FilterModeResult[];
  readonly udp: (UdpResult & { lab: string }) | null;
  readonly proxy: (ProxyResult & { lab: string }) | null;
  readonly steady: readonly SteadyResult[];
  readonly errors: { part: string; error: string }[];
}

function nums(values: readonly (number | null)[]): number[] {
  return values.filter((v): v is number => v !== null);
}

function medianOf(values: readonly (number | null)[]): number | null {
  const sorted = nums(values).sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  const half = sorted.length / 2;
  return Number.isInteger(half)
    ? (sorted[half - 1]! + sorted[half]!) / 2
    : sorted[Math.floor(half)]!;
}

function maxOf(values: readonly (number | null)[]): number | null {
  const list = nums(values);
  return list.length === 0 ? null : Math.max(...list);
}

// eslint-disable-next-line max-lines-per-function -- the results page section by section, as it reads; to be split when issue 11 reworks the report
export function renderMarkdown(report: LabReport): string {
  const m = report.machine as {
    cpu: string;
    cores: number;
    kernel: string;
    node: string;
    memoryGiB: number;
    loadAverageAtStart: number[];
    loadAverageAtEnd: number[];
  };
  const out: string[] = [
    '# Lab benchmark: the data plane on real network namespaces',
    '',
    `Generated ${report.generatedAt} by \`npm run bench:lab\`${report.quick ? ' (quick mode)' : ''} in ${report.wallSeconds} s,`,
    `on ${m.cpu} (${m.cores} cores, ${m.memoryGiB} GiB), ${m.kernel}, Node ${m.node}.`,
    `Load average (1, 5, 15 min) ${m.loadAverageAtStart.join(', ')} at the start and ${m.loadAverageAtEnd.join(', ')} at the end:`,
    'the machine is shared, and everything (hosts, clients, proxy, switch) runs on its cores.',
    '',
    'Each lab: 3 hosts running nlbd and the lab backend, unicast mode, one port rule (TCP 80,',
    'affinity none, 60 buckets), a bridge as the switch, all on 198.18.0.0/24 in namespaces.',
    '',
    '## Targets',
    '',
    '| target | result | measured |',
    '|---|---|---|',
    ...report.targets.map(
      (t) =>
        `| ${t.target} | ${t.pass ? 'PASS' : 'FAIL'}${t.diagnostic ? ' (diagnostic, not a target)' : ''} | ${t.measured} |`,
    ),
    '',
  ];
  if (report.errors.length > 0) {
    out.push('## Errors', '', ...report.errors.map((e) => `- ${e.part}: ${e.error}`), '');
  }

  if (report.failover.length > 0) {
    out.push(
      '## Failover: crash → every dead bucket serves new connections again',
      '',
      "The crash: the victim's nlbd is SIGKILLed and its switch port cut at the same instant. A",
      'prober in the client namespace opens a fresh connection into each of the dead buckets every',
      '5 ms (every 50 ms until one period before the earliest possible takeover), each from a source',
      'port that hashes into that bucket; a SYN not accepted within 50 ms is a failed attempt (no',
      'retransmission blurs the timeline), and the reply names the host. Failover is the start of the',
      'first attempt a survivor took, in the last dead bucket to be taken. *Detection* is tolerance ×',
      'period; *margin* = failover − detection, negative when the crash fell between two heartbeats,',
      "as it usually does. *From last heartbeat* counts from the victim's last heartbeat a survivor",
      "heard (from the survivors' `host declared dead` records, which say how long it had been",
      'silent), as if the crash had come just after a heartbeat: its margin over detection is what',
      'the protocol and the kernel update add to the detection time. *In the kernels*: the same margin',
      "up to the last survivor's kernel holding its share of the dead buckets (`ownership programmed`,",
      "`atMs`, µs), free of the prober's 5 ms spacing: the target is judged on it.",
      '',
      '| heartbeat | # | victim | dead buckets | detection | failover | margin | from last heartbeat | its margin | in the kernels | declared dead | resolution | attempts failed after the crash | rejoin |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const f of report.failover) {
      for (const r of f.runs) {
        out.push(
          `| ${f.setting.label} | ${r.repeat} | h${r.victim} | ${r.deadBuckets} | ${r.detectionMs} | ${fmt(r.failoverMs)} | ${fmt(r.marginMs)} | ${fmt(r.failoverFromLastHeardMs)} | ${fmt(r.marginFromLastHeardMs)} | ${fmt(r.kernelMarginFromLastHeardMs)} | ${fmt(r.declaredDeadMs)} | ${fmt(r.resolutionMs)} | ${r.probesFailedAfterCrash} | ${fmt(r.rejoinMs, 0)} |`,
        );
      }
    }
    out.push(
      '',
      '| heartbeat | crashes | failover median | failover max | margin max | margin from last heartbeat, max | in the kernels, median | in the kernels, max |',
      '|---|---|---|---|---|---|---|---|',
      ...report.failover.map(
        (f) =>
          `| ${f.setting.label} | ${f.runs.length} | ${fmt(medianOf(f.runs.map((r) => r.failoverMs)))} | ${fmt(maxOf(f.runs.map((r) => r.failoverMs)))} | ${fmt(maxOf(f.runs.map((r) => r.marginMs)))} | ${fmt(maxOf(f.runs.map((r) => r.marginFromLastHeardMs)))} | ${fmt(medianOf(f.runs.map((r) => r.kernelMarginFromLastHeardMs)))} | ${fmt(maxOf(f.runs.map((r) => r.kernelMarginFromLastHeardMs)))} |`,
      ),
      '',
      "All times in ms. *Resolution*: the spacing of the worst bucket's probes around its first answer.",
      '',
      'Where the time goes, per survivor, from the crash: it declares the victim dead, its kernel',
      'holds its share of the dead buckets (`ownership programmed`, logged once nlbd saw the kernel take',
      'it: an upper bound, ms resolution), and the prober',
      'sees the last of those buckets taken.',
      '',
      '| heartbeat | # | survivor | declared dead | kernel programmed | last bucket taken |',
      '|---|---|---|---|---|---|',
      ...report.failover.flatMap((f) =>
        f.runs.flatMap((r) =>
          r.survivors.map(
            (x) =>
              `| ${f.setting.label} | ${r.repeat} | h${x.host} | ${fmt(x.declaredDeadMs)} | ${fmt(x.programmedMs, 0)} | ${fmt(x.lastBucketServedMs)} |`,
          ),
        ),
      ),
      '',
    );
  }

  const p = report.planned;
  if (p !== null) {
    out.push(
      '## Planned changes under load (200 ms × 5)',
      '',
      `Hosts 1 and 2 serve; the load generator opens ${p.ratePerSecond} new connections/s (each \`GET\`, from 9`,
      `client addresses) and holds ${p.holdsOpened} long-lived connections (pinged every 100 ms). Then host 3`,
      'joins, host 2 drainstops, host 1 drains the port rule and enables it again, host 3 stops, a few',
      'seconds apart. Requests are counted in the window',
      'from their change to the next. A request answered only after ≥ 900 ms had its first SYN lost in',
      'a gap (the client retransmits after 1 s): it did not fail, but it waited. The gap of a moving',
      "bucket is measured by the prober (5 ms spacing, 50 ms for the SYN): from the old owner's last answer",
      "to the new owner's first (an upper bound, one probe spacing included); unanswered probes",
      'between them are SYNs that fell into the gap; their spread is a lower bound. The prober shares',
      'the two cores with everything else, so it may stall; the *gap in the kernels* comes from the',
      "daemons' own logs instead: per moved bucket, when the old owner's kernel had released it and",
      "when the new owner's kernel had taken it (`ownership programmed`, `atMs`: the wall clock with µs,",
      'which the lab hosts share), and the largest of these per change.',
      '',
      `Baseline before the first change: ${p.steady.requests} requests, ${p.steady.requestsFailed} failed.`,
      '',
      '| change | buckets moved | as predicted | converged (ms) | requests | failed | dropped by stop (by design) | SYN retried | long-lived broken | gap in the kernels (ms) | gap seen by the prober ≤ (ms) | probes unanswered | gap ≥ (ms) | answers by old owner after new |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
      ...p.changes.map(
        (c) =>
          `| ${c.change} h${c.host} | ${c.bucketsMoved} | ${c.movedAsPredicted ? 'yes' : 'NO'} | ${fmt(c.convergedMs, 0)} | ${c.requests} | ${c.requestsFailed}${
            Object.keys(c.failuresByKind).length > 0
              ? ` (${Object.entries(c.failuresByKind)
                  .map(([k, v]) => `${k} ${v}`)
                  .join(', ')})`
              : ''
          } | ${c.requestsDroppedByStop} | ${c.requestsSynRetried} | ${c.holdsBroken} | ${fmt(c.gap.kernelMaxMs, 1)} | ${fmt(c.gap.maxUpperMs)} | ${c.gap.probesUnanswered} | ${fmt(c.gap.maxLowerMs)} | ${c.gap.answersByOldAfterNew} |`,
      ),
      '',
      `Over the whole run the load generator started ${p.loadgen.started} connections; ${p.loadgen.failed} failed; ${p.loadgen.holdsBroken} long-lived connections broke.`,
      "Probes the stopping host accepted just before its stop took effect get no reply (`no-reply`): NLB's",
      'stop drops that host\'s connections, and the load generator counts such requests under "dropped by stop".',
      `Unanswered probes by kind: ${p.changes
        .map(
          (c) =>
            `${c.change} ${
              Object.entries(c.gap.unansweredByKind)
                .map(([k, v]) => `${k} ${v}`)
                .join(', ') || 'none'
            }`,
        )
        .join('; ')}.`,
      'A join converges only after the new host has listened for one detection time (1 s).',
      '',
      ...handoffLines(p.changes),
    );
  }

  out.push(...renderProgramming(report.programming, '3-host labs'));
  if (report.programmingAtScale != null) {
    out.push(...renderProgramming(report.programmingAtScale, '32-host lab'));
  }

  const f = report.filter;
  if (f !== null) {
    out.push(
      '## Filter overhead (iperf3, one TCP stream)',
      '',
      `iperf3 server in host 1 on port 80, client in the client namespace, ${f.seconds} s per run, alternating`,
      "in one lab: to host 1's dedicated IP (the filter does not look at it) and to the VIP from a",
      "source port in one of host 1's buckets (the whole filter). Both are flooded to all three hosts",
      '(unicast mode: every host carries the cluster MAC).',
      '',
      '| run | path | Gbit/s | retransmits | sender CPU % | receiver CPU % |',
      '|---|---|---|---|---|---|',
      ...f.runs.map(
        (r, i) =>
          `| ${i + 1} | ${r.path === 'vip' ? 'VIP (filter)' : 'dedicated IP (no filter)'} | ${fmt(r.gbps, 2)} | ${r.retransmits ?? '-'} | ${fmt(r.cpuSenderPercent)} | ${fmt(r.cpuReceiverPercent)} |`,
      ),
      '',
      `Ratio VIP / dedicated IP per round: ${f.roundRatios.map((r) => fmt(r, 3)).join(', ')}; median ${fmt(f.ratio, 3)} (the verdict).`,
      `Medians over all runs: VIP ${fmt(f.vipGbps, 2)} Gbit/s, dedicated IP ${fmt(f.dedicatedGbps, 2)} Gbit/s (ratio ${fmt(f.ratioOfMedians, 3)}).`,
      '',
    );
  }

  out.push(...renderFilterModes(report.filterModes ?? [], report.filter));
  if (report.udp !== null) out.push(...renderUdp(report.udp));
  if (report.proxy !== null) out.push(...renderProxy(report.proxy));
  out.push(...renderSteady(report.steady));
  return out.join('\n');
}

function renderProxy(x: NonNullable<LabReport['proxy']>): string[] {
  const kinds = Object.keys(
    x.medianRequestsPerSecond,
  ) as (keyof typeof x.medianRequestsPerSecond)[];
  const director = (kind: string): string => {
    const d = x.directors.find((s) => s.kind === kind);
    return d === undefined
      ? 'not set up'
      : d.available
        ? `${d.detail}, at ${d.address}`
        : `not run: ${d.detail}`;
  };
  return [
    '## Requests per second: cluster vs haproxy vs IPVS',
    '',
    `A closed-loop client (one process, ${x.concurrency} concurrent workers, each: connect, \`GET / HTTP/1.0\`,`,
    `read the reply, close) in the client namespace, ${x.seconds} s per run, against the VIP and against`,
    `${x.haproxyVersion.replace(/ - https.*$/, '')} (Debian package, default threads, round robin over the hosts'`,
    'dedicated IPs) in a namespace of its own on the same switch, in TCP mode (layer 4, like the',
    'cluster) and in HTTP mode; and against two kernel directors in a third namespace (round robin over the',
    'same dedicated IPs, full NAT: the director rewrites the destination and masquerades the source, so',
    'the backends answer it; `bench/lab/ipvs.ts`): the IP Virtual Server (`ipvs`) and nftables DNAT with',
    `\`numgen\` (\`nft-dnat\`). ${x.rounds} rounds, the order rotating every round, after a warm-up.`,
    '',
    `IPVS: ${director('ipvs')}. nftables DNAT: ${director('nft-dnat')}.`,
    '',
    '| round | target | requests/s | failed | per host | p50 latency (ms) | p99 latency (ms) |',
    '|---|---|---|---|---|---|---|',
    ...x.runs.map(
      (r) =>
        `| ${r.round} | ${r.kind} | ${fmt(r.requestsPerSecond, 0)} | ${r.failed} | ${Object.entries(
          r.perHost,
        )
          .map(([h, n]) => `h${h} ${n}`)
          .join(', ')} | ${fmt(r.latencyP50Ms, 2)} | ${fmt(r.latencyP99Ms, 2)} |`,
    ),
    '',
    '| target | median requests/s | median p99 latency (ms) | cluster / target (median of rounds) |',
    '|---|---|---|---|',
    ...kinds.map((kind) => {
      const ratio =
        kind === 'cluster'
          ? '-'
          : kind === 'ipvs'
            ? fmt(x.ratioIpvs, 3)
            : kind === 'nft-dnat'
              ? fmt(x.ratioNft, 3)
              : fmt(kind === 'haproxy-tcp' ? x.ratioTcp : x.ratioHttp, 3) + ' (of medians)';
      return `| ${kind} | ${fmt(x.medianRequestsPerSecond[kind], 0)} | ${fmt(x.medianLatencyP99Ms[kind], 2)} | ${ratio} |`;
    }),
    '',
    `cluster / haproxy: ${fmt(x.ratioTcp, 3)} (tcp), ${fmt(x.ratioHttp, 3)} (http), ${fmt(x.ratioOfMedians, 3)} (the faster).`,
    `Per round, cluster / the faster haproxy mode: ${x.roundRatios.map((r) => fmt(r, 3)).join(', ')}; median ${fmt(x.ratio, 3)} (the verdict).`,
    `Per round, cluster / IPVS: ${x.roundRatiosIpvs.map((r) => fmt(r, 3)).join(', ') || 'not measured'}; median ${fmt(x.ratioIpvs, 3)}.`,
    `Per round, cluster / nftables DNAT: ${x.roundRatiosNft.map((r) => fmt(r, 3)).join(', ') || 'not measured'}; median ${fmt(x.ratioNft, 3)}.`,
    '',
  ];
}

function renderUdp(u: NonNullable<LabReport['udp']>): string[] {
  return [
    '## UDP through the filter (iperf3 -u, packets/s)',
    '',
    `A second port rule (TCP and UDP on port ${u.port}) in this lab; iperf3 server in host 1, client in the`,
    `client namespace sending ${u.datagramBytes}-byte datagrams as fast as it can (\`-b 0\`), ${u.seconds} s per run, alternating`,
    "in one lab: to host 1's dedicated IP (the filter does not look at it) and to the VIP from a source",
    "port in one of host 1's buckets of that rule (the whole filter, on all three hosts). Hosts 2 and",
    '3 drop the datagrams to the VIP in their filter but those to the dedicated IP earlier, in routing;',
    'all of it shares the cores with sender and receiver here, so the ratio is an upper bound of the',
    "filter's cost to one host (a diagnostic, not a target).",
    '',
    '| run | path | sent/s | received/s | lost % |',
    '|---|---|---|---|---|',
    ...u.runs.map(
      (r, i) =>
        `| ${i + 1} | ${r.path === 'vip' ? 'VIP (filter)' : 'dedicated IP (no filter)'} | ${r.sentPerSecond} | ${r.receivedPerSecond} | ${fmt(r.lostPercent)} |`,
    ),
    '',
    `Received packets/s, VIP / dedicated IP, per round: ${u.roundRatios.map((r) => fmt(r, 3)).join(', ')}; median ${fmt(u.ratio, 3)}.`,
    `Medians over all runs: VIP ${fmt(u.vipPerSecond, 0)}/s, dedicated IP ${fmt(u.dedicatedPerSecond, 0)}/s.`,
    '',
  ];
}

/** The per-bucket handoff gaps of every change, as a distribution. */
function handoffLines(changes: PlannedResult['changes']): string[] {
  const all = changes.flatMap((c) => c.gap.kernelGapsMs);
  const sorted = [...all].sort((a, b) => a - b);
  const at = (q: number): string =>
    sorted.length === 0
      ? '-'
      : fmt(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!, 2);
  return [
    `Handoff in the kernels, per moved bucket (${all.length} buckets): p50 ${at(0.5)} ms, p90 ${at(0.9)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms.`,
    '',
    '| change | buckets | p50 (ms) | max (ms) |',
    '|---|---|---|---|',
    ...changes.map((c) => {
      const g = [...c.gap.kernelGapsMs].sort((a, b) => a - b);
      return `| ${c.change} h${c.host} | ${g.length} | ${g.length === 0 ? '-' : fmt(g[Math.ceil(g.length / 2) - 1]!, 2)} | ${g.length === 0 ? '-' : fmt(g.at(-1)!, 2)} |`;
    }),
    '',
  ];
}
