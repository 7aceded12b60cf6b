// The lab benchmark's verdicts that are pure arithmetic (issue 11 items 3 and 8): programming
// judged on the 3-host labs with the 32-host lab beside them, and the filter's baseline in the
// modes whose cluster IP's frames are flooded.
import { describe, expect, it } from 'vitest';
import { baselineMacOf, filterVariants } from '../bench/lab/filter-modes.js';
import {
  judgeProgramming,
  renderProgramming,
  summarizeProgramming,
} from '../bench/lab/programming.js';
import { pairedRatios } from '../bench/lab/support.js';

function entry(lab: string, hosts: number, ms: readonly number[]) {
  return {
    lab,
    hosts,
    samples: ms.map((programMs) => ({ hostId: 1, programMs, how: 'sets' })),
    driver: null,
  };
}

describe('decision → kernel programmed', () => {
  it('judges the 3-host labs on the target and the 32-host lab beside them, each on its own', () => {
    const small = summarizeProgramming([entry('a', 3, [1, 2, 3]), entry('b', 3, [4, 2])], 20);
    const large = summarizeProgramming([entry('c', 32, [3, 300, 1400])], 20);
    expect(small.samples).toBe(5);
    expect(small.maxMs).toBe(4);
    expect(large.overTarget).toBe(2);
    const targets = judgeProgramming(small, large, 5, 20);
    expect(targets.map((t) => [t.id, t.pass])).toEqual([
      ['kernel-programming-p99', true],
      ['kernel-programming', true],
      ['kernel-programming-p99-scale', false],
    ]);
    expect(targets[2]!.measured).toContain('max 1400.0 ms over 3 changes');
    // Without a larger lab, no verdict at scale.
    expect(judgeProgramming(small, null, 5, 20).map((t) => t.id)).not.toContain(
      'kernel-programming-p99-scale',
    );
  });

  it('counts and names the samples above the bound it was given, not a fixed one', () => {
    const summary = summarizeProgramming([entry('a', 3, [1, 6, 12, 30])], 10);
    expect(summary.overTarget).toBe(2);
    expect(renderProgramming(summary, '3-host labs').join('\n')).toContain('2 above 10 ms');
  });
});

describe('filter overhead baseline', () => {
  it('sends the baseline to the group MAC in multicast and IGMP modes, to the own MAC in unicast', () => {
    const macs = Object.fromEntries(filterVariants.map((v) => [v.label, baselineMacOf(v)]));
    expect(macs).toEqual({
      'multicast, IPv4': '03:bf:c6:12:00:64',
      'igmp, IPv4': '01:00:5e:7f:00:64',
      'unicast, IPv6': undefined,
      'multicast, IPv6': '03:bf:c6:12:00:64',
      'igmp, IPv6': '01:00:5e:7f:00:64',
    });
  });

  it("pairs each round's VIP run with its flooded baseline, not with the switched run", () => {
    const runs = [
      { round: 1, path: 'dedicated', gbps: 12 },
      { round: 1, path: 'vip', gbps: 11.4 },
      { round: 1, path: 'switched', gbps: 16 },
      { round: 2, path: 'vip', gbps: 12 },
      { round: 2, path: 'dedicated', gbps: 12 },
      { round: 2, path: 'switched', gbps: 15 },
    ];
    expect(pairedRatios(runs, 2, (r) => r.gbps)).toEqual({ roundRatios: [0.95, 1], ratio: 0.975 });
  });
});
