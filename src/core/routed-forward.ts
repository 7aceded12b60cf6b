// Routed mode (`cluster.mode: routed`, docs/routed.md#forwarding): the router spreads flows over
// the hosts by ECMP, so a packet may reach any host; each host forwards a packet whose bucket
// another host serves to that host, and gives a non-SYN packet of a connection it does not know,
// in a bucket it took over from a live host, a second chance at that previous owner. This module
// computes, from what the host machine already knows, the two maps the data plane needs:
//
//   forward       per rule, each bucket this host does not own -> the host to send it to: the
//                 live peer that claims it now (its last heartbeat), else its target owner when
//                 that is a live peer; a bucket with neither (in flight to this host, or whose
//                 owner is dead and not replaced yet) is absent and handled locally (dropped).
//   secondChance  per rule, each bucket this host owns or is about to own (its target) -> the
//                 live peer that released it, until `cluster.routed.secondChanceMs` passes, that
//                 peer dies (its connections died with it: the orphan reset applies), it
//                 reports itself stopped or suspended (it holds no connection any more), or its
//                 heartbeat no longer lists the bucket as held (its last connection there ended).
//
// Releases are noted as heartbeats arrive (`noteReleases`): a bucket a live peer claimed in one
// heartbeat and not in its next one. Only routed mode keeps them, so the other modes pay nothing.
// The other side: each host lists in its heartbeat, per rule, the buckets it released and may
// still hold connections in (`held`): from the heartbeat that releases a bucket until a count of
// its connections begun after the kernel let go of the bucket finds none there
// (`connectionsCounted`, the daemon's `connectionsHeld` report), or `secondChanceMs` passes.
// Part of the host machine (host.ts); pure.
import type { Heartbeat } from './heartbeat.js';
import { defaultHost } from './host-decision.js';
import { type DeadClaim, type MachineState, type PeerRecord, takesPart } from './host-state.js';

/** A bucket and the host that serves it (forward) or served it before (second chance). */
export type BucketHost = readonly [bucket: number, host: number];

export interface RoutedRule {
  /** Sorted by bucket. */
  readonly forward: readonly BucketHost[];
  /** Sorted by bucket. */
  readonly secondChance: readonly BucketHost[];
}

export interface RoutedOwnership {
  /** One entry per cluster port rule, in config order. */
  readonly rules: readonly RoutedRule[];
  /** VIP traffic no port rule covers goes to the default host: here when it is a live peer. */
  readonly uncovered: number | undefined;
  /**
   * Each host named in `rules`, with the address its heartbeats come from (its dedicated IP,
   * one of cluster.heartbeat.peers): where the data plane sends its packets. Sorted by host.
   */
  readonly addresses: readonly (readonly [host: number, address: string])[];
}

/** Whether the peer is heard, not declared dead, and speaks from an address. */
function live(peer: PeerRecord | undefined): peer is PeerRecord & { address: string } {
  return (
    peer !== undefined &&
    peer.heard &&
    peer.declaredDeadAtMs === undefined &&
    peer.mismatch === undefined &&
    peer.address !== undefined
  );
}

/**
 * Notes the buckets `peer` released between its heartbeats `before` and `after` (routed mode
 * only): a packet of one of its connections that reaches the bucket's new owner goes back to it.
 *
 * A peer this host forgot without declaring it dead (resumeIfPaused: this host did not run
 * for a detection time) still counts when the same process speaks again: its last heartbeat
 * before the pause is what it held then, and on this host's return it may release buckets to
 * it in the very heartbeat that proves it again. A dead peer's buckets are orphans, and a
 * restarted one's old claims died with the old process: neither gets a second chance.
 */
export function noteReleases(
  s: MachineState,
  now: number,
  peer: PeerRecord,
  before: Heartbeat,
  after: Heartbeat,
): void {
  if (s.config.cluster.mode !== 'routed') return;
  if (peer.declaredDeadAtMs !== undefined || before.incarnation !== after.incarnation) return;
  const holdMs = s.config.cluster.routed?.secondChanceMs ?? 0;
  before.rules.forEach((rule, r) => {
    const released = s.releasedClaims[r];
    const next = after.rules[r];
    if (released === undefined || next === undefined || rule.owned === next.owned) return;
    const still = new Set(next.owned);
    for (const b of rule.owned) {
      if (!still.has(b)) released.set(b, { host: peer.id, untilMs: now + holdMs });
    }
  });
}

/**
 * Notes what this host released since the last call (routed mode only; called after each
 * decision, before the heartbeat that announces it is made): a released bucket is held from now
 * on, a bucket owned again is not, and a bucket held for `secondChanceMs` is let go (every peer's
 * second chance for it has ended by then).
 */
export function noteOwnReleases(s: MachineState, now: number): void {
  if (s.config.cluster.mode !== 'routed') return;
  const holdMs = s.config.cluster.routed?.secondChanceMs ?? 0;
  s.owned.forEach((owned, r) => {
    const held = s.held[r];
    const base = s.heldBase[r];
    if (held === undefined || base === undefined) return;
    for (const b of base) if (!owned.has(b)) held.set(b, now);
    for (const [b, at] of held) if (owned.has(b) || at + holdMs <= now) held.delete(b);
    s.heldBase[r] = new Set(owned);
  });
}

/**
 * The daemon counted this host's connections in a count begun at `countedAtMs`: `buckets`, per
 * rule, those with one at least. A bucket released before the count began (its kernel release
 * was then carried out: the driver begins a count only between steps) and without a connection
 * is held no longer; the heartbeat that says so ends its second chance on the new owner.
 */
export function connectionsCounted(
  s: MachineState,
  countedAtMs: number,
  buckets: readonly (readonly number[])[],
): { code: 'ok'; message: string } {
  let ended = 0;
  s.held.forEach((held, r) => {
    const busy = new Set(buckets[r] ?? []);
    for (const [b, at] of held) {
      if (at < countedAtMs && !busy.has(b)) {
        held.delete(b);
        ended++;
      }
    }
  });
  return { code: 'ok', message: `${ended} released bucket(s) without connections` };
}

/** Routed mode: the buckets of rule `r` this host holds, for its heartbeat (sorted). */
export function heldBuckets(s: MachineState, r: number): readonly number[] | undefined {
  if (s.config.cluster.mode !== 'routed') return undefined;
  return [...(s.held[r]?.keys() ?? [])].sort((a, b) => a - b);
}

/** The live peer that claims each bucket in its last heartbeat, per rule. */
function liveClaims(s: MachineState): Map<number, number>[] {
  const claims = s.config.cluster.portRules.map(() => new Map<number, number>());
  for (const peer of s.peers.values()) {
    if (!live(peer)) continue;
    peer.heartbeat.rules.forEach((rule, r) => {
      const map = claims[r];
      if (map === undefined) return;
      for (const b of rule.owned) if (!map.has(b)) map.set(b, peer.id);
    });
  }
  return claims;
}

/**
 * The previous owner of bucket `b` of rule `r`, while it may still hold connections there:
 * alive, within `secondChanceMs`, still taking part, and listing the bucket as held. A host that
 * reports itself stopped or suspended has no connections left (a drainstop ends when its last
 * one does; a stop or a suspend cuts them), so its second chances end then, before the timeout;
 * one that counted no connection left in the bucket says so by no longer holding it.
 */
function secondChanceOf(
  s: MachineState,
  claim: DeadClaim | undefined,
  now: number,
  r: number,
  b: number,
): number | undefined {
  if (claim === undefined || claim.untilMs <= now || claim.host === s.hostId) return undefined;
  const peer = s.peers.get(claim.host);
  if (!live(peer) || !takesPart(peer.heartbeat.state)) return undefined;
  const held = peer.heartbeat.rules[r]?.held;
  return held === undefined || held.includes(b) ? claim.host : undefined;
}

/**
 * Per rule, each bucket a live peer that takes part lists as held, and that peer (the lowest id
 * when several do). It covers the releases this host could not see happen: a peer that released
 * buckets to it in the first heartbeat it took from that peer (a newcomer, a restart), or while
 * it did not run (a pause).
 */
function liveHolders(s: MachineState): Map<number, number>[] {
  const holders = s.config.cluster.portRules.map(() => new Map<number, number>());
  const peers = [...s.peers.values()].sort((a, b) => a.id - b.id);
  for (const peer of peers) {
    if (!live(peer) || !takesPart(peer.heartbeat.state)) continue;
    peer.heartbeat.rules.forEach((rule, r) => {
      const map = holders[r];
      if (map !== undefined) for (const b of rule.held ?? []) if (!map.has(b)) map.set(b, peer.id);
    });
  }
  return holders;
}

/** The maps above for the machine's state now. */
export function routedOwnership(s: MachineState, now: number): RoutedOwnership {
  const claims = liveClaims(s);
  const holders = liveHolders(s);
  const named = new Set<number>();
  const rules = s.config.cluster.portRules.map((rule, r): RoutedRule => {
    const owned = s.owned[r] ?? new Set<number>();
    const target = s.targets[r] ?? [];
    const released = s.releasedClaims[r] ?? new Map<number, DeadClaim>();
    const forward: BucketHost[] = [];
    const secondChance: BucketHost[] = [];
    for (let b = 0; b < rule.buckets; b++) {
      const owner = target[b];
      if (owned.has(b) || owner === s.hostId) {
        // The release this host saw, else a peer that says it holds the bucket.
        const previous = secondChanceOf(s, released.get(b), now, r, b) ?? holders[r]?.get(b);
        if (previous !== undefined) secondChance.push([b, previous]);
        if (owned.has(b)) continue;
      }
      const claimant = claims[r]?.get(b);
      const to =
        claimant ??
        (owner !== null && owner !== undefined && owner !== s.hostId && live(s.peers.get(owner))
          ? owner
          : undefined);
      if (to !== undefined) forward.push([b, to]);
    }
    for (const [, host] of [...forward, ...secondChance]) named.add(host);
    return { forward, secondChance };
  });
  const defaultId = defaultHost(s);
  const uncovered =
    defaultId !== null && defaultId !== s.hostId && live(s.peers.get(defaultId))
      ? defaultId
      : undefined;
  if (uncovered !== undefined) named.add(uncovered);
  const addresses = [...named]
    .sort((a, b) => a - b)
    .map((host) => [host, s.peers.get(host)!.address!] as const);
  return { rules, uncovered, addresses };
}
