// The checks that span several fields of the configuration, after the schema accepted each
// field alone (config-schema.ts): cluster IPs that are unicast and listed once, a heartbeat
// group of the cluster's own, port rules on known cluster IPs that do not overlap, a dedicated
// IP that is this host's own, one host rule setting per port rule at most, routed mode's BGP
// settings (config-routed.ts), and a heartbeat that fits in one datagram. `normalise` also
// fills in what the document left out.
import {
  type Address,
  type Prefix,
  addressSyntaxProblem,
  addressesEqual,
  maskBytes,
  parseAddress,
  parsePrefix,
  unicastProblem,
} from './address.js';
import {
  type Config,
  type ConfigError,
  type HostRuleSettings,
  type PortRule,
  type Protocol,
  dedicatedPrefixLengthMin,
  equalLoadWeight,
} from './config-model.js';
import type { RawConfig } from './config-schema.js';
import { withChecks } from './config-health.js';
import { routedErrors, routedModeErrors } from './config-routed.js';
import { datagramBytesMax, heartbeatBytes, heartbeatRuleHeaderBytes } from './heartbeat-size.js';

/** What a cluster IP or a dedicated IP must be, after saying what it is not. */
const unicastExpected = "expected a unicast address clients can reach on the cluster's LAN";

/**
 * The local network control block (RFC 5771): 224.0.0.1 is every host of the segment, the rest
 * belong to routing protocols (OSPF, VRRP...). Heartbeats there would reach hosts and routers
 * that have nothing to do with the cluster.
 */
const localControlBlock = parseAddress('224.0.0.0')!;

/** True when the first `length` bits of `a` and `b` are equal. */
function sameBits(a: Uint8Array, b: Uint8Array, length: number): boolean {
  const ma = maskBytes(a, length);
  const mb = maskBytes(b, length);
  return ma.length === mb.length && ma.every((byte, i) => byte === mb[i]);
}

/** NLB's rule when none is configured: every port, both protocols, balanced, client-IP affinity. */
function defaultPortRule(buckets: number): PortRule {
  return {
    vip: 'all',
    portStart: 0,
    portEnd: 65535,
    protocol: 'both',
    mode: 'multiple',
    affinity: 'single',
    buckets,
  };
}

function protocolsOverlap(a: Protocol, b: Protocol): boolean {
  return a === 'both' || b === 'both' || a === b;
}

/**
 * What is wrong with the dedicated IP, or undefined: it must parse, be a LAN unicast address,
 * be IPv4 (heartbeats are IPv4 multicast sent from it), have a sane prefix, be neither the
 * network nor the broadcast address of that prefix, and not be a cluster IP.
 */
function dedicatedIpProblem(
  text: string,
  prefix: Prefix | undefined,
  clusterIps: readonly Address[],
): string | undefined {
  const example = 'e.g. 198.18.0.11/24';
  if (prefix === undefined) {
    const slash = text.indexOf('/');
    const addressText = slash < 0 ? text : text.slice(0, slash);
    const syntax = addressSyntaxProblem(addressText);
    return syntax !== undefined
      ? `'${addressText}': ${syntax}; expected the host's IPv4 address with an optional /prefix, ${example}`
      : `'${text.slice(slash + 1)}' is not a prefix length; expected the host's IPv4 address with an optional /prefix (8..32), ${example}`;
  }
  const { address, length } = prefix;
  const problem = unicastProblem(address);
  if (problem !== undefined) {
    return `${address.text} is ${problem}; expected this host's own unicast address on the cluster's LAN, ${example}`;
  }
  if (address.family !== 4) {
    return `heartbeats travel over IPv4 multicast: expected an IPv4 dedicated IP (cluster IPs may be IPv6), ${example}`;
  }
  if (length < dedicatedPrefixLengthMin) {
    return `a /${length} prefix is no LAN; expected the prefix of the cluster segment, /${dedicatedPrefixLengthMin}../32, ${example}`;
  }
  // /31 (RFC 3021) and /32 have no network or broadcast address: every address is a host's.
  if (length < 31) {
    const network = maskBytes(address.bytes, length);
    const mask = maskBytes(Uint8Array.from([255, 255, 255, 255]), length);
    const broadcast = network.map((byte, i) => byte | (~mask[i]! & 0xff));
    const subnet = `${[...network].join('.')}/${length}`;
    for (const [what, bytes] of [
      ['network', network],
      ['broadcast', broadcast],
    ] as const) {
      if (sameBits(address.bytes, bytes, 32)) {
        return `${address.text} is the ${what} address of ${subnet}, not a host's; expected a host address inside it, ${example}`;
      }
    }
  }
  if (clusterIps.some((ip) => addressesEqual(ip, address))) {
    return "the dedicated IP must differ from every cluster IP: it is the host's own address, never filtered";
  }
  return undefined;
}

type RawCluster = RawConfig['cluster'];
type RawHost = RawConfig['host'];

/** The cluster's port rules with the cluster's bucket count filled in, or NLB's default rule. */
function portRulesOf(cluster: RawCluster): PortRule[] {
  const portRules: PortRule[] = (cluster.portRules ?? []).map((r) => ({
    vip: r.vip,
    portStart: r.ports.portStart,
    portEnd: r.ports.portEnd,
    protocol: r.protocol,
    mode: r.mode,
    affinity: r.affinity,
    buckets: r.buckets ?? cluster.buckets,
  }));
  return portRules.length === 0 ? [defaultPortRule(cluster.buckets)] : portRules;
}

/** Every cluster IP must be a unicast address, listed once. */
function clusterIpErrors(clusterIps: readonly Address[]): ConfigError[] {
  const errors: ConfigError[] = [];
  clusterIps.forEach((ip, i) => {
    const problem = unicastProblem(ip);
    if (problem !== undefined) {
      errors.push({
        path: `cluster.clusterIps[${i}]`,
        value: ip.text,
        message: `${ip.text} is ${problem}; ${unicastExpected}, e.g. 198.18.0.100`,
      });
      return;
    }
    const first = clusterIps.findIndex((other) => addressesEqual(other, ip));
    if (first !== i) {
      errors.push({
        path: `cluster.clusterIps[${i}]`,
        value: ip.text,
        message: `duplicate of cluster.clusterIps[${first}]; list each cluster IP once`,
      });
    }
  });
  return errors;
}

/**
 * Unicast heartbeat peers: IPv4 unicast addresses, each once, this host's dedicated IP among
 * them (the list is the same on every host).
 */
function heartbeatPeerErrors(
  peers: readonly Address[] | undefined,
  dedicatedIp: Prefix | undefined,
): ConfigError[] {
  if (peers === undefined) return [];
  const errors: ConfigError[] = [];
  peers.forEach((peer, i) => {
    const problem =
      peer.family !== 4
        ? "heartbeats are IPv4: expected a host's IPv4 dedicated IP"
        : unicastProblem(peer);
    if (problem !== undefined) {
      errors.push({ path: `cluster.heartbeat.peers[${i}]`, value: peer.text, message: problem });
    } else if (peers.findIndex((p) => addressesEqual(p, peer)) < i) {
      errors.push({
        path: `cluster.heartbeat.peers[${i}]`,
        value: peer.text,
        message: "listed twice; list each host's dedicated IP once",
      });
    }
  });
  if (dedicatedIp !== undefined && !peers.some((p) => addressesEqual(p, dedicatedIp.address))) {
    errors.push({
      path: 'cluster.heartbeat.peers',
      value: peers.map((p) => p.text),
      message: `does not list this host's dedicated IP ${dedicatedIp.address.text}; list every host's, this one's included (the list is the same on every host)`,
    });
  }
  return errors;
}

/** The heartbeat group must be an IPv4 multicast group outside the local control block. */
function heartbeatGroupErrors(group: Address): ConfigError[] {
  if (group.family !== 4 || (group.bytes[0] ?? 0) < 224 || (group.bytes[0] ?? 0) > 239) {
    return [
      {
        path: 'cluster.heartbeat.group',
        value: group.text,
        message: 'expected an IPv4 multicast group (224.0.0.0-239.255.255.255), e.g. 239.255.78.76',
      },
    ];
  }
  if (sameBits(group.bytes, localControlBlock.bytes, 24)) {
    return [
      {
        path: 'cluster.heartbeat.group',
        value: group.text,
        message:
          'is in 224.0.0.0/24, the local network control block that every host (224.0.0.1) or router on the segment listens to; expected a group of the cluster alone, e.g. 239.255.78.76 (administratively scoped, 239.0.0.0/8)',
      },
    ];
  }
  return [];
}

/** Every port rule names a cluster IP (or all), and no two overlap for one cluster IP. */
function portRuleErrors(
  portRules: readonly PortRule[],
  clusterIps: readonly Address[],
): ConfigError[] {
  const errors: ConfigError[] = [];
  portRules.forEach((rule, i) => {
    if (rule.vip !== 'all') {
      const vip = rule.vip;
      if (!clusterIps.some((ip) => addressesEqual(ip, vip))) {
        errors.push({
          path: `cluster.portRules[${i}].vip`,
          value: vip.text,
          message:
            "expected one of cluster.clusterIps or 'all'; add the address to clusterIps first",
        });
      }
    }
    for (let j = 0; j < i; j++) {
      const other = portRules[j]!;
      const sameVip =
        (rule.vip === 'all' && other.vip === 'all') ||
        (rule.vip !== 'all' && other.vip !== 'all' && addressesEqual(rule.vip, other.vip));
      if (
        sameVip &&
        protocolsOverlap(rule.protocol, other.protocol) &&
        rule.portStart <= other.portEnd &&
        other.portStart <= rule.portEnd
      ) {
        errors.push({
          path: `cluster.portRules[${i}].ports`,
          value: `${rule.portStart}-${rule.portEnd}`,
          message: `overlaps cluster.portRules[${j}] (${other.portStart}-${other.portEnd}) for the same cluster IP and protocol; port rules must not overlap`,
        });
      }
    }
  });
  return errors;
}

/** The host part's problems: its dedicated IP, and no more rule settings than port rules. */
function hostErrors(
  host: RawHost,
  dedicatedIp: Prefix | undefined,
  clusterIps: readonly Address[],
  portRuleCount: number,
): ConfigError[] {
  const errors: ConfigError[] = [];
  const dedicatedProblem = dedicatedIpProblem(host.dedicatedIp, dedicatedIp, clusterIps);
  if (dedicatedProblem !== undefined) {
    errors.push({ path: 'host.dedicatedIp', value: host.dedicatedIp, message: dedicatedProblem });
  }
  if (host.rules.length > portRuleCount) {
    errors.push({
      path: 'host.rules',
      value: host.rules.length,
      message: `has ${host.rules.length} entries but the cluster has ${portRuleCount} port rule(s); give at most one per rule, in the same order`,
    });
  }
  return errors;
}

/**
 * The validated, normalised configuration, or undefined with every problem in `errors`: all of
 * the cluster's, then the host's, so one run names them all.
 */
export function normalise(raw: RawConfig, errors: ConfigError[]): Config | undefined {
  const c = raw.cluster;
  const plainRules = portRulesOf(c);
  const portRules = plainRules.map((rule, i) =>
    withChecks(rule, c.portRules?.[i] ?? {}, i, plainRules, errors),
  );
  errors.push(
    ...clusterIpErrors(c.clusterIps),
    ...heartbeatGroupErrors(c.heartbeat.group),
    ...portRuleErrors(portRules, c.clusterIps),
  );
  const h = raw.host;
  const dedicatedIp = parsePrefix(h.dedicatedIp, { 4: 24, 6: 64 });
  errors.push(...hostErrors(h, dedicatedIp, c.clusterIps, portRules.length));
  errors.push(...heartbeatPeerErrors(c.heartbeat.peers, dedicatedIp));
  const routed = { cluster: c.routed, host: h.routed };
  errors.push(...routedErrors(routed, c.clusterIps, dedicatedIp));
  errors.push(...routedModeErrors(c.mode, routed, c.heartbeat.peers, dedicatedIp));
  const weightOf = (w: number | 'equal'): number => (w === 'equal' ? equalLoadWeight : w);
  const rules: HostRuleSettings[] = portRules.map((_, i) => ({
    loadWeight: weightOf(h.rules[i]?.loadWeight ?? h.loadWeight),
    handlingPriority: h.rules[i]?.handlingPriority ?? h.handlingPriority ?? h.id,
  }));
  if (errors.length > 0 || dedicatedIp === undefined) {
    return undefined;
  }
  return {
    cluster: {
      name: c.name,
      clusterIps: c.clusterIps,
      mode: c.mode,
      interface: c.interface,
      heartbeat: c.heartbeat,
      buckets: c.buckets,
      hashSeed: c.hashSeed,
      keyFile: c.keyFile,
      portRules,
      ...(c.routed === undefined ? {} : { routed: c.routed }),
    },
    host: {
      id: h.id,
      dedicatedIp,
      initialState: h.initialState,
      rules,
      ...(h.routed === undefined ? {} : { routed: h.routed }),
    },
  };
}

/**
 * A heartbeat must fit in one datagram: each port rule adds a header and a bitmap to it (two
 * in routed mode, which also says which released buckets still hold connections).
 */
export function heartbeatSizeError(config: Config): ConfigError | undefined {
  const routed = config.cluster.mode === 'routed';
  const heartbeatSize = heartbeatBytes(
    config.cluster.portRules.map((r) => r.buckets),
    undefined,
    routed,
  );
  if (heartbeatSize <= datagramBytesMax) {
    return undefined;
  }
  const perBucket = routed ? 'two bits per bucket in routed mode' : 'one bit per bucket';
  return {
    path: 'cluster.portRules',
    value: `${config.cluster.portRules.length} rule(s)`,
    message: `the heartbeat would be ${heartbeatSize} bytes, over the ${datagramBytesMax}-byte datagram limit (each rule costs ${heartbeatRuleHeaderBytes} bytes plus ${perBucket}); use fewer buckets or fewer port rules`,
  };
}
