// The configuration's model: the limits and defaults the schema enforces (config-schema.ts),
// and the validated, normalised `Config` that `parseConfig` (config.ts) returns, with the error
// values it returns instead when the document is wrong.
import type { Address, Prefix } from './address.js';
import type { BfdTimers, BgpPeer, BgpTimers } from './bgp.js';

/** NLB allows 32 hosts; host ids double as host priorities, 1 is the best. */
export const hostsMax = 32;
/** NLB allows 32 port rules per cluster. */
export const portRulesMax = 32;
/** Enough for several virtual clusters; each costs one set lookup in the filter. */
export const clusterIpsMax = 16;
/** NLB uses 60 buckets; 1024 bounds the heartbeat bitmaps (128 B per rule). */
export const bucketsMax = 1024;
export const bucketsDefault = 60;
/** 200 ms × 5 detects a failure in 1 s, five times faster than NLB's 1000 ms × 5 default. */
export const heartbeatPeriodMsDefault = 200;
export const heartbeatToleranceDefault = 5;
/** A fixed, documented default so that flows hash the same on every host from the first start. */
export const hashSeedDefault = 0x4e4c4221; // "NLB!"
export const heartbeatPortDefault = 2505;
/** Administratively scoped (RFC 2365); heartbeats never leave the cluster segment (TTL 1). */
export const heartbeatGroupDefault = '239.255.78.76';
/** The load weight "equal" stands for; NLB's default weight is 50 too. */
export const equalLoadWeight = 50;
/**
 * The shortest prefix a dedicated IP may have. The cluster segment is one broadcast domain: a
 * /8 is already larger than any real one, and /0../7 are typos (a /0 would make every address
 * on-link). The dedicated IP is IPv4 (heartbeats are IPv4 multicast), so there is no IPv6 rule.
 */
export const dedicatedPrefixLengthMin = 8;

export type ClusterMode = 'unicast' | 'multicast' | 'igmp' | 'routed';

/** How a routed host forwards a packet to the bucket's owner (docs/routed.md#forwarding). */
export type RoutedForward = 'vxlan' | 'segment';

/** Routed mode: how long a host sends unknown non-SYN packets of a bucket it took over from a live host to that host. */
export const secondChanceMsDefault = 120_000;
/** The IANA VXLAN port. */
export const vxlanPortDefault = 4789;
export type Protocol = 'tcp' | 'udp' | 'both';
export type FilteringMode = 'multiple' | 'single' | 'disabled';
export type Affinity = 'none' | 'single' | 'network';
export type HostState = 'started' | 'stopped' | 'suspended';

export interface PortRule {
  /** The cluster IP the rule covers, or 'all' for every cluster IP. */
  readonly vip: Address | 'all';
  readonly portStart: number;
  readonly portEnd: number;
  readonly protocol: Protocol;
  readonly mode: FilteringMode;
  readonly affinity: Affinity;
  readonly buckets: number;
  /** The health check of the rule's service on each host (config-health.ts), if any. */
  readonly health?: HealthCheck;
  /** The agent check: a load weight the service reports, if any. */
  readonly agent?: AgentCheck;
}

/** How a check asks the local service (issue 14). */
export type Probe =
  /** Connect to address:port; connected is healthy. */
  | { readonly type: 'tcp'; readonly address: string; readonly port: number }
  /** GET path; a status in [statusMin, statusMax] (and the body substring, if set) is healthy. */
  | {
      readonly type: 'http';
      readonly address: string;
      readonly port: number;
      readonly path: string;
      readonly statusMin: number;
      readonly statusMax: number;
      readonly body: string | undefined;
    }
  /** Run the command (no shell); exit 0 within the timeout is healthy. */
  | { readonly type: 'exec'; readonly command: readonly string[] };

export interface HealthCheck {
  readonly probe: Probe;
  readonly intervalMs: number;
  /** At most intervalMs: one probe per rule in flight. */
  readonly timeoutMs: number;
  /** Failures in a row that make a healthy service unhealthy. */
  readonly fall: number;
  /** Successes in a row that make an unhealthy service healthy again. */
  readonly rise: number;
}

export interface AgentCheck {
  /** An http or exec probe whose answer (body or output) holds the weight, 0..100. */
  readonly probe: Exclude<Probe, { readonly type: 'tcp' }>;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** A reading this close to the weight in force is ignored (0 and 100 always count). */
  readonly hysteresis: number;
  /** The weight in force changes at most once per holdMs. */
  readonly holdMs: number;
}

export const healthIntervalMsDefault = 1_000;
export const healthTimeoutMsDefault = 500;
export const healthFallDefault = 2;
export const healthRiseDefault = 2;
export const agentIntervalMsDefault = 2_000;
export const agentHysteresisDefault = 10;
export const agentHoldMsDefault = 10_000;

export interface ClusterConfig {
  readonly name: string;
  readonly clusterIps: readonly Address[];
  readonly mode: ClusterMode;
  readonly interface: string;
  readonly heartbeat: {
    readonly periodMs: number;
    readonly tolerance: number;
    readonly port: number;
    readonly group: Address;
    /**
     * The dedicated IPs of every host: heartbeats go to each by unicast instead of to the
     * group (networks without multicast between the hosts, such as a routed cluster). The same
     * list on every host, this host's included; absent: multicast.
     */
    readonly peers?: readonly Address[];
  };
  readonly buckets: number;
  readonly hashSeed: number;
  readonly keyFile: string;
  readonly portRules: readonly PortRule[];
  /** Routed mode's BGP settings (`nlb frr-config` writes FRR's files from them); absent: none. */
  readonly routed?: ClusterRoutedConfig;
}

/**
 * What every host of a routed cluster says to its routers over BGP (docs/routed.md): the AS the
 * hosts announce the cluster IPs from, and the timers of their sessions; and, with
 * `cluster.mode: routed`, how the hosts forward packets to each bucket's owner.
 */
export interface ClusterRoutedConfig {
  readonly as: number;
  readonly timers: BgpTimers;
  readonly bfd: BfdTimers;
  /** vxlan: hosts in different subnets; segment: hosts on one subnet, no encapsulation. */
  readonly forward: RoutedForward;
  /** The UDP port of the VXLAN overlay between the hosts. */
  readonly vxlanPort: number;
  /** How long the second chance to a bucket's previous owner lasts at most. */
  readonly secondChanceMs: number;
}

/** This host's BGP peers: the router(s) on its own link, which differ from host to host. */
export interface HostRoutedConfig {
  readonly peers: readonly BgpPeer[];
}

export interface HostRuleSettings {
  /** 0..100; 'equal' is normalised to `equalLoadWeight`. 0 takes no new flows. */
  readonly loadWeight: number;
  /** 1..32, lowest wins; used by `single` rules. */
  readonly handlingPriority: number;
}

export interface HostConfig {
  readonly id: number;
  readonly dedicatedIp: Prefix;
  readonly initialState: HostState;
  /** One entry per cluster port rule, in the same order. */
  readonly rules: readonly HostRuleSettings[];
  /** Set exactly when `cluster.routed` is. */
  readonly routed?: HostRoutedConfig;
}

export interface Config {
  readonly cluster: ClusterConfig;
  readonly host: HostConfig;
}

export interface ConfigError {
  /** Where in the document, e.g. `cluster.portRules[1].ports`. */
  readonly path: string;
  /** The offending value as found, or undefined when it was missing. */
  readonly value: unknown;
  readonly message: string;
}

export type ConfigResult = { ok: true; config: Config } | { ok: false; errors: ConfigError[] };
