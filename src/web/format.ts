// Numbers and times as the page shows them.

/** 1234567 → "1.2 M"; small numbers as they are. */
export function compact(value: number): string {
  if (value < 10_000) return String(value);
  const units = [
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k'],
  ] as const;
  for (const [size, unit] of units) {
    if (value >= size) return `${(value / size).toFixed(value >= size * 10 ? 0 : 1)} ${unit}`;
  }
  return String(value);
}

export function bytes(value: number): string {
  if (value < 1024) return `${value} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = value / 1024;
  let unit = 0;
  while (v >= 1024 && unit < units.length - 1) {
    v /= 1024;
    unit++;
  }
  return `${v.toFixed(v >= 10 ? 0 : 1)} ${units[unit]}`;
}

/** The time of day of an ISO time, with milliseconds: convergences are that fast. */
export function clock(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const pad = (n: number, width = 2): string => String(n).padStart(width, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

export function hostsText(ids: readonly number[]): string {
  return ids.length === 0 ? 'none' : ids.join(', ');
}
