// Building a DataplaneSpec from the validated config and the ownership the host machine asked
// for, so the daemon has one call to make and the formulas (lease length, MACs) live in one
// place.
import type { Address } from '../core/address.js';
import { type Config, vxlanPortDefault } from '../core/config.js';
import {
  formatMac,
  hostSourceMac,
  igmpClusterMac,
  multicastClusterMac,
  unicastClusterMac,
} from '../core/mac.js';
import type { Ownership } from '../core/protocol.js';
import { type DataplaneSpec, leaseTimeoutMsMin, tableNameDefault } from './dataplane-spec.js';

/**
 * The lease the kernel holds between refreshes. Peers declare a silent host dead after
 * `tolerance × periodMs`; each heartbeat refreshes the lease as it leaves the host, so a
 * lease one period shorter than that has expired before any peer can take the host's buckets,
 * while still riding out `tolerance - 2` late refreshes of a busy daemon.
 */
export function leaseTimeoutMsFor(heartbeat: { periodMs: number; tolerance: number }): number {
  return Math.max(leaseTimeoutMsMin, (heartbeat.tolerance - 1) * heartbeat.periodMs);
}

export interface SpecOptions {
  readonly tableName?: string;
  readonly leaseTimeoutMs?: number;
  /**
   * The cluster interface's own MAC: multicast and IGMP modes with an IPv6 cluster IP need it
   * (DataplaneSpec.ownMac); ignored otherwise.
   */
  readonly ownMac?: string;
  /**
   * Routed mode: the MSS the cluster IPs' SYN-ACKs are clamped to (routed-net.ts mssClampFor
   * the uplink's MTU); 1410 (a 1500-byte uplink with VXLAN) when not given.
   */
  readonly mssClamp?: number;
}

/** Routed mode's clamp for a 1500-byte uplink: 1500 - 50 (VXLAN) - 20 (IPv4) - 20 (TCP). */
export const mssClampDefault = 1410;

/**
 * Multicast and IGMP modes: the group MAC every cluster IP of the cluster resolves to, from the
 * primary cluster IP as NLB derives it (03:bf:a:b:c:d, or 01:00:5e:7f:c:d for IGMP).
 */
export function groupMacOf(mode: 'multicast' | 'igmp', primary: Address): string {
  return formatMac(mode === 'multicast' ? multicastClusterMac(primary) : igmpClusterMac(primary));
}

/**
 * The spec for `config`'s host with `ownership`. In unicast mode the cluster MAC and the masked
 * source MAC come from the first cluster IP, as NLB derives them from the primary cluster IP.
 */
export function dataplaneSpecFor(
  config: Config,
  ownership: Ownership,
  options: SpecOptions = {},
): DataplaneSpec {
  const cluster = config.cluster;
  const primary = cluster.clusterIps[0];
  if (primary === undefined) {
    throw new Error('dataplaneSpecFor: the config has no cluster IP (parseConfig requires one)');
  }
  const macs =
    cluster.mode === 'routed'
      ? {
          routed: {
            mssClamp: options.mssClamp ?? mssClampDefault,
            forward: cluster.routed?.forward ?? 'vxlan',
            vxlanPort: cluster.routed?.vxlanPort ?? vxlanPortDefault,
          },
        }
      : cluster.mode === 'unicast'
        ? {
            clusterMac: formatMac(unicastClusterMac(primary)),
            maskedMac: formatMac(hostSourceMac(config.host.id, primary)),
          }
        : {
            groupMac: groupMacOf(cluster.mode, primary),
            ...(cluster.clusterIps.some((ip) => ip.family === 6) && options.ownMac !== undefined
              ? { ownMac: options.ownMac }
              : {}),
          };
  return {
    tableName: options.tableName ?? tableNameDefault,
    hostId: config.host.id,
    clusterIps: cluster.clusterIps,
    portRules: cluster.portRules,
    hashSeed: cluster.hashSeed,
    ownership,
    leaseTimeoutMs: options.leaseTimeoutMs ?? leaseTimeoutMsFor(cluster.heartbeat),
    heartbeat: {
      group: cluster.heartbeat.group,
      port: cluster.heartbeat.port,
      ...(cluster.heartbeat.peers === undefined ? {} : { peers: cluster.heartbeat.peers }),
    },
    mode: cluster.mode,
    interface: cluster.interface,
    ...macs,
  };
}
