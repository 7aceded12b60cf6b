// The peer table over time alone (src/core/host-peers.ts): expiry and the evidence that keeps a
// peer heard, the claims a dead member leaves, orphan expiry, and which incarnation speaks for
// an id.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { orphanHoldMs } from '../src/core/host.js';
import {
  activeIncarnation,
  evidenceTimes,
  expireOrphans,
  expirePeers,
  lastEvidenceMs,
} from '../src/core/host-peers.js';
import { addPeer, eventNames, heartbeatFor, machineState } from './support/host-state.js';

describe('host-peers: expiry', () => {
  it('declares a silent participating member dead after tolerance × period and keeps its claims', () => {
    const s = machineState(1);
    const peer = addPeer(s, heartbeatFor(s, 2, { rules: ownedRule(s, [3, 4]) }), 0);
    s.members = [1, 2];
    expirePeers(s, s.deadAfterMs - 1);
    expect(peer.heard).toBe(true);
    expirePeers(s, s.deadAfterMs);
    expect(peer.heard).toBe(false);
    expect(peer.declaredDeadAtMs).toBe(s.deadAfterMs);
    expect(eventNames(s)).toEqual(['host declared dead']);
    expect(s.deadClaims[0]!.get(3)).toEqual({ host: 2, untilMs: s.deadAfterMs + orphanHoldMs });
    expect(s.convergingReason).toBe('host 2 declared dead');
  });

  it('lets a stopped peer fall silent without declaring it dead', () => {
    const s = machineState(1);
    const peer = addPeer(s, heartbeatFor(s, 2, { state: 'stopped' }), 0);
    expirePeers(s, s.deadAfterMs);
    expect(peer.heard).toBe(false);
    expect(peer.declaredDeadAtMs).toBeUndefined();
    expect(eventNames(s)).toEqual([]);
  });

  it('keeps a peer heard while another heard peer acks a newer sequence from it', () => {
    const s = machineState(1);
    const quiet = addPeer(s, heartbeatFor(s, 2, { sequence: 5 }), 0);
    const acks = [{ host: 2, incarnation: 1, sequence: 6 }];
    addPeer(s, heartbeatFor(s, 3, { acks }), 500);
    expect(lastEvidenceMs(s, quiet)).toBe(500);
    expirePeers(s, s.deadAfterMs);
    expect(quiet.heard).toBe(true);
    expirePeers(s, 500 + s.deadAfterMs);
    expect(quiet.heard).toBe(false);
  });

  it('forgets orphan and dead claims when their hold ends', () => {
    const s = machineState(1);
    s.orphans[0]!.set(1, { host: 2, untilMs: 100 });
    s.orphans[0]!.set(2, { host: 2, untilMs: 200 });
    s.deadClaims[0]!.set(1, { host: 2, untilMs: 100 });
    expireOrphans(s, 100);
    expect([...s.orphans[0]!.keys()]).toEqual([2]);
    expect(s.deadClaims[0]!.size).toBe(0);
  });
});

describe('host-peers: activeIncarnation', () => {
  it('lets a restarted process replace its silent predecessor', () => {
    const s = machineState(1);
    const peer = addPeer(s, heartbeatFor(s, 2, { incarnation: 1 }), 0);
    const later = 2 * s.periodMs;
    const hb = heartbeatFor(s, 2, { incarnation: 2 });
    peer.incarnations.set(2, {
      firstHeardMs: later,
      lastHeardMs: later,
      lastSequence: 1,
      heartbeat: hb,
    });
    expect(activeIncarnation(s, later, peer)).toEqual({ incarnation: 2, coexists: false });
  });

  it('keeps the id with the older process while both speak (two hosts on one id)', () => {
    const s = machineState(1);
    const peer = addPeer(s, heartbeatFor(s, 2, { incarnation: 1 }), 0);
    const hb = heartbeatFor(s, 2, { incarnation: 2 });
    peer.incarnations.set(2, { firstHeardMs: 10, lastHeardMs: 20, lastSequence: 1, heartbeat: hb });
    peer.incarnations.get(1)!.lastHeardMs = 30;
    expect(activeIncarnation(s, 30, peer)).toEqual({ incarnation: 1, coexists: true });
  });
});

function ownedRule(s: ReturnType<typeof machineState>, owned: number[]) {
  return heartbeatFor(s, 2).rules.map((rule) => ({ ...rule, owned }));
}

describe('host-peers: evidence in one pass', () => {
  it('gives every heard peer the same time as lastEvidenceMs, whatever the acks say', () => {
    const ack = fc.record({
      host: fc.integer({ min: 1, max: 6 }),
      incarnation: fc.integer({ min: 1, max: 3 }),
      sequence: fc.integer({ min: 0, max: 20 }),
    });
    const peerArb = fc.record({
      id: fc.integer({ min: 2, max: 6 }),
      incarnation: fc.integer({ min: 1, max: 3 }),
      sequence: fc.integer({ min: 0, max: 20 }),
      heardAtMs: fc.integer({ min: 0, max: 1000 }),
      heard: fc.boolean(),
      acks: fc.array(ack, { maxLength: 8 }),
    });
    fc.assert(
      fc.property(fc.uniqueArray(peerArb, { selector: (p) => p.id, maxLength: 5 }), (peers) => {
        const s = machineState(1);
        for (const p of peers) {
          const hb = heartbeatFor(s, p.id, {
            incarnation: p.incarnation,
            sequence: p.sequence,
            acks: p.acks,
          });
          addPeer(s, hb, p.heardAtMs).heard = p.heard;
        }
        const times = evidenceTimes(s);
        for (const peer of s.peers.values()) {
          expect(times.get(peer)).toBe(peer.heard ? lastEvidenceMs(s, peer) : undefined);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
