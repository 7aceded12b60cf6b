// The vocabulary of plans: the named scenarios, the fault profiles of `random`, and the options
// a plan is built from. Kept apart from the planners so each of them can import it without
// importing the others.
import type { RuleSet } from '../cluster-config.js';
import type { LinkConditions } from '../network.js';

export const scenarioKinds = [
  'crash',
  'join',
  'leave',
  'drainstop',
  'partition',
  'loss',
  'restart',
  'duplicate-id',
  'config-mismatch',
  'steady',
  'random',
] as const;
export type ScenarioKind = (typeof scenarioKinds)[number];

/** The profiles a random plan draws from (the seeds stored in tests depend on this list). */
export const faultProfiles = ['calm', 'lossy', 'partitions', 'churn', 'chaos', 'flap'] as const;
/** Profiles run only when asked for by name (`profile`): `service` (plans/service.ts). */
export const namedOnlyProfiles = ['service'] as const;
export type FaultProfile = (typeof faultProfiles)[number] | (typeof namedOnlyProfiles)[number];

export interface PlanOptions {
  readonly seed: number;
  readonly scenario: ScenarioKind;
  /** 1..32; `random` draws it from the seed when absent (most runs small). */
  readonly hosts?: number;
  readonly periodMs?: number;
  readonly tolerance?: number;
  /** Run length; by default long enough for the scenario and I3's bound. */
  readonly durationMs?: number;
  /** Heartbeat loss for `loss` (default 5%); also added to any other named scenario. */
  readonly lossRate?: number;
  readonly ruleSet?: RuleSet;
  /** Link conditions without faults (default: the lab's measured path). */
  readonly conditions?: LinkConditions;
  /** Forces the fault profile of a `random` plan. */
  readonly profile?: FaultProfile;
  /**
   * Adds replayed heartbeats to the plan (see `withReplays`): `anytime`, or `settled`, only
   * outside the detection window after each boot of or command to the target (where a replay
   * may still make a host that just started wait, and nothing else).
   */
  readonly replays?: 'anytime' | 'settled';
}

export const hostsMin = 1;
export const hostsMaxSim = 32;
