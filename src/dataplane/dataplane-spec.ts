// The value the renderer turns into nftables text (render.ts), and its checks: the daemon builds
// a DataplaneSpec from a valid config (spec.ts), so a spec that fails them is a bug in the
// caller, reported with every problem at once.
import { type Address, addressesEqual } from '../core/address.js';
import {
  type ClusterMode,
  type PortRule,
  type RoutedForward,
  bucketsMax,
  clusterIpsMax,
  hostsMax,
  portRulesMax,
} from '../core/config.js';
import { isFormattedMac } from '../core/mac.js';
import type { Ownership } from '../core/protocol.js';

export interface DataplaneSpec {
  /** The name of both tables (`inet` filter and `netdev` MAC masking); 'nlb' by default. */
  readonly tableName: string;
  readonly hostId: number;
  readonly clusterIps: readonly Address[];
  /** The cluster's port rules, in config order; ownership.rules lines up with them. */
  readonly portRules: readonly PortRule[];
  /** The cluster's jhash seed; always explicit, or the kernel would pick a random one. */
  readonly hashSeed: number;
  readonly ownership: Ownership;
  /** How long the kernel keeps taking new flows without a heartbeat leaving this host. */
  readonly leaseTimeoutMs: number;
  /**
   * Where nlbd's heartbeats go (the cluster's IPv4 group and UDP port, or with `peers` the other
   * hosts' dedicated IPs by unicast): each one that leaves this host refreshes the lease in the
   * kernel as it passes the output hook, with no nft call.
   */
  readonly heartbeat: {
    readonly group: Address;
    readonly port: number;
    readonly peers?: readonly Address[];
  };
  readonly mode: ClusterMode;
  /** The cluster interface. */
  readonly interface: string;
  /** Unicast mode only: the MAC every host's cluster interface carries, 02:bf:<VIP bytes>. */
  readonly clusterMac?: string;
  /** Unicast mode only: this host's source MAC on the wire, 02:<host id>:<VIP bytes>. */
  readonly maskedMac?: string;
  /**
   * Multicast and IGMP modes only: the group MAC the cluster IPs resolve to (03:bf:<VIP bytes>,
   * or 01:00:5e:7f:<last two>): ARP replies and neighbour advertisements for them carry it.
   */
  readonly groupMac?: string;
  /**
   * Multicast and IGMP modes with an IPv6 cluster IP: the cluster interface's own MAC, which
   * the kernel's neighbour advertisements name and the NA rewrite replaces (render-chains.ts).
   */
  readonly ownMac?: string;
  /** Routed mode only: the MSS the cluster IPs' SYN-ACKs are clamped to (render-routed.ts). */
  readonly routed?: {
    readonly mssClamp: number;
    /** How packets reach another host: the VXLAN guard is for vxlan only. */
    readonly forward: RoutedForward;
    readonly vxlanPort: number;
  };
}

/** A spec that cannot be rendered is a bug in the caller (the daemon builds it from a valid config). */
export class DataplaneSpecError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid data plane spec:\n  ${problems.join('\n  ')}`);
    this.name = 'DataplaneSpecError';
  }
}

export const tableNameDefault = 'nlb';

/**
 * The tables of cluster `clusterName`: `nlb_<name>`, so several clusters on one host each own
 * their own (cluster names are 1-63 letters, digits, '_', '.', '-', all of which nft takes in a
 * table name after the first letter).
 */
export function tableNameFor(clusterName: string): string {
  return `nlb_${clusterName}`;
}
/** Below 10 ms a lease could not survive one scheduling hiccup of the daemon. */
export const leaseTimeoutMsMin = 10;
/** An hour: a longer lease would defeat its purpose (stop taking flows when nlbd is gone). */
export const leaseTimeoutMsMax = 3_600_000;

/**
 * A letter, then letters, digits, '_', '.' and '-', at most 67 in all: what nft takes as a table
 * name without quotes, and room for `nlb_` and a cluster name (tableNameFor).
 */
export const tableNamePattern = /^[A-Za-z][A-Za-z0-9_.-]{0,66}$/;
const interfacePattern = /^[A-Za-z0-9_.:@-]{1,15}$/;

/** What is wrong with a table name, or undefined. */
export function tableNameProblem(tableName: string): string | undefined {
  return tableNamePattern.test(tableName)
    ? undefined
    : `tableName '${tableName}' is not a letter then up to 66 letters, digits, '_', '.' or '-'`;
}

function checkBucketList(
  problems: string[],
  what: string,
  list: readonly number[],
  buckets: number,
): void {
  list.forEach((bucket, i) => {
    if (!Number.isInteger(bucket) || bucket < 0 || bucket >= buckets) {
      problems.push(`${what}[${i}] = ${bucket} is not a bucket 0..${buckets - 1}`);
    } else if (i > 0 && bucket <= (list[i - 1] ?? -1)) {
      problems.push(`${what} is not sorted ascending without duplicates at index ${i}`);
    }
  });
}

/** What is wrong with the MACs of `spec` for its mode. */
function macProblems(spec: DataplaneSpec): string[] {
  const problems: string[] = [];
  if (spec.mode === 'routed') {
    const extra = (['clusterMac', 'maskedMac', 'groupMac', 'ownMac'] as const).filter(
      (key) => spec[key] !== undefined,
    );
    return extra.map((key) => `${key} is not for routed mode (the hosts keep their own MACs)`);
  }
  if (spec.mode === 'unicast') {
    for (const key of ['clusterMac', 'maskedMac'] as const) {
      const mac = spec[key];
      if (mac === undefined || !isFormattedMac(mac)) {
        problems.push(`${key} '${mac}' is not a lower-case MAC (unicast mode needs it)`);
      }
    }
    if (spec.groupMac !== undefined) {
      problems.push('groupMac is for multicast and IGMP modes only (mode is unicast)');
    }
  } else {
    if (spec.clusterMac !== undefined || spec.maskedMac !== undefined) {
      problems.push(`clusterMac and maskedMac are for unicast mode only (mode is ${spec.mode})`);
    }
    const mac = spec.groupMac;
    if (mac === undefined || !isFormattedMac(mac) || (parseInt(mac.slice(0, 2), 16) & 1) === 0) {
      problems.push(`groupMac '${mac}' is not a lower-case group MAC (${spec.mode} mode needs it)`);
    }
    const own = spec.ownMac;
    if (spec.clusterIps.some((ip) => ip.family === 6)) {
      if (own === undefined || !isFormattedMac(own) || (parseInt(own.slice(0, 2), 16) & 1) === 1) {
        problems.push(
          `ownMac '${own}' is not a lower-case unicast MAC (${spec.mode} mode with an IPv6 cluster IP needs it)`,
        );
      }
    } else if (own !== undefined) {
      problems.push('ownMac is for IPv6 cluster IPs only');
    }
  }
  return problems;
}

/** What routed mode needs: unicast heartbeat peers (the forwarding targets) and an MSS. */
function routedProblems(spec: DataplaneSpec): string[] {
  if (spec.mode !== 'routed') {
    return spec.routed === undefined
      ? []
      : [`routed is for routed mode only (mode is ${spec.mode})`];
  }
  const problems: string[] = [];
  if (spec.heartbeat.peers === undefined) {
    problems.push('routed mode needs heartbeat.peers: they are where packets are forwarded');
  }
  const mss = spec.routed?.mssClamp;
  if (mss === undefined || !Number.isInteger(mss) || mss < 536 || mss > 65495) {
    problems.push(`routed.mssClamp ${mss} is not 536..65495`);
  }
  if (spec.clusterIps.some((ip) => ip.family === 6)) {
    problems.push('routed mode serves IPv4 cluster IPs only');
  }
  return problems;
}

/** Every problem with `spec`, or an empty list. */
export function dataplaneSpecProblems(spec: DataplaneSpec): string[] {
  const problems: string[] = [];
  const tableName = tableNameProblem(spec.tableName);
  if (tableName !== undefined) {
    problems.push(tableName);
  }
  if (!Number.isInteger(spec.hostId) || spec.hostId < 1 || spec.hostId > hostsMax) {
    problems.push(`hostId ${spec.hostId} is not 1..${hostsMax}`);
  }
  if (spec.clusterIps.length < 1 || spec.clusterIps.length > clusterIpsMax) {
    problems.push(`clusterIps has ${spec.clusterIps.length} entries, expected 1..${clusterIpsMax}`);
  }
  spec.clusterIps.forEach((ip, i) => {
    if (spec.clusterIps.findIndex((other) => addressesEqual(other, ip)) !== i) {
      problems.push(`clusterIps[${i}] ${ip.text} is listed twice`);
    }
  });
  if (spec.portRules.length > portRulesMax) {
    problems.push(`portRules has ${spec.portRules.length} entries, at most ${portRulesMax}`);
  }
  spec.portRules.forEach((rule, i) => {
    const vip = rule.vip;
    if (vip !== 'all' && !spec.clusterIps.some((ip) => addressesEqual(ip, vip))) {
      problems.push(`portRules[${i}].vip ${vip.text} is not one of clusterIps`);
    }
    if (
      !Number.isInteger(rule.portStart) ||
      !Number.isInteger(rule.portEnd) ||
      rule.portStart < 0 ||
      rule.portEnd > 65535 ||
      rule.portStart > rule.portEnd
    ) {
      problems.push(`portRules[${i}] ports ${rule.portStart}-${rule.portEnd} are not a range`);
    }
    if (!Number.isInteger(rule.buckets) || rule.buckets < 1 || rule.buckets > bucketsMax) {
      problems.push(`portRules[${i}].buckets ${rule.buckets} is not 1..${bucketsMax}`);
    }
  });
  if (spec.ownership.rules.length !== spec.portRules.length) {
    problems.push(
      `ownership.rules has ${spec.ownership.rules.length} entries but there are ${spec.portRules.length} port rules`,
    );
  }
  spec.ownership.rules.forEach((owner, i) => {
    const buckets = spec.portRules[i]?.buckets ?? 0;
    checkBucketList(problems, `ownership.rules[${i}].owned`, owner.owned, buckets);
    checkBucketList(problems, `ownership.rules[${i}].orphan`, owner.orphan, buckets);
    const notOwned = owner.orphan.filter((b) => !owner.owned.includes(b));
    if (notOwned.length > 0) {
      problems.push(
        `ownership.rules[${i}].orphan has buckets not in owned: ${notOwned.join(', ')}`,
      );
    }
  });
  if (!Number.isInteger(spec.hashSeed) || spec.hashSeed < 0 || spec.hashSeed > 0xffffffff) {
    problems.push(`hashSeed ${spec.hashSeed} is not a u32`);
  }
  if (
    !Number.isInteger(spec.leaseTimeoutMs) ||
    spec.leaseTimeoutMs < leaseTimeoutMsMin ||
    spec.leaseTimeoutMs > leaseTimeoutMsMax
  ) {
    problems.push(
      `leaseTimeoutMs ${spec.leaseTimeoutMs} is not ${leaseTimeoutMsMin}..${leaseTimeoutMsMax}`,
    );
  }
  const { group, port } = spec.heartbeat;
  if (group.family !== 4) {
    problems.push(`heartbeat.group ${group.text} is not an IPv4 address (heartbeats are IPv4)`);
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    problems.push(`heartbeat.port ${port} is not 1..65535`);
  }
  if (!interfacePattern.test(spec.interface)) {
    problems.push(`interface '${spec.interface}' is not a network interface name`);
  }
  problems.push(...macProblems(spec), ...routedProblems(spec));
  return problems;
}

export function assertValidSpec(spec: DataplaneSpec): void {
  const problems = dataplaneSpecProblems(spec);
  if (problems.length > 0) {
    throw new DataplaneSpecError(problems);
  }
}
