// Part 1 of the simulator's random seeds (test/support/sim-seeds.ts says how the range is split
// and how to replay a seed: a single seed always runs here), and the regression seeds.
import { describe, expect, it } from 'vitest';
import { formatFailure, runSimulation } from '../src/sim/index.js';
import { describeSeedShard } from './support/sim-seeds.js';

describeSeedShard(1);

// Flap-profile seeds that found two hosts, started within a delay of each other while each heard
// the other stopped, both taking every bucket (fixed in host.ts: a heard non-member must have
// heard us take part). They run on every suite whatever range NLB_SIM_SEEDS selects.
describe('simulator: regression seeds (flap profile)', () => {
  for (const seed of [286, 551, 614, 625]) {
    it(`seed ${seed} keeps every invariant`, () => {
      const result = runSimulation({ seed, scenario: 'random', profile: 'flap' });
      if (result.violations.length > 0) console.error(formatFailure(result, 40));
      expect(result.violations).toEqual([]);
    });
  }
});
