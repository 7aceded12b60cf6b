// Helpers and fast-check arbitraries for the assignment tests (test/assign*.test.ts).
import fc from 'fast-check';
import { type AssignInput, type AssignMember } from '../../src/core/assign.js';
import type { FilteringMode } from '../../src/core/config.js';

export type BucketMap = (number | null)[];

export function member(
  id: number,
  loadWeight = 50,
  extra: Partial<AssignMember> = {},
): AssignMember {
  return { id, loadWeight, handlingPriority: id, draining: false, ...extra };
}

export function nulls(buckets: number): BucketMap {
  return new Array<number | null>(buckets).fill(null);
}

/** A map made of contiguous runs: [[owner, count], ...]. */
export function runs(...parts: [number | null, number][]): BucketMap {
  return parts.flatMap(([owner, count]) => new Array<number | null>(count).fill(owner));
}

export function counts(map: readonly (number | null)[]): Map<number | null, number> {
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
export function expectedQuotas(
  buckets: number,
  members: readonly AssignMember[],
): Map<number, number> {
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
export const memberArb = (id: number) =>
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

export const membersArb = (maxMembers: number) =>
  fc
    .uniqueArray(fc.integer({ min: 1, max: 32 }), { maxLength: maxMembers })
    .chain((ids) => fc.tuple(...ids.map(memberArb)))
    .map((members): AssignMember[] => [...members]);

export const modeArb: fc.Arbitrary<FilteringMode> = fc.oneof(
  { weight: 6, arbitrary: fc.constant('multiple' as const) },
  { weight: 1, arbitrary: fc.constant('single' as const) },
  { weight: 1, arbitrary: fc.constant('disabled' as const) },
);

export function inputArb(
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

export const multipleInputArb = (options: { bucketsMax?: number; membersMax?: number } = {}) =>
  inputArb({ ...options, mode: fc.constant('multiple') });

export function isEligible(input: AssignInput, id: number | null): boolean {
  const found = input.members.find((m) => m.id === id);
  return found !== undefined && found.loadWeight > 0 && !found.draining;
}
