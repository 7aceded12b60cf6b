// Bucket assignment (docs/protocol.md#assignment): the target bucket map of one port rule, as a
// pure function of inputs every member sees alike (membership, load weights, handling priorities
// and the current owners read from the heartbeat bitmaps). Every host computes it on its own and
// they agree.
//
// `multiple` mode, exactly:
//   1. Eligible hosts are the members with loadWeight > 0 that are not draining.
//   2. Quotas: host h gets floor(B × w_h / W) buckets (W = Σ w over eligible hosts); the
//      B − Σ floor(...) buckets left over go one each to the hosts with the largest remainders
//      (B × w_h mod W), ties to the lower host id. Integer arithmetic only, so every host
//      computes the same quotas (B × w ≤ 1024 × 100 is far inside the exact range of a double).
//   3. Each eligible host keeps the lowest-indexed of its current buckets, up to its quota: a
//      host at or under quota keeps all it has, a host over quota releases only its excess,
//      the highest-indexed of its buckets.
//   4. The free list holds, in ascending order, every bucket not kept in step 3: released
//      excess, buckets of departed, draining or weight-0 hosts, and buckets owned by nobody.
//   5. Hosts under quota, in ascending host id, each take the next `quota − kept` buckets of
//      the free list, so each takes one contiguous run of it.
//   No eligible host: every bucket is null.
//
// Step 5's contiguous runs are what make convergence stable: while owners release the buckets
// the target takes from them and new owners acquire the buckets it gives them, in any order and
// any interleaving, every intermediate map yields the same target again (see
// test/assign.test.ts, "stability"). So hosts never chase a moving target mid-convergence.
//
// `single` mode: the non-draining member with the lowest handling priority (ties: lower host id)
// owns every bucket; load weight plays no part, as in NLB. `disabled`: every bucket is null.
import { type FilteringMode, bucketsMax, hostsMax } from './config.js';

export interface AssignMember {
  readonly id: number;
  /** 0..100; 0 takes no new flows. */
  readonly loadWeight: number;
  /** 1..32, lowest wins in `single` mode. */
  readonly handlingPriority: number;
  /** A draining host (drainstop, or this rule drained on it) gets quota 0. */
  readonly draining: boolean;
}

export interface AssignInput {
  readonly mode: FilteringMode;
  readonly buckets: number;
  /** Current owner of each bucket (host id), or null; length === buckets. */
  readonly owners: readonly (number | null)[];
  readonly members: readonly AssignMember[];
}

/** The highest load weight a host may give a rule (NLB's scale). */
const loadWeightMax = 100;

/** Programmer errors stop the caller: the protocol only ever passes validated input. */
function check(condition: boolean, message: string): asserts condition {
  if (!condition) {
    throw new Error(`assign: ${message}`);
  }
}

function isHostId(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= hostsMax;
}

function checkMembers(members: readonly AssignMember[]): void {
  check(members.length <= hostsMax, `at most ${hostsMax} members, got ${members.length}`);
  const seen = new Set<number>();
  for (const member of members) {
    check(isHostId(member.id), `member id must be an integer 1..${hostsMax}, got ${member.id}`);
    check(!seen.has(member.id), `member id ${member.id} appears twice; pass each host once`);
    seen.add(member.id);
    check(
      Number.isInteger(member.loadWeight) &&
        member.loadWeight >= 0 &&
        member.loadWeight <= loadWeightMax,
      `host ${member.id}: loadWeight must be an integer 0..${loadWeightMax}, got ${member.loadWeight}`,
    );
    check(
      isHostId(member.handlingPriority),
      `host ${member.id}: handlingPriority must be an integer 1..${hostsMax}, got ${member.handlingPriority}`,
    );
    check(typeof member.draining === 'boolean', `host ${member.id}: draining must be a boolean`);
  }
}

function checkBuckets(buckets: number): void {
  check(
    Number.isInteger(buckets) && buckets >= 1 && buckets <= bucketsMax,
    `buckets must be an integer 1..${bucketsMax}, got ${buckets}`,
  );
}

function checkInput(input: AssignInput): void {
  check(
    input.mode === 'multiple' || input.mode === 'single' || input.mode === 'disabled',
    `unknown filtering mode ${String(input.mode)}`,
  );
  checkBuckets(input.buckets);
  check(
    input.owners.length === input.buckets,
    `owners has ${input.owners.length} entries for ${input.buckets} buckets; pass one per bucket`,
  );
  for (const owner of input.owners) {
    check(
      owner === null || isHostId(owner),
      `an owner must be null or a host id 1..${hostsMax}, got ${String(owner)}`,
    );
  }
  checkMembers(input.members);
}

/**
 * How many buckets each host must own in the target map, keyed by host id; hosts that get
 * none are absent. An empty map means no host is eligible and every bucket goes to nobody.
 * The entries are in ascending host id, and the quotas always sum to `buckets` when non-empty.
 */
export function bucketQuotas(
  mode: FilteringMode,
  buckets: number,
  members: readonly AssignMember[],
): Map<number, number> {
  checkBuckets(buckets);
  checkMembers(members);
  const quotas = new Map<number, number>();
  if (mode === 'disabled') {
    return quotas;
  }
  if (mode === 'single') {
    let best: AssignMember | undefined;
    for (const member of members) {
      if (member.draining) {
        continue;
      }
      if (
        best === undefined ||
        member.handlingPriority < best.handlingPriority ||
        (member.handlingPriority === best.handlingPriority && member.id < best.id)
      ) {
        best = member;
      }
    }
    if (best !== undefined) {
      quotas.set(best.id, buckets);
    }
    return quotas;
  }
  check(mode === 'multiple', `unknown filtering mode ${String(mode)}`);
  const eligible = members
    .filter((member) => member.loadWeight > 0 && !member.draining)
    .sort((a, b) => a.id - b.id);
  const weightTotal = eligible.reduce((sum, member) => sum + member.loadWeight, 0);
  if (weightTotal === 0) {
    return quotas;
  }
  let given = 0;
  for (const member of eligible) {
    const quota = Math.floor((buckets * member.loadWeight) / weightTotal);
    quotas.set(member.id, quota);
    given += quota;
  }
  // Largest remainder: at most one extra bucket per host, and fewer left over than hosts.
  const byRemainder = eligible
    .map((member) => ({ id: member.id, remainder: (buckets * member.loadWeight) % weightTotal }))
    .sort((a, b) => b.remainder - a.remainder || a.id - b.id);
  const leftOver = buckets - given;
  check(leftOver >= 0 && leftOver < eligible.length, 'largest remainder arithmetic is off');
  for (let i = 0; i < leftOver; i++) {
    const id = byRemainder[i]!.id;
    quotas.set(id, quotas.get(id)! + 1);
  }
  for (const [id, quota] of quotas) {
    if (quota === 0) {
      quotas.delete(id);
    }
  }
  return quotas;
}

/** The target bucket map of one port rule; see the top of this file for the exact rules. */
export function assign(input: AssignInput): (number | null)[] {
  checkInput(input);
  const { buckets, owners } = input;
  const quotas = bucketQuotas(input.mode, buckets, input.members);
  const target: (number | null)[] = new Array<number | null>(buckets).fill(null);
  if (quotas.size === 0) {
    return target;
  }
  // Indexed by host id: the quota (0 for hosts without one) and how many buckets it keeps.
  const quotaOf = new Array<number>(hostsMax + 1).fill(0);
  const kept = new Array<number>(hostsMax + 1).fill(0);
  for (const [id, quota] of quotas) {
    quotaOf[id] = quota;
  }
  // Walking the buckets in ascending order keeps each host's lowest-indexed buckets, releases
  // the highest-indexed excess, and leaves the free list already sorted.
  const free: number[] = [];
  for (let bucket = 0; bucket < buckets; bucket++) {
    const owner = owners[bucket]!;
    if (owner !== null && kept[owner]! < quotaOf[owner]!) {
      target[bucket] = owner;
      kept[owner]! += 1;
    } else {
      free.push(bucket);
    }
  }
  let next = 0;
  for (const [id, quota] of quotas) {
    const deficit = quota - kept[id]!;
    for (let i = 0; i < deficit; i++) {
      target[free[next]!] = id;
      next += 1;
    }
  }
  check(next === free.length, 'quotas do not cover every bucket');
  return target;
}

/** How many buckets change owner between two maps of one rule (null → host counts). */
export function countMoves(
  before: readonly (number | null)[],
  after: readonly (number | null)[],
): number {
  check(
    before.length === after.length,
    `maps differ in length (${before.length} and ${after.length}); compare maps of one rule`,
  );
  let moves = 0;
  for (let bucket = 0; bucket < before.length; bucket++) {
    if (before[bucket] !== after[bucket]) {
      moves += 1;
    }
  }
  return moves;
}

/**
 * The fewest buckets that must change owner (as `countMoves` counts) to reach any map with the
 * target's quotas: B minus the buckets that can stay put, where a host can keep at most
 * min(held, quota) of its buckets. When no host is eligible the target is all null, and only
 * the null buckets stay put. `countMoves(owners, assign(input))` always equals this.
 */
export function minimumMoves(input: AssignInput): number {
  checkInput(input);
  const quotas = bucketQuotas(input.mode, input.buckets, input.members);
  const held = new Map<number | null, number>();
  for (const owner of input.owners) {
    held.set(owner, (held.get(owner) ?? 0) + 1);
  }
  if (quotas.size === 0) {
    return input.buckets - (held.get(null) ?? 0);
  }
  let stay = 0;
  for (const [id, quota] of quotas) {
    stay += Math.min(held.get(id) ?? 0, quota);
  }
  return input.buckets - stay;
}
