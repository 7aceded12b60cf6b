// The decision, in named phases: membership, the target map, release, agreement, acquisition
// and convergence (docs/protocol.md#membership, #the-target-map, #release-before-acquire,
// #convergence). Part of the host machine (host.ts).
import { createHash } from 'node:crypto';
import { assign, type AssignMember } from './assign.js';
import { ackFor } from './heartbeat.js';
import { type MachineState, takesPart, hex, ownLoadWeight, sameList } from './host-state.js';
import { agreement } from './host-announcements.js';
import { reviewConfigKeepOut, reviewDuplicateKeepOut } from './host-keepout.js';

/**
 * The decision, run once per step after the inputs: keep-out review, then membership, the
 * target map, release, agreement, acquisition and convergence, in that order (host.ts states
 * the rules). Each phase is a function of its own below.
 */
export function decide(s: MachineState, now: number): void {
  // Whether this decision moves a bucket: every phase before acquire only gives buckets up,
  // and acquire only takes, so two counts tell.
  const ownedAtStart = ownedCount(s);
  // Kept out while another host that was there first uses our id, or for a config mismatch
  // while a larger (or equal, lower-id) cluster disagrees.
  reviewDuplicateKeepOut(s, now);
  reviewConfigKeepOut(s, now);
  s.pending = false;
  s.agreeing.clear();
  advanceGeneration(s, now);
  const membersChanged = updateMembership(s, now);
  const members = s.members;
  yieldToLowerIds(s);
  const targets = computeTargets(s, now, members);
  const digest = digestOf(s, members, targets);
  const targetChanged = hex(digest) !== hex(s.mapDigest);
  s.targets = targets;
  s.mapDigest = digest;
  if ((membersChanged || targetChanged) && s.converged) {
    s.converged = false;
    s.convergingSinceMs = now;
    s.emit(now, 'converging', { reason: s.convergingReason, members });
  }

  if (!s.participating) {
    s.converged = false;
    s.decisionMoved = ownedCount(s) !== ownedAtStart;
    return;
  }

  releaseOutsideTarget(s, targets);
  const ownedAfterRelease = ownedCount(s);
  const agreed = agreement(s, members, targets, hex(digest));
  const pending = (s.pending = viewAboutToChange(s, now, members));
  // Always evaluated (it updates `s.alone`, which `isDefault` reads), whatever the agreement.
  const unhindered = mayAcquire(s, now);
  if (agreed && !pending && unhindered) acquire(s, now, targets);
  s.decisionMoved = ownedAtStart !== ownedAfterRelease || ownedCount(s) !== ownedAfterRelease;
  reviewConvergence(s, now, agreed && !pending);
}

function ownedCount(s: MachineState): number {
  let count = 0;
  for (const owned of s.owned) count += owned.size;
  return count;
}

/**
 * A new generation whenever what this host feeds into the assignment changes while it takes
 * part (taking part again, draining, a rule enabled, disabled or drained, a reload): a target
 * computed before can then never be this host's target again, which lets peers disregard their
 * older announcements of it (see `reportCounts`).
 */
export function advanceGeneration(s: MachineState, now: number): void {
  const inputsKey = JSON.stringify([
    s.adminState,
    s.ruleStates,
    s.ruleHealth,
    s.reportedWeights,
    s.config.host.rules,
    hex(s.configDigest),
  ]);
  if (s.participating && (!s.wasParticipating || inputsKey !== s.lastInputsKey)) {
    s.generation += 1;
  }
  s.lastInputsKey = inputsKey;
  if (s.participating && !s.wasParticipating) {
    // Taking part again (start, link up, admitted): listen for a whole detection window
    // before taking buckets alone, as at the first start.
    s.listenUntilMs = Math.max(s.listenUntilMs, now + s.deadAfterMs);
    s.participatingFromSequence = s.sequence + 1;
  }
  s.wasParticipating = s.participating;
}

/**
 * Membership: the heard, compatible peers (`heardIds`), and the members: this host when it
 * takes part, and every heard peer that takes part and hears us back. Reports who joined and
 * who left; returns whether the members changed.
 */
export function updateMembership(s: MachineState, now: number): boolean {
  s.heardIds = [...s.peers.values()]
    .filter((p) => p.heard && p.mismatch === undefined)
    .map((p) => p.id)
    .sort((a, b) => a - b);
  const members: number[] = [];
  if (s.participating) {
    members.push(s.hostId);
    for (const id of s.heardIds) {
      const hb = s.peers.get(id)!.heartbeat;
      // It hears us back: it lists us, or it acks this process (a newcomer acks what it hears
      // before it has proven us fresh, so this saves a round trip on every join).
      const hearsUs =
        hb.heard.includes(s.hostId) || ackFor(hb, s.hostId, s.incarnation) !== undefined;
      if (takesPart(hb.state) && hearsUs) {
        members.push(id);
      }
    }
    members.sort((a, b) => a - b);
  }
  const membersChanged = !sameList(members, s.members);
  if (membersChanged && s.participating && s.members.length > 0) {
    reportMembershipChange(s, now, members);
  }
  s.members = members;
  return membersChanged;
}

/** Who joined and who left between `s.members` and `members` (events, converging reason). */
function reportMembershipChange(s: MachineState, now: number, members: readonly number[]): void {
  const joined = members.filter((id) => !s.members.includes(id) && id !== s.hostId);
  const left = s.members.filter((id) => !members.includes(id) && id !== s.hostId);
  for (const id of joined) s.emit(now, 'host joined', { host: id });
  for (const id of left) {
    const peer = s.peers.get(id);
    if (peer?.heard) {
      const reason = takesPart(peer.heartbeat.state)
        ? 'it no longer hears this host'
        : `it is ${peer.heartbeat.state}`;
      s.emit(now, 'host left', { host: id, reason });
      if (!(peer.heartbeat.state === 'stopped' || peer.heartbeat.state === 'suspended')) {
        s.emit(now, 'partition detected', { host: id, reason });
      }
    }
  }
  if (joined.length > 0) s.convergingReason = `host(s) ${joined.join(', ')} joined`;
  else if (left.length > 0 && !s.convergingReason.includes('dead'))
    s.convergingReason = `host(s) ${left.join(', ')} left`;
}

/**
 * A bucket that a heard, participating peer with a lower id also claims (two sides of a healed
 * partition) is given up at once, before that peer is even a member: releasing is always safe,
 * and the target resolves such conflicts the same way.
 */
export function yieldToLowerIds(s: MachineState): void {
  forEachLowerIdClaim(s, (r, b) => {
    if (s.owned[r]!.delete(b)) s.orphans[r]!.delete(b);
  });
}

/** Whether `yieldToLowerIds` would give up a bucket now: such a step must not wait (host.ts). */
export function mustYield(s: MachineState): boolean {
  let found = false;
  forEachLowerIdClaim(s, (r, b) => {
    found ||= s.owned[r]!.has(b);
  });
  return found;
}

/** Each bucket (rule r, bucket b) a heard, participating peer with a lower id claims. */
function forEachLowerIdClaim(s: MachineState, each: (r: number, b: number) => void): void {
  if (!s.participating) return;
  for (const id of s.heardIds) {
    const hb = s.peers.get(id)!.heartbeat;
    if (id > s.hostId || !takesPart(hb.state)) continue;
    hb.rules.forEach((rule, r) => {
      if (s.owned[r] === undefined) return;
      for (const b of rule.owned) each(r, b);
    });
  }
}

/** Release first: what the target does not give us, we stop taking new flows for now. */
export function releaseOutsideTarget(
  s: MachineState,
  targets: readonly (readonly (number | null)[])[],
): void {
  targets.forEach((target, r) => {
    const owned = s.owned[r]!;
    for (const b of [...owned]) {
      if (target[b] !== s.hostId) {
        owned.delete(b);
        s.orphans[r]!.delete(b);
      }
    }
  });
}

/**
 * Whether nothing but agreement stands in the way of acquiring: we are not listening alone, and
 * no heard host of another configuration still claims buckets. Sets `s.alone`.
 */
export function mayAcquire(s: MachineState, now: number): boolean {
  // Alone: no heard peer takes part. A stopped peer's report names no members, so hearing
  // only stopped hosts says nothing about who owns what: listen a whole detection window
  // first, as a host that hears nobody does (a restarted host proves its peers one answer at
  // a time, and a stopped one may answer first).
  const alone = (s.alone = !s.heardIds.some((id) => {
    const state = s.peers.get(id)!.heartbeat.state;
    return takesPart(state);
  }));
  // A heard host of another configuration that still claims buckets (a config rollout in
  // progress) may serve the same clients under other rules: take nothing until it yields.
  // The keep-out rule makes one side of any mismatch yield and clear its claims.
  const foreignClaims = [...s.peers.values()].some(
    (p) =>
      p.heard &&
      p.mismatch !== undefined &&
      takesPart(p.heartbeat.state) &&
      p.heartbeat.rules.some((rule) => rule.owned.length > 0),
  );
  return !foreignClaims && (!alone || now >= s.listenUntilMs);
}

/** Acquire (on agreement) what the target gives us and no heard peer still claims. */
export function acquire(
  s: MachineState,
  now: number,
  targets: readonly (readonly (number | null)[])[],
): void {
  const claimedByPeers = s.config.cluster.portRules.map(() => new Set<number>());
  for (const id of s.heardIds) {
    const hb = s.peers.get(id)!.heartbeat;
    hb.rules.forEach((rule, r) => {
      const set = claimedByPeers[r];
      if (set !== undefined) for (const b of rule.owned) set.add(b);
    });
  }
  targets.forEach((target, r) => {
    const owned = s.owned[r]!;
    target.forEach((owner, b) => {
      if (owner === s.hostId && !owned.has(b) && !claimedByPeers[r]!.has(b)) {
        owned.add(b);
        const dead = s.deadClaims[r]!.get(b);
        if (dead !== undefined && dead.untilMs > now) s.orphans[r]!.set(b, dead);
      }
    });
  });
}

/**
 * Convergence: converged once we agree, our view is not about to change, we own exactly our
 * target and every member reports it does too; reported when that begins and when it ends.
 */
export function reviewConvergence(s: MachineState, now: number, agreedAndSteady: boolean): void {
  const members = s.members;
  const settledAll =
    agreedAndSteady &&
    isSettled(s) &&
    members.every((id) => id === s.hostId || s.peers.get(id)!.heartbeat.settled);
  if (settledAll && !s.converged) {
    s.converged = true;
    const moved = s.lastConvergedTargets.length === 0 ? 0 : countMovedSinceConverged(s);
    s.lastConvergedTargets = s.targets.map((t) => [...t]);
    s.counters.convergences += 1;
    s.counters.lastConvergenceMs = now - s.convergingSinceMs;
    s.counters.lastConvergedAtMs = now;
    s.emit(now, 'converged', {
      members,
      defaultHost: defaultHost(s),
      isDefault: defaultHost(s) === s.hostId,
      durationMs: now - s.convergingSinceMs,
      bucketsMoved: moved,
      reason: s.convergingReason,
    });
  } else if (!settledAll && s.converged) {
    s.converged = false;
    s.convergingSinceMs = now;
    s.emit(now, 'converging', { reason: s.convergingReason, members });
  }
}

/**
 * The target map, per port rule: `assign` applied to the claims (for each bucket, the member
 * that announces owning it; the lowest id when several do) and the members with their weights.
 */
export function computeTargets(
  s: MachineState,
  now: number,
  members: readonly number[],
): (number | null)[][] {
  return s.config.cluster.portRules.map((rule, r) => {
    if (!s.participating) return Array.from({ length: rule.buckets }, () => null);
    const owners: (number | null)[] = Array.from({ length: rule.buckets }, () => null);
    const infos: AssignMember[] = [];
    const unhealthy = new Set<number>();
    for (const id of members) {
      let claimed: Iterable<number>;
      let info: AssignMember;
      if (id === s.hostId) {
        claimed = s.owned[r]!;
        info = {
          id,
          loadWeight: ownLoadWeight(s, r),
          handlingPriority: s.config.host.rules[r]?.handlingPriority ?? id,
          draining: s.adminState === 'draining' || s.ruleStates[r] !== 'enabled',
        };
        if (!(s.ruleHealth[r] ?? true)) unhealthy.add(id);
      } else {
        const hb = s.peers.get(id)!.heartbeat;
        const ruleHb = hb.rules[r]!;
        claimed = ruleHb.owned;
        info = {
          id,
          loadWeight: ruleHb.loadWeight,
          handlingPriority: ruleHb.handlingPriority,
          draining: hb.state === 'draining' || ruleHb.state !== 'enabled',
        };
        if (!ruleHb.healthy) unhealthy.add(id);
      }
      infos.push(info);
      for (const b of claimed) {
        if (b < rule.buckets) {
          const current = owners[b];
          owners[b] = current === null || current === undefined ? id : Math.min(current, id);
        }
      }
    }
    applyHealth(s, now, r, infos, unhealthy);
    // The same claims and members give the same target: most decisions at scale see the same
    // inputs as the one before (a heartbeat that changed something else), so reuse it.
    const key = `${rule.mode}/${rule.buckets}/${owners.join(',')}/${infos
      .map((i) => `${i.id}:${i.loadWeight}:${i.handlingPriority}:${i.draining ? 1 : 0}`)
      .join(',')}`;
    const memo = s.targetMemo[r];
    if (memo?.key === key) return [...memo.target];
    const target = assign({ mode: rule.mode, buckets: rule.buckets, owners, members: infos });
    s.targetMemo[r] = { key, target: [...target] };
    return target;
  });
}

/**
 * Health (issue 14): a member whose service fails the rule's health check yields the rule's
 * buckets as a draining member does (the same minimal movement; its connections go on), unless
 * no member that could take the rule's buckets (not draining, and a weight above 0 in a
 * `multiple` rule) is healthy: then the rule serves as if all were (fail open: a
 * dead check must not turn a degraded service into none). Every host sees the same flags in
 * the heartbeats, so every host computes the same map. Marks `infos` in place.
 */
function applyHealth(
  s: MachineState,
  now: number,
  r: number,
  infos: AssignMember[],
  unhealthy: ReadonlySet<number>,
): void {
  // The members that could take buckets of the rule (in a `multiple` rule, weight 0 takes none).
  const taking = infos.filter(
    (info) =>
      !info.draining && (s.config.cluster.portRules[r]?.mode === 'single' || info.loadWeight > 0),
  );
  const failOpen = taking.length > 0 && taking.every((info) => unhealthy.has(info.id));
  if (failOpen !== (s.failingOpen[r] ?? false)) {
    s.failingOpen[r] = failOpen;
    if (failOpen) {
      s.emit(now, 'all hosts unhealthy: failing open', { rule: r, hosts: taking.map((i) => i.id) });
    } else {
      const healthy = taking.filter((info) => !unhealthy.has(info.id)).map((info) => info.id);
      s.emit(now, 'failing open ended', { rule: r, healthy });
    }
  }
  if (failOpen) return;
  for (let i = 0; i < infos.length; i++) {
    const info = infos[i]!;
    if (unhealthy.has(info.id) && !info.draining) infos[i] = { ...info, draining: true };
  }
}

/**
 * Whether this host's view is about to change, so that it announces no target and acquires
 * nothing (see `pending`).
 */
export function viewAboutToChange(
  s: MachineState,
  now: number,
  members: readonly number[],
): boolean {
  // A heard peer that takes part but is not (yet) a member may be about to take buckets on
  // its own view: wait until it hears us and shares the view.
  // Likewise while a member reports a member that we have heard but not yet proven fresh (a
  // newcomer proves its peers one answer at a time): the view is about to grow, and a target
  // announced for the smaller view would cost an extra round of acknowledgements.
  // And, while we still listen after starting, while a process that takes part, newer than
  // any heard on its id, has not proven itself: hosts that start together hear each other
  // before either has heard the other's ack, and two pairs of them must not each agree on a
  // map alone. Once we have listened a whole detection window, anything that could own
  // buckets has proven itself or cannot hear us; a replay then changes nothing, and an older
  // process (a replay, since incarnations only grow) never makes anyone wait.
  const unproven = new Set<number>();
  let newcomer = false;
  for (const c of s.candidates.values()) {
    if (now < c.lastHeardMs + s.deadAfterMs && !s.peers.get(c.host)?.heard) {
      unproven.add(c.host);
      if (now < s.listenUntilMs && c.newest && takesPart(c.state)) {
        newcomer = true;
      }
    }
  }
  return (
    newcomer ||
    s.heardIds.some((id) => {
      const state = s.peers.get(id)!.heartbeat.state;
      return takesPart(state) && !members.includes(id);
    }) ||
    (unproven.size > 0 &&
      members.some(
        (id) =>
          id !== s.hostId &&
          s.peers.get(id)!.heartbeat.members.some((m) => m !== s.hostId && unproven.has(m)),
      ))
  );
}

export function isSettled(s: MachineState): boolean {
  return s.targets.every((target, r) => {
    const owned = s.owned[r]!;
    let count = 0;
    for (let b = 0; b < target.length; b++) {
      if (target[b] === s.hostId) {
        if (!owned.has(b)) return false;
        count++;
      }
    }
    return count === owned.size;
  });
}

export function countMovedSinceConverged(s: MachineState): number {
  let moved = 0;
  s.targets.forEach((target, r) => {
    const before = s.lastConvergedTargets[r];
    target.forEach((owner, b) => {
      if (before === undefined || before[b] !== owner) moved++;
    });
  });
  return moved;
}

export function digestOf(
  s: MachineState,
  members: readonly number[],
  targets: readonly (readonly (number | null)[])[],
): Uint8Array {
  let identities = '';
  for (const id of members) {
    const identity =
      id === s.hostId
        ? [id, s.incarnation, s.generation]
        : [id, s.peers.get(id)!.incarnation, s.peers.get(id)!.heartbeat.generation];
    identities += identity.join(':') + ';';
  }
  // Most decisions at scale see the same members and targets as the one before: reuse the
  // digest (hashing it again was a third of a 32-host decision).
  const key = `${identities}/${targets.map((t) => t.join(',')).join('|')}`;
  if (s.digestMemo?.key === key) return s.digestMemo.digest;
  const hash = createHash('sha256').update(identities);
  for (const target of targets) {
    hash.update(Uint8Array.from(target, (o) => o ?? 0));
  }
  const digest = new Uint8Array(hash.digest()).subarray(0, 8);
  s.digestMemo = { key, digest };
  return digest;
}

export function defaultHost(s: MachineState): number | null {
  const started = s.members.filter((id) => {
    if (id === s.hostId) return s.adminState === 'started';
    return s.peers.get(id)?.heartbeat.state === 'started';
  });
  return started[0] ?? s.members[0] ?? null;
}
