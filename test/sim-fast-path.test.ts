// The fast path (src/core/host.ts) is exact: a routine heartbeat, received while converged, or
// from a peer whose check passed in the last agreement of a decision that moved no bucket, with
// nothing due, skips the decision because the decision would come out as before. Each seed runs
// twice, once with the fast path and once deciding on every step; every event (at the same
// virtual instant), every invariant and the convergence must be the same. The fast path must
// also have been taken, converged and converging, or the comparison would prove nothing. (A
// version that skipped after a decision that released buckets was caught here: seed 21, chaos.)
import { describe, expect, it } from 'vitest';
import { HostMachine } from '../src/core/host.js';
import { runSimulation } from '../src/sim/index.js';
import { faultProfiles } from '../src/sim/plans/options.js';
import type { HostFactory, SimResult } from '../src/sim/types.js';

const seeds = Number(process.env.NLB_SIM_FAST_PATH_SEEDS ?? 30);

function outcome(result: SimResult): string[] {
  return [
    ...result.events.map((e) => JSON.stringify([e.atMs, e.hostId, e.incarnation, e.event])),
    JSON.stringify(result.violations),
    JSON.stringify(result.changes),
    String(result.convergedAfterQuietMs),
  ];
}

describe(`the steady-state fast path changes nothing: ${seeds} seeds per fault profile`, () => {
  it(
    'the same events at the same instants, invariants and convergence',
    { timeout: 600_000 },
    async () => {
      let skipped = 0;
      const machines: HostMachine[] = [];
      let skippedConverging = 0;
      const fast: HostFactory = (opts) => {
        const machine = new HostMachine(opts);
        machines.push(machine);
        const step = machine.step.bind(machine);
        machine.step = (input) => {
          const converged = machine.status().converged;
          const before = machine.details().counters.decisionsSkipped;
          const ready = step(input);
          if (!converged && machine.details().counters.decisionsSkipped > before) {
            skippedConverging++;
          }
          return ready;
        };
        return machine;
      };
      const everyStep: HostFactory = (opts) => new HostMachine({ ...opts, decideEveryStep: true });
      const differences: string[] = [];
      for (const profile of faultProfiles) {
        for (let seed = 1; seed <= seeds; seed++) {
          await new Promise((resolve) => setImmediate(resolve));
          machines.length = 0;
          const a = outcome(
            runSimulation({ seed, scenario: 'random', profile, hostFactory: fast }),
          );
          skipped += machines.reduce((sum, m) => sum + m.details().counters.decisionsSkipped, 0);
          const b = outcome(
            runSimulation({ seed, scenario: 'random', profile, hostFactory: everyStep }),
          );
          let i = 0;
          while (i < a.length && a[i] === b[i]) i++;
          if (i < a.length || a.length !== b.length) {
            differences.push(
              `seed ${seed} (${profile}): first difference at ${i}: ${a[i] ?? 'none'} vs ${b[i] ?? 'none'}`,
            );
          }
        }
      }
      expect(differences).toEqual([]);
      expect(skipped).toBeGreaterThan(seeds * faultProfiles.length * 100);
      expect(skippedConverging).toBeGreaterThan(seeds * faultProfiles.length);
    },
  );
});
