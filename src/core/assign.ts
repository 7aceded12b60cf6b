// Placeholder signature: the implementation is being written (see assign tests).
import type { FilteringMode } from './config.js';

export interface AssignMember {
  readonly id: number;
  /** 0..100; 0 takes no new flows. */
  readonly loadWeight: number;
  /** 1..32, lowest wins in `single` mode. */
  readonly handlingPriority: number;
  /** A draining host (drainstop, or this rule drained on it) gets quota 0. */
  readonly draining: boolean;
}

export interface AssignInput {
  readonly mode: FilteringMode;
  readonly buckets: number;
  /** Current owner of each bucket (host id), or null; length === buckets. */
  readonly owners: readonly (number | null)[];
  readonly members: readonly AssignMember[];
}

export function assign(_input: AssignInput): (number | null)[] {
  throw new Error('not implemented');
}
