// Filter overhead in every cluster mode and family (issue 12 item 7): the same iperf3
// measurement as the unicast IPv4 one (throughput.ts runFilterOverhead: to host 1 through the
// whole filter and to its own address, alternating, one lab each), in a lab of each other mode,
// and to the IPv6 cluster IP beside host 1's IPv6 address. The unicast IPv4 figure stays the
// bench's `filter` (and its target); these sit beside it with a target each.
import type { ClusterMode } from '../../src/core/config.js';
import { fmt } from './support.js';
import type { Target } from './report.js';
import type { FilterResult } from './throughput.js';

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
          : `${fmt(f.ratio, 3)} (rounds ${f.roundRatios.map((r) => fmt(r, 2)).join(', ')}; medians VIP ${fmt(f.vipGbps, 2)} Gbit/s, own address ${fmt(f.dedicatedGbps, 2)} Gbit/s)`,
    };
  });
}

export function renderFilterModes(
  results: readonly FilterModeResult[],
  unicast: FilterResult | null,
): string[] {
  if (results.length === 0) return [];
  const row = (label: string, f: FilterResult): string =>
    `| ${label} | ${fmt(f.vipGbps, 2)} | ${fmt(f.dedicatedGbps, 2)} | ${f.roundRatios.map((r) => fmt(r, 2)).join(', ')} | ${fmt(f.ratio, 3)} |`;
  return [
    '## Filter overhead in every mode and family',
    '',
    'The measurement above, in a lab of each mode: to the cluster IP through the whole filter and',
    "to host 1's own address (IPv4 or IPv6), alternating, one TCP stream per run. In multicast and",
    "IGMP modes host 1 keeps its own MAC, and the cluster IP's frames carry the group MAC.",
    '',
    '| mode, family | VIP Gbit/s (median) | own address Gbit/s (median) | ratio per round | ratio (median) |',
    '|---|---|---|---|---|',
    ...(unicast === null ? [] : [row('unicast, IPv4', unicast)]),
    ...results.map((r) => row(r.label, r.result)),
    '',
  ];
}
