// Batches (src/core/host.ts): a datagram stepped with `moreQueued` leaves the decision to the
// next step, which the daemon's queue guarantees (and the machine's wake-up backs up). Here every
// host is told that more datagrams wait, at random, for most of the ones it receives, through
// the simulator's random seeds (the fault profile each seed picks, replays at any moment, as in
// test/support/sim-seeds.ts): every invariant must hold as without batches, and the batches must
// really have been taken, or the run would prove nothing.
import { describe, expect, it } from 'vitest';
import { HostMachine } from '../src/core/host.js';
import type { Input } from '../src/core/protocol.js';
import { formatFailure, runSimulation } from '../src/sim/index.js';
import type { HostFactory } from '../src/sim/types.js';

const seeds = Number(process.env.NLB_SIM_BATCH_SEEDS ?? 300);
/**
 * Seeds that broke I1 while a batch could hold back the decision on a peer newly proved (a
 * restart, a healed partition): the higher id must give up the buckets both claim at once.
 */
const regressionSeeds = [830, 1211];
/** The share of datagrams stepped as if more waited behind them. */
const batchedShare = 0.7;

describe(`batched decisions keep every invariant: ${seeds} random seeds and the regressions`, () => {
  it('no violation, and batches taken', { timeout: 600_000 }, async () => {
    let batched = 0;
    const failures: string[] = [];
    const all = [
      ...new Set([...Array.from({ length: seeds }, (_, i) => i + 1), ...regressionSeeds]),
    ];
    for (const seed of all) {
      await new Promise((resolve) => setImmediate(resolve));
      const machines: HostMachine[] = [];
      const batching: HostFactory = (opts) => {
        const machine = new HostMachine(opts);
        machines.push(machine);
        // A small deterministic generator per process (a Lehmer one), so a seed replays.
        let state = (opts.incarnation % 2_147_483_646) + 1;
        const next = (): number => {
          state = (state * 48_271) % 2_147_483_647;
          return state / 2_147_483_647;
        };
        return {
          step: (input: Input) =>
            machine.step(
              input.kind === 'datagram' && next() < batchedShare
                ? { ...input, moreQueued: true }
                : input,
            ),
          status: () => machine.status(),
        };
      };
      const result = runSimulation({
        seed,
        scenario: 'random',
        replays: 'anytime',
        hostFactory: batching,
      });
      batched += machines.reduce((sum, m) => sum + m.details().counters.decisionsBatched, 0);
      if (result.violations.length > 0) failures.push(formatFailure(result, 40));
      if (failures.length >= 3) break;
    }
    if (failures.length > 0) console.error(failures.join('\n\n'));
    expect(failures.map((f) => f.split('\n')[0])).toEqual([]);
    expect(batched).toBeGreaterThan(seeds * 10);
  });
});
