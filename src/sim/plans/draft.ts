// A random plan while it is being drawn: what each machine slot is doing at the time of the
// fault being planned, which slots earlier faults still hold, and the schedule so far. The
// fault planners (node-faults.ts, intruders.ts, network-faults.ts, flap.ts) read and update it.
import type { ClusterShape } from '../cluster-config.js';
import type { LinkConditions } from '../network.js';
import type { Prng } from '../prng.js';
import type { ScheduledAction, SimAction } from '../types.js';
import type { FaultProfile } from './options.js';

/** What the host on a slot is doing, as the plan so far left it. */
export type SlotState = 'new' | 'down' | 'member' | 'off' | 'draining';

export interface DraftStart {
  readonly prng: Prng;
  readonly profile: FaultProfile;
  readonly hosts: number;
  /** Extra machine slots for intruders (duplicates, mismatches). */
  readonly spares: number;
  readonly shape: ClusterShape;
  /** The link conditions without faults. */
  readonly base: LinkConditions;
  /** The most one-way delay the timing bounds allow: a quarter period. */
  readonly budgetMs: number;
  /** The end of the fault window: every fault heals by then. */
  readonly end: number;
  readonly schedule: ScheduledAction[];
  readonly state: SlotState[];
  /** When each slot's host last began to take part (boot or start), to pick settled anchors. */
  readonly activeSince: number[];
}

export interface RandomDraft extends DraftStart {
  /** Machine slots on the segment: hosts, then the spares. */
  readonly slots: number;
  /** Until when a slot stays out of further faults (a restart, a drain, an intruder's anchor). */
  readonly pinnedUntil: Map<number, number>;
  /** Until when a partition or cut lasts; no second one starts before. */
  partitionedUntil: number;
  /** Directed links (`from>to`) given conditions of their own, restored at the end. */
  readonly modifiedLinks: Set<string>;
  sparesUsed: number;
}

export function startDraft(start: DraftStart): RandomDraft {
  return {
    ...start,
    slots: start.hosts + start.spares,
    pinnedUntil: new Map(),
    partitionedUntil: -1,
    modifiedLinks: new Set(),
    sparesUsed: 0,
  };
}

/** Schedules `action`, no later than the end of the fault window. */
export function addAction(draft: RandomDraft, atMs: number, action: SimAction): void {
  draft.schedule.push({ atMs: Math.min(atMs, draft.end), action });
}

/**
 * A slot is free for a fault once its host has booted (chaos strikes while the cluster forms,
 * before some initial boots: seed 7755 crashed a host before its boot, then "rejoined" it
 * while it ran) and no earlier fault pinned it.
 */
export function isFree(draft: RandomDraft, slot: number, at: number): boolean {
  return (draft.pinnedUntil.get(slot) ?? -1) < at && draft.activeSince[slot]! <= at;
}

export function slotsIn(draft: RandomDraft, ...wanted: SlotState[]): number[] {
  return draft.state.flatMap((s, slot) => (wanted.includes(s) ? [slot] : []));
}

/** Running members free for a fault at `at`. */
export function freeMembers(draft: RandomDraft, at: number): number[] {
  return slotsIn(draft, 'member').filter((s) => isFree(draft, s, at));
}
