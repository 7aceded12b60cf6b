// The `flap` profile of a random plan: bursts of changes that undo or contradict each other.
import type { Command } from '../../core/protocol.js';
import { ruleCount } from '../cluster-config.js';
import { maxOneWayDelayMs } from '../network.js';
import type { SimAction } from '../types.js';
import type { RandomDraft } from './draft.js';
import { round } from './common.js';

/**
 * Bursts at `times` of changes that undo or contradict each other within a few one-way delays
 * (a stop and a start, a rule drained and enabled again, drainstops, link cuts that end around
 * the detection time), so that heartbeats of one target cross those of the next in flight and
 * targets come back (A -> B -> A). That is where agreement rules earn their keep: the
 * acknowledgement rule, generations, and release before acquire.
 */
export function planFlaps(draft: RandomDraft, times: readonly number[]): void {
  const { prng, shape, base, hosts, state, schedule, end } = draft;
  const P = shape.periodMs;
  const T = shape.tolerance;
  const delayMs = maxOneWayDelayMs(base);
  const rules = ruleCount(shape.ruleSet);
  // Flap times add unrounded offsets to a burst, so they are put on the plan's 0.01 ms grid here.
  const add = (atMs: number, action: SimAction): void => {
    schedule.push({ atMs: round(Math.min(atMs, end)), action });
  };
  const command = (atMs: number, slot: number, c: Command): void =>
    add(atMs, { do: 'command', slot, command: c });
  let cutUntil = -1;
  for (const burst of times) {
    const steps = prng.int(2, 4);
    for (let i = 0; i < steps; i++) {
      const at = burst + prng.float(0, 3 * delayMs);
      const again = at + prng.float(0, 2 * delayMs);
      const members = state.flatMap((s, slot) => (s === 'member' ? [slot] : []));
      const kind = prng.weighted<string>([
        ['stop-start', 2],
        ['rule', 3],
        ['rule-flap', 3],
        ['drainstop', 1],
        ['cut', hosts > 1 ? 1.5 : 0],
      ]);
      if (members.length === 0) break;
      const slot = prng.pick(members);
      switch (kind) {
        case 'stop-start':
          command(at, slot, { verb: 'stop' });
          command(again, slot, { verb: 'start' });
          break;
        case 'rule':
        case 'rule-flap': {
          const rule = prng.int(0, rules - 1);
          const verb = prng.pick(['drain', 'disable', 'enable'] as const);
          command(at, slot, { verb, rules: [rule] });
          if (kind === 'rule-flap') command(again, slot, { verb: 'enable', rules: [rule] });
          break;
        }
        case 'drainstop': {
          if (members.length <= 1) break;
          command(at, slot, { verb: 'drainstop' });
          // Sometimes started again before the drain completes (the drain is cancelled).
          if (prng.chance(0.5)) {
            command(again, slot, { verb: 'start' });
          } else {
            command(at + prng.float(0.5, 2 * T) * P, slot, { verb: 'connectionsEnded' });
            command(at + prng.float(2 * T, 3 * T) * P, slot, { verb: 'start' });
          }
          break;
        }
        case 'cut': {
          if (at < cutUntil) break;
          const other = prng.pick(
            Array.from({ length: hosts }, (_, s) => s).filter((s) => s !== slot),
          );
          // Around the detection time: sometimes just short of it, sometimes just past it.
          cutUntil = at + prng.float(T - 1, T + 1) * P;
          add(at, { do: 'cut', from: slot, to: other });
          add(at, { do: 'cut', from: other, to: slot });
          add(cutUntil, { do: 'heal' });
          break;
        }
      }
    }
  }
}
