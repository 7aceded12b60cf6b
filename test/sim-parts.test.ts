// The simulator's parts on their own: the generator, the agenda, the network and the safety
// checker's definition of contact (the merge allowance).
import { describe, expect, it } from 'vitest';
import { Network, labLink, maxOneWayDelayMs } from '../src/sim/network.js';
import { Prng } from '../src/sim/prng.js';
import { EventQueue } from '../src/sim/queue.js';
import { SafetyChecker } from '../src/sim/safety.js';
import { buildConfig, configDocument, defaultHostSettings } from '../src/sim/cluster-config.js';
import { agreedGroups, type ObservedHost } from '../src/sim/convergence.js';

describe('Prng', () => {
  it('replays a seed exactly and differs between seeds', () => {
    const a = new Prng(42);
    const b = new Prng(42);
    const c = new Prng(43);
    const xs = Array.from({ length: 100 }, () => a.nextU32());
    expect(Array.from({ length: 100 }, () => b.nextU32())).toEqual(xs);
    expect(Array.from({ length: 100 }, () => c.nextU32())).not.toEqual(xs);
  });

  it('draws integers in range, roughly uniformly', () => {
    const prng = new Prng(7);
    const counts = new Array<number>(6).fill(0);
    for (let i = 0; i < 60_000; i++) counts[prng.int(1, 6) - 1]! += 1;
    for (const count of counts) expect(Math.abs(count - 10_000)).toBeLessThan(500);
  });

  it('refuses a seed that is not a u32', () => {
    expect(() => new Prng(-1)).toThrow(/seed/);
    expect(() => new Prng(2 ** 32)).toThrow(/seed/);
  });
});

describe('EventQueue', () => {
  it('pops by time, and in scheduling order at one time', () => {
    const queue = new EventQueue<string>();
    queue.push(5, 'c');
    queue.push(1, 'a');
    queue.push(5, 'd');
    queue.push(3, 'b');
    queue.push(5, 'e');
    const out: string[] = [];
    for (let e = queue.pop(); e !== undefined; e = queue.pop()) out.push(e.item);
    expect(out).toEqual(['a', 'b', 'c', 'd', 'e']);
  });
});

describe('Network', () => {
  const bytes = Uint8Array.of(1, 2, 3);

  it('multicasts to every other slot within the delay bounds, never back to the sender', () => {
    const network = new Network(4, new Prng(1), labLink);
    const copies = network.send(1, [0, 1, 2, 3], bytes, 100);
    expect(copies.map((c) => c.to)).toEqual([0, 2, 3]);
    for (const copy of copies) {
      expect(copy.atMs).toBeGreaterThanOrEqual(100 + labLink.delayMs);
      expect(copy.atMs).toBeLessThanOrEqual(100 + maxOneWayDelayMs(labLink));
    }
  });

  it('cuts both ways on a partition and restores every link on heal', () => {
    const network = new Network(4, new Prng(1), labLink);
    network.partition([
      [0, 1],
      [2, 3],
    ]);
    expect(network.send(0, [0, 1, 2, 3], bytes, 0).map((c) => c.to)).toEqual([1]);
    expect(network.isUp(3, 0)).toBe(false);
    network.heal();
    expect(network.send(0, [0, 1, 2, 3], bytes, 0).map((c) => c.to)).toEqual([1, 2, 3]);
  });

  it('loses about the configured share of copies', () => {
    const network = new Network(2, new Prng(3), { ...labLink, lossRate: 0.05 });
    let delivered = 0;
    for (let i = 0; i < 20_000; i++) delivered += network.send(0, [0, 1], bytes, i).length;
    expect(Math.abs(delivered / 20_000 - 0.95)).toBeLessThan(0.01);
  });
});

describe('SafetyChecker', () => {
  const gapMs = 800;
  function checker(): SafetyChecker {
    const safety = new SafetyChecker(gapMs);
    safety.addNode({ index: 0, hostId: 1, incarnation: 1, keyGroup: 0 });
    safety.addNode({ index: 1, hostId: 2, incarnation: 2, keyGroup: 0 });
    return safety;
  }

  it('allows two owners until both heard what the other sent after they met (the merge)', () => {
    const safety = checker();
    expect(safety.setOwned(0, [[1, 2, 3]], 0)).toEqual([]);
    expect(safety.setOwned(1, [[3, 4]], 0)).toEqual([]); // Nobody hears anybody yet.
    expect(safety.heard(1, 0, 10, 11)).toEqual([]); // Streak 2←1 starts at 11.
    expect(safety.heard(0, 1, 12, 13)).toEqual([]); // Streak 1←2 starts at 13: hearing, no contact.
    expect(safety.hearing(0, 1, 13)).toBe(true);
    expect(safety.contact(0, 1, 13)).toBe(false);
    expect(safety.heard(1, 0, 14, 15)).toEqual([]); // 2 heard a message 1 sent after 13...
    const violations = safety.heard(0, 1, 16, 17); // ...and 1 one that 2 sent after 13: contact.
    expect(violations.map((v) => v.invariant)).toEqual(['I1']);
  });

  it('flags an acquisition from under a peer one hears (I1b) even before contact', () => {
    const safety = checker();
    safety.setOwned(1, [[5]], 0);
    safety.heard(1, 0, 10, 11);
    safety.heard(0, 1, 12, 13);
    expect(safety.setOwned(0, [[5]], 14).map((v) => v.invariant)).toEqual(['I1b']);
  });

  it('forgets hearing after a silence of the streak gap', () => {
    const safety = checker();
    safety.heard(1, 0, 10, 11);
    safety.heard(0, 1, 12, 13);
    expect(safety.hearing(0, 1, 13 + gapMs - 14)).toBe(true);
    expect(safety.hearing(0, 1, 13 + gapMs)).toBe(false);
    safety.setOwned(1, [[5]], 0);
    expect(safety.setOwned(0, [[5]], 13 + gapMs)).toEqual([]);
  });

  it('ignores hosts with another cluster key', () => {
    const safety = checker();
    safety.addNode({ index: 2, hostId: 3, incarnation: 3, keyGroup: 1 });
    safety.setOwned(2, [[1]], 0);
    safety.heard(0, 2, 1, 2);
    safety.heard(2, 0, 3, 4);
    expect(safety.setOwned(0, [[1]], 5)).toEqual([]);
  });
});

describe('agreedGroups (I2)', () => {
  const shape = { periodMs: 100, tolerance: 5, ruleSet: 'basic' } as const;
  function observed(
    index: number,
    hostId: number,
    incarnation: number,
    members: [number, number][],
    target: (number | null)[],
  ): ObservedHost {
    const config = buildConfig(configDocument(shape, defaultHostSettings(hostId, 'basic')));
    return {
      index,
      slot: index,
      hostId,
      config,
      expect: 'member',
      ruleStates: ['enabled'],
      owned: [target.flatMap((owner, b) => (owner === hostId ? [b] : []))],
      status: {
        hostId,
        incarnation,
        state: 'converged',
        members: members.map(([id]) => id),
        memberIncarnations: members.map(([, inc]) => inc),
        defaultHost: members[0]![0],
        converged: true,
        mapDigest: target.join(','),
        target: [target],
        ownership: { rules: [], isDefault: false, active: true, dropEstablished: false },
      },
    };
  }
  const mapA = Array.from({ length: 60 }, (_, b) => (b < 30 ? 1 : 3));
  const mapB = Array.from({ length: 60 }, (_, b) => (b < 20 ? 1 : 3));

  it('flags two hosts that name the same processes as members but hold different maps', () => {
    const view: [number, number][] = [
      [1, 10],
      [3, 30],
    ];
    const { disagreement } = agreedGroups([
      observed(0, 1, 10, view, mapA),
      observed(1, 3, 30, view, mapB),
    ]);
    expect(disagreement).toMatch(/h1 and h3 both report converged with members 1,3/);
  });

  it('does not group a stale view with the view of the incarnation that replaced it', () => {
    // h3 (incarnation 30) is cut off and still believes in its old view; h1 meanwhile took a
    // newer process on id 3 (incarnation 31) as h3's restart and converged with it.
    const { groups, disagreement } = agreedGroups([
      observed(
        0,
        1,
        10,
        [
          [1, 10],
          [3, 31],
        ],
        mapB,
      ),
      observed(
        1,
        3,
        30,
        [
          [1, 10],
          [3, 30],
        ],
        mapA,
      ),
      observed(
        2,
        3,
        31,
        [
          [1, 10],
          [3, 31],
        ],
        mapB,
      ),
    ]);
    expect(disagreement).toBeUndefined();
    expect(groups.map((g) => g.hosts.map((h) => h.index))).toEqual([[0, 2]]);
  });
});
