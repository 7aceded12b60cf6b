// What makes two hosts' configurations one cluster: the part of the cluster section every host
// must share, and its digest, which heartbeats carry so that a host with another configuration
// is told apart instead of joining.
import { createHash } from 'node:crypto';
import type { ClusterConfig } from './config-model.js';

/**
 * What two hosts must agree on to form one cluster. The interface name and the key file path
 * are left out on purpose: they are local facts that may differ between machines; a different
 * key shows up as heartbeats that fail authentication.
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
    },
    hashSeed: cluster.hashSeed,
    portRules: cluster.portRules.map((r) => ({
      vip: r.vip === 'all' ? 'all' : r.vip.text,
      ports: [r.portStart, r.portEnd],
      protocol: r.protocol,
      mode: r.mode,
      affinity: r.affinity,
      buckets: r.buckets,
    })),
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
