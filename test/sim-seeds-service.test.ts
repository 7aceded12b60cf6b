// The simulator's `service` profile (issue 14, src/sim/plans/service.ts): services that fail
// and recover, flap faster than a heartbeat, all fail at once (the rule fails open) and report
// weights, among crashes, stops and starts; every invariant checked at every step, replays at
// any moment, and I2 knowing that a converged cluster gives an unhealthy host no bucket while
// a healthy one could take it. A profile asked for by name, so the seeds of the default random
// plans stay as they were. NLB_SIM_SERVICE_SEEDS sets how many (default 200).
import { describe, expect, it } from 'vitest';
import { formatFailure, runSimulation } from '../src/sim/index.js';

const seeds = Number(process.env['NLB_SIM_SERVICE_SEEDS'] ?? 200);

describe(`simulator: ${seeds} seeds of the service profile`, () => {
  it(
    'keep every invariant, and fail open when every host is unhealthy',
    { timeout: 600_000 },
    async () => {
      const failures: string[] = [];
      const events = new Map<string, number>();
      for (let seed = 1; seed <= seeds; seed++) {
        await new Promise((resolve) => setImmediate(resolve));
        const result = runSimulation({
          seed,
          scenario: 'random',
          profile: 'service',
          replays: 'anytime',
        });
        for (const e of result.events) {
          const name = e.event.event;
          events.set(name, (events.get(name) ?? 0) + 1);
        }
        if (result.violations.length > 0) {
          failures.push(formatFailure(result, 40));
          if (failures.length >= 3) break;
        }
      }
      if (failures.length > 0) console.error(failures.join('\n\n'));
      expect(failures.map((f) => f.split('\n')[0])).toEqual([]);
      // The profile does what it says: services fail and recover, weights change, rules fail open.
      for (const name of [
        'service unhealthy',
        'service healthy',
        'weight reported',
        'all hosts unhealthy: failing open',
      ]) {
        expect(events.get(name) ?? 0, name).toBeGreaterThan(0);
      }
    },
  );
});
