// Bucket assignment (docs/protocol.md#assignment): the properties the protocol relies on,
// checked with fast-check, then an independent brute force on small cases.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type AssignInput,
  type AssignMember,
  assign,
  bucketQuotas,
  countMoves,
  minimumMoves,
} from '../src/core/assign.js';
import {
  BucketMap,
  counts,
  expectedQuotas,
  inputArb,
  isEligible,
  member,
  multipleInputArb,
  nulls,
} from './support/assign-inputs.js';

describe('assign: properties', () => {
  it('balance: eligible hosts own exactly their largest-remainder quotas, nobody else owns any', () => {
    fc.assert(
      fc.property(multipleInputArb({ bucketsMax: 200, membersMax: 32 }), (input) => {
        const target = assign(input);
        const expected = expectedQuotas(input.buckets, input.members);
        const owned = counts(target);
        if (expected.size === 0) {
          expect(target).toEqual(nulls(input.buckets));
          return;
        }
        expect(owned.get(null)).toBeUndefined();
        for (const [id, quota] of expected) {
          expect(owned.get(id) ?? 0).toBe(quota);
        }
        for (const owner of owned.keys()) {
          expect(expected.has(owner as number)).toBe(true);
        }
        // bucketQuotas lists the same quotas, without the zeros, in ascending id.
        const nonZero = [...expected].filter(([, q]) => q > 0).sort((a, b) => a[0] - b[0]);
        expect([...bucketQuotas('multiple', input.buckets, input.members)]).toEqual(nonZero);
      }),
      { numRuns: 300 },
    );
  });

  it('every bucket of a rule with an eligible host has exactly one eligible owner', () => {
    fc.assert(
      fc.property(inputArb(), (input) => {
        const target = assign(input);
        expect(target).toHaveLength(input.buckets);
        const anyEligible =
          input.mode === 'single'
            ? input.members.some((m) => !m.draining)
            : input.mode === 'multiple' && input.members.some((m) => isEligible(input, m.id));
        for (const owner of target) {
          if (!anyEligible) {
            expect(owner).toBeNull();
          } else if (input.mode === 'single') {
            expect(input.members.find((m) => m.id === owner)?.draining).toBe(false);
          } else {
            expect(isEligible(input, owner)).toBe(true);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('minimal movement: hosts at or under quota keep all, hosts over keep their lowest buckets', () => {
    fc.assert(
      fc.property(multipleInputArb(), (input) => {
        const target = assign(input);
        const quotas = bucketQuotas('multiple', input.buckets, input.members);
        const held = counts(input.owners);
        const keptSoFar = new Map<number, number>();
        input.owners.forEach((owner, bucket) => {
          if (owner === null || !quotas.has(owner)) {
            return;
          }
          const kept = keptSoFar.get(owner) ?? 0;
          if (held.get(owner)! <= quotas.get(owner)! || kept < quotas.get(owner)!) {
            expect(target[bucket]).toBe(owner);
            keptSoFar.set(owner, kept + 1);
          } else {
            // Released excess goes to a host that was under its quota.
            const taker = target[bucket]!;
            expect((held.get(taker) ?? 0) < quotas.get(taker)!).toBe(true);
          }
        });
        expect(countMoves(input.owners, target)).toBe(minimumMoves(input));
      }),
      { numRuns: 500 },
    );
  });

  it('minimal movement holds in every mode: moves === minimumMoves', () => {
    fc.assert(
      fc.property(inputArb(), (input) => {
        expect(countMoves(input.owners, assign(input))).toBe(minimumMoves(input));
      }),
      { numRuns: 300 },
    );
  });

  it('idempotence: assign(T) === T', () => {
    fc.assert(
      fc.property(inputArb(), (input) => {
        const target = assign(input);
        expect(assign({ ...input, owners: target })).toEqual(target);
      }),
      { numRuns: 300 },
    );
  });

  // The statement the protocol relies on. Let C be the current map and T = assign(C). During
  // convergence each bucket b with T[b] !== C[b] goes C[b] → null (the old owner released it,
  // or nobody owned it) → T[b] (the new owner acquired it), bucket by bucket in any order, and
  // buckets with T[b] === C[b] stay put. So any partial map P with
  //   P[b] === C[b]                     when T[b] === C[b],
  //   P[b] ∈ {C[b], null, T[b]}         otherwise,
  // is a state the cluster can pass through, and from every such P the hosts must compute the
  // same target again: assign(P) === T. (Kept buckets must not be null in P: a host that gave
  // up a bucket it keeps would be under quota and could be handed a different one.)
  it('stability: every partial map on the way from C to T yields T again', () => {
    const arb = inputArb({ bucketsMax: 128, membersMax: 10 }).chain((input) =>
      fc.tuple(
        fc.constant(input),
        fc.array(fc.integer({ min: 0, max: 2 }), {
          minLength: input.buckets,
          maxLength: input.buckets,
        }),
      ),
    );
    fc.assert(
      fc.property(arb, ([input, choices]) => {
        const target = assign(input);
        const partial = input.owners.map((current, bucket) => {
          if (target[bucket] === current) {
            return current;
          }
          return [current, null, target[bucket]!][choices[bucket]!]!;
        });
        expect(assign({ ...input, owners: partial })).toEqual(target);
      }),
      { numRuns: 1000 },
    );
  });

  it('stability along a whole convergence: release-before-acquire in a random order', () => {
    const arb = multipleInputArb({ bucketsMax: 64, membersMax: 6 }).chain((input) =>
      fc.tuple(fc.constant(input), fc.array(fc.nat(), { minLength: 1, maxLength: 40 })),
    );
    fc.assert(
      fc.property(arb, ([input, picks]) => {
        const target = assign(input);
        const state = [...input.owners];
        // Steps: release b (C[b] → null) or acquire b (null → T[b]); pick among those possible.
        for (const pick of picks) {
          const possible: number[] = [];
          state.forEach((owner, bucket) => {
            if (owner !== target[bucket]) {
              possible.push(bucket);
            }
          });
          if (possible.length === 0) {
            break;
          }
          const bucket = possible[pick % possible.length]!;
          state[bucket] = state[bucket] === null ? target[bucket]! : null;
          expect(assign({ ...input, owners: state })).toEqual(target);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('determinism: the order of members does not matter', () => {
    const arb = inputArb({ membersMax: 10 }).chain((input) =>
      fc.tuple(
        fc.constant(input),
        fc.shuffledSubarray([...input.members], {
          minLength: input.members.length,
          maxLength: input.members.length,
        }),
      ),
    );
    fc.assert(
      fc.property(arb, ([input, shuffled]) => {
        expect(assign({ ...input, members: shuffled })).toEqual(assign(input));
        expect(minimumMoves({ ...input, members: shuffled })).toBe(minimumMoves(input));
      }),
      { numRuns: 300 },
    );
  });

  it('single mode: the non-draining host with the best (priority, id) owns every bucket', () => {
    fc.assert(
      fc.property(inputArb({ mode: fc.constant('single') }), (input) => {
        const live = input.members.filter((m) => !m.draining);
        const best = live.reduce<AssignMember | undefined>(
          (acc, m) =>
            acc === undefined ||
            m.handlingPriority < acc.handlingPriority ||
            (m.handlingPriority === acc.handlingPriority && m.id < acc.id)
              ? m
              : acc,
          undefined,
        );
        expect(assign(input)).toEqual(
          new Array<number | null>(input.buckets).fill(best?.id ?? null),
        );
      }),
      { numRuns: 200 },
    );
  });

  it('disabled mode: every bucket is null', () => {
    fc.assert(
      fc.property(inputArb({ mode: fc.constant('disabled') }), (input) => {
        expect(assign(input)).toEqual(nulls(input.buckets));
      }),
      { numRuns: 100 },
    );
  });

  it('weight 0 and draining hosts end up with no bucket', () => {
    fc.assert(
      fc.property(multipleInputArb(), (input) => {
        const target = assign(input);
        for (const m of input.members) {
          if (m.loadWeight === 0 || m.draining) {
            expect(target).not.toContain(m.id);
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('assign: brute force on small cases', () => {
  /** Every map in which each host owns exactly its quota (quotas summing to B). */
  function* mapsWithQuotas(buckets: number, quotas: Map<number, number>): Generator<BucketMap> {
    const left = new Map(quotas);
    const map: BucketMap = [];
    function* fill(bucket: number): Generator<BucketMap> {
      if (bucket === buckets) {
        yield [...map];
        return;
      }
      for (const [id, count] of left) {
        if (count > 0) {
          left.set(id, count - 1);
          map.push(id);
          yield* fill(bucket + 1);
          map.pop();
          left.set(id, count);
        }
      }
    }
    yield* fill(0);
  }

  it('no map with the exact quotas needs fewer moves than assign', () => {
    fc.assert(
      fc.property(multipleInputArb({ bucketsMax: 6, membersMax: 3 }), (input) => {
        const target = assign(input);
        const quotas = expectedQuotas(input.buckets, input.members);
        const moves = countMoves(input.owners, target);
        if (quotas.size === 0) {
          expect(target).toEqual(nulls(input.buckets));
          return;
        }
        let fewest = Infinity;
        let count = 0;
        for (const candidate of mapsWithQuotas(input.buckets, quotas)) {
          fewest = Math.min(fewest, countMoves(input.owners, candidate));
          count += 1;
        }
        expect(count).toBeGreaterThan(0);
        expect(moves).toBe(fewest);
        expect(minimumMoves(input)).toBe(fewest);
      }),
      { numRuns: 400 },
    );
  });
});

describe('assign: speed', () => {
  it('1024 buckets over 32 hosts takes well under a millisecond', () => {
    const members = Array.from({ length: 32 }, (_, i) => member(i + 1, 1 + ((i * 37) % 100)));
    // A messy starting map: every host, departed hosts and holes, interleaved.
    const owners: BucketMap = Array.from({ length: 1024 }, (_, b) =>
      b % 7 === 0 ? null : 1 + ((b * 13) % 32),
    );
    const input: AssignInput = { mode: 'multiple', buckets: 1024, owners, members };
    for (let i = 0; i < 50; i++) {
      assign(input); // warm up the JIT
    }
    const runsCount = 500;
    const start = performance.now();
    for (let i = 0; i < runsCount; i++) {
      assign(input);
    }
    const perCallMs = (performance.now() - start) / runsCount;
    expect(perCallMs).toBeLessThan(1);
  });
});
