// What a step puts out: the heartbeat and its acks, the ownership for the data plane, the
// summary of rejected heartbeats, and when to be woken next. Part of the host machine (host.ts).
import { acksMax } from './heartbeat-size.js';
import { type AnnouncedState, type HeartbeatAck, encodeHeartbeat } from './heartbeat.js';
import type { Ownership, Ready } from './protocol.js';
import {
  type MachineState,
  type Candidate,
  hex,
  badHeartbeatReportMs,
  immediateBurst,
  ownLoadWeight,
} from './host-state.js';
import { recordAnnouncement, recordSent } from './host-announcements.js';
import { defaultHost, isSettled } from './host-decision.js';
import { coexists, evidenceTimes, selfGraceMs } from './host-peers.js';
import { heldBuckets, routedOwnership } from './routed-forward.js';

/** The rule's held buckets in routed mode: `{ held }`, else nothing. */
function withHeld(s: MachineState, r: number): { held?: readonly number[] } {
  const held = heldBuckets(s, r);
  return held === undefined ? {} : { held };
}

export function announcedState(s: MachineState): AnnouncedState {
  return s.keptOut !== undefined ? 'stopped' : s.adminState;
}

export function maybeSend(s: MachineState, now: number, answerPeer: boolean): void {
  const duplicate = s.keptOut !== undefined && s.keptOut.startsWith('duplicate');
  const contentKey = JSON.stringify([
    announcedState(s),
    isSettled(s),
    s.heardIds,
    s.members,
    hex(s.mapDigest),
    s.pending,
    s.owned.map((o) => [...o].sort((a, b) => a - b)),
    s.held.map((held) => [...held.keys()].sort((a, b) => a - b)),
    s.ruleStates,
    s.config.host.rules,
    hex(s.configDigest),
  ]);
  const changed = contentKey !== s.lastSentKey;
  // Before the first scheduled heartbeat a host only listens, unless an operator command
  // changed what it has to say. After it, a change of a settled view (a crash, a planned
  // change: what convergence waits for) leaves at once; an answer, or a change while the view
  // is still forming (a cold start, a newcomer being proven), as soon as a token allows
  // (`immediateTokens`).
  const urgent = changed && !s.pending && s.sequence > 0;
  if (urgent) {
    s.immediateDueMs = now;
  } else if ((changed || answerPeer) && s.sequence > 0 && s.immediateDueMs === undefined) {
    s.immediateDueMs = now + Math.max(0, 1 - immediateTokens(s, now)) * s.immediateGapMs;
  }
  const scheduled = now >= s.nextSendMs;
  if (!scheduled && !(s.immediateDueMs !== undefined && now >= s.immediateDueMs)) {
    return;
  }
  if (!scheduled && !urgent) {
    s.immediateTokens = immediateTokens(s, now) - 1;
    s.immediateTokensAtMs = now;
  }
  s.immediateDueMs = undefined;
  s.sequence += 1;
  s.lastSentKey = contentKey;
  const announcedDigest = s.pending ? new Uint8Array(8) : s.mapDigest;
  if (!s.pending) {
    const digestHex = hex(s.mapDigest);
    if (digestHex !== s.lastSentDigest) {
      s.previousDigestSequence = s.lastSentSequence;
      s.lastSentDigest = digestHex;
    }
    s.lastSentSequence = s.sequence;
    recordAnnouncement(s, s.sequence, digestHex);
  }
  s.nextSendMs = now + s.sendIntervalMs;
  s.lastSentAtMs = now;
  recordSent(s, now, s.sequence);
  s.counters.heartbeatsSent += 1;
  s.send.push(
    encodeHeartbeat(
      {
        hostId: s.hostId,
        state: announcedState(s),
        settled: isSettled(s),
        keptOut: duplicate,
        clusterId: s.clusterId,
        incarnation: s.incarnation,
        sequence: s.sequence,
        generation: s.generation,
        configDigest: s.configDigest,
        periodMs: s.config.cluster.heartbeat.periodMs,
        tolerance: s.config.cluster.heartbeat.tolerance,
        mode: s.config.cluster.mode,
        hashSeed: s.config.cluster.hashSeed,
        heard: s.heardIds,
        members: s.members,
        mapDigest: announcedDigest,
        acks: acksOf(s, now),
        rules: s.config.cluster.portRules.map((rule, r) => ({
          buckets: rule.buckets,
          ruleDigest: s.ruleDigests[r]!,
          loadWeight: ownLoadWeight(s, r),
          handlingPriority: s.config.host.rules[r]?.handlingPriority ?? s.hostId,
          state: s.ruleStates[r]!,
          healthy: s.ruleHealth[r] ?? true,
          owned: [...s.owned[r]!].sort((a, b) => a - b),
          ...withHeld(s, r),
        })),
      },
      s.key,
    ),
  );
}

/**
 * The tokens left now for answers and for the changes of a view still forming: a bucket of
 * `immediateBurst` that refills one per `immediateGapMs`. A few in a row go at full speed;
 * the storm of a cold start, which every host sees, is held to one heartbeat per gap and host.
 */
export function immediateTokens(s: MachineState, now: number): number {
  const gap = s.immediateGapMs;
  if (gap <= 0) return immediateBurst;
  return Math.min(immediateBurst, s.immediateTokens + (now - s.immediateTokensAtMs) / gap);
}

/**
 * Our acks, in order of use: every heard peer's current process; a process that shares a
 * peer's id with it (two hosts on one id: each must hear that we hear it, and the one that
 * keeps out learns it from us, see `reviewDuplicateKeepOut`); a rival on our own id; then,
 * for ids with none of those, the newest unproven process heard within a detection window
 * (an echo, so it can prove itself: see Freshness). At most `acksMax`.
 */
export function acksOf(s: MachineState, now: number): HeartbeatAck[] {
  const acks: HeartbeatAck[] = [];
  const acked = new Set<number>();
  const add = (host: number, incarnation: number, sequence: number): void => {
    if (acks.length < acksMax) acks.push({ host, incarnation, sequence });
    acked.add(host);
  };
  for (const peer of s.peers.values()) {
    if (peer.heard) add(peer.id, peer.incarnation, peer.lastSequence);
  }
  for (const peer of s.peers.values()) {
    const active = peer.incarnations.get(peer.incarnation);
    if (!peer.heard || active === undefined) continue;
    for (const [incarnation, e] of peer.incarnations) {
      if (coexists(s, now, incarnation, e, peer.incarnation, active)) {
        add(peer.id, incarnation, e.lastSequence);
      }
    }
  }
  const rival = [...s.rivals.entries()]
    .filter(([, e]) => now < e.lastHeardMs + s.deadAfterMs)
    .sort((a, b) => a[0] - b[0])[0];
  if (rival !== undefined) add(s.hostId, rival[0], rival[1].lastSequence);
  const echoes = new Map<number, Candidate>();
  for (const [key, c] of s.candidates) {
    if (now >= c.lastHeardMs + s.deadAfterMs) {
      s.candidates.delete(key);
      continue;
    }
    if (acked.has(c.host)) continue;
    const best = echoes.get(c.host);
    if (
      best === undefined ||
      c.incarnation > best.incarnation ||
      (c.incarnation === best.incarnation && c.lastHeardMs > best.lastHeardMs)
    ) {
      echoes.set(c.host, c);
    }
  }
  for (const c of echoes.values()) add(c.host, c.incarnation, c.lastSequence);
  return acks.sort((a, b) => a.host - b.host || a.incarnation - b.incarnation);
}

export function computeOwnership(s: MachineState): Ownership {
  const active = s.participating;
  return {
    rules: s.config.cluster.portRules.map((rule, r) => {
      const owned = [...(s.owned[r] ?? [])].sort((a, b) => a - b);
      const orphan = [...(s.orphans[r]?.keys() ?? [])]
        .filter((b) => s.owned[r]?.has(b))
        .sort((a, b) => a - b);
      return {
        owned,
        orphan,
        disabled: rule.mode === 'disabled' || s.ruleStates[r] === 'disabled',
      };
    }),
    // A host still listening alone, or whose view is about to change, is not the default
    // host yet: the real default host may be one it has not heard.
    isDefault:
      active &&
      defaultHost(s) === s.hostId &&
      !s.pending &&
      (!s.alone || s.lastNowMs >= s.listenUntilMs),
    active,
    // With the link down, established connections are kept: if it comes back before the
    // peers declare this host dead, they go on; if later, `link` drops them.
    // Only an operator's stop or suspend cuts established connections; a host kept out (a
    // config rollout) or without carrier keeps them.
    dropEstablished:
      !active &&
      (s.adminState === 'stopped' || s.adminState === 'suspended') &&
      s.keptOut === undefined &&
      s.linkDownSinceMs === undefined,
    ...(s.config.cluster.mode === 'routed' ? { routed: routedOwnership(s, s.lastNowMs) } : {}),
  };
}

/**
 * Summarises rejected heartbeats in one event at most every `badHeartbeatReportMs`. Unproven
 * ones alone raise no event: every host that joins sends one or two before it has heard us
 * (they are counted all the same, and the next event lists them).
 */
export function reportBadHeartbeats(s: MachineState, now: number, force: boolean): void {
  const worthReporting = [...s.badCounts.keys()].some((reason) => reason !== 'unproven');
  if (!worthReporting || (!force && now - s.badReportedAtMs < badHeartbeatReportMs)) return;
  s.badReportedAtMs = now;
  s.emit(now, 'bad heartbeats', { counts: Object.fromEntries(s.badCounts) });
  s.badCounts.clear();
}

export function wakeAt(s: MachineState, now: number): number {
  let wake = Math.min(now + s.periodMs, s.nextSendMs, s.immediateDueMs ?? Infinity);
  if (now < s.listenUntilMs) wake = Math.min(wake, s.listenUntilMs);
  // Evidence is never older than a peer's own last heartbeat, so when no heard peer's own
  // silence would run out before `wake`, no evidence can either: the acks need not be read.
  const deadAfterMs = s.deadAfterMs + selfGraceMs(s, now);
  let earliest = Number.POSITIVE_INFINITY;
  for (const peer of s.peers.values()) {
    if (peer.heard) earliest = Math.min(earliest, peer.lastHeardMs + deadAfterMs);
  }
  if (earliest < wake) {
    for (const latest of evidenceTimes(s).values()) {
      wake = Math.min(wake, latest + deadAfterMs);
    }
  }
  for (const map of [...s.orphans, ...s.releasedClaims]) {
    for (const claim of map.values()) wake = Math.min(wake, claim.untilMs);
  }
  if (s.keptOut?.startsWith('duplicate')) {
    // Admitted as soon as the rival on our id has been silent for a detection window.
    for (const rival of s.rivals.values()) {
      const silentAtMs = rival.lastHeardMs + s.deadAfterMs;
      if (silentAtMs > now) wake = Math.min(wake, silentAtMs);
    }
  }
  return Math.max(wake, now);
}

/** The ownership computed now if it differs from the last one put out, else undefined. */
export function ownershipChange(s: MachineState): Ownership | undefined {
  const ownership = computeOwnership(s);
  const ownershipKey = JSON.stringify(ownership);
  if (ownershipKey === s.lastOwnershipKey) return undefined;
  s.lastOwnershipKey = ownershipKey;
  s.lastOwnership = ownership;
  return ownership;
}

/**
 * What a step puts out for a datagram that changed nothing but a counter: its events only, and
 * the wake-up already asked for.
 */
export function droppedReady(s: MachineState, now: number): Ready {
  return {
    ownership: undefined,
    flush: [],
    rejoined: false,
    send: [],
    events: s.events,
    wakeAtMs: Math.max(s.lastWakeAtMs, now),
    reply: undefined,
  };
}
