// I1 and I1b, checked from outside the hosts against what each host's data plane was told
// (its last `Ready.ownership`), never against what the hosts believe.
//
// "Hosts that can hear each other" is defined by what the network actually delivered, not by
// link state alone: with loss, an up link can be silent long enough for a correct protocol to
// declare its peer dead, and a partition's heal cannot be resolved before the two sides have
// heard each other. For an ordered pair (A hears B), A's *hearing streak* is the run of fresh
// datagrams (not duplicates, not corrupted, newer than any before, same cluster key) A received
// from B's current incarnation with no gap of `streakGapMs` or more between them or up to now.
// streakGapMs is (tolerance - 1) × period: a shorter silence must never make a correct host
// declare its peer dead, so the allowance is never wider than the protocol's own timeout.
//
//   hearing(A, B): A's streak on B and B's streak on A are both current.
//   contact(A, B): hearing(A, B), and since the later of the two streak starts s, each has
//                  received a datagram the other sent at or after s. That is the merge
//                  allowance: when a partition heals (or a false detection ends), both sides
//                  legitimately own the same buckets until each has heard the other's claims
//                  and the other has answered; only then is the pair "connected" for I1.
//
//   I1:  no bucket is ever owned by two hosts in contact.
//   I1b: no host ever acquires a bucket that a host it is hearing owns. This closes the
//        merge allowance for new acquisitions: taking a bucket from under a peer one hears is
//        a bug even mid-merge, whereas keeping one is what a merge is about to resolve.

export interface SafetyNode {
  readonly index: number;
  readonly hostId: number;
  readonly incarnation: number;
  /** Hosts with different cluster keys cannot hear each other, whatever the network does. */
  readonly keyGroup: number;
}

interface Streak {
  lastReceivedMs: number;
  startMs: number;
  /** Send time of the newest datagram received (by the sender's clock, which is ours). */
  lastSentMs: number;
}

export interface SafetyViolation {
  readonly invariant: 'I1' | 'I1b';
  readonly message: string;
}

function describe(node: SafetyNode): string {
  return `h${node.hostId} (incarnation ${node.incarnation})`;
}

export class SafetyChecker {
  private readonly streaks = new Map<number, Streak>();
  /** Pairs (low index × 65536 + high index) last seen in contact. */
  private readonly contactPairs = new Set<number>();
  /** owners[rule][bucket] = indices of nodes whose data plane accepts new flows for it. */
  private readonly owners: number[][][] = [];
  private readonly owned = new Map<number, readonly (readonly number[])[]>();
  private readonly nodes = new Map<number, SafetyNode>();

  constructor(private readonly streakGapMs: number) {
    if (!(streakGapMs > 0)) throw new Error(`safety: streakGapMs must be > 0, got ${streakGapMs}`);
  }

  addNode(node: SafetyNode): void {
    this.nodes.set(node.index, node);
  }

  /** A host crashed: its data plane is gone and it hears nothing more. */
  removeNode(index: number): void {
    this.setOwned(index, [], 0, false);
    this.nodes.delete(index);
  }

  private streak(receiver: number, sender: number): Streak | undefined {
    return this.streaks.get(receiver * 65536 + sender);
  }

  private current(streak: Streak | undefined, nowMs: number): streak is Streak {
    return streak !== undefined && nowMs - streak.lastReceivedMs < this.streakGapMs;
  }

  hearing(a: number, b: number, nowMs: number): boolean {
    return this.current(this.streak(a, b), nowMs) && this.current(this.streak(b, a), nowMs);
  }

  contact(a: number, b: number, nowMs: number): boolean {
    const ab = this.streak(a, b);
    const ba = this.streak(b, a);
    if (!this.current(ab, nowMs) || !this.current(ba, nowMs)) return false;
    const since = Math.max(ab.startMs, ba.startMs);
    return ab.lastSentMs >= since && ba.lastSentMs >= since;
  }

  /**
   * `receiver` processed a fresh datagram `sender` sent at `sentAtMs`. Call after the
   * receiver's step, so it had its chance to resolve what the datagram told it.
   */
  heard(receiver: number, sender: number, sentAtMs: number, nowMs: number): SafetyViolation[] {
    const a = this.nodes.get(receiver);
    const b = this.nodes.get(sender);
    if (a === undefined || b === undefined || a.keyGroup !== b.keyGroup) return [];
    const key = receiver * 65536 + sender;
    const streak = this.streaks.get(key);
    if (streak !== undefined && sentAtMs <= streak.lastSentMs) return []; // Stale or reordered.
    if (streak === undefined || nowMs - streak.lastReceivedMs >= this.streakGapMs) {
      this.streaks.set(key, { lastReceivedMs: nowMs, startMs: nowMs, lastSentMs: sentAtMs });
    } else {
      streak.lastReceivedMs = nowMs;
      streak.lastSentMs = sentAtMs;
    }
    const pair = Math.min(receiver, sender) * 65536 + Math.max(receiver, sender);
    const inContact = this.contact(receiver, sender, nowMs);
    const was = this.contactPairs.has(pair);
    if (!inContact) {
      this.contactPairs.delete(pair);
      return [];
    }
    this.contactPairs.add(pair);
    // Contact can only begin on a reception; when it does, everything both own must differ.
    return was ? [] : this.checkPair(a, b, nowMs);
  }

  private checkPair(a: SafetyNode, b: SafetyNode, nowMs: number): SafetyViolation[] {
    const ownedA = this.owned.get(a.index) ?? [];
    const ownedB = this.owned.get(b.index) ?? [];
    const out: SafetyViolation[] = [];
    ownedA.forEach((buckets, rule) => {
      const other = new Set(ownedB[rule] ?? []);
      const both = buckets.filter((bucket) => other.has(bucket));
      if (both.length > 0) {
        out.push({
          invariant: 'I1',
          message: `rule ${rule} bucket(s) ${both.join(',')} owned by both ${describe(a)} and ${describe(b)} once they were in contact at ${nowMs.toFixed(1)} ms`,
        });
      }
    });
    return out;
  }

  /** The node's data plane now accepts new flows for `owned` (per rule, sorted). */
  setOwned(
    index: number,
    owned: readonly (readonly number[])[],
    nowMs: number,
    check = true,
  ): SafetyViolation[] {
    const node = this.nodes.get(index);
    const before = this.owned.get(index) ?? [];
    const out: SafetyViolation[] = [];
    const rules = Math.max(before.length, owned.length);
    for (let rule = 0; rule < rules; rule++) {
      const was = new Set(before[rule] ?? []);
      const now = new Set(owned[rule] ?? []);
      const byBucket = (this.owners[rule] ??= []);
      for (const bucket of was) {
        if (!now.has(bucket)) {
          byBucket[bucket] = (byBucket[bucket] ?? []).filter((i) => i !== index);
        }
      }
      for (const bucket of now) {
        if (was.has(bucket)) continue;
        const others = byBucket[bucket] ?? [];
        if (check && node !== undefined) {
          for (const otherIndex of others) {
            const other = this.nodes.get(otherIndex)!;
            if (this.contact(index, otherIndex, nowMs)) {
              out.push({
                invariant: 'I1',
                message: `${describe(node)} acquired rule ${rule} bucket ${bucket} while ${describe(other)}, in contact with it, owned it`,
              });
            } else if (this.hearing(index, otherIndex, nowMs)) {
              out.push({
                invariant: 'I1b',
                message: `${describe(node)} acquired rule ${rule} bucket ${bucket} while ${describe(other)}, which it hears (and which hears it), owned it`,
              });
            }
          }
        }
        byBucket[bucket] = [...others, index];
      }
    }
    if (owned.length === 0) this.owned.delete(index);
    else this.owned.set(index, owned);
    return out;
  }

  /** Indices of the nodes that own (rule, bucket) now. */
  ownersOf(rule: number, bucket: number): readonly number[] {
    return this.owners[rule]?.[bucket] ?? [];
  }
}
