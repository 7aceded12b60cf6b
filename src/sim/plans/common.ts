// Checks and helpers every planner shares: argument ranges, the shape and delay limits the
// timing bounds assume, the warm-up of a cold cluster, and the order of a finished schedule.
import { convergenceBoundPeriods } from '../bounds.js';
import {
  type ClusterShape,
  buildConfig,
  configDocument,
  defaultHostSettings,
} from '../cluster-config.js';
import { type LinkConditions, maxOneWayDelayMs } from '../network.js';
import type { ScheduledAction } from '../types.js';

export function checkRange(
  name: string,
  value: number,
  low: number,
  high: number,
  scenario: string,
): void {
  if (!(Number.isInteger(value) && value >= low && value <= high)) {
    throw new Error(`the ${scenario} scenario needs ${name} from ${low} to ${high}, got ${value}`);
  }
}

/** Time for a cold cluster to form: boot stagger, then I3's bound, then two periods of calm. */
export function warmupMs(shape: ClusterShape): number {
  return (convergenceBoundPeriods(shape.tolerance) + 3) * shape.periodMs;
}

export function validateShape(shape: ClusterShape): void {
  // The config schema holds the real limits; building one config checks them with its messages.
  buildConfig(configDocument(shape, defaultHostSettings(1, shape.ruleSet)));
}

export function checkDelay(conditions: LinkConditions, periodMs: number): void {
  const worst = maxOneWayDelayMs(conditions);
  if (worst > periodMs / 4) {
    throw new Error(
      `the largest one-way delay (${worst} ms) must stay under a quarter period (${periodMs / 4} ms): the timing bounds assume it`,
    );
  }
}

export function sortSchedule(schedule: ScheduledAction[]): ScheduledAction[] {
  // Stable: actions at one instant keep the order they were planned in.
  return schedule
    .map((entry, i) => ({ entry, i }))
    .sort((a, b) => a.entry.atMs - b.entry.atMs || a.i - b.i)
    .map(({ entry }) => entry);
}

/** Times to 0.01 ms keep transcripts readable; the clock itself is exact. */
export function round(value: number): number {
  return Math.round(value * 100) / 100;
}
