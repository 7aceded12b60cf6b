// Receiving heartbeats: authentication, the freshness proof, the unproven candidates, and the
// peer table's updates from a proven heartbeat (docs/protocol.md#freshness-replays-change-nothing,
// docs/protocol.md#authentication-and-rejected-datagrams). Part of the host machine (host.ts).
import {
  type DecodeFailure,
  type Heartbeat,
  ackFor,
  decodeHeartbeat,
  sameAnnouncement,
} from './heartbeat.js';
import {
  type MachineState,
  type PeerRecord,
  type ReceiveOutcome,
  type IncarnationEntry,
  incarnationsPerPeerMax,
  candidatesMax,
  forgetLongestSilent,
  hex,
  mismatchReportMs,
} from './host-state.js';
import { freshFromSequence } from './host-announcements.js';
import { checkCompatible } from './host-keepout.js';
import { activeIncarnation, recordDeadClaims, rejoin } from './host-peers.js';
import { noteReleases } from './routed-forward.js';

export function countBad(s: MachineState, reason: DecodeFailure): void {
  s.badCounts.set(reason, (s.badCounts.get(reason) ?? 0) + 1);
  s.badCountsTotal.set(reason, (s.badCountsTotal.get(reason) ?? 0) + 1);
}

/**
 * Handles one datagram. 'answer': send a heartbeat at once (the sender's report newly
 * differs from ours, or a process newly proved itself and needs our ack to hear us);
 * 'taken': something may have changed; 'routine': a heard peer announced again what it did
 * before (ReceiveOutcome); 'dropped': nothing did but a counter.
 */
export function receive(
  s: MachineState,
  now: number,
  bytes: Uint8Array,
  from?: string,
): ReceiveOutcome {
  const decoded = decodeHeartbeat(bytes, s.key, s.clusterId);
  if (!decoded.ok) {
    countBad(s, decoded.reason);
    return 'dropped';
  }
  const hb = decoded.heartbeat;
  if (hb.hostId === s.hostId && hb.incarnation === s.incarnation) {
    return 'dropped'; // Our own datagram looped back: harmless.
  }
  // Freshness (see the header): a process we have not proven must ack a heartbeat we sent
  // within the window; one we have proven is guarded by its sequence numbers from then on
  // (its acks of us may be old for good reasons: indirect evidence keeps a peer heard while
  // the direct link is cut, and when it heals the peer's first heartbeats ack our last one
  // before the cut).
  const known =
    hb.hostId === s.hostId
      ? s.rivals.get(hb.incarnation)
      : s.peers.get(hb.hostId)?.incarnations.get(hb.incarnation);
  if (known !== undefined) {
    if (hb.sequence <= known.lastSequence) {
      countBad(s, 'replayed or stale');
      return 'dropped';
    }
  } else {
    const ackOfUs = ackFor(hb, s.hostId, s.incarnation);
    const fresh =
      ackOfUs !== undefined && ackOfUs >= freshFromSequence(s, now) && ackOfUs <= s.sequence;
    if (!fresh) {
      const noted = noteCandidate(s, now, hb);
      // An ack of our current incarnation below the window proves the heartbeat is old.
      countBad(s, ackOfUs === undefined ? 'unproven' : 'replayed or stale');
      return noted;
    }
  }
  s.candidates.delete(`${hb.hostId}:${hb.incarnation}`);
  if (hb.incarnation > (s.highestIncarnation.get(hb.hostId) ?? -1)) {
    s.highestIncarnation.set(hb.hostId, hb.incarnation);
  }
  if (hb.hostId === s.hostId) {
    return receiveRival(s, now, hb, known) ? 'answer' : 'taken';
  }
  const peer = s.peers.get(hb.hostId);
  const routine =
    peer !== undefined &&
    peer.heard &&
    peer.incarnation === hb.incarnation &&
    sameAnnouncement(peer.heartbeat, hb);
  const events = s.events.length;
  if (receivePeer(s, now, hb, known, from)) return 'answer';
  return routine && s.events.length === events ? 'routine' : 'taken';
}

/**
 * Remembers an unproven process to echo it (bounded; the longest silent goes first). 'answer'
 * while we are still listening after we started and it is newer than anything heard on its
 * id: it may be a host that started with us, and our echo lets it prove itself within a round
 * trip. 'taken' when a new one may make us wait (see `viewAboutToChange`); else 'dropped' (only the echo
 * changes, at our next heartbeat).
 */
export function noteCandidate(s: MachineState, now: number, hb: Heartbeat): ReceiveOutcome {
  const key = `${hb.hostId}:${hb.incarnation}`;
  const candidate = s.candidates.get(key);
  if (candidate !== undefined) {
    candidate.lastHeardMs = now;
    candidate.lastSequence = Math.max(candidate.lastSequence, hb.sequence);
    candidate.state = hb.state;
    return 'dropped';
  }
  if (s.candidates.size >= candidatesMax) forgetLongestSilent(s.candidates);
  const newest =
    hb.hostId !== s.hostId && hb.incarnation > (s.highestIncarnation.get(hb.hostId) ?? -1);
  if (newest) s.highestIncarnation.set(hb.hostId, hb.incarnation);
  s.candidates.set(key, {
    host: hb.hostId,
    incarnation: hb.incarnation,
    lastSequence: hb.sequence,
    lastHeardMs: now,
    state: hb.state,
    newest,
  });
  if (newest && now < s.listenUntilMs) return 'answer';
  return s.peers.get(hb.hostId)?.heard === true ? 'dropped' : 'taken';
}

/** A proven heartbeat of a peer; returns whether to answer at once. */
export function receivePeer(
  s: MachineState,
  now: number,
  hb: Heartbeat,
  known: IncarnationEntry | undefined,
  from?: string,
): boolean {
  let peer = s.peers.get(hb.hostId);
  if (peer === undefined) {
    peer = {
      id: hb.hostId,
      incarnation: hb.incarnation,
      lastSequence: hb.sequence,
      lastHeardMs: now,
      heartbeat: hb,
      heard: false,
      declaredDeadAtMs: undefined,
      mismatch: undefined,
      mismatchReportedAtMs: -Infinity,
      reportKey: '',
      address: undefined,
      incarnations: new Map(),
    };
    s.peers.set(hb.hostId, peer);
  }
  // Every incarnation speaking for this id is tracked apart, each with its own replay guard,
  // so a restart and a second host with the same id are told apart whatever order their
  // datagrams arrive in.
  let entry = known;
  if (entry === undefined) {
    if (peer.incarnations.size >= incarnationsPerPeerMax) {
      forgetLongestSilent(peer.incarnations, peer.incarnation);
    }
    entry = { firstHeardMs: now, lastHeardMs: now, lastSequence: hb.sequence, heartbeat: hb };
    peer.incarnations.set(hb.incarnation, entry);
  }
  entry.lastHeardMs = now;
  entry.lastSequence = hb.sequence;
  entry.heartbeat = hb;
  const active = activeIncarnation(s, now, peer);
  if (hb.keptOut || active.incarnation !== hb.incarnation) {
    if ((hb.keptOut || active.coexists) && now - peer.mismatchReportedAtMs >= mismatchReportMs) {
      peer.mismatchReportedAtMs = now;
      s.emit(now, 'duplicate host id', {
        host: hb.hostId,
        incarnations: [active.incarnation, hb.incarnation].sort((a, b) => a - b),
        keptOut: Math.max(active.incarnation, hb.incarnation),
      });
    }
    return false;
  }
  if (hb.incarnation !== peer.incarnation) {
    if (hb.incarnation > peer.incarnation) {
      // A restart: the old incarnation's claims die with it; its buckets are free now, and
      // they reset the old incarnation's clients, as for a host that died.
      if (peer.heard && s.members.includes(peer.id)) recordDeadClaims(s, now, peer);
      if (peer.heard || peer.declaredDeadAtMs !== undefined) {
        s.emit(now, 'host restarted', { host: hb.hostId, incarnation: hb.incarnation });
      }
    }
    peer.incarnation = hb.incarnation;
    peer.declaredDeadAtMs = undefined;
    peer.heard = false;
  }
  if (hb.state !== peer.heartbeat.state && peer.heard) {
    s.convergingReason = `host ${hb.hostId} ${hb.state}`;
  }
  s.counters.heartbeatsReceived += 1;
  peer.lastSequence = hb.sequence;
  peer.lastHeardMs = now;
  noteReleases(s, now, peer, peer.heartbeat, hb);
  peer.heartbeat = hb;
  if (from !== undefined) peer.address = from;
  if (!peer.heard) {
    peer.heard = true;
    if (peer.declaredDeadAtMs !== undefined) {
      merge(s, now, peer);
    }
  }
  checkCompatible(s, now, peer);
  const reportKey = `${hb.members.join(',')}/${hex(hb.mapDigest)}`;
  // Answer once whenever a peer announces something new, so that it gets a report made after
  // its announcement without waiting for our next period (`maybeSend`'s `answerPeer`).
  const newlyDifferent = reportKey !== peer.reportKey;
  peer.reportKey = reportKey;
  return newlyDifferent;
}

/** A proven heartbeat of another process on our own id; returns whether to answer at once. */
export function receiveRival(
  s: MachineState,
  now: number,
  hb: Heartbeat,
  known: IncarnationEntry | undefined,
): boolean {
  let entry = known;
  if (entry === undefined) {
    if (s.rivals.size >= incarnationsPerPeerMax) forgetLongestSilent(s.rivals);
    entry = { firstHeardMs: now, lastHeardMs: now, lastSequence: hb.sequence, heartbeat: hb };
    s.rivals.set(hb.incarnation, entry);
  }
  entry.lastHeardMs = now;
  entry.lastSequence = hb.sequence;
  entry.heartbeat = hb;
  if (hb.incarnation > s.incarnation && now - s.duplicateReportedAtMs >= mismatchReportMs) {
    // The newcomer on our id keeps itself out because of us: say so, at a bounded rate. (The
    // case where we are the newcomer is decided in `reviewDuplicateKeepOut`.)
    s.duplicateReportedAtMs = now;
    s.emit(now, 'duplicate host id', {
      host: s.hostId,
      incarnations: [s.incarnation, hb.incarnation],
      keptOut: hb.incarnation,
    });
  }
  // Answer at once when it is new to us: it learns from our ack that we hear it.
  return known === undefined;
}

/** A peer we had declared dead speaks again with the same incarnation: a partition healed. */
export function merge(s: MachineState, now: number, peer: PeerRecord): void {
  const mine = s.members;
  const theirs = peer.heartbeat.members;
  s.emit(now, 'partition healed', {
    host: peer.id,
    ourSide: mine,
    theirSide: theirs,
    separatedMs: peer.declaredDeadAtMs === undefined ? 0 : now - peer.declaredDeadAtMs,
  });
  peer.declaredDeadAtMs = undefined;
  s.convergingReason = `partition healed (host ${peer.id})`;
  if (!s.participating || theirs.length === 0 || mine.length === 0) {
    return;
  }
  // The smaller side (ties: the side without the lowest host id) is the one that rejoins: it
  // drops every connection it holds, since the larger side reset those clients meanwhile, and
  // stops resetting in buckets whose "dead" owner is back. The larger side keeps resetting
  // the rejoining side's old clients, whose connections are gone now.
  const rejoining =
    mine.length < theirs.length ||
    (mine.length === theirs.length && Math.min(...mine) > Math.min(...theirs));
  // One drop per merge: the other side's hosts are heard one after another.
  if (rejoining && now - s.rejoinFlushedAtMs >= s.deadAfterMs) {
    rejoin(s, now, { joins: theirs });
  }
}
