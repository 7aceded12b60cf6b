// What the simulator knows of each host process it runs (a `Node`: the machine, what it was
// told, what its data plane holds), the items of its event queue, and the small pure helpers
// the driver and the action handlers share.
import type { Config } from '../core/config.js';
import type { RuleState } from '../core/heartbeat.js';
import type { HostStatus, Ownership } from '../core/protocol.js';
import type { Expectation, SimAction, SimHost } from './types.js';

/** One host process the simulation booted, and what the simulation knows about it. */
export interface Node {
  readonly index: number;
  readonly slot: number;
  readonly hostId: number;
  readonly incarnation: number;
  readonly config: Config;
  readonly key: Uint8Array;
  readonly machine: SimHost;
  alive: boolean;
  expect: Expectation;
  status: HostStatus;
  /** Per port rule, as the operator's accepted enable / disable / drain commands left it. */
  ruleStates: RuleState[];
  /** Per port rule, as the accepted `health` reports left it (true until one says otherwise). */
  health: boolean[];
  /** Per port rule, the load weight in force: the accepted `weight` report, else the config's. */
  weights: number[];
  signature: string;
  owned: readonly (readonly number[])[];
  pendingWakeMs: number;
  wakeToken: number;
  lastStepMs: number;
  stepsThisInstant: number;
  readonly bootMs: number;
  /** Ids of the recorded datagrams this process received (see `replay`). */
  readonly received: Set<number>;
}

/** A datagram as an eavesdropper on the segment recorded it. */
export interface Recorded {
  readonly from: number;
  readonly sentAtMs: number;
  readonly bytes: Uint8Array;
}

/** What the simulation's event queue holds, ordered by virtual time. */
export type QueueItem =
  | {
      readonly kind: 'deliver';
      readonly from: number;
      readonly toSlot: number;
      readonly fromSlot: number;
      readonly bytes: Uint8Array;
      readonly sentAtMs: number;
      readonly duplicate: boolean;
      readonly corrupted: boolean;
      /** The recorded datagram this is a copy of. */
      readonly id: number;
    }
  | { readonly kind: 'wake'; readonly node: number; readonly token: number }
  | { readonly kind: 'action'; readonly action: SimAction }
  | { readonly kind: 'settle'; readonly key: string }
  | { readonly kind: 'bound' };

/** The buckets a data plane accepts new flows for, per rule: none when inactive or disabled. */
export function effectiveOwned(ownership: Ownership): number[][] {
  if (!ownership.active) return [];
  return ownership.rules.map((rule) => (rule.disabled ? [] : [...rule.owned]));
}

/** What of a host's status the transcript reports when it changes. */
export function signatureOf(status: HostStatus): string {
  return `${status.state}|${status.converged}|${status.members.join(',')}|${status.mapDigest}`;
}

/** What `after` has that `before` lacks, and the other way round. */
export function diff(
  before: readonly number[],
  after: readonly number[],
): { added: number[]; removed: number[] } {
  const b = new Set(before);
  const a = new Set(after);
  return { added: after.filter((x) => !b.has(x)), removed: before.filter((x) => !a.has(x)) };
}
