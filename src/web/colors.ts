// One colour per host id, the same on every page and every run, so host 2 is always the same
// colour in the grid, the legend and the hosts panel. The first nine are a palette chosen to be
// told apart (Tableau 10 without its grey, which stands for "nobody"); later ids walk the hue
// circle by the golden angle, which keeps neighbours far apart.
const palette = [
  '#4e79a7',
  '#f28e2b',
  '#59a14f',
  '#e15759',
  '#76b7b2',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
];

/** The colour of a bucket owned by nobody. */
export const nobodyColor = '#bab0ac';

export function hostColor(hostId: number | null): string {
  if (hostId === null) return nobodyColor;
  const fixed = palette[hostId - 1];
  if (fixed !== undefined) return fixed;
  const hue = Math.round((hostId * 137.508) % 360);
  return `hsl(${hue} 55% 50%)`;
}
