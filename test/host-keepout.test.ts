// The keep-out rules alone (src/core/host-keepout.ts): a peer's compatibility, keeping out for
// a stronger side's config, and for another host on our id that was there first.
import { describe, expect, it } from 'vitest';
import {
  checkCompatible,
  reviewConfigKeepOut,
  reviewDuplicateKeepOut,
} from '../src/core/host-keepout.js';
import {
  addPeer,
  eventNames,
  heartbeatFor,
  hostConfig,
  machineState,
} from './support/host-state.js';

describe('host-keepout', () => {
  it('names what differs in a peer of another config, and clears it once the peer matches', () => {
    const s = machineState(1);
    const peer = addPeer(
      s,
      heartbeatFor(s, 2, { configDigest: new Uint8Array(8), periodMs: s.periodMs + 1 }),
      0,
    );
    checkCompatible(s, 0, peer);
    expect(peer.mismatch).toBe(`heartbeat.periodMs ${s.periodMs + 1} vs ${s.periodMs}`);
    expect(eventNames(s)).toEqual(['config mismatch']);
    peer.heartbeat = heartbeatFor(s, 2);
    checkCompatible(s, 1, peer);
    expect(peer.mismatch).toBeUndefined();
  });

  it('flags two hosts with one handling priority on a single-host rule', () => {
    const config = {
      cluster: {
        portRules: [{ vip: 'all', ports: 80, protocol: 'tcp', mode: 'single', affinity: 'none' }],
      },
    };
    const s = machineState(1, { config: hostConfig(1, config) });
    const rules = heartbeatFor(s, 2).rules.map((rule) => ({ ...rule, handlingPriority: 1 }));
    const peer = addPeer(s, heartbeatFor(s, 2, { rules }), 0);
    checkCompatible(s, 0, peer);
    expect(peer.mismatch).toBe('portRules[0] handling priority 1 on both hosts');
  });

  it('keeps out while a larger cluster of another config is heard, and admits once it is not', () => {
    const s = machineState(3);
    s.owned[0]!.add(1);
    const peer = addPeer(s, heartbeatFor(s, 1, { members: [1, 2] }), 0);
    peer.mismatch = 'hashSeed 1 vs 2';
    reviewConfigKeepOut(s, 0);
    expect(s.keptOut).toBe('config mismatch with host 1: hashSeed 1 vs 2');
    expect(s.owned[0]!.size).toBe(0);
    peer.heard = false;
    reviewConfigKeepOut(s, 1);
    expect(s.keptOut).toBeUndefined();
    expect(eventNames(s)).toEqual(['kept out', 'admitted']);
  });

  it('keeps out while an earlier process on our id is live, and admits after it falls silent', () => {
    const s = machineState(1, { incarnation: 100 });
    const hb = heartbeatFor(s, 1, { incarnation: 50 });
    s.rivals.set(50, { firstHeardMs: 0, lastHeardMs: 0, lastSequence: 1, heartbeat: hb });
    reviewDuplicateKeepOut(s, 1);
    expect(s.keptOut).toMatch(/^duplicate host id 1/);
    expect(s.participating).toBe(false);
    reviewDuplicateKeepOut(s, s.deadAfterMs);
    expect(s.keptOut).toBeUndefined();
    expect(eventNames(s)).toEqual(['duplicate host id', 'admitted']);
  });

  it('stays in against a later process on our id', () => {
    const s = machineState(1, { incarnation: 100 });
    const hb = heartbeatFor(s, 1, { incarnation: 200 });
    s.rivals.set(200, { firstHeardMs: 0, lastHeardMs: 0, lastSequence: 1, heartbeat: hb });
    reviewDuplicateKeepOut(s, 1);
    expect(s.keptOut).toBeUndefined();
  });
});
