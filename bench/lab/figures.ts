// Small helpers for the lab benchmark's figures: the order of alternating runs, and a histogram.

/**
 * The paths of `rounds` rounds, each round both, in the opposite order to the round before
 * (ABBA), so that a drift of the machine's load favours neither.
 */
export function abbaOrder<A, B>(rounds: number, first: A, second: B): (A | B)[] {
  return Array.from({ length: rounds }, (_, r) =>
    r % 2 === 0 ? [first, second] : [second, first],
  ).flat();
}

/** Upper edges of the programming histogram (ms); the last bin is everything above. */
const histogramEdgesMs = [1, 2, 3, 5, 10, 20];

/** How many samples fall in each bin of `histogramEdgesMs` (upToMs null: above the last edge). */
export function histogram(samples: readonly number[]): { upToMs: number | null; count: number }[] {
  const bins = histogramEdgesMs.map((upToMs) => ({ upToMs: upToMs as number | null, count: 0 }));
  bins.push({ upToMs: null, count: 0 });
  for (const ms of samples) {
    bins.find((b) => b.upToMs === null || ms <= b.upToMs)!.count++;
  }
  return bins;
}
