// The `service` profile of a random plan (issue 14): the services behind the hosts fail and
// recover, flap faster than a heartbeat, all fail at once (the rule must fail open), and report
// weights (0 among them: a drain), mixed with crashes, stops and starts. Each is a command the
// daemon's health checks would send (`health`, `weight`); the invariants are the usual ones,
// with I2's coverage knowing that an unhealthy host takes no bucket unless every host that
// could is unhealthy. Everything is healthy at its configured weight again by the window's end.
// Not drawn by the default random plans (their seeds stay as they were): asked for by name.
import type { Command } from '../../core/protocol.js';
import { ruleCount } from '../cluster-config.js';
import { maxOneWayDelayMs } from '../network.js';
import { type RandomDraft, addAction } from './draft.js';
import { round } from './common.js';
import { planCrash, planStart, planStop } from './node-faults.js';

export function planServiceFaults(draft: RandomDraft, times: readonly number[]): void {
  const { prng, shape, base, hosts, state, end } = draft;
  const P = shape.periodMs;
  const delayMs = maxOneWayDelayMs(base);
  const rules = ruleCount(shape.ruleSet);
  const touched = new Set<string>();
  const command = (atMs: number, slot: number, c: Command): void => {
    addAction(draft, round(Math.min(atMs, end)), { do: 'command', slot, command: c });
    if (c.verb === 'health' || c.verb === 'weight') touched.add(`${slot}/${c.rule}`);
  };
  const health = (atMs: number, slot: number, rule: number, healthy: boolean): void =>
    command(atMs, slot, {
      verb: 'health',
      rule,
      healthy,
      detail: healthy ? 'sim: ok' : 'sim: 503',
    });
  for (const at of times) {
    const members = state.flatMap((s, slot) => (s === 'member' ? [slot] : []));
    if (members.length === 0) continue;
    const slot = prng.pick(members);
    const rule = prng.int(0, rules - 1);
    const kind = prng.weighted<string>([
      ['fail', 3],
      ['flap', 2],
      ['all', 1],
      ['weight', 2],
      ['crash', hosts > 2 ? 0.5 : 0],
      ['stop', 0.5],
      ['start', 0.5],
    ]);
    switch (kind) {
      case 'fail':
        health(at, slot, rule, false);
        // Back after a few delays (inside the convergence) or after several periods.
        health(
          at + (prng.chance(0.5) ? prng.float(0, 4 * delayMs) : prng.float(1, 8) * P),
          slot,
          rule,
          true,
        );
        break;
      case 'flap': {
        let t = at;
        for (let i = prng.int(2, 6); i > 0; i--) {
          health(t, slot, rule, false);
          t += prng.float(0, 2 * delayMs);
          health(t, slot, rule, true);
          t += prng.float(0, 2 * delayMs);
        }
        break;
      }
      case 'all': {
        const upAt = at + prng.float(1, 6) * P;
        for (const s of members) {
          health(at + prng.float(0, 2 * delayMs), s, rule, false);
          health(upAt + prng.float(0, 2 * delayMs), s, rule, true);
        }
        break;
      }
      case 'weight':
        command(at, slot, {
          verb: 'weight',
          rule,
          weight: prng.chance(0.2) ? 0 : prng.int(1, 100),
        });
        if (prng.chance(0.5))
          command(at + prng.float(0, 6) * P, slot, { verb: 'weight', rule, weight: null });
        break;
      case 'crash':
        planCrash(draft, at);
        break;
      case 'stop':
        planStop(draft, at);
        break;
      case 'start':
        planStart(draft, at);
        break;
    }
  }
  // Healthy at the configured weight by the end, so I3 has one last change to time from.
  for (const key of touched) {
    const [slot, rule] = key.split('/').map(Number) as [number, number];
    addAction(draft, end, {
      do: 'command',
      slot,
      command: { verb: 'health', rule, healthy: true, detail: 'sim: end' },
    });
    addAction(draft, end, { do: 'command', slot, command: { verb: 'weight', rule, weight: null } });
  }
}
