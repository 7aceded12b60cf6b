// The simulator's only source of randomness: a small seeded generator (xoshiro128**, seeded
// through splitmix32), so a run is a pure function of its seed. Nothing in src/sim reads
// Math.random or the wall clock; replaying a seed replays the run exactly.

/** Seeds are u32: short enough to type back in from a failure message. */
export function normaliseSeed(seed: number): number {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new Error(`seed must be an integer 0..4294967295, got ${seed}`);
  }
  return seed >>> 0;
}

function splitmix32(state: number): [next: number, value: number] {
  const next = (state + 0x9e3779b9) >>> 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return [next, (z ^ (z >>> 16)) >>> 0];
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class Prng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let state = normaliseSeed(seed);
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [next, value] = splitmix32(state);
      state = next;
      words.push(value);
    }
    [this.s0, this.s1, this.s2, this.s3] = words as [number, number, number, number];
    // xoshiro must not start from the all-zero state; splitmix32 never yields four zeros, but
    // the assertion keeps that fact checked rather than assumed.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) {
      throw new Error('prng: all-zero state');
    }
  }

  /** A uniform u32. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A uniform float in [0, 1). */
  next(): number {
    return this.nextU32() / 0x100000000;
  }

  /** A uniform integer in [low, high], both included. */
  int(low: number, high: number): number {
    if (!(Number.isInteger(low) && Number.isInteger(high) && low <= high)) {
      throw new Error(`prng.int: bad range [${low}, ${high}]`);
    }
    return low + Math.floor(this.next() * (high - low + 1));
  }

  /** A uniform float in [low, high). */
  float(low: number, high: number): number {
    return low + this.next() * (high - low);
  }

  /** true with probability p. */
  chance(p: number): boolean {
    return p > 0 && this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) {
      throw new Error('prng.pick: empty list');
    }
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** Picks by weight; weights need not sum to 1. */
  weighted<T>(entries: readonly (readonly [item: T, weight: number])[]): T {
    const total = entries.reduce((sum, [, weight]) => sum + weight, 0);
    let point = this.next() * total;
    for (const [item, weight] of entries) {
      point -= weight;
      if (point < 0) {
        return item;
      }
    }
    return entries[entries.length - 1]![0];
  }

  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }

  /** An independent generator for one concern (e.g. the network), so adding draws elsewhere
   * does not shift every other draw of the run. */
  fork(): Prng {
    return new Prng(this.nextU32());
  }
}
