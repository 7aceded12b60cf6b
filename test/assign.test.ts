// Bucket assignment (docs/protocol.md#assignment): worked examples and input assertions; the
// properties the protocol relies on are in assign-properties.test.ts.
import { describe, expect, it } from 'vitest';
import {
  type AssignInput,
  assign,
  bucketQuotas,
  countMoves,
  minimumMoves,
} from '../src/core/assign.js';
import type { FilteringMode } from '../src/core/config.js';
import { member, nulls, runs } from './support/assign-inputs.js';

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
