// The host as the control protocol shows it: the data of `query`, and the port rules and the
// config as plain JSON (addresses as text), which `queryport`, `params`, `display`, `reload`
// and the metrics reuse. Pure functions of what the host machine reports.
import type { Config, PortRule } from '../core/config.js';
import type { HostDetails } from '../core/host.js';
import type { HostStatus } from '../core/protocol.js';
import type {
  ConfigView,
  MapData,
  MapRuleData,
  PeerView,
  PortRuleView,
  QueryData,
  RuleHealth,
  RuleHealthView,
} from '../control/protocol.js';

/** What the views read of a running host (a part of the daemon's ControlTarget). */
export interface HostView {
  readonly config: Config;
  nowMs(): number;
  status(): HostStatus;
  details(): HostDetails;
  /** The port rules' health and agent checks as nlbd runs them (none in some test targets). */
  health?(): readonly RuleHealthView[];
}

/** Rule `r`'s health: the checks' state beside what the host machine does with it. */
export function ruleHealth(target: HostView, details: HostDetails, r: number): RuleHealth {
  const checks = target.health?.()[r];
  const machine = details.ruleHealth[r];
  return {
    check: checks?.check ?? null,
    healthy: machine?.healthy ?? true,
    successes: checks?.successes ?? 0,
    failures: checks?.failures ?? 0,
    last: checks?.last ?? null,
    agent: checks?.agent ?? null,
    failingOpen: machine?.failingOpen ?? false,
    reportedWeight: machine?.reportedWeight ?? null,
  };
}

export function portsText(rule: PortRule): string {
  return rule.portStart === rule.portEnd
    ? String(rule.portStart)
    : rule.portStart === 0 && rule.portEnd === 65535
      ? 'all'
      : `${rule.portStart}-${rule.portEnd}`;
}

export function portRuleView(rule: PortRule): PortRuleView {
  return {
    vip: rule.vip === 'all' ? 'all' : rule.vip.text,
    ports: portsText(rule),
    protocol: rule.protocol,
    mode: rule.mode,
    affinity: rule.affinity,
  };
}

function peerView(peer: HostDetails['peers'][number], members: readonly number[]): PeerView {
  const takingPart = peer.state === 'started' || peer.state === 'draining';
  if (!peer.heard) {
    return takingPart ? 'dead' : 'gone';
  }
  if (members.includes(peer.id)) return 'member';
  if (peer.mismatch !== undefined) return 'mismatch';
  if (peer.state === 'stopped' || peer.state === 'suspended') return peer.state;
  return 'joining';
}

export function queryData(
  target: HostView,
  dataplaneInSync: boolean,
  announced?: boolean,
): QueryData {
  const status = target.status();
  const details = target.details();
  const now = target.nowMs();
  const cluster = target.config.cluster;
  return {
    cluster: cluster.name,
    hostId: status.hostId,
    incarnation: status.incarnation,
    state: status.state,
    converged: status.converged,
    members: status.members,
    defaultHost: status.defaultHost,
    mapDigest: status.mapDigest,
    keptOut: details.keptOut ?? null,
    dataplaneInSync,
    ...(announced === undefined ? {} : { announced }),
    rules: cluster.portRules.map((rule, i) => ({
      rule: i,
      ...portRuleView(rule),
      buckets: rule.buckets,
      state: details.ruleStates[i] ?? 'enabled',
      owned: status.ownership.rules[i]?.owned ?? [],
      orphan: status.ownership.rules[i]?.orphan ?? [],
      loadWeight: details.ruleHealth[i]?.loadWeight ?? target.config.host.rules[i]?.loadWeight ?? 0,
      handlingPriority: target.config.host.rules[i]?.handlingPriority ?? 0,
      health: ruleHealth(target, details, i),
    })),
    peers: details.peers.map((peer) => ({
      id: peer.id,
      view: peerView(peer, status.members),
      announced: peer.state,
      incarnation: peer.incarnation,
      lastHeardAgoMs: Math.max(0, Math.round(now - peer.lastHeardMs)),
      members: peer.members,
      mismatch: peer.mismatch ?? null,
      address: peer.address ?? null,
    })),
  };
}

/** The config as plain JSON: addresses as text, nothing derived. */
export function configView(config: Config): ConfigView {
  const c = config.cluster;
  return {
    cluster: {
      name: c.name,
      clusterIps: c.clusterIps.map((ip) => ip.text),
      mode: c.mode,
      interface: c.interface,
      heartbeat: {
        ...c.heartbeat,
        group: c.heartbeat.group.text,
        peers: c.heartbeat.peers?.map((p) => p.text) ?? null,
      },
      buckets: c.buckets,
      hashSeed: c.hashSeed,
      keyFile: c.keyFile,
      portRules: c.portRules.map((rule) => ({
        ...portRuleView(rule),
        buckets: rule.buckets,
        health: rule.health ?? null,
        agent: rule.agent ?? null,
      })),
    },
    host: {
      id: config.host.id,
      dedicatedIp: `${config.host.dedicatedIp.address.text}/${config.host.dedicatedIp.length}`,
      initialState: config.host.initialState,
      rules: config.host.rules,
    },
  };
}

/**
 * Per port rule and bucket, the hosts that claim it now, sorted: this host where it takes new
 * flows, and every heard peer of the same config whose last heartbeat says it does. A peer
 * declared dead claims nothing (its buckets are orphans of whoever took them).
 */
export function bucketClaims(target: HostView): number[][][] {
  const status = target.status();
  const claims = target.config.cluster.portRules.map((rule) =>
    Array.from({ length: rule.buckets }, (): number[] => []),
  );
  const add = (host: number, rule: number, buckets: readonly number[]): void => {
    const perBucket = claims[rule];
    if (perBucket === undefined) return;
    for (const b of buckets) perBucket[b]?.push(host);
  };
  status.ownership.rules.forEach((r, i) => add(status.hostId, i, r.owned));
  for (const peer of target.details().peers) {
    if (!peer.heard || peer.mismatch !== undefined) continue;
    peer.rules.forEach((r, i) => add(peer.id, i, r.owned));
  }
  for (const perBucket of claims) for (const hosts of perBucket) hosts.sort((a, b) => a - b);
  return claims;
}

/** Whether a bucket's claims are exactly its owner (nobody, for an unowned bucket). */
export function claimsMatch(claims: readonly number[], owner: number | null): boolean {
  return owner === null ? claims.length === 0 : claims.length === 1 && claims[0] === owner;
}

/** The `map` verb: the target map, the claims, and what a prediction needs. */
export function mapData(target: HostView, wallNowMs: number): MapData {
  const status = target.status();
  const details = target.details();
  const cluster = target.config.cluster;
  const claims = bucketClaims(target);
  const convergedAtMs = details.counters.lastConvergedAtMs;
  const rules = cluster.portRules.map((rule, i): MapRuleData => {
    const owners = Array.from({ length: rule.buckets }, (_, b) => status.target[i]?.[b] ?? null);
    const ruleClaims = claims[i]!;
    return {
      rule: i,
      ...portRuleView(rule),
      portStart: rule.portStart,
      portEnd: rule.portEnd,
      buckets: rule.buckets,
      state: details.ruleStates[i] ?? 'enabled',
      owners,
      claims: ruleClaims,
      inFlight: owners.flatMap((owner, b) => (claimsMatch(ruleClaims[b]!, owner) ? [] : [b])),
    };
  });
  return {
    cluster: cluster.name,
    hostId: status.hostId,
    converged: status.converged,
    mapDigest: status.mapDigest,
    convergedAt:
      status.converged && convergedAtMs >= 0
        ? new Date(wallNowMs - (target.nowMs() - convergedAtMs)).toISOString()
        : null,
    members: status.members,
    defaultHost: status.defaultHost,
    clusterIps: cluster.clusterIps.map((ip) => ip.text),
    hashSeed: cluster.hashSeed,
    rules,
  };
}
