// The virtual network: a broadcast segment between machine slots (a restarted host keeps its
// slot, as a rebooted machine keeps its cable). Every datagram a host sends reaches every other
// slot whose link from the sender is up (heartbeats are multicast; there is no loopback), each
// copy with its own delay, jitter, loss, duplication, reordering and corruption drawn from the
// network's own generator. Partitions cut links in both directions; a one-way cut models a
// broken transmit or receive path.
import type { Prng } from './prng.js';

export interface LinkConditions {
  /** Fixed part of the one-way delay. */
  readonly delayMs: number;
  /** Uniform extra delay in [0, jitterMs). */
  readonly jitterMs: number;
  /** Probability that a copy is lost. */
  readonly lossRate: number;
  /** Probability that a copy arrives twice (the second time up to one jitter later). */
  readonly duplicateRate: number;
  /** Probability that a copy is held back by an extra [0, reorderMs), so later ones overtake it. */
  readonly reorderRate: number;
  readonly reorderMs: number;
  /** Probability that one byte of a copy is flipped (the receiver must drop it, not crash). */
  readonly corruptRate: number;
}

/**
 * The lab's measured path (p50 ~0.2 ms, p99 < 2 ms: docs/data-plane.md#measured-figures), without
 * faults.
 */
export const labLink: LinkConditions = {
  delayMs: 0.2,
  jitterMs: 0.3,
  lossRate: 0,
  duplicateRate: 0,
  reorderRate: 0,
  reorderMs: 0,
  corruptRate: 0,
};

/** The longest a copy can take under `c`: the bound every timing statement is made against. */
export function maxOneWayDelayMs(c: LinkConditions): number {
  const reorder = c.reorderRate > 0 ? c.reorderMs : 0;
  const duplicate = c.duplicateRate > 0 ? duplicateLagMs(c) : 0;
  return c.delayMs + c.jitterMs + reorder + duplicate;
}

/** How much later than the first copy a duplicate may arrive. */
function duplicateLagMs(c: LinkConditions): number {
  return Math.max(c.jitterMs, 0.1);
}

export interface Delivery {
  readonly to: number;
  readonly atMs: number;
  readonly bytes: Uint8Array;
  /** A second copy made by duplication; it counts for nothing in the hearing bookkeeping. */
  readonly duplicate: boolean;
  readonly corrupted: boolean;
}

export class Network {
  private conditions: LinkConditions;
  /** Per directed link overrides, keyed `from>to`. */
  private readonly linkConditions = new Map<string, LinkConditions>();
  /** Directed links that are down, keyed `from>to`. */
  private readonly cut = new Set<string>();
  /** The longest one-way delay any conditions set so far allow; timing bounds use it. */
  private maxDelayMs: number;
  /** Copies lost to loss or to a cut link at send time. */
  lostCopies = 0;

  constructor(
    readonly slots: number,
    private readonly prng: Prng,
    conditions: LinkConditions = labLink,
  ) {
    this.conditions = conditions;
    this.maxDelayMs = maxOneWayDelayMs(conditions);
  }

  get maxOneWayDelayMs(): number {
    return this.maxDelayMs;
  }

  get defaultConditions(): LinkConditions {
    return this.conditions;
  }

  setConditions(conditions: LinkConditions): void {
    this.conditions = conditions;
    this.maxDelayMs = Math.max(this.maxDelayMs, maxOneWayDelayMs(conditions));
  }

  setLinkConditions(from: number, to: number, conditions: LinkConditions | undefined): void {
    if (conditions === undefined) {
      this.linkConditions.delete(`${from}>${to}`);
    } else {
      this.linkConditions.set(`${from}>${to}`, conditions);
      this.maxDelayMs = Math.max(this.maxDelayMs, maxOneWayDelayMs(conditions));
    }
  }

  conditionsOf(from: number, to: number): LinkConditions {
    return this.linkConditions.get(`${from}>${to}`) ?? this.conditions;
  }

  isUp(from: number, to: number): boolean {
    return !this.cut.has(`${from}>${to}`);
  }

  cutLink(from: number, to: number): void {
    this.cut.add(`${from}>${to}`);
  }

  /** Splits the slots into groups that hear only their own group. */
  partition(groups: readonly (readonly number[])[]): void {
    const groupOf = new Map<number, number>();
    groups.forEach((group, g) => group.forEach((slot) => groupOf.set(slot, g)));
    for (let a = 0; a < this.slots; a++) {
      for (let b = 0; b < this.slots; b++) {
        if (a !== b && groupOf.get(a) !== groupOf.get(b)) {
          this.cut.add(`${a}>${b}`);
        }
      }
    }
  }

  /** Restores every link (conditions stay as they are). */
  heal(): void {
    this.cut.clear();
  }

  get partitioned(): boolean {
    return this.cut.size > 0;
  }

  /** The copies of one datagram sent by `from` at `nowMs` to every other slot in `to`. */
  send(from: number, to: readonly number[], bytes: Uint8Array, nowMs: number): Delivery[] {
    const out: Delivery[] = [];
    for (const slot of to) {
      if (slot === from) {
        continue;
      }
      const c = this.conditionsOf(from, slot);
      if (!this.isUp(from, slot) || this.prng.chance(c.lossRate)) {
        this.lostCopies += 1;
        continue;
      }
      let delayMs = c.delayMs + this.prng.next() * c.jitterMs;
      if (this.prng.chance(c.reorderRate)) {
        delayMs += this.prng.next() * c.reorderMs;
      }
      let copy = bytes;
      let corrupted = false;
      if (this.prng.chance(c.corruptRate) && bytes.length > 0) {
        copy = Uint8Array.from(bytes);
        const at = this.prng.int(0, copy.length - 1);
        copy[at] = copy[at]! ^ (1 << this.prng.int(0, 7));
        corrupted = true;
      }
      out.push({ to: slot, atMs: nowMs + delayMs, bytes: copy, duplicate: false, corrupted });
      if (this.prng.chance(c.duplicateRate)) {
        const again = nowMs + delayMs + this.prng.next() * duplicateLagMs(c);
        out.push({ to: slot, atMs: again, bytes: copy, duplicate: true, corrupted });
      }
    }
    return out;
  }
}
