// The checks of routed mode's BGP settings (`cluster.routed`, `host.routed`; docs/routed.md):
// the AS and timers every host shares, this host's peers (its router(s)), and what routed mode
// needs of the rest: IPv4 cluster IPs to announce and an IPv4 dedicated IP for the router-id.
// The ranges are src/core/bgp.ts's, which src/routed/ checks FRR's settings with too.
import { type Address, type Prefix, prefixContains } from './address.js';
import { asNumberProblem, bfdTimerProblems, bgpPeerProblems, bgpTimerProblems } from './bgp.js';
import type {
  ClusterMode,
  ClusterRoutedConfig,
  ConfigError,
  HostRoutedConfig,
} from './config-model.js';

/** The two routed sections as the schema accepted them (undefined when left out). */
export interface RawRouted {
  readonly cluster: ClusterRoutedConfig | undefined;
  readonly host: HostRoutedConfig | undefined;
}

/** Both sections or neither: the AS and timers are the cluster's, the peers this host's. */
function pairingErrors(routed: RawRouted): ConfigError[] {
  if (routed.cluster !== undefined && routed.host === undefined) {
    return [
      {
        path: 'host.routed',
        value: undefined,
        message:
          "missing; cluster.routed needs this host's BGP peers, e.g. host.routed.peers: [{ address: 198.18.1.1, as: 65000 }] (its router on its own link)",
      },
    ];
  }
  if (routed.cluster === undefined && routed.host !== undefined) {
    return [
      {
        path: 'cluster.routed',
        value: undefined,
        message:
          "missing; host.routed needs the cluster's BGP settings, e.g. cluster.routed: { as: 65001 } (the same on every host)",
      },
    ];
  }
  return [];
}

/**
 * What `cluster.mode: routed` needs besides the BGP sections: unicast heartbeats (multicast with
 * TTL 1 does not cross the routers), and with `forward: segment` peers on this host's own link.
 */
export function routedModeErrors(
  mode: ClusterMode,
  routed: RawRouted,
  heartbeatPeers: readonly Address[] | undefined,
  dedicatedIp: Prefix | undefined,
): ConfigError[] {
  if (mode !== 'routed') return [];
  const errors: ConfigError[] = [];
  if (routed.cluster === undefined && routed.host === undefined) {
    errors.push({
      path: 'cluster.routed',
      value: undefined,
      message:
        "missing; cluster.mode routed announces the cluster IPs over BGP: add cluster.routed: { as: 65001 } and this host's routers as host.routed.peers",
    });
  }
  if (heartbeatPeers === undefined) {
    errors.push({
      path: 'cluster.heartbeat.peers',
      value: undefined,
      message:
        "missing; in routed mode heartbeats go by unicast (multicast does not cross routers): list every host's dedicated IP, the same list on every host",
    });
  }
  const outside =
    routed.cluster?.forward === 'segment' && dedicatedIp !== undefined
      ? (heartbeatPeers ?? []).filter((peer) => !prefixContains(dedicatedIp, peer))
      : [];
  if (outside.length > 0) {
    errors.push({
      path: 'cluster.heartbeat.peers',
      value: outside.map((peer) => peer.text),
      message: `forward: segment sends a forwarded packet straight to its peer's MAC on this host's link, but ${outside.map((peer) => peer.text).join(', ')} ${outside.length === 1 ? 'is' : 'are'} outside this host's subnet (host.dedicatedIp ${dedicatedIp!.address.text}/${dedicatedIp!.length}): use forward: vxlan for hosts in different subnets, or fix the dedicated IP's prefix length`,
    });
  }
  return errors;
}

/** Every problem of the routed sections; none when both are absent. */
export function routedErrors(
  routed: RawRouted,
  clusterIps: readonly Address[],
  dedicatedIp: Prefix | undefined,
): ConfigError[] {
  const errors = pairingErrors(routed);
  const { cluster, host } = routed;
  if (cluster !== undefined) {
    const asProblem = asNumberProblem(cluster.as);
    if (asProblem !== undefined) {
      errors.push({ path: 'cluster.routed.as', value: cluster.as, message: asProblem });
    }
    errors.push(
      ...bgpTimerProblems(cluster.timers, 'cluster.routed.timers'),
      ...bfdTimerProblems(cluster.bfd, 'cluster.routed.bfd'),
    );
    const ipv6 = clusterIps.filter((ip) => ip.family === 6).map((ip) => ip.text);
    if (ipv6.length > 0) {
      errors.push({
        path: 'cluster.routed',
        value: ipv6,
        message:
          'routed mode announces IPv4 cluster IPs only for now: remove the IPv6 cluster IPs, or cluster.routed',
      });
    }
    if (dedicatedIp !== undefined && dedicatedIp.address.family !== 4) {
      errors.push({
        path: 'host.dedicatedIp',
        value: dedicatedIp.address.text,
        message: 'routed mode needs an IPv4 dedicated IP: it is the BGP router-id',
      });
    }
  }
  if (host !== undefined) {
    errors.push(...bgpPeerProblems(host.peers, 'host.routed.peers'));
  }
  return errors;
}
