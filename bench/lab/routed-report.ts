// bench/results/routed.md from the routed benchmark's figures: the machine, the settings, the
// verdicts against their targets, then every sample.
import type { FailoverTrial, HoldTrial } from './routed-failover.js';
import type { ShareResult, ThroughputResult } from './routed-traffic.js';
import { fmt, maxOf, median } from './support.js';

export interface RoutedSettings {
  readonly hosts: number;
  readonly heartbeatPeriodMs: number;
  readonly heartbeatTolerance: number;
  /** tolerance × period: how long a silent host lives on in its peers' views. */
  readonly detectionMs: number;
  /** The kernel lease of a host whose nlbd stops (leaseTimeoutMsFor). */
  readonly leaseMs: number;
  readonly bfd: { readonly intervalMs: number; readonly multiplier: number };
  readonly bgpTimers: { readonly keepaliveS: number; readonly holdS: number };
  readonly frr: string;
  readonly iperf3: string;
}

export interface Verdict {
  readonly id: string;
  readonly target: string;
  readonly measured: string;
  /** null: a figure with no target, or a comparison. */
  readonly pass: boolean | null;
}

export interface RoutedReport {
  readonly writtenAt: string;
  readonly machine: Record<string, unknown>;
  readonly loadAverageAtEnd: number[];
  readonly runSeconds: number;
  readonly settings: RoutedSettings;
  readonly targets: { readonly routerOutMs: number; readonly servedMs: number };
  readonly failover: readonly FailoverTrial[];
  readonly holds: readonly HoldTrial[];
  readonly throughput: ThroughputResult | null;
  /** The same streams in a segment lab (`forward: segment`: no encapsulation). */
  readonly segmentThroughput: ThroughputResult | null;
  readonly share: ShareResult | null;
  readonly errors: readonly { readonly part: string; readonly error: string }[];
  readonly verdicts: readonly Verdict[];
}

const verdictText = (pass: boolean | null): string =>
  pass === null ? '(figure)' : pass ? 'PASS' : 'FAIL';

function stat(values: readonly (number | null)[]): string {
  const present = values.filter((v): v is number => v !== null);
  const missing = values.length - present.length;
  return `median ${fmt(median(present), 0)} ms, max ${fmt(maxOf(present), 0)} ms over ${values.length} trials${missing > 0 ? ` (${missing} never)` : ''}`;
}

/** The verdicts of every part, from its samples; a part not measured fails. */
export function judge(
  report: Omit<RoutedReport, 'verdicts' | 'writtenAt' | 'loadAverageAtEnd' | 'runSeconds'>,
  trialsWanted: number,
): Verdict[] {
  const { failover, holds, targets, share, throughput, segmentThroughput } = report;
  const complete = failover.length >= trialsWanted;
  const out = failover.map((t) => t.routerOutMs);
  // Served for good: from the attempt after a bucket's last failure, not its first answer.
  const served = failover.map((t) => t.servedForGoodMs);
  const verdicts: Verdict[] = [
    {
      id: 'failover-router-out',
      target: `a hung host out of the router's FIB ≤ ${targets.routerOutMs} ms (BFD ${report.settings.bfd.intervalMs} ms × ${report.settings.bfd.multiplier})`,
      measured: stat(out),
      pass: complete && out.every((ms) => ms !== null && ms <= targets.routerOutMs),
    },
    {
      id: 'failover-buckets-served',
      target: `a hung host's buckets serve again, for good, ≤ detection + 500 ms = ${targets.servedMs} ms`,
      measured: stat(served),
      pass: complete && served.every((ms) => ms !== null && ms <= targets.servedMs),
    },
  ];
  for (const change of ['withdraw', 're-announce', 'hang'] as const) {
    const nlb = holds.find((h) => h.system === 'nlb' && h.change === change);
    const ecmp = holds.find((h) => h.system === 'ecmp' && h.change === change);
    const onHost = change === 'hang';
    verdicts.push({
      id: `holds-nlb-${change}`,
      target: onHost
        ? `a host hangs, nlb: 0 of ${nlb?.holdsWanted ?? 90} connections broken on the hosts that stay up (the hung host's own counted apart)`
        : `a host ${change === 'withdraw' ? 'withdraws' : 're-announces'}, nlb: 0 of ${nlb?.holdsWanted ?? 90} connections broken`,
      measured:
        nlb === undefined
          ? 'not measured'
          : `${nlb.brokenElsewhere} broken elsewhere, ${nlb.brokenOnHost} on h${nlb.host}${nlb.holdsNotOpened > 0 ? `, ${nlb.holdsNotOpened} never opened` : ''}; ECMP alone: ${ecmp === undefined ? 'not measured' : `${ecmp.brokenElsewhere} elsewhere + ${ecmp.brokenOnHost} on h${ecmp.host}`}`,
      pass:
        nlb !== undefined &&
        nlb.holdsNotOpened === 0 &&
        (onHost ? nlb.brokenElsewhere === 0 : nlb.broken === 0),
    });
  }
  const shareOk = share?.packetShare !== null && share !== null;
  verdicts.push({
    id: 'extra-hop-share',
    target:
      'the share of packets from the router that take the extra hop ≈ 2/3 with 3 hosts (0.667 ± 0.05)',
    measured: shareOk
      ? `${fmt(share.packetShare, 3)} of ${share.extraHopPackets + share.directPackets} packets; per connection ${fmt(share.connectionShare, 3)} of ${share.connectionsAnswered}`
      : 'not measured',
    pass: shareOk && Math.abs(share.packetShare! - 2 / 3) <= 0.05,
  });
  verdicts.push({
    id: 'throughput-forwarded',
    target:
      'a single TCP stream forwarded over VXLAN vs direct (no target: the cost of the extra hop)',
    measured: throughput === null ? 'not measured' : throughputFigure(throughput),
    pass: null,
  });
  verdicts.push({
    id: 'throughput-segment',
    target:
      'a single TCP stream forwarded on a shared segment (`forward: segment`, no encapsulation) vs direct (no target)',
    measured: segmentThroughput === null ? 'not measured' : throughputFigure(segmentThroughput),
    pass: null,
  });
  return verdicts;
}

function throughputFigure(t: ThroughputResult): string {
  return `direct ${fmt(t.directGbps, 2)} Gbit/s, forwarded ${fmt(t.forwardedGbps, 2)} Gbit/s, ratio ${fmt(t.ratio, 2)} (median of ${t.rounds} rounds)`;
}

function throughputRows(t: ThroughputResult): string[] {
  return [
    '| round | path | owner | first hop | source port | Gbit/s | retransmits | packets forwarded | packets accepted |',
    '|---|---|---|---|---|---|---|---|---|',
    ...t.runs.map(
      (x) =>
        `| ${x.round} | ${x.path} | h${x.owner} | h${x.firstHop} | ${x.dataPort} | ${fmt(x.gbps, 2)} | ${x.retransmits ?? '-'} | ${x.forwardedPackets} | ${x.acceptedPackets} |`,
    ),
    '',
  ];
}

function holdRows(holds: readonly HoldTrial[]): string[] {
  return holds.map(
    (h) =>
      `| ${h.system === 'nlb' ? 'nlb routed' : 'ECMP alone'} | h${h.host} ${h.change} | ${fmt(h.routerMs, 0)} | ${Object.entries(
        h.holdsByHost,
      )
        .map(([id, n]) => `h${id}: ${n}`)
        .join(', ')} | **${h.broken}** | ${h.brokenOnHost} | ${h.brokenElsewhere} | ${
        Object.entries(h.brokenKinds)
          .map(([k, n]) => `${k} ${n}`)
          .join(', ') || '-'
      } | ${h.newFailed} of ${h.newStarted} |`,
  );
}

export function renderRoutedReport(r: RoutedReport): string {
  const s = r.settings;
  const changed = (change: HoldTrial['change']): string => {
    const trial = r.holds.find((h) => h.change === change);
    return trial === undefined ? 'a host' : `h${trial.host}`;
  };
  const lines = [
    '# Routed mode: failover, connections kept across path changes, the extra hop',
    '',
    `Written by \`npm run bench:routed\` on ${r.writtenAt} in ${fmt(r.runSeconds, 0)} s; machine: ${JSON.stringify(r.machine)}; load average at the end: ${JSON.stringify(r.loadAverageAtEnd)}.`,
    '',
    `Routed labs (src/lab/router.ts): a router namespace running FRR ${s.frr} with ECMP over ${s.hosts} hosts, each in a /24 of its own, hashed on the 5-tuple (fib_multipath_hash_policy 3, fields 0x0037); BGP timers ${s.bgpTimers.keepaliveS} s / ${s.bgpTimers.holdS} s, BFD ${s.bfd.intervalMs} ms × ${s.bfd.multiplier}; client c1 behind the router. **nlb routed**: nlbd in every host (heartbeat ${s.heartbeatPeriodMs} ms × ${s.heartbeatTolerance}: detection ${s.detectionMs} ms, kernel lease ${s.leaseMs} ms), forwarding over VXLAN with the second chance. **ECMP alone**: the same lab without nlbd, every host holding the cluster IP as a local route and announcing it (plain BGP anycast, as MetalLB's BGP mode).`,
    '',
    'A hang freezes a host whole: its router port drops every packet both ways (the port stays up, so only BFD can tell) and every process in its namespace is stopped (SIGSTOP: nlbd, zebra, bfdd, bgpd, the backend); it is woken after each measurement.',
    '',
    `Targets: the router drops a hung host's path within ${r.targets.routerOutMs} ms (BFD detects in ${s.bfd.intervalMs * s.bfd.multiplier} ms; the rest is zebra's FIB update). Its buckets serve again within detection + 500 ms = ${r.targets.servedMs} ms: the survivors may only take a host's buckets once they declared it dead, which is tolerance × period = ${s.detectionMs} ms after its last heartbeat (so ${s.detectionMs - s.heartbeatPeriodMs}-${s.detectionMs} ms after the hang); 500 ms covers the new map's convergence and programming and the prober's spacing (10 ms asked; on two loaded cores 15-25 ms, the table says). The router's own part (≤ 1 s) runs in parallel and is shorter than detection, so it adds nothing.`,
    '',
    '| target | measured | verdict |',
    '|---|---|---|',
    ...r.verdicts.map((v) => `| ${v.target} | ${v.measured} | ${verdictText(v.pass)} |`),
    '',
  ];
  if (r.errors.length > 0) {
    lines.push('Parts that failed:', '', ...r.errors.map((e) => `- ${e.part}: ${e.error}`), '');
  }
  lines.push(
    '## 1. Failover: a host hangs',
    '',
    `Per trial: the hang → the router's FIB without the host (polled every 5 ms); → each of its buckets answered by a survivor (the bench prober: a fresh connection per bucket every 10 ms, each from another source port in that bucket, so over every first hop, 50 ms connect timeout; probing goes on 300 ms after the last bucket's first answer), first once and then for good (from the attempt after the bucket's last failure; the verdict's figure); → the first survivor declaring it dead (its log). The last column counts attempts after a bucket's first answer that still failed, over the attempts after the hang. ${r.failover.length} trials, the victim rotating.`,
    '',
    '| trial | hung host | its buckets | router out (ms) | buckets served once, last (ms) | served for good, last (ms) | per bucket p50 (ms) | declared dead (ms) | probe spacing (ms) | failed after served | whole again after wake (ms) |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...r.failover.map(
      (t) =>
        `| ${t.trial} | h${t.victim} | ${t.deadBuckets} | ${fmt(t.routerOutMs, 0)} | ${t.servedMs === null ? `never (${t.bucketsNeverServed} buckets)` : fmt(t.servedMs, 0)} | ${fmt(t.servedForGoodMs, 0)} | ${fmt(t.bucketServedMs.p50, 0)} | ${fmt(t.declaredDeadMs, 0)} | ${fmt(t.resolutionMs, 1)} | ${t.failedAfterServed} of ${t.probes} | ${fmt(t.wholeAgainMs, 0)} |`,
    ),
    '',
    "## 2. Long-lived connections across a change of the router's paths",
    '',
    `Client c1 holds 90 connections (the lab loadgen: \`--holds 90 --ping-interval-ms 200 --ping-timeout-ms 1500\`, plus 20 new connections/s), all open 1 s before the change, pinged for 6 s after it. A hold is broken when a ping goes unanswered 1.5 s or the connection is reset or closed. Changes, in order, in each lab: ${changed('withdraw')} withdraws (its marker route deleted), ${changed('re-announce')} re-announces (added back; the holds were opened while it was out), ${changed('hang')} hangs. "on the host" counts the broken holds the changed host answered (for a hang, lost with it; nlb can do nothing for them). DESIGN-ROUTED.md measured ECMP alone breaking 40 / 46 / 51 of 90.`,
    '',
    "Which host changes matters to ECMP alone, not to nlb: the router's multipath group is hash-threshold (the hash space cut into equal ranges, one per nexthop in order h1, h2, h3), so taking out the middle nexthop moves no flow between the others, while taking out an end one moves a sixth of all flows between the two that stay (and putting it back moves them again, with the third that returns to it). The bench changes the end hosts h1 and h3; with ECMP alone expect about 30 + 15 broken for each change.",
    '',
    '| lab | change | router FIB shows it (ms) | holds by host | broken | on the host | elsewhere | how | new connections failed |',
    '|---|---|---|---|---|---|---|---|---|',
    ...holdRows(r.holds),
    '',
  );
  const t = r.throughput;
  lines.push('## 3. Throughput: direct vs forwarded over VXLAN', '');
  if (t === null) {
    lines.push('Not measured (see the failed parts).', '');
  } else {
    lines.push(
      `One TCP stream, iperf3 ${s.iperf3}, ${t.seconds} s per run, client c1 → the cluster IP :5201 (a second port rule of the lab, \`extraRulePort\`), an iperf3 server in every host. Direct: the router's first hop for the stream's 5-tuple owns its bucket; forwarded: another host, which sends it over VXLAN to the owner (the owner answers the client directly). The client's source ports are chosen by the router's own \`ip route get … sport S dport 5201\` and the hosts' maps; the packets forwarded during each run (rule1_forwarded) show the path taken. Runs alternate (ABBA), the owner rotating over the hosts by round; the ratio is the median of the per-round ratios. The cluster IP's SYN-ACKs carry the clamped MSS on both paths.`,
      '',
      `Median: direct **${fmt(t.directGbps, 2)} Gbit/s**, forwarded **${fmt(t.forwardedGbps, 2)} Gbit/s**, forwarded / direct **${fmt(t.ratio, 2)}**.`,
      '',
      ...throughputRows(t),
    );
  }
  const g = r.segmentThroughput;
  lines.push('### On one segment, without encapsulation (`forward: segment`)', '');
  if (g === null) {
    lines.push('Not measured (see the failed parts).', '');
  } else {
    lines.push(
      `The same streams in a segment lab (\`routedLabUp({ segment: true })\`, \`nlb lab up --mode routed --forward segment\`): the router and the 3 hosts on one bridge (198.18.1.1, hosts 198.18.1.11-13), BGP and ECMP as above; a forwarding host sends the stream's packets as plain frames to the owner's macvlan MAC (src/dataplane/routed-segment.ts), and the SYN-ACKs' MSS is clamped to the uplink MTU − 40 only (1460: no overlay to fit).`,
      '',
      `Median: direct **${fmt(g.directGbps, 2)} Gbit/s**, forwarded **${fmt(g.forwardedGbps, 2)} Gbit/s**, forwarded / direct **${fmt(g.ratio, 2)}**.`,
      '',
      ...throughputRows(g),
    );
  }
  const sh = r.share;
  lines.push('## 4. The share of packets that take the extra hop', '');
  if (sh === null) {
    lines.push('Not measured (see the failed parts).', '');
  } else {
    lines.push(
      `${sh.ratePerSecond} new connections/s for ${sh.durationMs} ms from c1 to the cluster IP :80 (${sh.started} started, ${sh.failed} failed). From the hosts' counters, summed: packets from the router sent on to another host (rule0_forwarded ${sh.counters.rule0_forwarded ?? 0} + rule0_second_sent ${sh.counters.rule0_second_sent ?? 0} = ${sh.extraHopPackets}) over those plus the packets accepted where they arrived (rule0_accepted ${sh.counters.rule0_accepted ?? 0} − arrived over the overlay ${sh.overlayInPackets} = ${sh.directPackets}): **${fmt(sh.packetShare, 3)}**. Per connection, the router's first hop for its 5-tuple was not the host that answered for ${sh.connectionsForwarded} of ${sh.connectionsAnswered}: **${fmt(sh.connectionShare, 3)}**. With 3 hosts owning 20 buckets each and a first hop independent of the bucket, 2/3 is expected.`,
      '',
      '| counter (summed over the hosts) | packets |',
      '|---|---|',
      ...Object.entries(sh.counters)
        .filter(([, n]) => n !== 0)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([name, n]) => `| ${name} | ${n} |`),
      '',
    );
  }
  return lines.join('\n');
}
