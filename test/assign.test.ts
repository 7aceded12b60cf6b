// Bucket assignment (DESIGN.md §5): worked examples, then the properties the protocol relies on,
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
import type { FilteringMode } from '../src/core/config.js';

type BucketMap = (number | null)[];

function member(id: number, loadWeight = 50, extra: Partial<AssignMember> = {}): AssignMember {
  return { id, loadWeight, handlingPriority: id, draining: false, ...extra };
}

function nulls(buckets: number): BucketMap {
  return new Array<number | null>(buckets).fill(null);
}

/** A map made of contiguous runs: [[owner, count], ...]. */
function runs(...parts: [number | null, number][]): BucketMap {
  return parts.flatMap(([owner, count]) => new Array<number | null>(count).fill(owner));
}

function counts(map: readonly (number | null)[]): Map<number | null, number> {
  const result = new Map<number | null, number>();
  for (const owner of map) {
    result.set(owner, (result.get(owner) ?? 0) + 1);
  }
  return result;
}

/**
 * The expected quotas, written from the definition rather than copied from the implementation:
 * each eligible host gets floor(B·w/W) or one more; exactly B − Σ floor hosts get one more; and
 * a host with a larger remainder never gets fewer extras than one with a smaller remainder
 * (ties: lower id first). Returns quotas for every eligible host, zeros included.
 */
function expectedQuotas(buckets: number, members: readonly AssignMember[]): Map<number, number> {
  const eligible = members.filter((m) => m.loadWeight > 0 && !m.draining);
  const total = eligible.reduce((sum, m) => sum + m.loadWeight, 0);
  const result = new Map<number, number>();
  if (total === 0) {
    return result;
  }
  const floorOf = (m: AssignMember) => Math.floor((buckets * m.loadWeight) / total);
  const leftOver = buckets - eligible.reduce((sum, m) => sum + floorOf(m), 0);
  // Rank by remainder compared as exact fractions r/W (same W, so compare r), then by id.
  const ranked = [...eligible].sort((a, b) => {
    const ra = buckets * a.loadWeight - floorOf(a) * total;
    const rb = buckets * b.loadWeight - floorOf(b) * total;
    return rb - ra || a.id - b.id;
  });
  ranked.forEach((m, rank) => result.set(m.id, floorOf(m) + (rank < leftOver ? 1 : 0)));
  return result;
}

// Generators. Owners are drawn mostly from the members, sometimes from departed hosts or null,
// so that every kind of free bucket shows up.
const memberArb = (id: number) =>
  fc.record({
    id: fc.constant(id),
    loadWeight: fc.oneof(
      { weight: 1, arbitrary: fc.constant(0) },
      { weight: 1, arbitrary: fc.constant(50) },
      { weight: 4, arbitrary: fc.integer({ min: 0, max: 100 }) },
    ),
    handlingPriority: fc.integer({ min: 1, max: 32 }),
    draining: fc.oneof(
      { weight: 5, arbitrary: fc.constant(false) },
      { weight: 1, arbitrary: fc.constant(true) },
    ),
  });

const membersArb = (maxMembers: number) =>
  fc
    .uniqueArray(fc.integer({ min: 1, max: 32 }), { maxLength: maxMembers })
    .chain((ids) => fc.tuple(...ids.map(memberArb)))
    .map((members): AssignMember[] => [...members]);

const modeArb: fc.Arbitrary<FilteringMode> = fc.oneof(
  { weight: 6, arbitrary: fc.constant('multiple' as const) },
  { weight: 1, arbitrary: fc.constant('single' as const) },
  { weight: 1, arbitrary: fc.constant('disabled' as const) },
);

function inputArb(
  options: { bucketsMax?: number; membersMax?: number; mode?: fc.Arbitrary<FilteringMode> } = {},
): fc.Arbitrary<AssignInput> {
  const { bucketsMax = 64, membersMax = 8, mode = modeArb } = options;
  return fc
    .record({
      mode,
      buckets: fc.oneof(
        { weight: 4, arbitrary: fc.integer({ min: 1, max: bucketsMax }) },
        { weight: 1, arbitrary: fc.constant(Math.min(60, bucketsMax)) },
      ),
      members: membersArb(membersMax),
      strangers: fc.uniqueArray(fc.integer({ min: 1, max: 32 }), { maxLength: 2 }),
    })
    .chain(({ mode, buckets, members, strangers }) => {
      const pool: (number | null)[] = [null, ...strangers, ...members.map((m) => m.id)];
      const owner = fc.oneof(
        { weight: 1, arbitrary: fc.constantFrom(...pool) },
        // Runs of one owner, as real maps have after a few convergences.
        { weight: 1, arbitrary: fc.constantFrom(...members.map((m) => m.id), null) },
      );
      return fc
        .array(owner, { minLength: buckets, maxLength: buckets })
        .map((owners): AssignInput => ({ mode, buckets, owners, members }));
    });
}

const multipleInputArb = (options: { bucketsMax?: number; membersMax?: number } = {}) =>
  inputArb({ ...options, mode: fc.constant('multiple') });

function isEligible(input: AssignInput, id: number | null): boolean {
  const found = input.members.find((m) => m.id === id);
  return found !== undefined && found.loadWeight > 0 && !found.draining;
}

describe('assign: worked examples', () => {
  const three = [member(1), member(2), member(3)];

  it('60 buckets over 3 equal hosts: 20 each, in contiguous runs from nothing', () => {
    const target = assign({ mode: 'multiple', buckets: 60, owners: nulls(60), members: three });
    expect(target).toEqual(runs([1, 20], [2, 20], [3, 20]));
  });

  it('host 2 leaves: its 20 buckets split 10/10, nothing else moves', () => {
    const before = runs([1, 20], [2, 20], [3, 20]);
    const input: AssignInput = {
      mode: 'multiple',
      buckets: 60,
      owners: before,
      members: [member(1), member(3)],
    };
    const target = assign(input);
    expect(target).toEqual(runs([1, 20], [1, 10], [3, 10], [3, 20]));
    expect(countMoves(before, target)).toBe(20);
    expect(minimumMoves(input)).toBe(20);
  });

  it('host 2 draining is the same as host 2 leaving', () => {
    const before = runs([1, 20], [2, 20], [3, 20]);
    const target = assign({
      mode: 'multiple',
      buckets: 60,
      owners: before,
      members: [member(1), member(2, 50, { draining: true }), member(3)],
    });
    expect(target).toEqual(runs([1, 30], [3, 30]));
  });

  it('host 4 joins: each host gives up its 5 highest buckets, host 4 takes them', () => {
    const before = runs([1, 20], [2, 20], [3, 20]);
    const input: AssignInput = {
      mode: 'multiple',
      buckets: 60,
      owners: before,
      members: [...three, member(4)],
    };
    const target = assign(input);
    expect(target).toEqual(runs([1, 15], [4, 5], [2, 15], [4, 5], [3, 15], [4, 5]));
    expect(countMoves(before, target)).toBe(15);
    expect(minimumMoves(input)).toBe(15);
  });

  it('weights 50/30/20 over 60 buckets: 30/18/12', () => {
    const members = [member(1, 50), member(2, 30), member(3, 20)];
    const target = assign({ mode: 'multiple', buckets: 60, owners: nulls(60), members });
    expect(target).toEqual(runs([1, 30], [2, 18], [3, 12]));
  });

  it('largest remainder: an exact tie goes to the lower host id', () => {
    // 10 × 50 / 150 = 3 remainder 50/150 for all three hosts.
    expect(bucketQuotas('multiple', 10, [member(3), member(1), member(2)])).toEqual(
      new Map([
        [1, 4],
        [2, 3],
        [3, 3],
      ]),
    );
  });

  it('largest remainder: a larger remainder beats a lower id', () => {
    // 10 × 33 / 100 = 3.3, 3.3, and 10 × 34 / 100 = 3.4: host 3 gets the spare bucket.
    expect(bucketQuotas('multiple', 10, [member(1, 33), member(2, 33), member(3, 34)])).toEqual(
      new Map([
        [1, 3],
        [2, 3],
        [3, 4],
      ]),
    );
  });

  it('hosts whose quota rounds to 0 are left out of the quotas', () => {
    expect(bucketQuotas('multiple', 2, [member(1), member(2), member(3)])).toEqual(
      new Map([
        [1, 1],
        [2, 1],
      ]),
    );
  });

  it('weight 0 takes nothing and gives up everything', () => {
    const before = runs([1, 5], [2, 5]);
    const target = assign({
      mode: 'multiple',
      buckets: 10,
      owners: before,
      members: [member(1, 0), member(2, 10)],
    });
    expect(target).toEqual(runs([2, 10]));
  });

  it('no eligible host: every bucket is null', () => {
    const owners = runs([1, 3], [2, 3]);
    const allOut = [member(1, 0), member(2, 50, { draining: true })];
    expect(assign({ mode: 'multiple', buckets: 6, owners, members: allOut })).toEqual(nulls(6));
    expect(assign({ mode: 'multiple', buckets: 6, owners, members: [] })).toEqual(nulls(6));
    expect(minimumMoves({ mode: 'multiple', buckets: 6, owners, members: [] })).toBe(6);
  });

  it('single: the best handling priority owns everything, weight ignored, draining skipped', () => {
    const members = [
      member(1, 50, { handlingPriority: 3 }),
      member(2, 0, { handlingPriority: 2 }),
      member(3, 50, { handlingPriority: 1, draining: true }),
      member(4, 50, { handlingPriority: 2 }),
    ];
    const target = assign({ mode: 'single', buckets: 4, owners: [1, 1, 3, null], members });
    expect(target).toEqual([2, 2, 2, 2]);
  });

  it('disabled: nobody owns anything', () => {
    const target = assign({ mode: 'disabled', buckets: 3, owners: [1, 2, 3], members: three });
    expect(target).toEqual(nulls(3));
  });
});

describe('assign: input assertions', () => {
  const ok: AssignInput = { mode: 'multiple', buckets: 2, owners: [null, 1], members: [member(1)] };

  it.each<[string, Partial<AssignInput>]>([
    ['owners of the wrong length', { owners: [1] }],
    ['zero buckets', { buckets: 0, owners: [] }],
    ['too many buckets', { buckets: 1025, owners: nulls(1025) }],
    ['an owner out of range', { owners: [0, 1] }],
    ['an owner that is not an integer', { owners: [1.5, 1] }],
    ['a member id out of range', { members: [member(33)] }],
    ['a duplicate member id', { members: [member(1), member(1, 20)] }],
    ['a weight above 100', { members: [member(1, 101)] }],
    ['a negative weight', { members: [member(1, -1)] }],
    ['a handling priority of 0', { members: [member(1, 50, { handlingPriority: 0 })] }],
    ['an unknown mode', { mode: 'round-robin' as FilteringMode }],
  ])('throws on %s', (_name, change) => {
    expect(() => assign({ ...ok, ...change })).toThrow(/^assign: /);
  });

  it('countMoves throws on maps of different lengths', () => {
    expect(() => countMoves([1], [1, 2])).toThrow(/differ in length/);
  });
});

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
