// Many seeded fault schedules through the simulator, every invariant checked at every step.
// NLB_SIM_SEEDS sets how many (default 1,000; `npm run test:long` runs 10,000); NLB_SIM_SEED_START
// shifts the range, so a failure can be replayed alone: NLB_SIM_SEEDS=1 NLB_SIM_SEED_START=<seed>.
import { describe, expect, it } from 'vitest';
import { formatFailure, runSimulation } from '../src/sim/index.js';

const seeds = Number(process.env.NLB_SIM_SEEDS ?? 1000);
const firstSeed = Number(process.env.NLB_SIM_SEED_START ?? 1);
/** Seeds per test case: small enough for progress, large enough to keep vitest overhead low. */
const chunk = 250;

describe(`simulator: ${seeds} random seeds from ${firstSeed}`, () => {
  for (let start = firstSeed; start < firstSeed + seeds; start += chunk) {
    const end = Math.min(start + chunk, firstSeed + seeds);
    it(`seeds ${start}..${end - 1} keep every invariant`, { timeout: 600_000 }, async () => {
      const failures: string[] = [];
      const profiles = new Map<string, number>();
      for (let seed = start; seed < end; seed++) {
        // Yield between seeds: a worker blocked for a minute misses vitest's RPC deadline
        // ("Timeout calling onTaskUpdate"), which fails the run though every test passed.
        await new Promise((resolve) => setImmediate(resolve));
        const result = runSimulation({ seed, scenario: 'random' });
        profiles.set(result.profile, (profiles.get(result.profile) ?? 0) + 1);
        if (result.violations.length > 0) {
          failures.push(formatFailure(result, 40));
          if (failures.length >= 3) break;
        }
      }
      if (failures.length > 0) {
        console.error(failures.join('\n\n'));
      }
      expect(failures.map((f) => f.split('\n')[0])).toEqual([]);
    });
  }
});

// Seeds that once found a bug (see the commit messages and src/core/host.ts), run on every
// suite whatever range NLB_SIM_SEEDS selects: 699 (a duplicate newcomer and the replay guard),
// 1822 (an old report matching a target again: the acknowledgement rule), 4241 (the
// simulator's merge allowance), 6930 (a stale view of a host replaced by a duplicate id).
describe('simulator: regression seeds', () => {
  for (const seed of [699, 1822, 4241, 6930]) {
    it(`seed ${seed} keeps every invariant`, () => {
      const result = runSimulation({ seed, scenario: 'random' });
      if (result.violations.length > 0) console.error(formatFailure(result, 40));
      expect(result.violations).toEqual([]);
    });
  }
});
