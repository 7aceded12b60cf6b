// Replayed heartbeats change nothing (issue 9, item 1), over many random fault schedules: each
// seed runs twice, once as planned and once with an eavesdropper that sends hosts heartbeats
// recorded earlier (ones the receiving process already had, or that were sent before it
// started). Every event but the counted reject ('bad heartbeats') must be the same, at the same
// virtual instant, in both runs. Replays are kept out of the detection window after a host
// starts or is commanded: there, and only there, a replay of a host it has not heard yet may
// make it wait (see src/core/host.ts, update), which this comparison would flag.
import { describe, expect, it } from 'vitest';
import { runSimulation } from '../src/sim/index.js';
import type { SimResult } from '../src/sim/types.js';

const seeds = Number(process.env.NLB_SIM_REPLAY_SEEDS ?? 60);

function eventKeys(result: SimResult): string[] {
  return result.events
    .filter((e) => e.event.event !== 'bad heartbeats')
    .map((e) => JSON.stringify([e.atMs, e.hostId, e.incarnation, e.event]));
}

describe(`replays change nothing: ${seeds} seeds with and without an eavesdropper`, () => {
  it(
    'the same events at the same instants, and every invariant',
    { timeout: 600_000 },
    async () => {
      let replayed = 0;
      const differences: string[] = [];
      for (let seed = 1; seed <= seeds; seed++) {
        await new Promise((resolve) => setImmediate(resolve));
        const plain = runSimulation({ seed, scenario: 'random' });
        const attacked = runSimulation({ seed, scenario: 'random', replays: 'settled' });
        replayed += attacked.stats.replayed;
        const a = eventKeys(plain);
        const b = eventKeys(attacked);
        let i = 0;
        while (i < a.length && a[i] === b[i]) i++;
        if (i < a.length || a.length !== b.length || attacked.violations.length > 0) {
          differences.push(
            `seed ${seed} (${plain.profile}): first difference at event ${i}: ${a[i] ?? 'none'} vs ${b[i] ?? 'none'}; violations ${attacked.violations.map((v) => v.message).join('; ')}`,
          );
        }
      }
      expect(differences).toEqual([]);
      // The comparison means something only if replays happened and were rejected.
      expect(replayed).toBeGreaterThan(seeds * 5);
    },
  );
});
