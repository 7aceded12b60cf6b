// What makes two hosts' configurations one cluster: the part of the cluster section every host
// must share, and its digest, which heartbeats carry so that a host with another configuration
// is told apart instead of joining.
import { createHash } from 'node:crypto';
import type { ClusterConfig, PortRule } from './config-model.js';

/**
 * What two hosts must agree on to form one cluster. The interface name and the key file path
 * are left out on purpose: they are local facts that may differ between machines; a different
 * key shows up as heartbeats that fail authentication. `cluster.routed` is left out too: it
 * configures each host's FRR, not the bucket protocol, and hosts may move to new BGP timers one
 * at a time.
 */
export function clusterIdentity(cluster: ClusterConfig): unknown {
  return {
    name: cluster.name,
    clusterIps: cluster.clusterIps.map((ip) => ip.text),
    mode: cluster.mode,
    heartbeat: {
      periodMs: cluster.heartbeat.periodMs,
      tolerance: cluster.heartbeat.tolerance,
      port: cluster.heartbeat.port,
      group: cluster.heartbeat.group.text,
      // Only when set, so that clusters without it keep the digest they had.
      ...(cluster.heartbeat.peers === undefined
        ? {}
        : { peers: cluster.heartbeat.peers.map((p) => p.text).sort() }),
    },
    hashSeed: cluster.hashSeed,
    portRules: cluster.portRules.map(portRuleIdentity),
    // Routed mode: every host must forward the same way, on the same port.
    ...(cluster.mode === 'routed' && cluster.routed !== undefined
      ? { forward: cluster.routed.forward, vxlanPort: cluster.routed.vxlanPort }
      : {}),
  };
}

/** SHA-256 of the canonical JSON of `clusterIdentity`: equal digests mean the same cluster. */
export function clusterDigest(cluster: ClusterConfig): Uint8Array {
  const canonical = JSON.stringify(clusterIdentity(cluster));
  return new Uint8Array(createHash('sha256').update(canonical).digest());
}

export function clusterDigestHex(cluster: ClusterConfig): string {
  return Buffer.from(clusterDigest(cluster)).toString('hex');
}

/**
 * What every host must agree on for one port rule (its host-local part, load weight and
 * handling priority, is left out). The cluster digest covers it, and heartbeats carry each
 * rule's own digest of it so a host can say which rule differs.
 */
export function portRuleIdentity(rule: PortRule): unknown {
  return {
    vip: rule.vip === 'all' ? 'all' : rule.vip.text,
    ports: [rule.portStart, rule.portEnd],
    protocol: rule.protocol,
    mode: rule.mode,
    affinity: rule.affinity,
    buckets: rule.buckets,
  };
}
