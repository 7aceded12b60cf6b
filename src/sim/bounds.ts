// The timing bound I3 checks, in heartbeat periods.

/**
 * I3's bound: after the last fault heals, the cluster has converged within
 * (tolerance + convergenceSlackPeriods) heartbeat periods. Tolerance periods cover the slowest
 * thing a correct host must wait for: detecting a host that crashed at the last moment (at most
 * tolerance × period plus one delay after its last heartbeat). The slack covers, one period
 * each: the next periodic heartbeat that carries a healed link's news (a host does not know a
 * link healed until it hears across it); a host declared dead just before the heal (its peers'
 * timers ran while the link was down) being heard and admitted again; the message round trips
 * of release-before-acquire (each far below a period: every profile keeps the largest one-way
 * delay under a quarter period); and one period of margin for timer phase.
 */
export const convergenceSlackPeriods = 4;

export function convergenceBoundPeriods(tolerance: number): number {
  return tolerance + convergenceSlackPeriods;
}
