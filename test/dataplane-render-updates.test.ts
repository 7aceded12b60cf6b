// The nftables text of updates to a programmed table (lease refresh, ownership changes) is the
// data plane's contract too, pinned down exactly (docs/architecture.md#exact-rendering); the
// whole table's rendering is in dataplane-render.test.ts.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Ownership, RuleOwnership } from '../src/core/protocol.js';
import { FakeNft } from '../src/dataplane/nft-fake.js';
import {
  type DataplaneSpec,
  DataplaneSpecError,
  dataplaneSpecProblems,
} from '../src/dataplane/dataplane-spec.js';
import {
  renderLeaseRefresh,
  renderOwnershipUpdate,
  renderRemoval,
  renderTable,
} from '../src/dataplane/render.js';
import {
  address,
  labSpec,
  mixedInactiveSpec,
  mixedSpec,
  mixedStoppedSpec,
  owner,
  vip,
} from './dataplane-fixtures.js';

describe('renderLeaseRefresh', () => {
  it('adds, deletes and adds the lease element in one line, so an existing timeout is refreshed', () => {
    expect(renderLeaseRefresh(labSpec)).toBe(
      'add element inet nlb lease { 0xffffffff timeout 800ms }; delete element inet nlb lease { 0xffffffff }; add element inet nlb lease { 0xffffffff timeout 800ms }',
    );
  });
});

describe('renderOwnershipUpdate', () => {
  it('replaces only the sets that changed, and leaves the lease to the heartbeats', () => {
    const next: DataplaneSpec = {
      ...labSpec,
      ownership: { ...labSpec.ownership, rules: [owner([0, 6, 7])] },
    };
    expect(renderOwnershipUpdate(labSpec, next)).toBe(
      'flush set inet nlb rule0_owned; add element inet nlb rule0_owned { 0, 6, 7 }; flush set inet nlb rule0_orphan',
    );
  });

  it('is empty when the sets are equal', () => {
    expect(renderOwnershipUpdate(labSpec, labSpec)).toBe('');
  });

  it('needs a whole-table apply for a new lease timeout or heartbeat group or port (the lease refresh chain names them)', () => {
    expect(renderOwnershipUpdate(labSpec, { ...labSpec, leaseTimeoutMs: 1200 })).toBeUndefined();
    const heartbeat = labSpec.heartbeat;
    expect(
      renderOwnershipUpdate(labSpec, { ...labSpec, heartbeat: { ...heartbeat, port: 2506 } }),
    ).toBeUndefined();
    expect(
      renderOwnershipUpdate(labSpec, {
        ...labSpec,
        heartbeat: { ...heartbeat, group: address('239.255.78.77') },
      }),
    ).toBeUndefined();
  });

  it('turns every ownership change into set elements', () => {
    const cases: [Partial<Ownership>, string][] = [
      // A new default host elsewhere: this host stops taking uncovered traffic.
      [
        { isDefault: false },
        'flush set inet nlb new_flows; add element inet nlb new_flows { 0x00000000 }',
      ],
      // Drainstop finished or suspend: no new flows, established ones stay.
      [{ active: false }, 'flush set inet nlb new_flows'],
      // Stop: everything dropped, established included.
      [
        { active: false, dropEstablished: true },
        'flush set inet nlb drop_all; add element inet nlb drop_all { 0x00000000, 0x000000ff }; flush set inet nlb new_flows',
      ],
      // Disable the rule: it drops everything, its buckets go.
      [
        { rules: [owner([], [], true)] },
        'flush set inet nlb drop_all; add element inet nlb drop_all { 0x00000000 }; flush set inet nlb new_flows; add element inet nlb new_flows { 0x000000ff }; flush set inet nlb rule0_owned; flush set inet nlb rule0_orphan',
      ],
    ];
    for (const [change, sets] of cases) {
      const next = { ...labSpec, ownership: { ...labSpec.ownership, ...change } };
      expect(renderOwnershipUpdate(labSpec, next), JSON.stringify(change)).toBe(sets);
    }
  });

  it('gets from any ownership to any other to the same sets as a whole-table apply', async () => {
    // mixedSpec's rules have 60, 8 and 16 buckets.
    const ruleOwnership = (buckets: number): fc.Arbitrary<RuleOwnership> =>
      fc
        .tuple(
          fc.uniqueArray(fc.integer({ min: 0, max: buckets - 1 }), { maxLength: 6 }),
          fc.nat(),
          fc.boolean(),
        )
        .map(([owned, orphanPick, disabled]) => {
          const sorted = [...owned].sort((x, y) => x - y);
          const orphan = sorted.filter((_, i) => ((orphanPick >> i) & 1) === 1);
          return owner(sorted, orphan, disabled);
        });
    const ownership: fc.Arbitrary<Ownership> = fc.record({
      rules: fc.tuple(ruleOwnership(60), ruleOwnership(8), ruleOwnership(16)),
      isDefault: fc.boolean(),
      active: fc.boolean(),
      dropEstablished: fc.boolean(),
    });
    const setNames = [
      'drop_all',
      'new_flows',
      ...[0, 1, 2].flatMap((i) => [`rule${i}_owned`, `rule${i}_orphan`]),
    ];
    await fc.assert(
      fc.asyncProperty(ownership, ownership, async (before, after) => {
        const applied = { ...mixedSpec, ownership: before };
        const next = { ...mixedSpec, ownership: after };
        const quick = new FakeNft();
        await quick.apply(renderTable(applied));
        await quick.applyQuick('nlb', renderOwnershipUpdate(applied, next)!);
        const whole = new FakeNft();
        await whole.apply(renderTable(next));
        for (const name of setNames) {
          expect(quick.elements('nlb', name), name).toEqual(whole.elements('nlb', name));
        }
      }),
      { numRuns: 200 },
    );
  });

  it('refuses anything that changes the configuration', () => {
    const cases: DataplaneSpec[] = [
      { ...labSpec, hashSeed: 1 },
      { ...labSpec, maskedMac: '02:03:c6:12:00:64' },
      { ...labSpec, interface: 'eth1' },
      { ...labSpec, tableName: 'nlb2' },
      { ...labSpec, portRules: [{ ...labSpec.portRules[0]!, portStart: 81, portEnd: 81 }] },
      { ...labSpec, portRules: [{ ...labSpec.portRules[0]!, affinity: 'single' }] },
      { ...labSpec, clusterIps: [vip, address('198.18.0.101')] },
    ];
    for (const next of cases) {
      expect(renderOwnershipUpdate(labSpec, next)).toBeUndefined();
    }
  });
});

describe('renderRemoval', () => {
  it('deletes every table, safely when they are absent', () => {
    expect(renderRemoval('nlb')).toBe(
      'add table inet nlb\ndelete table inet nlb\nadd table netdev nlb\ndelete table netdev nlb\nadd table arp nlb\ndelete table arp nlb\n',
    );
  });
});

describe('spec validation', () => {
  it('accepts the fixtures', () => {
    for (const spec of [labSpec, mixedSpec, mixedInactiveSpec, mixedStoppedSpec]) {
      expect(dataplaneSpecProblems(spec)).toEqual([]);
    }
  });

  it('names every problem of a bad spec', () => {
    const bad: DataplaneSpec = {
      ...labSpec,
      tableName: 'nlb table',
      ownership: { ...labSpec.ownership, rules: [owner([3, 0, 60], [7])] },
      hashSeed: -1,
      leaseTimeoutMs: 5,
      maskedMac: undefined,
    };
    expect(dataplaneSpecProblems(bad)).toEqual([
      "tableName 'nlb table' is not a letter then up to 66 letters, digits, '_', '.' or '-'",
      'ownership.rules[0].owned is not sorted ascending without duplicates at index 1',
      'ownership.rules[0].owned[2] = 60 is not a bucket 0..59',
      'ownership.rules[0].orphan has buckets not in owned: 7',
      'hashSeed -1 is not a u32',
      'leaseTimeoutMs 5 is not 10..3600000',
      "maskedMac 'undefined' is not a lower-case MAC (unicast mode needs it)",
    ]);
    expect(() => renderTable(bad)).toThrow(DataplaneSpecError);
  });

  it('requires one ownership entry per port rule', () => {
    const bad = { ...labSpec, ownership: { ...labSpec.ownership, rules: [] } };
    expect(dataplaneSpecProblems(bad)).toEqual([
      'ownership.rules has 0 entries but there are 1 port rules',
    ]);
  });
});
