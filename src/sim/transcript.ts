// The run's story as text lines stamped with virtual time, e.g.
//   [    1234.5 ms] h2 converged members=1,2,3
// kept in a ring of bounded size: a failure prints the lines that led to it, and a long run
// does not grow without limit.

export function formatTimeMs(atMs: number): string {
  return `[${atMs.toFixed(1).padStart(10)} ms]`;
}

/** `key=value` pairs of a protocol event, arrays joined with commas, in the order given. */
export function formatFields(
  fields: Record<string, unknown>,
  skip: readonly string[] = [],
): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    if (skip.includes(key) || value === undefined) continue;
    parts.push(`${key}=${formatValue(value)}`);
  }
  return parts.join(' ');
}

function formatValue(value: unknown): string {
  if (Array.isArray(value)) return value.map(formatValue).join(',');
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  if (value !== null && typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

export class Transcript {
  private readonly lines: string[] = [];
  private start = 0;
  private dropped = 0;

  constructor(private readonly linesMax: number) {
    if (!(Number.isInteger(linesMax) && linesMax > 0)) {
      throw new Error(`transcript: linesMax must be a positive integer, got ${linesMax}`);
    }
  }

  add(atMs: number, text: string): void {
    const line = `${formatTimeMs(atMs)} ${text}`;
    if (this.lines.length < this.linesMax) {
      this.lines.push(line);
    } else {
      this.lines[this.start] = line;
      this.start = (this.start + 1) % this.linesMax;
      this.dropped += 1;
    }
  }

  /** How many lines fell out of the ring. */
  get droppedLines(): number {
    return this.dropped;
  }

  toArray(): string[] {
    return [...this.lines.slice(this.start), ...this.lines.slice(0, this.start)];
  }

  /** The last `count` lines. */
  tail(count: number): string[] {
    const all = this.toArray();
    return all.slice(Math.max(0, all.length - count));
  }
}
