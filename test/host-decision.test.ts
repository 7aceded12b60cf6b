// The decision's phases alone (src/core/host-decision.ts), each given a state: membership,
// targets, release, agreement, acquisition, and the whole decision of a host alone.
import { describe, expect, it } from 'vitest';
import { agreement } from '../src/core/host-announcements.js';
import {
  acquire,
  computeTargets,
  decide,
  releaseOutsideTarget,
  updateMembership,
} from '../src/core/host-decision.js';
import { addPeer, eventNames, heartbeatFor, machineState } from './support/host-state.js';

describe('host-decision: membership', () => {
  it('counts a heard participating peer as a member only once it hears us back', () => {
    const s = machineState(1);
    addPeer(s, heartbeatFor(s, 2), 0);
    addPeer(s, heartbeatFor(s, 3, { heard: [1] }), 0);
    addPeer(s, heartbeatFor(s, 4, { state: 'stopped', heard: [1] }), 0);
    expect(updateMembership(s, 0)).toBe(true);
    expect(s.heardIds).toEqual([2, 3, 4]);
    expect(s.members).toEqual([1, 3]);
    expect(updateMembership(s, 0)).toBe(false);
  });

  it('has no members while this host does not take part', () => {
    const s = machineState(1);
    s.adminState = 'stopped';
    addPeer(s, heartbeatFor(s, 3, { heard: [1] }), 0);
    updateMembership(s, 0);
    expect(s.members).toEqual([]);
  });
});

describe('host-decision: targets, release and acquisition', () => {
  it('gives a lone member every bucket, and a host that does not take part none', () => {
    const s = machineState(1);
    const buckets = s.config.cluster.portRules[0]!.buckets;
    expect(computeTargets(s, 0, [1])).toEqual([Array.from({ length: buckets }, () => 1)]);
    s.adminState = 'stopped';
    expect(computeTargets(s, 0, [])).toEqual([Array.from({ length: buckets }, () => null)]);
  });

  it('releases what the target does not give us, with its orphan mark', () => {
    const s = machineState(1);
    s.owned[0] = new Set([0, 1]);
    s.orphans[0]!.set(1, { host: 3, untilMs: 1000 });
    releaseOutsideTarget(s, [[1, 2]]);
    expect([...s.owned[0]!]).toEqual([0]);
    expect(s.orphans[0]!.size).toBe(0);
  });

  it('acquires only buckets no heard peer claims, marking a dead host’s as orphans', () => {
    const s = machineState(1);
    const rules = heartbeatFor(s, 2).rules.map((rule) => ({ ...rule, owned: [1] }));
    addPeer(s, heartbeatFor(s, 2, { rules }), 0);
    s.heardIds = [2];
    s.deadClaims[0]!.set(2, { host: 9, untilMs: 500 });
    acquire(s, 100, [[1, 1, 1, 2]]);
    expect([...s.owned[0]!].sort()).toEqual([0, 2]);
    expect(s.orphans[0]!.get(2)).toEqual({ host: 9, untilMs: 500 });
  });

  it('agrees only with a member that reports our members and digest', () => {
    const s = machineState(1);
    const digest = new Uint8Array(8).fill(1);
    const hex = Buffer.from(digest).toString('hex');
    addPeer(s, heartbeatFor(s, 2, { members: [1, 2], mapDigest: digest }), 0);
    s.heardIds = [2];
    expect(agreement(s, [1, 2], [], hex)).toBe(true);
    expect(agreement(s, [1, 2], [], '00'.repeat(8))).toBe(false);
    s.peers.get(2)!.heartbeat = heartbeatFor(s, 2, { members: [2], mapDigest: digest });
    expect(agreement(s, [1, 2], [], hex)).toBe(false);
  });

  it('records every peer whose check passed, also after one that failed (the fast path reads them)', () => {
    const s = machineState(1);
    const digest = new Uint8Array(8).fill(1);
    const hex = Buffer.from(digest).toString('hex');
    addPeer(s, heartbeatFor(s, 2, { members: [1, 2, 3], mapDigest: new Uint8Array(8) }), 0);
    addPeer(s, heartbeatFor(s, 3, { members: [1, 2, 3], mapDigest: digest }), 0);
    s.heardIds = [2, 3];
    expect(agreement(s, [1, 2, 3], [], hex)).toBe(false);
    expect([...s.agreeing]).toEqual([3]);
  });
});

describe('host-decision: decide', () => {
  it('makes a host alone wait a detection window before taking every bucket', () => {
    const s = machineState(1);
    const buckets = s.config.cluster.portRules[0]!.buckets;
    decide(s, 0);
    expect(s.owned[0]!.size).toBe(0);
    expect(s.alone).toBe(true);
    expect(s.converged).toBe(false);
    expect(s.decisionMoved).toBe(false);
    decide(s, s.listenUntilMs);
    expect(s.owned[0]!.size).toBe(buckets);
    expect(s.decisionMoved).toBe(true);
    expect(s.converged).toBe(true);
    expect(eventNames(s)).toEqual(['converged']);
    // The same inputs again: a fixpoint, nothing moves.
    decide(s, s.listenUntilMs + 1);
    expect(s.decisionMoved).toBe(false);
  });
});
