// The nlbd config of one lab host: the cluster part is the same on every host, the host part
// carries its id and dedicated IP. Rendered as YAML and validated with the real parser before it
// is written, so a lab never hands a daemon a config the daemon would refuse.
import { stringify } from 'yaml';
import type { BgpPeer } from '../core/bgp.js';
import {
  type Affinity,
  type ClusterMode,
  type Config,
  formatConfigErrors,
  parseConfig,
} from '../core/config.js';
import { hostIp, labHttpPort, labInterface, labPrefixLength, labVip, labVip6 } from './naming.js';

export interface LabClusterSettings {
  readonly labName: string;
  readonly keyFile: string;
  readonly mode: ClusterMode;
  readonly affinity: Affinity;
  /** Heartbeat period; undefined keeps the config default. */
  readonly heartbeatPeriodMs?: number;
  /** Missed periods before a host is declared dead; undefined keeps the config default. */
  readonly heartbeatTolerance?: number;
  /**
   * A second port rule on this port, TCP and UDP, multiple, the lab's affinity; undefined: none.
   * For bench:lab's UDP comparison: iperf3 -u sends its datagrams to this port and keeps its
   * control connection on the same port over TCP, so the rule covers both protocols.
   */
  readonly extraRulePort?: number;
  /** An IPv6 cluster IP beside the IPv4 one; the port rules then cover both ('all'). */
  readonly ipv6?: boolean;
  /** The http health check and the agent check of the backend on the web rule; default none. */
  readonly health?: boolean;
  /** How many hosts the lab has: the checks slow down in large labs (`labChecksFor`). */
  readonly hostCount?: number;
  /** Heartbeats by unicast to every host's dedicated IP (cluster.heartbeat.peers): the hosts. */
  readonly heartbeatPeers?: readonly number[];
  /**
   * Host i's dedicated IP and prefix length; default 198.18.0.(10 + i)/24 on the switch. A
   * routed lab puts each host in a subnet of its own.
   */
  readonly dedicatedIp?: (hostId: number) => { readonly ip: string; readonly prefixLength: number };
  /** Routed mode's BGP settings (a routed lab): the hosts' AS and each host's peers. */
  readonly routed?: {
    readonly as: number;
    /** cluster.routed.forward; undefined keeps the default (vxlan). */
    readonly forward?: 'vxlan' | 'segment';
    readonly peers: (hostId: number) => readonly BgpPeer[];
  };
}

function dedicatedIpOf(
  settings: LabClusterSettings,
  hostId: number,
): { readonly ip: string; readonly prefixLength: number } {
  return settings.dedicatedIp?.(hostId) ?? { ip: hostIp(hostId), prefixLength: labPrefixLength };
}

/**
 * The lab's checks of its backend (backend.ts): /health every 500 ms, out after 2 failures
 * (1 s), back after 2 successes; the weight at /weight read as often, held 1 s.
 */
export const labHealthCheck = {
  type: 'http',
  path: '/health',
  intervalMs: 500,
  timeoutMs: 400,
  fall: 2,
  rise: 2,
} as const;
export const labAgentCheck = {
  type: 'http',
  path: '/weight',
  intervalMs: 500,
  timeoutMs: 400,
  hysteresis: 10,
  holdMs: 1_000,
} as const;

/** Up to this many hosts, the checks above as they are. */
const labCheckHostsAtFullRate = 8;

/**
 * The checks of a lab of `hosts` hosts. Every host of a lab shares the machine's cores, so a
 * large lab slows its checks down in proportion (every 2 s with a 1.6 s timeout at 32 hosts):
 * at the full rate a 32-host lab ran 128 probes/s on two cores, probes timed out under the load
 * of its own start, hosts left and rejoined the rule, and the cluster took minutes to converge
 * or never did.
 */
export function labChecksFor(hosts: number) {
  const factor = Math.max(1, Math.ceil(hosts / labCheckHostsAtFullRate));
  const slower = {
    intervalMs: labHealthCheck.intervalMs * factor,
    timeoutMs: labHealthCheck.timeoutMs * factor,
  };
  return {
    health: { ...labHealthCheck, ...slower },
    agent: { ...labAgentCheck, ...slower, holdMs: labAgentCheck.holdMs * factor },
  };
}

export interface RenderedHostConfig {
  readonly text: string;
  readonly config: Config;
}

/** The cluster name in a lab's configs; nlbd's socket and state file are named after it. */
export function labClusterName(labName: string): string {
  return `nlb-${labName}`;
}

export function renderHostConfig(settings: LabClusterSettings, hostId: number): RenderedHostConfig {
  const ruleVip = settings.ipv6 === true ? 'all' : labVip;
  const dedicated = dedicatedIpOf(settings, hostId);
  const document = {
    cluster: {
      name: labClusterName(settings.labName),
      clusterIps: settings.ipv6 === true ? [labVip, labVip6] : [labVip],
      mode: settings.mode,
      interface: labInterface,
      ...(settings.heartbeatPeriodMs === undefined &&
      settings.heartbeatTolerance === undefined &&
      settings.heartbeatPeers === undefined
        ? {}
        : {
            heartbeat: {
              ...(settings.heartbeatPeriodMs === undefined
                ? {}
                : { periodMs: settings.heartbeatPeriodMs }),
              ...(settings.heartbeatTolerance === undefined
                ? {}
                : { tolerance: settings.heartbeatTolerance }),
              ...(settings.heartbeatPeers === undefined
                ? {}
                : { peers: settings.heartbeatPeers.map((id) => dedicatedIpOf(settings, id).ip) }),
            },
          }),
      keyFile: settings.keyFile,
      portRules: [
        {
          vip: ruleVip,
          ports: labHttpPort,
          protocol: 'tcp',
          mode: 'multiple',
          affinity: settings.affinity,
          ...(settings.health === true ? labChecksFor(settings.hostCount ?? 1) : {}),
        },
        ...(settings.extraRulePort === undefined
          ? []
          : [
              {
                vip: ruleVip,
                ports: settings.extraRulePort,
                protocol: 'both',
                mode: 'multiple',
                affinity: settings.affinity,
              },
            ]),
      ],
      ...(settings.routed === undefined
        ? {}
        : {
            routed: {
              as: settings.routed.as,
              ...(settings.routed.forward === undefined
                ? {}
                : { forward: settings.routed.forward }),
            },
          }),
    },
    host: {
      id: hostId,
      dedicatedIp: `${dedicated.ip}/${dedicated.prefixLength}`,
      ...(settings.routed === undefined
        ? {}
        : { routed: { peers: settings.routed.peers(hostId) } }),
    },
  };
  const text = `# nlbd config for host ${hostId} of lab '${settings.labName}', written by nlb lab up.\n${stringify(document)}`;
  const result = parseConfig(text);
  if (!result.ok) {
    // The lab builds these documents itself, so a rejection is a bug in this file, not input.
    throw new Error(
      `lab host config rejected by parseConfig:\n${formatConfigErrors(result.errors)}`,
    );
  }
  return { text, config: result.config };
}
