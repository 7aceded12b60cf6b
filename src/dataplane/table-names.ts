// The names of the objects in nlb's tables, in one place so that the renderer and the readers
// (counters, the ruleset monitor, the comparison with the kernel) agree, and the keys the state
// sets hold: which rule keys `drop_all` and `new_flows` have for an ownership, and what every
// ownership set must hold.
import type { Ownership } from '../core/protocol.js';
import type { DataplaneSpec } from './dataplane-spec.js';
import { type MarkRule, uncoveredRule } from './mark.js';

/** The element of the `lease` set; the filter loads it into the packet mark to look it up. */
export const leaseKey = 0xffffffff;

/** Set and counter names, in one place so the renderer and the readers agree. */
export const names = {
  lease: 'lease',
  /** Markers the long-lived nft process adds to see its transactions committed (nft-cli.ts). */
  sync: 'sync',
  /** Rule keys whose traffic is all dropped, established connections included. */
  dropAll: 'drop_all',
  /** Rule keys this host takes new flows for. */
  newFlows: 'new_flows',
  owned: (rule: number) => `rule${rule}_owned`,
  orphan: (rule: number) => `rule${rule}_orphan`,
  accepted: (rule: number) => `rule${rule}_accepted`,
  dropped: (rule: number) => `rule${rule}_dropped`,
  reset: (rule: number) => `rule${rule}_reset`,
  uncoveredAccepted: 'uncovered_accepted',
  uncoveredDropped: 'uncovered_dropped',
  leaseExpired: 'lease_expired',
  /** The output chain where each heartbeat leaving the host refreshes the lease. */
  leaseRefresh: 'lease_refresh',
  /** Multicast and IGMP modes: the output chain giving IPv6 NAs the group MAC. */
  ndRewrite: 'nd_rewrite',
} as const;

/**
 * The key of a port rule (or of uncovered traffic) in the `drop_all` and `new_flows` sets: the
 * rule field of its ct mark (mark.ts), so the rule index, or 0xff for uncovered traffic.
 */
export function ruleKey(rule: MarkRule): number {
  return rule === 'uncovered' ? uncoveredRule : rule;
}

/**
 * The elements of `drop_all`, ascending: a rule the host disabled, and every rule and the
 * uncovered traffic of a stopped host (not taking part, and cutting established connections).
 */
export function dropAllKeys(ownership: Ownership): number[] {
  const stopped = !ownership.active && ownership.dropEstablished;
  const keys = ownership.rules.flatMap((owner, i) => (stopped || owner.disabled ? [i] : []));
  return stopped ? [...keys, ruleKey('uncovered')] : keys;
}

/**
 * The elements of `new_flows`, ascending: when the host takes part, every rule it has not
 * disabled, and the uncovered traffic if it is the default host. Nothing otherwise.
 */
export function newFlowsKeys(ownership: Ownership): number[] {
  if (!ownership.active) {
    return [];
  }
  const keys = ownership.rules.flatMap((owner, i) => (owner.disabled ? [] : [i]));
  return ownership.isDefault ? [...keys, ruleKey('uncovered')] : keys;
}

/**
 * The sets whose elements follow the ownership, with the elements `spec` gives them (sorted):
 * `drop_all`, `new_flows`, `rule<i>_owned`, `rule<i>_orphan`. The kernel must hold exactly
 * these; `lease` and `sync` hold elements with timeouts and are left out.
 */
export function ownershipSets(spec: DataplaneSpec): Map<string, number[]> {
  const sets = new Map<string, number[]>([
    [names.dropAll, dropAllKeys(spec.ownership)],
    [names.newFlows, newFlowsKeys(spec.ownership)],
  ]);
  spec.ownership.rules.forEach((owner, i) => {
    sets.set(names.owned(i), [...owner.owned]);
    sets.set(names.orphan(i), [...owner.orphan]);
  });
  return sets;
}
