// Faults of one host process in a random plan: a crash, a restart with a new incarnation, a
// late join, and the operator's stop, start and drainstop. Each leaves the slot's state as the
// host will be, so later faults pick only hosts that can take them.
import { type RandomDraft, addAction, slotsIn, isFree, freeMembers } from './draft.js';
import { round } from './common.js';

export function planCrash(draft: RandomDraft, at: number): void {
  const { prng, state } = draft;
  const candidates = slotsIn(draft, 'member', 'off', 'draining').filter((s) =>
    isFree(draft, s, at),
  );
  if (candidates.length === 0 || slotsIn(draft, 'member').length <= 1) return;
  const slot = prng.pick(candidates);
  addAction(draft, at, { do: 'crash', slot });
  state[slot] = 'down';
}

/**
 * A crash now and the same host back with a new incarnation, before or after its peers
 * declared it dead.
 */
export function planRestart(draft: RandomDraft, at: number): void {
  const { prng, shape } = draft;
  const P = shape.periodMs;
  const T = shape.tolerance;
  const candidates = slotsIn(draft, 'member').filter((s) => isFree(draft, s, at));
  if (candidates.length === 0) return;
  const slot = prng.pick(candidates);
  const bootAt = at + round(prng.float(0.2, 2 * T) * P);
  addAction(draft, at, { do: 'crash', slot });
  addAction(draft, bootAt, { do: 'boot', slot, hostId: slot + 1 });
  draft.pinnedUntil.set(slot, at + 2 * T * P);
  draft.activeSince[slot] = bootAt;
}

export function planJoin(draft: RandomDraft, at: number): void {
  const { prng, state } = draft;
  const candidates = slotsIn(draft, 'new', 'down');
  if (candidates.length === 0) return;
  const slot = prng.pick(candidates);
  addAction(draft, at, { do: 'boot', slot, hostId: slot + 1 });
  state[slot] = 'member';
  draft.activeSince[slot] = at;
}

export function planStop(draft: RandomDraft, at: number): void {
  const members = freeMembers(draft, at);
  if (members.length <= 1) return;
  const slot = draft.prng.pick(members);
  addAction(draft, at, { do: 'command', slot, command: { verb: 'stop' } });
  draft.state[slot] = 'off';
}

export function planStart(draft: RandomDraft, at: number): void {
  const candidates = slotsIn(draft, 'off').filter((s) => isFree(draft, s, at));
  if (candidates.length === 0) return;
  const slot = draft.prng.pick(candidates);
  addAction(draft, at, { do: 'command', slot, command: { verb: 'start' } });
  draft.state[slot] = 'member';
  draft.activeSince[slot] = at;
}

/** A drainstop, and the end of the host's last connection a while later. */
export function planDrainstop(draft: RandomDraft, at: number): void {
  const { prng, shape } = draft;
  const members = freeMembers(draft, at);
  if (members.length <= 1) return;
  const slot = prng.pick(members);
  addAction(draft, at, { do: 'command', slot, command: { verb: 'drainstop' } });
  const endedAt = at + round(prng.float(0.5, 3 * shape.tolerance) * shape.periodMs);
  addAction(draft, endedAt, { do: 'command', slot, command: { verb: 'connectionsEnded' } });
  draft.pinnedUntil.set(slot, endedAt);
  draft.state[slot] = 'off';
}
