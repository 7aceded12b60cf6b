// I2 and the simulator's own notion of "the cluster has converged", both read from outside the
// hosts: from each host's reported status and from what its data plane was told.
import type { Config } from '../core/config.js';
import type { RuleState } from '../core/heartbeat.js';
import type { HostStatus } from '../core/protocol.js';
import type { Expectation } from './types.js';

/** What the checks need to know about one live host process. */
export interface ObservedHost {
  readonly index: number;
  readonly slot: number;
  readonly hostId: number;
  readonly config: Config;
  readonly expect: Expectation;
  readonly status: HostStatus;
  /** Per rule: enabled, or drained or disabled on this host by the operator. */
  readonly ruleStates: readonly RuleState[];
  /** Per rule: the service's health as reported (absent: healthy). */
  readonly health?: readonly boolean[];
  /** Per rule: the load weight in force (absent: the config's). */
  readonly weights?: readonly number[];
  /** Per rule, the buckets its data plane accepts new flows for (empty when inactive). */
  readonly owned: readonly (readonly number[])[];
}

export type TargetMap = readonly (readonly (number | null)[])[];

export function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function sameTarget(a: TargetMap, b: TargetMap): boolean {
  if (a.length !== b.length) return false;
  for (let r = 0; r < a.length; r++) {
    const x = a[r]!;
    const y = b[r]!;
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  }
  return true;
}

/** A host takes part in its own view: it lists itself among the members. */
export function participates(host: ObservedHost): boolean {
  const s = host.status;
  return s.members.includes(s.hostId) && s.state !== 'stopped' && s.state !== 'suspended';
}

/** Whether `host`'s data plane owns exactly its share of `target` on every enabled rule. */
function ownsItsShare(host: ObservedHost, target: TargetMap): boolean {
  const rules = host.config.cluster.portRules;
  for (let r = 0; r < rules.length; r++) {
    if (rules[r]!.mode === 'disabled') continue;
    const owned = host.owned[r] ?? [];
    const row = target[r] ?? [];
    let share = 0;
    for (const owner of row) if (owner === host.hostId) share += 1;
    if (share !== owned.length) return false;
    for (const bucket of owned) if (row[bucket] !== host.hostId) return false;
  }
  return true;
}

export interface AgreedGroup {
  /** Members, as every host of the group reports them. */
  readonly members: readonly number[];
  readonly mapDigest: string;
  readonly hosts: readonly ObservedHost[];
}

/** Members as processes: `id:incarnation`, so a stale view of a replaced host is its own. */
function memberKeys(status: HostStatus): string[] {
  return status.members.map((id, i) => `${id}:${status.memberIncarnations[i] ?? '?'}`);
}

/**
 * Groups of live hosts that all report `converged` with the same members, where the group's
 * hosts are exactly those members. Members are compared as processes (id and incarnation):
 * when a host is replaced by a newer incarnation of its id (a restart, or a second host given
 * the same id) while the old one is cut off, the old one's view still names itself and is
 * about a different cluster than its peers' view, although the ids read the same. Returns the groups, and an I2 message for any such group
 * whose hosts hold different target maps.
 */
export function agreedGroups(hosts: readonly ObservedHost[]): {
  groups: AgreedGroup[];
  disagreement: string | undefined;
} {
  const byMembers = new Map<string, ObservedHost[]>();
  for (const host of hosts) {
    if (!participates(host)) continue;
    const key = memberKeys(host.status).join(',');
    const list = byMembers.get(key);
    if (list === undefined) byMembers.set(key, [host]);
    else list.push(host);
  }
  const groups: AgreedGroup[] = [];
  let disagreement: string | undefined;
  for (const list of byMembers.values()) {
    const members = list[0]!.status.members;
    if (!list.every((h) => h.status.converged)) continue;
    const processes = list.map((h) => `${h.hostId}:${h.status.incarnation}`).sort();
    if (processes.join(',') !== [...memberKeys(list[0]!.status)].sort().join(',')) continue;
    const first = list[0]!;
    for (const other of list.slice(1)) {
      if (
        other.status.mapDigest !== first.status.mapDigest ||
        !sameTarget(other.status.target, first.status.target)
      ) {
        disagreement ??= `h${first.hostId} and h${other.hostId} both report converged with members ${members.join(',')} but hold different target maps (${first.status.mapDigest.slice(0, 12)} vs ${other.status.mapDigest.slice(0, 12)})`;
      }
    }
    groups.push({ members, mapDigest: first.status.mapDigest, hosts: list });
  }
  return { groups, disagreement };
}

/**
 * I2's second half, for a group that has been agreed for the settle allowance: every bucket of
 * an enabled rule is owned by exactly its target owner among the group, and has an owner
 * whenever the rule has an eligible member. Returns a message or undefined.
 */
export function coverageProblem(group: AgreedGroup): string | undefined {
  const first = group.hosts[0]!;
  const rules = first.config.cluster.portRules;
  const target = first.status.target;
  for (let r = 0; r < rules.length; r++) {
    const rule = rules[r]!;
    if (rule.mode === 'disabled') continue;
    const row = target[r] ?? [];
    // The hosts that could take the rule's buckets (at the weight in force, whatever their
    // health: an unhealthy one yields only to a healthy one; with none healthy it fails open).
    const able = group.hosts.filter((h) => {
      const draining = h.status.state === 'draining' || h.ruleStates[r] !== 'enabled';
      const weight = h.weights?.[r] ?? h.config.host.rules[r]?.loadWeight ?? 0;
      return !draining && (rule.mode === 'single' || weight > 0);
    });
    const eligible = able.length > 0;
    const healthy = able.find((h) => h.health?.[r] ?? true);
    const sick = group.hosts.find((h) => !(h.health?.[r] ?? true) && (h.owned[r]?.length ?? 0) > 0);
    if (healthy !== undefined && sick !== undefined) {
      return `rule ${r}: h${sick.hostId} is unhealthy but owns ${sick.owned[r]!.length} bucket(s) while h${healthy.hostId} is healthy (members ${group.members.join(',')})`;
    }
    const ownersOf = new Map<number, number[]>();
    for (const host of group.hosts) {
      for (const bucket of host.owned[r] ?? []) {
        const list = ownersOf.get(bucket);
        if (list === undefined) ownersOf.set(bucket, [host.hostId]);
        else list.push(host.hostId);
      }
    }
    for (let bucket = 0; bucket < rule.buckets; bucket++) {
      const owners = ownersOf.get(bucket) ?? [];
      const wanted = row[bucket] ?? null;
      if (eligible && wanted === null) {
        return `rule ${r} bucket ${bucket} has no target owner although the rule has an eligible member (members ${group.members.join(',')})`;
      }
      if (owners.length > 1) {
        return `rule ${r} bucket ${bucket} is owned by h${owners.join(' and h')} in a converged cluster (members ${group.members.join(',')})`;
      }
      if (wanted !== null && owners[0] !== wanted) {
        return `rule ${r} bucket ${bucket} should be owned by h${wanted} but is owned by ${owners.length === 0 ? 'nobody' : `h${owners[0]}`} in a converged cluster (members ${group.members.join(',')})`;
      }
      if (wanted === null && owners.length > 0) {
        return `rule ${r} bucket ${bucket} has no target owner but h${owners[0]} owns it (members ${group.members.join(',')})`;
      }
    }
  }
  return undefined;
}

export interface ClusterView {
  /** Every connected part of the expected members is converged with its owners in place. */
  readonly converged: boolean;
  /** The common target when the cluster is one converged part; undefined otherwise. */
  readonly target: TargetMap | undefined;
  /** The hosts of that one part. */
  readonly members: readonly ObservedHost[];
  /** Why not converged, for the transcript. */
  readonly reason: string | undefined;
}

/**
 * The simulator's definition of converged, which convergence times and I3 use: split the hosts
 * that should take part (`expect` member) into the groups the network connects (links up both
 * ways); every group must be a clique, and each must be converged on exactly its own members,
 * with one map, every host owning exactly its share; hosts that should not take part own nothing.
 */
export function clusterView(
  hosts: readonly ObservedHost[],
  linkUp: (fromSlot: number, toSlot: number) => boolean,
): ClusterView {
  const expected = hosts.filter((h) => h.expect === 'member');
  for (const host of hosts) {
    if (host.expect !== 'member' && host.owned.some((buckets) => buckets.length > 0)) {
      return no(`h${host.hostId} (${host.expect}) still owns buckets`);
    }
  }
  const connected = (a: ObservedHost, b: ObservedHost): boolean =>
    linkUp(a.slot, b.slot) && linkUp(b.slot, a.slot);
  const seen = new Set<number>();
  const parts: ObservedHost[][] = [];
  for (const start of expected) {
    if (seen.has(start.index)) continue;
    const part: ObservedHost[] = [];
    const queue = [start];
    seen.add(start.index);
    while (queue.length > 0) {
      const host = queue.pop()!;
      part.push(host);
      for (const other of expected) {
        if (!seen.has(other.index) && connected(host, other)) {
          seen.add(other.index);
          queue.push(other);
        }
      }
    }
    parts.push(part);
  }
  for (const part of parts) {
    for (const a of part) {
      for (const b of part) {
        if (a !== b && !connected(a, b)) return no('the network is not a set of cliques');
      }
    }
    const ids = part.map((h) => h.hostId).sort((a, b) => a - b);
    if (new Set(ids).size !== ids.length) return no('two expected members share a host id');
    const first = part[0]!;
    for (const host of part) {
      const s = host.status;
      if (!s.converged) return no(`h${host.hostId} not converged`);
      if (!sameIds(s.members, ids)) return no(`h${host.hostId} members ${s.members.join(',')}`);
      if (s.mapDigest !== first.status.mapDigest) return no(`h${host.hostId} map differs`);
      if (!ownsItsShare(host, first.status.target)) return no(`h${host.hostId} owns not its share`);
    }
  }
  const single = parts.length === 1 ? parts[0]! : undefined;
  return {
    converged: true,
    target: single?.[0]?.status.target ?? (parts.length === 0 ? [] : undefined),
    members: single ?? [],
    reason: undefined,
  };
}

function no(reason: string): ClusterView {
  return { converged: false, target: undefined, members: [], reason };
}
