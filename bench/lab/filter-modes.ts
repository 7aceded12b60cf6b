// Filter overhead in every cluster mode and family (issue 12 item 7): the same iperf3
// measurement as the unicast IPv4 one (throughput.ts runFilterOverhead: to host 1 through the
// whole filter and to its own address, alternating, one lab each), in a lab of each other mode,
// and to the IPv6 cluster IP beside host 1's IPv6 address. The unicast IPv4 figure stays the
// bench's `filter` (and its target); these sit beside it with a target each.
//
// The baseline must differ from the VIP's path by the filter alone. In unicast mode it does:
// host 1's own address resolves to the cluster MAC too, so both streams are flooded to every
// host. In multicast and IGMP modes host 1 keeps its own MAC, so the switch sends its own
// address's frames to host 1 alone while the VIP's frames (to the group MAC) go to all three
// hosts and cost each of them its receive path: measured so, a mode's cost of flooding read as
// the filter's (0.72 in multicast here, where the filter itself costs ~3%). So in those modes
// the client sends the baseline to the group MAC as well (a permanent neighbour entry in the
// client's namespace), and host 1 takes those frames for its own address by the one rule the
// filter also starts with (pkttype host), without the hash; hosts 2 and 3 drop them in routing.
// Each round then also measures host 1's own address switched to it alone, and the report
// shows the flooding's cost beside the filter's.
import type { ClusterMode } from '../../src/core/config.js';
import { parseAddress } from '../../src/core/address.js';
import { groupMacOf } from '../../src/dataplane/spec.js';
import { labVip } from '../../src/lab/naming.js';
import type { LabState } from '../../src/lab/state.js';
import { fmt } from './support.js';
import type { Target } from './report.js';
import { type FilterResult, runFilterOverhead } from './throughput.js';

export interface FilterVariant {
  readonly label: string;
  readonly mode: ClusterMode;
  readonly family: 4 | 6;
}

/** Every mode and family but unicast IPv4, which the bench's own `filter` part measures. */
export const filterVariants: readonly FilterVariant[] = [
  { label: 'multicast, IPv4', mode: 'multicast', family: 4 },
  { label: 'igmp, IPv4', mode: 'igmp', family: 4 },
  { label: 'unicast, IPv6', mode: 'unicast', family: 6 },
  { label: 'multicast, IPv6', mode: 'multicast', family: 6 },
  { label: 'igmp, IPv6', mode: 'igmp', family: 6 },
];

/** Multicast and IGMP modes: the group MAC the baseline is sent to (the lab's, from its VIP). */
export function baselineMacOf(variant: FilterVariant): string | undefined {
  return variant.mode === 'unicast' || variant.mode === 'routed'
    ? undefined
    : groupMacOf(variant.mode, parseAddress(labVip)!);
}

/** One variant's measurement in its lab (throughput.ts runFilterOverhead). */
export function runFilterVariant(
  lab: LabState,
  variant: FilterVariant,
  quick: boolean,
  log: (line: string) => void,
  signal: AbortSignal,
): Promise<FilterResult> {
  const [seconds, rounds] = quick ? [3, 1] : [5, 4];
  return runFilterOverhead(
    lab,
    seconds,
    rounds,
    log,
    signal,
    variant.family,
    baselineMacOf(variant),
  );
}

export type FilterModeResult = FilterVariant & {
  readonly lab: string;
  readonly result: FilterResult;
};

export function judgeFilterModes(
  results: readonly FilterModeResult[],
  ratioMin: number,
  failed: (label: string) => string | undefined,
): Target[] {
  return filterVariants.map((variant) => {
    const entry = results.find((r) => r.label === variant.label);
    const f = entry?.result;
    return {
      id: `filter-overhead-${variant.mode}-v${variant.family}`,
      target: `filter overhead in ${variant.label}: iperf3 throughput with the filter / without ≥ ${ratioMin} (median of the rounds)`,
      pass: f !== undefined && f.ratio !== null && f.ratio >= ratioMin,
      measured:
        f === undefined
          ? `not measured: ${failed(variant.label) ?? 'no run'}`
          : `${fmt(f.ratio, 3)} (rounds ${f.roundRatios.map((r) => fmt(r, 2)).join(', ')}; medians VIP ${fmt(f.vipGbps, 2)} Gbit/s, own address ${fmt(f.dedicatedGbps, 2)} Gbit/s${f.switchedGbps === undefined ? '' : ` flooded as the VIP's frames are, ${fmt(f.switchedGbps, 2)} Gbit/s switched to host 1 alone`})`,
    };
  });
}

/** Multicast and IGMP modes: 1 - flooded own address / switched, as a percentage. */
function floodingCost(f: FilterResult): string {
  if (f.switchedGbps === null || f.switchedGbps === undefined || f.dedicatedGbps === null) {
    return '-';
  }
  return `${fmt((1 - f.dedicatedGbps / f.switchedGbps) * 100, 0)}%`;
}

export function renderFilterModes(
  results: readonly FilterModeResult[],
  unicast: FilterResult | null,
): string[] {
  if (results.length === 0) return [];
  const row = (label: string, f: FilterResult): string =>
    `| ${label} | ${fmt(f.vipGbps, 2)} | ${fmt(f.dedicatedGbps, 2)} | ${f.roundRatios.map((r) => fmt(r, 2)).join(', ')} | ${fmt(f.ratio, 3)} | ${f.switchedGbps === undefined ? '-' : `${fmt(f.switchedGbps, 2)} (flooding costs ${floodingCost(f)})`} |`;
  return [
    '## Filter overhead in every mode and family',
    '',
    'The measurement above, in a lab of each mode: to the cluster IP through the whole filter and',
    "to host 1's own address (IPv4 or IPv6), alternating, one TCP stream per run. In multicast and",
    "IGMP modes host 1 keeps its own MAC and the cluster IP's frames carry the group MAC, which the",
    'switch floods to every host. So that the two streams differ by the filter alone, the client',
    'sends the baseline to the group MAC too (a neighbour entry in its namespace), and host 1 takes',
    'those frames for its own address by one rule (pkttype host, no hash). Each round also sends to',
    "host 1's own address switched to it alone (last column): the mode's cost of flooding, which is",
    "not the filter's (flooded own address / switched).",
    '',
    '| mode, family | VIP Gbit/s (median) | own address Gbit/s (median) | ratio per round | ratio (median) | own address switched to host 1 alone, Gbit/s (median) |',
    '|---|---|---|---|---|---|',
    ...(unicast === null ? [] : [row('unicast, IPv4', unicast)]),
    ...results.map((r) => row(r.label, r.result)),
    '',
  ];
}
