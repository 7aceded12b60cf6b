// A host's FRR settings from its nlb config: `cluster.routed` (the AS and timers every host
// shares) and `host.routed` (this host's peers), with the dedicated IP as the router-id and the
// cluster IPs as what it may announce. Pure: the CLI (`nlb frr-config`) loads the config and
// writes the files.
import type { Config } from '../core/config.js';
import type { HostFrrSettings } from './frr-settings.js';

/** FRR's hostname is one DNS label; the cluster name may hold dots and run to 63 characters. */
function hostnameOf(clusterName: string, hostId: number): string {
  const suffix = `-h${hostId}`;
  const label = clusterName
    .replace(/[^A-Za-z0-9_-]/g, '-')
    .slice(0, 63 - suffix.length)
    .replace(/[-_]+$/, '');
  return `${label}${suffix}`;
}

/**
 * What this host's FRR needs, or undefined when the config has no routed sections (the config's
 * checks make sure both are there or neither).
 */
export function hostFrrSettingsOf(config: Config): HostFrrSettings | undefined {
  const { cluster, host } = config;
  if (cluster.routed === undefined || host.routed === undefined) return undefined;
  return {
    hostname: hostnameOf(cluster.name, host.id),
    localAs: cluster.routed.as,
    routerId: host.dedicatedIp.address.text,
    peers: host.routed.peers,
    timers: cluster.routed.timers,
    bfd: cluster.routed.bfd,
    clusterIps: cluster.clusterIps.map((ip) => ip.text),
  };
}
