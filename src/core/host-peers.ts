// The peer table over time: which incarnation speaks for an id, evidence that keeps a peer
// heard, expiry of peers and of inherited (orphan) buckets, and rejoining after this host was
// taken for dead (docs/protocol.md#dead-hosts-orphans-and-rejoining). Part of the host machine
// (host.ts).
import type { ProtocolEventFields } from './events.js';
import { type Heartbeat, type HeartbeatAck, ackFor } from './heartbeat.js';
import {
  type MachineState,
  type PeerRecord,
  type IncarnationEntry,
  takesPart,
  orphanHoldMs,
} from './host-state.js';

/**
 * A driver steps the machine at least once a period (`wakeAtMs`), so a longer gap means the
 * process did not run: SIGSTOP, a virtual machine paused or migrated, heavy swapping. If no
 * heartbeat of ours left for a whole detection window meanwhile, the peers have declared this
 * host dead and taken its buckets (resetting its clients), while its own view, frozen, still
 * has it owning them: acting on that view would answer clients twice, and announcing it
 * (members that no longer count it) would make the peers take themselves for the smaller side
 * of a partition and drop their own connections. So the host takes what happened as its own
 * absence, not its peers': it releases every bucket, drops its connections, listens again
 * before acting alone, and forgets what it heard of its peers without declaring them dead:
 * it takes them back as it hears them (their heartbeats sent meanwhile wait in its socket).
 */
export function resumeIfPaused(s: MachineState, now: number): void {
  const pausedMs = now - s.lastNowMs;
  // Before its first heartbeat no peer knows this host: nothing to rejoin.
  if (s.sequence === 0 || pausedMs <= 2 * s.periodMs || now - s.lastSentAtMs < s.deadAfterMs) {
    return;
  }
  // What waits in the socket was sent while we did not run: the oldest of it still counts us
  // and acks our heartbeats from before, and stepped one by one it would make us converge on
  // the old map and take our old buckets back while our peers hold them. So every process
  // proves itself again, by acking a heartbeat we send from now on (see Freshness).
  for (const peer of s.peers.values()) {
    peer.heard = false;
    peer.reportKey = '';
    peer.incarnations.clear();
  }
  s.rivals.clear();
  s.freshFloorSequence = s.sequence + 1;
  s.emit(now, 'paused', {
    pausedMs,
    hint: 'nlbd did not run for longer than the detection time (SIGSTOP, a virtual machine paused or migrated, swapping): its peers took its buckets; it drops its connections and rejoins',
  });
  s.listenUntilMs = Math.max(s.listenUntilMs, now + s.deadAfterMs);
  s.convergingReason = 'resumed after a pause';
  if (!s.participating) return;
  for (const owned of s.owned) owned.clear();
  rejoin(s, now, { afterPauseMs: pausedMs });
}

/**
 * Self-suspicion, after memberlist's Lifeguard: a host starved of CPU (its wake-ups late, its
 * heartbeats waiting to be read, some of them lost when its socket overflowed) must suspect
 * itself before it accuses its peers. An input that waited longer than a quarter period is
 * such a sign: for a detection window after it, the host gives every peer as much longer
 * before it declares it dead as it ran late (at most a detection time more), so the peers it
 * could not hear while it was stalled are heard again before it would accuse them. Its peers
 * time it out as before, and a host on time is not affected.
 */
export function noteLateness(s: MachineState, now: number, lateMs: number): void {
  if (!(lateMs > s.periodMs / 4)) return;
  if (now - s.lateAtMs > s.deadAfterMs) s.lateMaxMs = 0;
  s.lateAtMs = now;
  const first = s.lateMaxMs === 0;
  s.lateMaxMs = Math.max(s.lateMaxMs, lateMs);
  // Reported once a detection window at most: the first sign of each episode.
  if (first) {
    s.emit(now, 'running late', {
      lateMs,
      graceMs: selfGraceMs(s, now),
      hint: 'nlbd was starved of CPU (or stopped); give it realtime priority and CPU, and look for what keeps the machine busy',
    });
  }
}

/** How much longer than the detection time peers get now (`noteLateness`). */
export function selfGraceMs(s: MachineState, now: number): number {
  return now - s.lateAtMs <= s.deadAfterMs ? Math.min(s.lateMaxMs, s.deadAfterMs) : 0;
}

/**
 * The peers declared this host dead and reset its clients (a partition it was on the
 * smaller side of, a long link-down, a pause): it drops every connection to the cluster IPs
 * and forgets what it inherited from hosts it took for dead, before it takes buckets again.
 */
export function rejoin(
  s: MachineState,
  now: number,
  why: Omit<ProtocolEventFields['rejoining: dropping connections'], 'host'>,
): void {
  s.rejoinFlushedAtMs = now;
  s.rejoined = true;
  s.emit(now, 'rejoining: dropping connections', { host: s.hostId, ...why });
  s.config.cluster.portRules.forEach((rule, r) => {
    s.flush.push({ rule: r, buckets: Array.from({ length: rule.buckets }, (_, b) => b) });
    s.orphans[r]!.clear();
    s.deadClaims[r]!.clear();
  });
}

/**
 * Which incarnation speaks for a host id. The newest one replaces its predecessor at once
 * after a restart, which always leaves the predecessor silent for more than a period (a
 * process starts, then listens a period before it speaks). An older one that spoke after,
 * or within a period before, the newest first proved itself keeps the id: two hosts share
 * it (`coexists`), or we cannot tell yet, and the older one, there first, keeps it until it
 * falls silent for a detection window. Incarnations that announce they keep themselves out,
 * or have been silent for a detection window, never count. Only proven incarnations are
 * here, so a replay of an earlier incarnation can never speak again.
 */
export function activeIncarnation(
  s: MachineState,
  now: number,
  peer: PeerRecord,
): { incarnation: number; coexists: boolean } {
  for (const [incarnation, e] of peer.incarnations) {
    if (now >= e.lastHeardMs + 2 * s.deadAfterMs && incarnation !== peer.incarnation) {
      peer.incarnations.delete(incarnation);
    }
  }
  const live = [...peer.incarnations.entries()]
    .filter(([, e]) => !e.heartbeat.keptOut && now < e.lastHeardMs + s.deadAfterMs)
    .sort((a, b) => a[0] - b[0]);
  const newest = live[live.length - 1];
  if (newest === undefined) return { incarnation: peer.incarnation, coexists: false };
  const older = live.find(
    ([incarnation, e]) =>
      incarnation < newest[0] && e.lastHeardMs + s.periodMs > newest[1].firstHeardMs,
  );
  if (older === undefined) return { incarnation: newest[0], coexists: false };
  return { incarnation: older[0], coexists: older[1].lastHeardMs > newest[1].firstHeardMs };
}

/**
 * Whether a proven process other than the one speaking for its id is live beside it: it is
 * newer (a duplicate that appeared while the active one spoke), or it spoke after the active
 * one first proved itself. A predecessor that fell silent before its successor appeared (a
 * restart) is not.
 */
export function coexists(
  s: MachineState,
  now: number,
  incarnation: number,
  entry: IncarnationEntry,
  activeIncarnation: number,
  active: IncarnationEntry,
): boolean {
  return (
    incarnation !== activeIncarnation &&
    !entry.heartbeat.keptOut &&
    now < entry.lastHeardMs + s.deadAfterMs &&
    (incarnation > activeIncarnation || entry.lastHeardMs > active.firstHeardMs)
  );
}

/**
 * When a peer counts as last heard of: its own last heartbeat, or later when another heard
 * host reports (in its acks) a newer sequence from it than any we received. Then the peer is
 * alive and only its heartbeats to us were lost: with independent loss, declaring it dead
 * would take `tolerance` losses on every path at once, not on one. Without loss every ack
 * equals our own last sequence, so crash detection time is unchanged; and a crashed host
 * produces no newer sequence, so the evidence runs out by itself.
 */
export function lastEvidenceMs(s: MachineState, peer: PeerRecord): number {
  let latest = peer.lastHeardMs;
  for (const other of s.peers.values()) {
    if (other === peer || !other.heard || other.lastHeardMs <= latest) continue;
    const ack = ackFor(other.heartbeat, peer.id, peer.incarnation);
    if (ack !== undefined && ack > peer.lastSequence) latest = other.lastHeardMs;
  }
  return latest;
}

/**
 * A heartbeat's acks with only the first for each process (host, incarnation), as `ackFor`
 * reads them. Heartbeats are immutable once decoded, so each is worked out once, not on every
 * step: `evidenceTimes` runs twice per step over every peer's acks, and building a key per ack
 * there was a third of the simulator's time at 32 hosts.
 */
const firstAcksOf = new WeakMap<Heartbeat, readonly HeartbeatAck[]>();

function firstAcks(heartbeat: Heartbeat): readonly HeartbeatAck[] {
  let acks = firstAcksOf.get(heartbeat);
  if (acks === undefined) {
    acks = heartbeat.acks.filter(
      (ack, i) =>
        heartbeat.acks.findIndex(
          (a) => a.host === ack.host && a.incarnation === ack.incarnation,
        ) === i,
    );
    firstAcksOf.set(heartbeat, acks);
  }
  return acks;
}

/**
 * `lastEvidenceMs` of every heard peer at once, in one pass over the acks (O(peers × acks)
 * instead of that per peer): what `wakeAt` and `expirePeers` need on every step. Only the first
 * ack for a process in a heartbeat counts, as in `ackFor`.
 */
export function evidenceTimes(s: MachineState): Map<PeerRecord, number> {
  const times = new Map<PeerRecord, number>();
  for (const peer of s.peers.values()) {
    if (peer.heard) times.set(peer, peer.lastHeardMs);
  }
  for (const other of s.peers.values()) {
    if (!other.heard) continue;
    for (const ack of firstAcks(other.heartbeat)) {
      const peer = s.peers.get(ack.host);
      if (peer === undefined || peer === other || ack.incarnation !== peer.incarnation) continue;
      const latest = times.get(peer);
      if (latest === undefined || other.lastHeardMs <= latest) continue;
      if (ack.sequence > peer.lastSequence) times.set(peer, other.lastHeardMs);
    }
  }
  return times;
}

export function expirePeers(s: MachineState, now: number): void {
  // Evidence is never older than a peer's own last heartbeat: while every heard peer spoke
  // within the detection time, nothing can expire and the acks need not be read.
  const deadAfterMs = s.deadAfterMs + selfGraceMs(s, now);
  const anySilent = [...s.peers.values()].some(
    (peer) => peer.heard && now >= peer.lastHeardMs + deadAfterMs,
  );
  if (!anySilent) return;
  // Valid until a peer is declared dead here: it then no longer vouches for the others.
  let evidence: Map<PeerRecord, number> | undefined = evidenceTimes(s);
  for (const peer of s.peers.values()) {
    if (!peer.heard) continue;
    const latest = evidence?.get(peer) ?? lastEvidenceMs(s, peer);
    if (now >= latest + deadAfterMs) {
      evidence = undefined;
      peer.heard = false;
      const hb = peer.heartbeat;
      const wasMember = s.members.includes(peer.id);
      if (takesPart(hb.state)) {
        peer.declaredDeadAtMs = now;
        s.emit(now, 'host declared dead', { host: peer.id, silentMs: now - peer.lastHeardMs });
        s.convergingReason = `host ${peer.id} declared dead`;
        if (wasMember) recordDeadClaims(s, now, peer);
      }
    }
  }
}

/** A dead host's connections die with it: its clients get a reset from whoever inherits them. */
export function recordDeadClaims(s: MachineState, now: number, peer: PeerRecord): void {
  peer.heartbeat.rules.forEach((rule, r) => {
    const claims = s.deadClaims[r];
    if (claims === undefined) return;
    for (const b of rule.owned) claims.set(b, { host: peer.id, untilMs: now + orphanHoldMs });
  });
}

export function expireOrphans(s: MachineState, now: number): void {
  for (const maps of [s.orphans, s.deadClaims, s.releasedClaims]) {
    for (const map of maps) {
      for (const [bucket, claim] of map) {
        if (claim.untilMs <= now) map.delete(bucket);
      }
    }
  }
}
