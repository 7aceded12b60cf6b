// Authenticated garbage through the whole core (issue 9, item 4): heartbeats that pass the HMAC
// because they were re-signed with the cluster key, as a faulty peer (or a bug) could send them.
// The decoder's own fuzz (heartbeat.test.ts) covers unauthenticated bytes; here every datagram
// reaches HostMachine.step, which must never throw and must keep its outputs well formed.
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Heartbeat,
  clusterIdOf,
  decodeHeartbeat,
  encodeHeartbeat,
} from '../src/core/heartbeat.js';
import { hmacBytes } from '../src/core/heartbeat-size.js';
import type { Ready } from '../src/core/protocol.js';
import { MiniNet, hostConfig, testKey } from './support/mini-net.js';

const clusterId = clusterIdOf('test');

function converged(ids: number[]): MiniNet {
  const net = new MiniNet(1);
  for (const id of ids) net.add(hostConfig(id));
  net.run(2000);
  return net;
}

function latestFrom(net: MiniNet, from: number): Heartbeat {
  const bytes = net.captured.filter((d) => d.from === from).at(-1)!.bytes;
  const decoded = decodeHeartbeat(bytes, testKey, clusterId);
  if (!decoded.ok) throw new Error(decoded.reason);
  return decoded.heartbeat;
}

/** What every Ready must look like, whatever came in. */
function checkReady(ready: Ready, nowMs: number, rules: number, buckets: number): void {
  expect(Number.isFinite(ready.wakeAtMs)).toBe(true);
  expect(ready.wakeAtMs).toBeGreaterThanOrEqual(nowMs);
  if (ready.ownership !== undefined) {
    expect(ready.ownership.rules.length).toBe(rules);
    for (const rule of ready.ownership.rules) {
      for (const b of rule.owned) expect(b).toBeLessThan(buckets);
    }
  }
}

describe('authenticated heartbeats through the core', () => {
  it('a heartbeat with the right config digest and a missing rule is a mismatch, not a crash', () => {
    const net = converged([1, 2]);
    const hb = latestFrom(net, 2);
    const faulty: Heartbeat = { ...hb, sequence: hb.sequence + 1, rules: [] };
    // A peer that announces it owns nothing may still own buckets: what it says cannot be
    // checked, so this story is about not crashing, not about double ownership.
    net.allowConflictUntilMs = Infinity;
    expect(() => net.inject(1, encodeHeartbeat(faulty, testKey))).not.toThrow();
    const peer = net.hosts
      .get(1)!
      .details()
      .peers.find((p) => p.id === 2)!;
    expect(peer.mismatch).toMatch(/port rules differ although the config digest matches/);
    expect(net.events.some((e) => e.event === 'config mismatch' && e.by === 1)).toBe(true);
    // The faulty peer is no member until its next (genuine) heartbeat.
    expect(net.hosts.get(1)!.status().members).toEqual([1]);
  });

  const ruleArb = (buckets: number) =>
    fc.record({
      buckets: fc.oneof(fc.constant(buckets), fc.integer({ min: 1, max: 1024 })),
      ruleDigest: fc.integer({ min: 0, max: 0xffffffff }),
      loadWeight: fc.integer({ min: 0, max: 100 }),
      handlingPriority: fc.integer({ min: 1, max: 32 }),
      state: fc.constantFrom('enabled' as const, 'draining' as const, 'disabled' as const),
      healthy: fc.boolean(),
      owned: fc
        .uniqueArray(fc.integer({ min: 0, max: buckets - 1 }), { maxLength: buckets })
        .map((a) => a.sort((x, y) => x - y)),
    });
  const hostIdArb = fc.integer({ min: 1, max: 32 });
  const hostListArb = fc.uniqueArray(hostIdArb).map((a) => a.sort((x, y) => x - y));

  /** One field of a genuine heartbeat changed (or several), then re-signed. */
  function mutationArb(base: Heartbeat): fc.Arbitrary<Heartbeat> {
    return fc
      .record(
        {
          hostId: fc.oneof(fc.constant(base.hostId), hostIdArb),
          state: fc.constantFrom(
            'started' as const,
            'draining' as const,
            'stopped' as const,
            'suspended' as const,
          ),
          settled: fc.boolean(),
          keptOut: fc.boolean(),
          incarnation: fc.oneof(
            fc.constant(base.incarnation),
            fc.constant(base.incarnation + 1),
            fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
          ),
          sequence: fc.oneof(
            fc.integer({ min: base.sequence + 1, max: base.sequence + 50 }),
            fc.integer({ min: 0, max: 0xffffffff }),
          ),
          generation: fc.integer({ min: 0, max: 0xffffffff }),
          periodMs: fc.oneof(fc.constant(base.periodMs), fc.integer({ min: 1, max: 65535 })),
          tolerance: fc.oneof(fc.constant(base.tolerance), fc.integer({ min: 1, max: 255 })),
          heard: hostListArb,
          members: hostListArb,
          mapDigest: fc.oneof(
            fc.constant(base.mapDigest),
            fc.uint8Array({ minLength: 8, maxLength: 8 }),
          ),
          acks: fc.oneof(
            fc.constant(base.acks),
            fc.constant([]),
            fc.constant(base.acks.map((a) => ({ ...a, sequence: a.sequence + 1000 }))),
          ),
          rules: fc.oneof(
            fc.constant(base.rules),
            fc.constant(base.rules.slice(0, -1)),
            fc.array(ruleArb(base.rules[0]?.buckets ?? 60), { maxLength: 4 }),
          ),
        },
        { requiredKeys: [] },
      )
      .map((changes) => ({ ...base, ...changes }));
  }

  it('never throws on re-signed mutations of genuine heartbeats, and its outputs stay well formed', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 0, max: 40 })), {
          minLength: 1,
          maxLength: 30,
        }),
        fc.infiniteStream(fc.nat()),
        (plan, seeds) => {
          const net = converged([1, 2, 3]);
          // A key holder that lies can make hosts take one bucket twice (it is trusted); what
          // is checked here is that nothing throws and every output stays well formed.
          net.allowConflictUntilMs = Infinity;
          const seedIterator = seeds[Symbol.iterator]();
          for (const [target, waitMs] of plan) {
            const from = target === 3 ? 1 : target + 1;
            const base = latestFrom(net, from);
            const [mutated] = fc.sample(mutationArb(base), {
              numRuns: 1,
              seed: seedIterator.next().value as number,
            });
            let bytes: Uint8Array;
            try {
              bytes = encodeHeartbeat(mutated!, testKey);
            } catch {
              continue; // not encodable (too large): nobody could send it
            }
            const host = net.hosts.get(target)!;
            const ready = host.step({ kind: 'datagram', nowMs: net.nowMs, bytes });
            checkReady(ready, net.nowMs, 1, 60);
            net.run(net.nowMs + waitMs);
          }
          for (const host of net.hosts.values()) {
            expect(host.details().peers.length).toBeLessThanOrEqual(31);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('100,000 byte-level mutations, re-signed, through HostMachine.step without a throw', () => {
    const net = converged([1, 2, 3]);
    const genuine = net.captured.slice(-60).map((d) => d.bytes);
    const host = net.hosts.get(1)!;
    // A small deterministic generator: the run is the same every time, and a failure names
    // the datagram by its index.
    let state = 0x9e3779b9;
    const next = (): number => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return state >>> 0;
    };
    let accepted = 0;
    let nowMs = net.nowMs;
    for (let i = 0; i < 100_000; i++) {
      const base = genuine[next() % genuine.length]!;
      const body = base.slice(0, base.length - hmacBytes);
      const flips = 1 + (next() % 4);
      for (let f = 0; f < flips; f++) body[next() % body.length] = next() & 0xff;
      const mac = createHmac('sha256', testKey).update(body).digest();
      const bytes = new Uint8Array(body.length + hmacBytes);
      bytes.set(body);
      bytes.set(mac, body.length);
      if (decodeHeartbeat(bytes, testKey, clusterId).ok) accepted++;
      nowMs += 0.05;
      let ready: Ready;
      try {
        ready = host.step({ kind: 'datagram', nowMs, bytes });
      } catch (error) {
        throw new Error(`datagram ${i} threw: ${String(error)}`, { cause: error });
      }
      if (!Number.isFinite(ready.wakeAtMs) || ready.wakeAtMs < nowMs) {
        throw new Error(`datagram ${i}: wakeAtMs ${ready.wakeAtMs}`);
      }
    }
    // Enough of them decode to exercise the core, not just the decoder.
    expect(accepted).toBeGreaterThan(10_000);
    expect(host.details().peers.length).toBeLessThanOrEqual(31);
  });
});

describe('handling priority conflicts (NLB refuses them)', () => {
  const single = {
    cluster: {
      portRules: [{ vip: 'all', ports: 80, protocol: 'tcp', mode: 'single', affinity: 'none' }],
    },
  };

  it('two hosts with one handling priority on a single-host rule: a config mismatch on both sides, one keeps out', () => {
    const net = new MiniNet(1);
    net.add(hostConfig(1, { ...single, host: { handlingPriority: 5 } }));
    net.add(hostConfig(2, { ...single, host: { handlingPriority: 5 } }));
    net.run(3000);
    const mismatches = net.events.filter((e) => e.event === 'config mismatch');
    expect(new Set(mismatches.map((e) => e.by))).toEqual(new Set([1, 2]));
    for (const e of mismatches) {
      expect(e.differs).toMatch(/handling priority 5 on both hosts/);
      expect(e.hint).toMatch(/handlingPriority/);
    }
    // The side without the lowest id keeps out; host 1 serves the rule alone.
    expect(net.hosts.get(2)!.details().keptOut).toMatch(/config mismatch/);
    expect(net.ownership.get(1)!.rules[0]!.owned.length).toBe(60);
    expect(net.ownership.get(2)?.rules[0]?.owned ?? []).toEqual([]);
    // Fixed on host 2 and reloaded: admitted, and the two converge.
    net.command(2, {
      verb: 'reload',
      config: hostConfig(2, { ...single, host: { handlingPriority: 6 } }),
    });
    net.run(net.nowMs + 3000);
    expect(net.hosts.get(2)!.details().keptOut).toBeUndefined();
    for (const id of [1, 2]) expect(net.hosts.get(id)!.status().members).toEqual([1, 2]);
    expect(net.hosts.get(1)!.status().converged).toBe(true);
  });

  it('different priorities, or the same priority on a multiple-host rule, are fine', () => {
    const net = new MiniNet(1);
    net.add(hostConfig(1, { host: { handlingPriority: 5 } }));
    net.add(hostConfig(2, { host: { handlingPriority: 5 } }));
    net.run(3000);
    expect(net.events.filter((e) => e.event === 'config mismatch')).toEqual([]);
    expect(net.hosts.get(1)!.status().members).toEqual([1, 2]);
  });
});
