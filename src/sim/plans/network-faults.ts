// Faults of the network in a random plan: a partition into groups, one cut link, one slow and
// lossy cable, and faulty conditions on the whole segment. Each heals on its own within a few
// detection times, and everything heals at the end of the fault window (random.ts).
import { type LinkConditions, maxOneWayDelayMs } from '../network.js';
import { type RandomDraft, addAction } from './draft.js';
import { round } from './common.js';

export function planPartition(draft: RandomDraft, at: number): void {
  const { prng, slots, shape } = draft;
  if (at < draft.partitionedUntil || draft.hosts < 2) return;
  const order = prng.shuffle(Array.from({ length: slots }, (_, i) => i));
  const groups = prng.int(2, Math.min(3, slots));
  const cuts = prng
    .shuffle(Array.from({ length: slots - 1 }, (_, i) => i + 1))
    .slice(0, groups - 1)
    .sort((a, b) => a - b);
  const parts: number[][] = [];
  let from = 0;
  for (const c of [...cuts, slots]) {
    parts.push(order.slice(from, c));
    from = c;
  }
  draft.partitionedUntil = at + round(prng.float(1, 3 * shape.tolerance) * shape.periodMs);
  addAction(draft, at, { do: 'partition', groups: parts });
  addAction(draft, draft.partitionedUntil, { do: 'heal' });
}

export function planCut(draft: RandomDraft, at: number): void {
  const { prng, shape } = draft;
  if (at < draft.partitionedUntil || draft.hosts < 2) return;
  const [a, b] = drawLink(draft);
  draft.partitionedUntil = at + round(prng.float(1, 3 * shape.tolerance) * shape.periodMs);
  addAction(draft, at, { do: 'cut', from: a, to: b });
  addAction(draft, draft.partitionedUntil, { do: 'heal' });
}

/** One slow, lossy cable: its own delay, jitter and loss, in one direction. */
export function planLink(draft: RandomDraft, at: number): void {
  const { prng, slots, shape, base } = draft;
  if (slots < 2) return;
  const room = draft.budgetMs - maxOneWayDelayMs(base);
  const [a, b] = drawLink(draft);
  const slow: LinkConditions = {
    ...base,
    delayMs: round(base.delayMs + Math.max(0, room / 2)),
    jitterMs: round(base.jitterMs + Math.max(0, room / 4)),
    lossRate: round(prng.pick([0, 0.05, 0.2, 0.5])),
  };
  addAction(draft, at, { do: 'link', from: a, to: b, conditions: slow });
  addAction(draft, at + round(prng.float(1, 4 * shape.tolerance) * shape.periodMs), {
    do: 'link',
    from: a,
    to: b,
    conditions: undefined,
  });
  draft.modifiedLinks.add(`${a}>${b}`);
}

/** Loss, duplicates, reordering (and under chaos corruption) on the whole segment for a while. */
export function planConditions(draft: RandomDraft, at: number): void {
  const { prng, shape, base } = draft;
  const room = draft.budgetMs - maxOneWayDelayMs(base);
  const lossy: LinkConditions = {
    ...base,
    lossRate: round(prng.pick([0.01, 0.05, 0.1, 0.2, 0.3])),
    duplicateRate: prng.chance(0.5) ? round(prng.float(0, 0.1)) : 0,
    reorderRate: prng.chance(0.5) ? round(prng.float(0, 0.2)) : 0,
    reorderMs: round(Math.max(0, room / 4)),
    jitterMs: round(base.jitterMs + Math.max(0, room / 4)),
    corruptRate: draft.profile === 'chaos' ? round(prng.float(0, 0.02)) : 0,
  };
  addAction(draft, at, { do: 'conditions', conditions: lossy, label: 'faulty link conditions' });
  addAction(draft, at + round(prng.float(1, 4 * shape.tolerance) * shape.periodMs), {
    do: 'conditions',
    conditions: base,
    label: 'link conditions restored',
  });
}

/** Two distinct slots, drawn as the directed link from the first to the second. */
function drawLink(draft: RandomDraft): [from: number, to: number] {
  const a = draft.prng.int(0, draft.slots - 1);
  let b = draft.prng.int(0, draft.slots - 2);
  if (b >= a) b += 1;
  return [a, b];
}
