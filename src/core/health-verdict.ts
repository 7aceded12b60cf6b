// The two judgements a rule's checks make of their probes (issue 14), pure so that the daemon
// and the tests share them: the health verdict (`fall` failures in a row make a healthy service
// unhealthy, `rise` successes in a row make it healthy again, as HAProxy's `check fall rise`),
// and the weight filter of an agent check (a reading close to the weight in force is noise; the
// weight in force changes at most once per hold time, so a noisy service does not move buckets
// every second; 0, the service asking to be taken out, is taken at once).

export interface Verdict {
  readonly healthy: boolean;
  /** Successes in a row (0 after a failure). */
  readonly successes: number;
  /** Failures in a row (0 after a success). */
  readonly failures: number;
}

/** A service is taken as healthy until its checks say otherwise. */
export const initialVerdict: Verdict = { healthy: true, successes: 0, failures: 0 };

/** The verdict after one more probe result. */
export function nextVerdict(verdict: Verdict, ok: boolean, fall: number, rise: number): Verdict {
  const successes = ok ? verdict.successes + 1 : 0;
  const failures = ok ? 0 : verdict.failures + 1;
  const healthy = verdict.healthy ? failures < fall : successes >= rise;
  return { healthy, successes, failures };
}

export interface WeightFilter {
  /** The weight in force (reported to the host machine), or undefined before the first reading. */
  readonly inForce: number | undefined;
  /** When it was put in force. */
  readonly sinceMs: number;
}

export const initialWeightFilter: WeightFilter = { inForce: undefined, sinceMs: -Infinity };

/** The filter after one reading at `nowMs`; `changed` when the weight in force is new. */
export function filterWeight(
  filter: WeightFilter,
  reading: number,
  nowMs: number,
  hysteresis: number,
  holdMs: number,
): { readonly filter: WeightFilter; readonly changed: boolean } {
  const current = filter.inForce;
  const unchanged = { filter, changed: false };
  if (current === reading) return unchanged;
  if (current !== undefined) {
    const edge = reading === 0 || reading === 100;
    if (!edge && Math.abs(reading - current) < hysteresis) return unchanged;
    if (reading !== 0 && nowMs - filter.sinceMs < holdMs) return unchanged;
  }
  return { filter: { inForce: reading, sinceMs: nowMs }, changed: true };
}
