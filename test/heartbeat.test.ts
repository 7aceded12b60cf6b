// The heartbeat codec: round trips, size bounds, and a fuzz run proving that no datagram, however
// malformed, makes decoding throw or pass authentication.
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateConfig } from '../src/core/config.js';
import {
  type Heartbeat,
  clusterIdOf,
  datagramBytesMax,
  decodeFailures,
  decodeHeartbeat,
  encodeHeartbeat,
  heartbeatVersion,
  sameAnnouncement,
} from '../src/core/heartbeat.js';
import { hostConfig } from './support/mini-net.js';

const key = new Uint8Array(32).fill(9);
const clusterId = clusterIdOf('test');

const heartbeatArb: fc.Arbitrary<Heartbeat> = fc
  .record({
    hostId: fc.integer({ min: 1, max: 32 }),
    state: fc.constantFrom('started', 'draining', 'stopped', 'suspended'),
    settled: fc.boolean(),
    keptOut: fc.boolean(),
    incarnation: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    sequence: fc.integer({ min: 0, max: 0xffffffff }),
    generation: fc.integer({ min: 0, max: 0xffffffff }),
    configDigest: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    periodMs: fc.integer({ min: 20, max: 10000 }),
    tolerance: fc.integer({ min: 2, max: 100 }),
    mode: fc.constantFrom('unicast', 'multicast', 'igmp', 'routed'),
    // Routed mode's held bitmaps: on every rule or on none.
    withHeld: fc.boolean(),
    hashSeed: fc.integer({ min: 0, max: 0xffffffff }),
    heard: fc.uniqueArray(fc.integer({ min: 1, max: 32 })).map((a) => a.sort((x, y) => x - y)),
    members: fc.uniqueArray(fc.integer({ min: 1, max: 32 })).map((a) => a.sort((x, y) => x - y)),
    mapDigest: fc.uint8Array({ minLength: 8, maxLength: 8 }),
    acks: fc.uniqueArray(fc.integer({ min: 1, max: 32 }), { maxLength: 32 }).chain((hosts) =>
      fc.tuple(
        ...hosts
          .sort((a, b) => a - b)
          .map((host) =>
            fc.record({
              host: fc.constant(host),
              incarnation: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
              sequence: fc.integer({ min: 0, max: 0xffffffff }),
            }),
          ),
      ),
    ),
    rules: fc.array(
      fc.integer({ min: 1, max: 120 }).chain((buckets) =>
        fc.record({
          buckets: fc.constant(buckets),
          ruleDigest: fc.integer({ min: 0, max: 0xffffffff }),
          loadWeight: fc.integer({ min: 0, max: 100 }),
          handlingPriority: fc.integer({ min: 1, max: 32 }),
          state: fc.constantFrom('enabled', 'draining', 'disabled'),
          healthy: fc.boolean(),
          owned: fc
            .uniqueArray(fc.integer({ min: 0, max: buckets - 1 }))
            .map((a) => a.sort((x, y) => x - y)),
          held: fc
            .uniqueArray(fc.integer({ min: 0, max: buckets - 1 }))
            .map((a) => a.sort((x, y) => x - y)),
        }),
      ),
      { maxLength: 8 },
    ),
  })
  .map(
    ({ withHeld, rules, ...r }) =>
      ({
        ...r,
        rules: rules.map(({ held, ...rule }) => (withHeld ? { ...rule, held } : rule)),
        clusterId,
      }) as Heartbeat,
  );

describe('heartbeat codec', () => {
  it('round-trips every field', () => {
    fc.assert(
      fc.property(heartbeatArb, (hb) => {
        const bytes = encodeHeartbeat(hb, key);
        expect(bytes.length).toBeLessThanOrEqual(datagramBytesMax);
        const decoded = decodeHeartbeat(bytes, key, clusterId);
        expect(decoded.ok).toBe(true);
        if (decoded.ok) expect(decoded.heartbeat).toEqual(hb);
      }),
      { numRuns: 500 },
    );
  });

  it('names the reason for each kind of bad datagram', () => {
    const hb = fc.sample(heartbeatArb, { numRuns: 1, seed: 1 })[0]!;
    const bytes = encodeHeartbeat(hb, key);
    const reason = (b: Uint8Array, k = key, id = clusterId) => {
      const r = decodeHeartbeat(b, k, id);
      return r.ok ? 'ok' : r.reason;
    };
    expect(reason(bytes)).toBe('ok');
    expect(reason(bytes.subarray(0, 10))).toBe('truncated');
    expect(reason(bytes.subarray(0, bytes.length - 1))).toBe('truncated');
    expect(reason(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, ...bytes.subarray(8)]))).toBe(
      'bad magic',
    );
    const version = bytes.slice();
    version[4] = heartbeatVersion + 1;
    expect(reason(version)).toBe('unknown version');
    expect(reason(bytes, key, clusterIdOf('other'))).toBe('other cluster');
    expect(reason(bytes, new Uint8Array(32).fill(1))).toBe('bad authentication');
    const flipped = bytes.slice();
    flipped[30]! ^= 1;
    expect(reason(flipped)).toBe('bad authentication');
    const longer = new Uint8Array(bytes.length + 1);
    longer.set(bytes);
    expect(reason(longer)).toBe('malformed field');
  });

  it('rejects authenticated but malformed fields', () => {
    const hb = fc.sample(heartbeatArb, { numRuns: 1, seed: 2 })[0]!;
    const resign = (bytes: Uint8Array) => {
      const body = bytes.subarray(0, bytes.length - 32);
      bytes.set(createHmac('sha256', key).update(body).digest(), bytes.length - 32);
      return bytes;
    };
    const corrupt = (offset: number, value: number, held?: number[]) => {
      const bytes = encodeHeartbeat(
        {
          ...hb,
          acks: [],
          rules: [
            {
              buckets: 60,
              ruleDigest: 1,
              loadWeight: 50,
              handlingPriority: 1,
              state: 'enabled',
              healthy: true,
              owned: [0, 59],
              ...(held === undefined ? {} : { held }),
            },
          ],
        },
        key,
      );
      bytes[offset] = value;
      return decodeHeartbeat(resign(bytes), key, clusterId);
    };
    expect(corrupt(0, 0x4e).ok).toBe(true); // unchanged magic byte: still valid
    expect(corrupt(6, 0)).toEqual({ ok: false, reason: 'malformed field' }); // host id 0
    expect(corrupt(6, 33)).toEqual({ ok: false, reason: 'malformed field' }); // host id 33
    expect(corrupt(7, 9)).toEqual({ ok: false, reason: 'malformed field' }); // unknown state
    expect(corrupt(47, 5)).toEqual({ ok: false, reason: 'malformed field' }); // unknown mode
    expect(corrupt(74 + 6, 101)).toEqual({ ok: false, reason: 'malformed field' }); // weight 101
    expect(corrupt(74 + 8, 7)).toEqual({ ok: false, reason: 'malformed field' }); // rule state
    expect(corrupt(74 + 9 + 7, 0xff)).toEqual({ ok: false, reason: 'malformed field' }); // bits past bucket 59
    // Routed mode's held bitmap follows the owned one, canonical too.
    const held = corrupt(0, 0x4e, [1, 58]);
    expect(held.ok && held.heartbeat.rules[0]!.held).toEqual([1, 58]);
    expect(held.ok && held.heartbeat.rules[0]!.owned).toEqual([0, 59]);
    expect(corrupt(74 + 9 + 8 + 7, 0xff, [1])).toEqual({ ok: false, reason: 'malformed field' });
    expect(corrupt(5, 8)).toEqual({ ok: false, reason: 'malformed field' }); // unknown flag
  });

  it('survives 100,000 random and mutated datagrams without throwing or false acceptance', () => {
    const samples = fc
      .sample(heartbeatArb, { numRuns: 50, seed: 42 })
      .map((hb) => encodeHeartbeat(hb, key));
    const counts = new Map<string, number>();
    let accepted = 0;
    let state = 0x12345678;
    const random = () => {
      // xorshift32: deterministic, so a failure replays.
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) / 0x1_0000_0000;
    };
    for (let i = 0; i < 100_000; i++) {
      let bytes: Uint8Array;
      let base: Uint8Array | undefined;
      const kind = i % 4;
      if (kind === 0) {
        bytes = new Uint8Array(Math.floor(random() * 1500));
        for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256);
      } else {
        base = samples[Math.floor(random() * samples.length)]!;
        bytes = base.slice();
        if (kind === 1) {
          const flips = 1 + Math.floor(random() * 4);
          for (let f = 0; f < flips; f++)
            bytes[Math.floor(random() * bytes.length)]! ^= 1 << Math.floor(random() * 8);
        } else if (kind === 2) {
          bytes = bytes.subarray(0, Math.floor(random() * bytes.length));
        } else {
          // Keep magic, version and cluster id (so the fuzz reaches authentication), scramble the rest.
          for (let j = 16; j < bytes.length; j++)
            if (random() < 0.05) bytes[j] = Math.floor(random() * 256);
        }
      }
      const unchanged =
        base !== undefined && bytes.length === base.length && bytes.every((b, j) => b === base[j]);
      const result = decodeHeartbeat(bytes, key, clusterId);
      if (unchanged) {
        expect(result.ok).toBe(true);
      } else if (result.ok) {
        accepted++;
      } else {
        counts.set(result.reason, (counts.get(result.reason) ?? 0) + 1);
      }
    }
    // Only an unchanged datagram may pass: any change fails authentication or a field check.
    expect(accepted).toBe(0);
    for (const reason of counts.keys()) expect(decodeFailures).toContain(reason);
    expect(counts.get('bad authentication')).toBeGreaterThan(10_000);
  });

  it('config validation refuses a config whose heartbeat would not fit one datagram', () => {
    const rules = Array.from({ length: 12 }, (_, i) => ({
      ports: 1000 + i,
      protocol: 'tcp',
      buckets: 1024,
    }));
    const result = validateConfig({
      cluster: {
        name: 'big',
        clusterIps: ['198.18.0.100'],
        interface: 'eth0',
        keyFile: '/k',
        portRules: rules,
      },
      host: { id: 1, dedicatedIp: '198.18.0.11/24' },
    });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors[0]!.message).toMatch(/datagram limit/);
    // NLB's maximum of 32 rules with its 60 buckets fits.
    const nlbMax = validateConfig({
      cluster: {
        name: 'max',
        clusterIps: ['198.18.0.100'],
        interface: 'eth0',
        keyFile: '/k',
        portRules: Array.from({ length: 32 }, (_, i) => ({ ports: 1000 + i, protocol: 'tcp' })),
      },
      host: { id: 1, dedicatedIp: '198.18.0.11/24' },
    });
    expect(nlbMax.ok).toBe(true);
  });

  it('a real host config produces a heartbeat within bounds', () => {
    expect(hostConfig(1).cluster.portRules.length).toBe(1);
  });

  it('calls two heartbeats the same announcement exactly when all but the sequences match', () => {
    // The oracle: their encodings once the sequence and the acked sequences are zeroed.
    const normalized = (hb: Heartbeat): string =>
      Buffer.from(
        encodeHeartbeat(
          { ...hb, sequence: 0, acks: hb.acks.map((a) => ({ ...a, sequence: 0 })) },
          key,
        ),
      ).toString('hex');
    const fields = Object.keys(fc.sample(heartbeatArb, 1)[0]!) as (keyof Heartbeat)[];
    fc.assert(
      fc.property(
        heartbeatArb,
        heartbeatArb,
        fc.subarray(fields),
        fc.integer({ min: 0, max: 0xffffffff }),
        (a, other, taken, sequence) => {
          // b is a with some fields taken from another heartbeat and its sequences moved on.
          const b: Heartbeat = {
            ...a,
            ...Object.fromEntries(taken.map((f) => [f, other[f]])),
            sequence,
          };
          const moved = { ...b, acks: b.acks.map((x) => ({ ...x, sequence: x.sequence + 1 })) };
          const expected = normalized(a) === normalized(moved);
          expect(sameAnnouncement(a, moved)).toBe(expected);
          expect(sameAnnouncement(moved, a)).toBe(expected);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
