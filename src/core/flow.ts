// Which bucket a flow falls in, and which port rule covers it. The key layout mirrors what the
// nftables filter hashes: each field of a concatenation fills a whole 4-byte register, so a
// 2-byte port is its two network-order bytes followed by two zero bytes.
import { type Address, addressesEqual, maskBytes } from './address.js';
import type { Affinity, ClusterConfig, PortRule } from './config.js';
import { jhash, reciprocalScale } from './jhash.js';

/** Client /24 for IPv4 and /64 for IPv6 under `network` affinity, as NLB does for IPv4. */
export const networkAffinityPrefix = { 4: 24, 6: 64 } as const;

export type FlowKeyField = 'saddr' | 'sport' | 'daddr' | 'dport';

export interface FlowTuple {
  readonly saddr: Address;
  readonly sport: number;
  readonly daddr?: Address;
  readonly dport?: number;
}

function portRegister(port: number): Uint8Array {
  return Uint8Array.of((port >>> 8) & 0xff, port & 0xff, 0, 0);
}

/** The bytes nftables hashes for `fields` of `tuple`, with saddr masked to `saddrPrefix` bits. */
export function flowKey(
  tuple: FlowTuple,
  fields: readonly FlowKeyField[],
  saddrPrefix?: number,
): Uint8Array {
  const parts: Uint8Array[] = fields.map((field) => {
    switch (field) {
      case 'saddr':
        return saddrPrefix === undefined
          ? tuple.saddr.bytes
          : maskBytes(tuple.saddr.bytes, saddrPrefix);
      case 'sport':
        return portRegister(tuple.sport);
      case 'daddr':
        if (tuple.daddr === undefined) throw new Error('flowKey: daddr requested but not given');
        return tuple.daddr.bytes;
      case 'dport':
        if (tuple.dport === undefined) throw new Error('flowKey: dport requested but not given');
        return portRegister(tuple.dport);
    }
  });
  const key = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    key.set(part, offset);
    offset += part.length;
  }
  return key;
}

/** The bucket nftables' `jhash <key> mod <buckets> seed <seed>` gives. */
export function hashBucket(key: Uint8Array, buckets: number, seed: number): number {
  return reciprocalScale(jhash(key, seed >>> 0), buckets);
}

/** The fields an affinity hashes; the data plane renders the same list. */
export function affinityFields(affinity: Affinity): readonly FlowKeyField[] {
  return affinity === 'none' ? ['saddr', 'sport'] : ['saddr'];
}

/** The bucket of a client under `affinity` with `buckets` buckets and the cluster's seed. */
export function flowBucket(
  client: { address: Address; port: number },
  affinity: Affinity,
  buckets: number,
  seed: number,
): number {
  const prefix = affinity === 'network' ? networkAffinityPrefix[client.address.family] : undefined;
  const key = flowKey(
    { saddr: client.address, sport: client.port },
    affinityFields(affinity),
    prefix,
  );
  return hashBucket(key, buckets, seed);
}

export type PacketProtocol = 'tcp' | 'udp';

/**
 * The index of the port rule covering traffic to `vip`:`port`/`protocol`, or undefined when none
 * does (that traffic goes to the default host). A rule naming the VIP beats an 'all' rule.
 */
export function matchPortRule(
  cluster: Pick<ClusterConfig, 'portRules'>,
  vip: Address,
  port: number,
  protocol: PacketProtocol,
): number | undefined {
  const covers = (rule: PortRule): boolean =>
    (rule.protocol === 'both' || rule.protocol === protocol) &&
    port >= rule.portStart &&
    port <= rule.portEnd;
  const specific = cluster.portRules.findIndex(
    (rule) => rule.vip !== 'all' && addressesEqual(rule.vip, vip) && covers(rule),
  );
  if (specific >= 0) {
    return specific;
  }
  const general = cluster.portRules.findIndex((rule) => rule.vip === 'all' && covers(rule));
  return general >= 0 ? general : undefined;
}
