// Which host takes a client's new flow: the port rule that covers the traffic, the bucket the
// client hashes to under that rule's affinity, and the owner of that bucket in the rule's
// bucket map. `nlb map` plans the bucket maps offline with `planBucketMaps` (the map `assign`
// gives a freshly formed cluster of the listed hosts); the daemon can pass the live maps it
// reads from its peers' heartbeats to the same `predictOwner`.
import type { Address, Endpoint } from './address.js';
import { assign } from './assign.js';
import type { Affinity, ClusterConfig, FilteringMode, HostRuleSettings } from './config.js';
import { type PacketProtocol, flowBucket, matchPortRule } from './flow.js';

/**
 * What a prediction reads of a cluster's config: its cluster IPs, hash seed and port rules. A
 * ClusterConfig is one; so is what a running nlbd reports with its live map.
 */
export type PredictionCluster = Pick<ClusterConfig, 'clusterIps' | 'hashSeed' | 'portRules'>;

/** A live host as the planner sees it. */
export interface PlannedHost {
  readonly id: number;
  /** One entry per cluster port rule, in config order. */
  readonly rules: readonly HostRuleSettings[];
  readonly draining?: boolean;
}

export interface BucketMaps {
  /** Per port rule, in config order: the owner of every bucket, or null. */
  readonly owners: readonly (readonly (number | null)[])[];
  /** The lowest live host id, which takes traffic no port rule covers; null with no hosts. */
  readonly defaultHost: number | null;
}

/**
 * The bucket maps `assign` gives when `hosts` form the cluster from scratch (no bucket owned
 * yet). Computed once per rule, so predicting many clients costs one hash each.
 */
export function planBucketMaps(cluster: ClusterConfig, hosts: readonly PlannedHost[]): BucketMaps {
  for (const host of hosts) {
    if (host.rules.length !== cluster.portRules.length) {
      throw new Error(
        `planBucketMaps: host ${host.id} has ${host.rules.length} rule settings for ${cluster.portRules.length} port rules`,
      );
    }
  }
  const owners = cluster.portRules.map((rule, i) =>
    assign({
      mode: rule.mode,
      buckets: rule.buckets,
      owners: new Array<number | null>(rule.buckets).fill(null),
      members: hosts.map((host) => ({
        id: host.id,
        loadWeight: host.rules[i]!.loadWeight,
        handlingPriority: host.rules[i]!.handlingPriority,
        draining: host.draining ?? false,
      })),
    }),
  );
  const defaultHost = hosts.reduce<number | null>(
    (lowest, host) => (lowest === null || host.id < lowest ? host.id : lowest),
    null,
  );
  return { owners, defaultHost };
}

/**
 * Why a prediction came out as it did:
 * - `owner`: the host owns the client's bucket;
 * - `unowned`: nobody owns the bucket (every host has weight 0 or drains), the flow is dropped;
 * - `disabled`: the covering rule is disabled, the flow is dropped;
 * - `no-rule`: no port rule covers the traffic, so the default host takes it.
 */
export type PredictionReason = 'owner' | 'unowned' | 'disabled' | 'no-rule';

export interface Prediction {
  /** Index of the covering port rule, or null when none covers the traffic. */
  readonly rule: number | null;
  readonly mode: FilteringMode | null;
  readonly affinity: Affinity | null;
  /** null when no rule covers the traffic or the rule is disabled (nothing is hashed). */
  readonly bucket: number | null;
  /** The host that takes the flow, or null when it is dropped. */
  readonly host: number | null;
  readonly reason: PredictionReason;
}

/** The host that takes a new flow from `client` to `vip`:`port`/`protocol`. */
export function predictOwner(
  cluster: PredictionCluster,
  maps: BucketMaps,
  client: Endpoint,
  vip: Address,
  port: number,
  protocol: PacketProtocol,
): Prediction {
  const index = matchPortRule(cluster, vip, port, protocol);
  if (index === undefined) {
    return {
      rule: null,
      mode: null,
      affinity: null,
      bucket: null,
      host: maps.defaultHost,
      reason: 'no-rule',
    };
  }
  const rule = cluster.portRules[index]!;
  if (rule.mode === 'disabled') {
    return {
      rule: index,
      mode: rule.mode,
      affinity: rule.affinity,
      bucket: null,
      host: null,
      reason: 'disabled',
    };
  }
  const bucket = flowBucket(client, rule.affinity, rule.buckets, cluster.hashSeed);
  const host = maps.owners[index]?.[bucket] ?? null;
  return {
    rule: index,
    mode: rule.mode,
    affinity: rule.affinity,
    bucket,
    host,
    reason: host === null ? 'unowned' : 'owner',
  };
}
