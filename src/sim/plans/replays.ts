// Replayed heartbeats laid over any plan: an eavesdropper on the segment sends recorded
// heartbeats again, which the protocol must drop every one of.
import { Prng } from '../prng.js';
import type { ScheduledAction, SimPlan } from '../types.js';

/**
 * The plan with replayed heartbeats added: about one replay action per two periods, each of 1
 * to 8 recorded heartbeats to one slot. Drawn from a generator of its own, so the rest of the
 * plan is exactly the plan without replays (a run with and one without can be compared).
 * `settled` keeps each replay out of the window after a boot of or command to its target.
 */
export function withReplays(plan: SimPlan, when: 'anytime' | 'settled'): SimPlan {
  const prng = new Prng((plan.seed ^ 0x5eed_4e4c) >>> 0);
  const P = plan.shape.periodMs;
  const quietAfterMs = (plan.shape.tolerance + 2) * P;
  const busy = new Map<number, number[]>();
  for (const { atMs, action } of plan.schedule) {
    if (action.do === 'boot' || action.do === 'command') {
      busy.set(action.slot, [...(busy.get(action.slot) ?? []), atMs]);
    }
  }
  const replays: ScheduledAction[] = [];
  const count = Math.floor(plan.durationMs / (2 * P));
  for (let i = 0; i < count; i++) {
    const atMs = prng.float(0, plan.durationMs);
    const slot = prng.int(0, plan.slots - 1);
    if (
      when === 'settled' &&
      (busy.get(slot) ?? []).some((t) => atMs >= t && atMs < t + quietAfterMs)
    ) {
      continue;
    }
    replays.push({
      atMs,
      action: { do: 'replay', slot, count: prng.int(1, 8), pick: prng.nextU32() },
    });
  }
  const schedule = [...plan.schedule, ...replays].sort((a, b) => a.atMs - b.atMs);
  return { ...plan, schedule };
}
