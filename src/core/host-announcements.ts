// What this host announced and when: the log of sent heartbeats that judges the freshness of
// acks, the log of announced targets that decides whether a peer's report counts
// (docs/protocol.md#release-before-acquire), and the agreement those reports make up. Part of
// the host machine (host.ts).
import { type Heartbeat, ackFor } from './heartbeat.js';
import { type MachineState, announcementsMax, hex, sameList, sentLogMax } from './host-state.js';

/**
 * The first sequence we sent within the freshness window (one past the last if none), and
 * never one sent before a pause (`resumeIfPaused`).
 */
export function freshFromSequence(s: MachineState, now: number): number {
  const from = now - s.freshWindowMs;
  let dropped = 0;
  while (dropped < s.sentLog.length && s.sentLog[dropped]! < from) dropped++;
  if (dropped > 0) {
    s.sentLog = s.sentLog.slice(dropped);
    s.sentLogFromSequence += dropped;
  }
  return Math.max(s.sentLogFromSequence, s.freshFloorSequence);
}

export function recordSent(s: MachineState, now: number, sequence: number): void {
  if (s.sentLog.length === 0) s.sentLogFromSequence = sequence;
  s.sentLog.push(now);
  if (s.sentLog.length > sentLogMax) {
    s.sentLog.shift();
    s.sentLogFromSequence += 1;
  }
}

/**
 * Whether a peer's report of our current target (`digestHex`), made when the peer had heard
 * our heartbeats up to sequence `ack`, is recent enough to act on.
 *
 * The danger is a report made before the peer heard one of our announcements of another
 * target A: on receiving it the peer may still agree on A with us and acquire under A, and
 * the report we hold cannot show that. (An old report that happens to match our target
 * again would hide such buckets: seed 1822.) So the report counts unless some announcement
 * of ours made after `ack` announced a target A that
 *   - gives this peer a bucket we are about to acquire (under A the peer can only acquire
 *     what A gives it), and
 *   - the peer can still be at: A's digest covers the peer's incarnation and generation, and
 *     a peer whose report shows a newer generation of the same incarnation can never compute
 *     A again (generations only grow).
 * Whatever the peer acquired before its report, the report shows, and we take no bucket a
 * heard peer claims. An announcement the peer received before its report cannot serve it
 * afterwards: it acks none of the peer's later heartbeats, and the peer's own rule asks for
 * that ack.
 *
 * In a planned change the announcement the peer missed is nearly always a periodic repeat of
 * the old map: it gives the peer nothing we now take (stop, join), or the peer is the host
 * that changed and has a new generation (drainstop, rule changes). So the first report of the
 * new map counts, and new owners start within two one-way delays. When our log does not reach
 * back to `ack`, the strict form applies: the report must ack our last announcement of any
 * other target.
 */
export function reportCounts(
  s: MachineState,
  peerId: number,
  report: Heartbeat,
  ack: number,
  digestHex: string,
  targets: readonly (readonly (number | null)[])[],
): boolean {
  const strictAckNeeded =
    digestHex === s.lastSentDigest ? s.previousDigestSequence : s.lastSentSequence;
  if (ack >= strictAckNeeded) return true;
  if (ack + 1 < s.announcedFromSequence) return false;
  const incarnation = s.peers.get(peerId)!.incarnation;
  return s.announced.every((announcement) => {
    if (announcement.lastSequence <= ack || announcement.digest === digestHex) return true;
    const then = announcement.identities.get(peerId);
    const outgrown =
      then !== undefined && then.incarnation === incarnation && then.generation < report.generation;
    return outgrown || !givesPeerWhatWeTake(s, announcement.targets, targets, peerId);
  });
}

/** Whether `earlier` gives `peerId` a bucket that `targets` gives us and we do not own yet. */
export function givesPeerWhatWeTake(
  s: MachineState,
  earlier: readonly (readonly (number | null)[])[],
  targets: readonly (readonly (number | null)[])[],
  peerId: number,
): boolean {
  return targets.some((target, r) => {
    const before = earlier[r];
    if (before === undefined || before.length !== target.length) return true;
    const owned = s.owned[r]!;
    return target.some((owner, b) => owner === s.hostId && !owned.has(b) && before[b] === peerId);
  });
}

/** Records that heartbeat `sequence` announced the current target. */
export function recordAnnouncement(s: MachineState, sequence: number, digestHex: string): void {
  const last = s.announced[s.announced.length - 1];
  if (last !== undefined && last.digest === digestHex) {
    last.lastSequence = sequence;
    return;
  }
  s.announced.push({
    digest: digestHex,
    firstSequence: sequence,
    lastSequence: sequence,
    targets: s.targets.map((t) => [...t]),
    identities: new Map(
      s.members
        .filter((id) => id !== s.hostId)
        .map((id) => {
          const peer = s.peers.get(id)!;
          return [id, { incarnation: peer.incarnation, generation: peer.heartbeat.generation }];
        }),
    ),
  });
  if (s.announced.length > announcementsMax) {
    const dropped = s.announced.shift()!;
    s.announcedFromSequence = dropped.lastSequence + 1;
  }
}

/**
 * Agreement: every member announces our membership and target digest in a report that counts
 * (`reportCounts`), and every heard peer that does not take part has heard us take part. The
 * peers whose check passed go into `s.agreeing` (all are checked, for that).
 */
export function agreement(
  s: MachineState,
  members: readonly number[],
  targets: readonly (readonly (number | null)[])[],
  digestHex: string,
): boolean {
  let agreed = true;
  for (const id of s.heardIds.concat(members)) {
    if (id === s.hostId) continue;
    if (peerAgrees(s, id, members, targets, digestHex)) s.agreeing.add(id);
    else agreed = false;
  }
  return agreed;
}

function peerAgrees(
  s: MachineState,
  id: number,
  members: readonly number[],
  targets: readonly (readonly (number | null)[])[],
  digestHex: string,
): boolean {
  const hb = s.peers.get(id)!.heartbeat;
  const ack = ackFor(hb, s.hostId, s.incarnation) ?? 0;
  if (!members.includes(id)) {
    // A heard peer that does not take part (stopped, suspended) may have started at the
    // same moment as we did, each seeing the other stopped and taking everything alone:
    // its report must show that it heard us taking part. From then on, if it starts, it
    // sees us as a member and needs our agreement.
    return ack >= s.participatingFromSequence;
  }
  return (
    sameList(hb.members, members) &&
    hex(hb.mapDigest) === digestHex &&
    reportCounts(s, id, hb, ack, digestHex, targets)
  );
}
