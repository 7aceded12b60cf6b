// Many seeded fault schedules through the simulator, every invariant checked at every step, with
// an eavesdropper replaying recorded heartbeats at any moment (test/sim-replay.test.ts checks
// that those replays change nothing at all).
// NLB_SIM_SEEDS sets how many (default 1,000; `npm run test:long` runs 10,000); NLB_SIM_SEED_START
// shifts the range, so a failure can be replayed alone: NLB_SIM_SEEDS=1 NLB_SIM_SEED_START=<seed>.
// The range is split into `seedShards` contiguous parts, one per test file (test/sim-seeds.test.ts
// is part 1, test/sim-seeds-<n>.test.ts part n), so that vitest can run them in parallel worker threads: one
// simulation is single-threaded and CPU-bound, and a file is the unit vitest spreads over cores.
import { describe, expect, it } from 'vitest';
import { formatFailure, runSimulation } from '../../src/sim/index.js';

export const seeds = Number(process.env.NLB_SIM_SEEDS ?? 1000);
const firstSeed = Number(process.env.NLB_SIM_SEED_START ?? 1);
/** How many test files share the range: enough to fill the cores of a larger machine. */
export const seedShards = 4;
/** Seeds per test case: small enough for progress, large enough to keep vitest overhead low. */
const chunk = 250;

/** Declares the test cases of shard `shard` (1-based) of the seed range. */
export function describeSeedShard(shard: number): void {
  // Rounded up, so that a range of one seed (a replay) falls in part 1, test/sim-seeds.test.ts.
  const from = firstSeed + Math.ceil(((shard - 1) * seeds) / seedShards);
  const to = firstSeed + Math.ceil((shard * seeds) / seedShards);
  describe(`simulator: part ${shard} of ${seedShards} of ${seeds} random seeds from ${firstSeed}`, () => {
    if (from === to) {
      it.skip(`no seed of ${firstSeed}..${firstSeed + seeds - 1} falls in this part`);
    }
    for (let start = from; start < to; start += chunk) {
      const end = Math.min(start + chunk, to);
      it(`seeds ${start}..${end - 1} keep every invariant`, { timeout: 600_000 }, async () => {
        const failures: string[] = [];
        const profiles = new Map<string, number>();
        for (let seed = start; seed < end; seed++) {
          // Yield between seeds: a worker blocked for a minute misses vitest's RPC deadline
          // ("Timeout calling onTaskUpdate"), which fails the run though every test passed.
          await new Promise((resolve) => setImmediate(resolve));
          const result = runSimulation({ seed, scenario: 'random', replays: 'anytime' });
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
}
