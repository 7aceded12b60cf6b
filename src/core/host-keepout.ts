// When this host keeps itself out: another host uses its id
// (docs/protocol.md#duplicate-host-ids-and-restarts), or a stronger side of the cluster has
// another config (docs/protocol.md#configuration-mismatch), and the compatibility check of a
// peer that decides the latter. Part of the host machine (host.ts).
import {
  type MachineState,
  type PeerRecord,
  takesPart,
  hex,
  mismatchReportMs,
} from './host-state.js';
import type { Heartbeat } from './heartbeat.js';

/** Per decoded heartbeat (immutable): the lowest incarnation it acks, per host id. */
const lowestAcked = new WeakMap<Heartbeat, Map<number, number>>();

/**
 * The lowest incarnation of `host` that `heartbeat` acks, worked out once per heartbeat: this
 * runs on every decision over every peer's acks, O(peers × acks) each time otherwise.
 */
function lowestAckedIncarnation(heartbeat: Heartbeat, host: number): number | undefined {
  let byHost = lowestAcked.get(heartbeat);
  if (byHost === undefined) {
    byHost = new Map();
    for (const ack of heartbeat.acks) {
      const known = byHost.get(ack.host);
      if (known === undefined || ack.incarnation < known) byHost.set(ack.host, ack.incarnation);
    }
    lowestAcked.set(heartbeat, byHost);
  }
  return byHost.get(host);
}

/**
 * Another live host that uses our id and was there first (a lower incarnation) keeps us out
 * for as long as we hear it; once it has been silent for a detection window we are admitted.
 */
export function reviewDuplicateKeepOut(s: MachineState, now: number): void {
  for (const [incarnation, e] of s.rivals) {
    if (now >= e.lastHeardMs + 2 * s.deadAfterMs) s.rivals.delete(incarnation);
  }
  // A live rival we hear ourselves, or one a heard peer's heartbeat (proven fresh, so not a
  // replay) says it hears: the rival may not hear us (a one-way link), but the cluster does.
  const earlier: number[] = [];
  for (const [incarnation, e] of s.rivals) {
    if (
      incarnation < s.incarnation &&
      !e.heartbeat.keptOut &&
      now < e.lastHeardMs + s.deadAfterMs
    ) {
      earlier.push(incarnation);
    }
  }
  for (const peer of s.peers.values()) {
    if (!peer.heard) continue;
    const acked = lowestAckedIncarnation(peer.heartbeat, s.hostId);
    if (acked !== undefined && acked < s.incarnation) earlier.push(acked);
  }
  const first = earlier.length === 0 ? undefined : Math.min(...earlier);
  if (first !== undefined && s.keptOut === undefined) {
    s.keptOut = `duplicate host id ${s.hostId}: another host (incarnation ${first}) already uses it`;
    s.duplicateReportedAtMs = now;
    s.emit(now, 'duplicate host id', {
      host: s.hostId,
      incarnations: [first, s.incarnation],
      keptOut: s.incarnation,
      hint: 'give this host a unique host.id in its config and restart nlbd; it takes part again by itself once the other host is gone',
    });
    for (const owned of s.owned) owned.clear();
    for (const orphans of s.orphans) orphans.clear();
  } else if (first === undefined && s.keptOut?.startsWith('duplicate')) {
    s.keptOut = undefined;
    s.emit(now, 'admitted', {
      reason: `no other host uses host id ${s.hostId} any more`,
    });
  }
}

export function reviewConfigKeepOut(s: MachineState, now: number): void {
  const configReason = 'config mismatch';
  const stronger = [...s.peers.values()].find((p) => {
    if (!p.heard || p.mismatch === undefined || p.heartbeat.members.length === 0) return false;
    const theirs = p.heartbeat.members;
    const mine = s.members.length > 0 ? s.members : [s.hostId];
    return (
      theirs.length > mine.length ||
      (theirs.length === mine.length && Math.min(...theirs) < Math.min(...mine))
    );
  });
  if (stronger !== undefined && s.keptOut === undefined && takesPart(s.adminState)) {
    s.keptOut = `${configReason} with host ${stronger.id}: ${stronger.mismatch}`;
    s.emit(now, 'kept out', {
      reason: s.keptOut,
      hint: "make the cluster part of this host's config identical to the cluster's, then `nlb reload`",
    });
    for (const owned of s.owned) owned.clear();
  } else if (stronger === undefined && s.keptOut?.startsWith(configReason)) {
    s.keptOut = undefined;
    s.emit(now, 'admitted', { reason: 'no conflicting cluster config is heard any more' });
  }
}

/**
 * Whether a peer can be a member with us: the same cluster config, and (as NLB requires) a
 * handling priority of its own on every `single` rule. A heartbeat whose config digest
 * matches but whose rules do not (a faulty peer: only a key holder can send one) is
 * incompatible too, so nothing downstream ever reads a rule it lacks.
 */
export function checkCompatible(s: MachineState, now: number, peer: PeerRecord): void {
  const hb = peer.heartbeat;
  const cluster = s.config.cluster;
  let mismatch: string | undefined;
  let hint =
    'the cluster part of the config must be identical on every host; compare with `nlb display`';
  const ruleDifferences = (): string[] => {
    if (hb.rules.length !== cluster.portRules.length) {
      return [`${hb.rules.length} port rule(s) vs ${cluster.portRules.length}`];
    }
    const differences: string[] = [];
    hb.rules.forEach((rule, i) => {
      if (rule.buckets !== cluster.portRules[i]!.buckets) {
        differences.push(
          `portRules[${i}].buckets ${rule.buckets} vs ${cluster.portRules[i]!.buckets}`,
        );
      } else if (rule.ruleDigest !== s.ruleDigests[i]) {
        differences.push(`portRules[${i}] (cluster IP, ports, protocol, mode or affinity)`);
      }
    });
    return differences;
  };
  if (hex(hb.configDigest) !== hex(s.configDigest)) {
    const differences: string[] = [];
    if (hb.periodMs !== cluster.heartbeat.periodMs)
      differences.push(`heartbeat.periodMs ${hb.periodMs} vs ${cluster.heartbeat.periodMs}`);
    if (hb.tolerance !== cluster.heartbeat.tolerance)
      differences.push(`heartbeat.tolerance ${hb.tolerance} vs ${cluster.heartbeat.tolerance}`);
    if (hb.mode !== cluster.mode) differences.push(`mode ${hb.mode} vs ${cluster.mode}`);
    if (hb.hashSeed !== cluster.hashSeed)
      differences.push(`hashSeed ${hb.hashSeed} vs ${cluster.hashSeed}`);
    differences.push(...ruleDifferences());
    if (differences.length === 0) differences.push('cluster IPs or heartbeat port/group');
    mismatch = differences.join('; ');
  } else {
    const differences = ruleDifferences();
    if (differences.length > 0) {
      mismatch = `port rules differ although the config digest matches (a faulty peer): ${differences.join('; ')}`;
      hint = 'restart nlbd on that host; if it persists, report it as a bug';
    } else {
      const conflicts = cluster.portRules.flatMap((rule, r) => {
        const mine = s.config.host.rules[r]?.handlingPriority ?? s.hostId;
        return rule.mode === 'single' && hb.rules[r]!.handlingPriority === mine
          ? [`portRules[${r}] handling priority ${mine} on both hosts`]
          : [];
      });
      if (conflicts.length > 0) {
        mismatch = conflicts.join('; ');
        hint =
          'each host needs its own handling priority for a single-host rule: set host.handlingPriority (or host.rules[].handlingPriority) to a value no other host uses, then `nlb reload`';
      }
    }
  }
  if (
    mismatch !== undefined &&
    (peer.mismatch !== mismatch || now - peer.mismatchReportedAtMs >= mismatchReportMs)
  ) {
    peer.mismatchReportedAtMs = now;
    s.emit(now, 'config mismatch', { host: peer.id, differs: mismatch, hint });
  }
  peer.mismatch = mismatch;
}
