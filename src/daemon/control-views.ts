// The host as the control protocol shows it: the data of `query`, and the port rules and the
// config as plain JSON (addresses as text), which `queryport`, `params`, `display`, `reload`
// and the metrics reuse. Pure functions of what the host machine reports.
import type { Config, PortRule } from '../core/config.js';
import type { HostDetails } from '../core/host.js';
import type { HostStatus } from '../core/protocol.js';
import type { ConfigView, PeerView, PortRuleView, QueryData } from '../control/protocol.js';

/** What the views read of a running host (a part of the daemon's ControlTarget). */
export interface HostView {
  readonly config: Config;
  nowMs(): number;
  status(): HostStatus;
  details(): HostDetails;
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

export function queryData(target: HostView, dataplaneInSync: boolean): QueryData {
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
    rules: cluster.portRules.map((rule, i) => ({
      rule: i,
      ...portRuleView(rule),
      buckets: rule.buckets,
      state: details.ruleStates[i] ?? 'enabled',
      owned: status.ownership.rules[i]?.owned ?? [],
      orphan: status.ownership.rules[i]?.orphan ?? [],
    })),
    peers: details.peers.map((peer) => ({
      id: peer.id,
      view: peerView(peer, status.members),
      announced: peer.state,
      incarnation: peer.incarnation,
      lastHeardAgoMs: Math.max(0, Math.round(now - peer.lastHeardMs)),
      members: peer.members,
      mismatch: peer.mismatch ?? null,
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
      heartbeat: { ...c.heartbeat, group: c.heartbeat.group.text },
      buckets: c.buckets,
      hashSeed: c.hashSeed,
      keyFile: c.keyFile,
      portRules: c.portRules.map((rule) => ({
        ...portRuleView(rule),
        buckets: rule.buckets,
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
