// The host state machine: the whole protocol of one nlb host as a pure function of its inputs
// (ticks, received heartbeats, operator commands). See protocol.ts for the driver contract and
// docs/protocol.md#requirements for the requirements. The rules, in brief:
//
// Membership. A peer is *heard* while its last valid heartbeat is younger than
// tolerance × period. A heard, compatible peer that is started or draining and that hears us
// back is a *member*; so is this host when it takes part. Mutual hearing keeps one-way links
// from splitting the cluster's view.
//
// Target map. Per port rule, the target is `assign` applied to the *claims* (for each bucket,
// the member that announces owning it; the lowest id when several do, as after a partition)
// and the members with their weights. `assign` moves as little as possible, and it is stable
// under the releases and acquisitions it asks for, so every member computes the same target
// from the heartbeats of a transition whatever moment it computes it at.
//
// Release before acquire. A host releases at once any bucket the target does not give it,
// programs its data plane, and only then announces its new claims. It acquires a bucket the
// target gives it only when every member announces the same membership and target digest, in a
// report recent enough to show whatever that member may have taken under a target we announced
// before (`reportCounts`), every heard peer that does not take part has heard us take part (two
// hosts started at once must not each take everything alone), and no heard peer still claims
// that bucket. Two hosts that hear each other therefore never accept new flows for one bucket at
// the same time.
//
// Immediacy. A host sends a heartbeat at once whenever what it announces changes (state, view,
// target, owned buckets) and when a peer's report newly differs from its own, so a planned
// change completes in two one-way delays and a crash in detection time plus about one delay.
//
// Freshness. Heartbeats are multicast on the segment, so anyone can record one and send it
// again later without the key. A process (host id and incarnation) is believed only once one of
// its heartbeats proves it was made recently: it acks this host's current incarnation at a
// sequence sent within `freshWindowMs`. From then on its sequence numbers guard it. Until then
// its heartbeats change nothing; they are counted ('unproven') and echoed in our acks, so that
// two hosts that have not yet heard each other can each prove themselves to the other (every
// host acks what it hears, proven or not, one process per host id). A heartbeat that acks this
// host's current incarnation at an older sequence is a replay and is dropped. Another host on
// our own id is a rival only once proven the same way; the lower incarnation keeps the id, and
// the other keeps itself out for as long as it hears that rival.
//
// The machine is split along its jobs; this file is the outline of one step, and each part
// is a file of plain functions over the shared state (host-state.ts):
//   host-receive.ts        a received heartbeat: authentication, freshness, the peer table
//   host-commands.ts       operator commands and link reports
//   host-peers.ts          the peer table over time: expiry, evidence, orphans, rejoining
//   host-keepout.ts        duplicate ids and config mismatches
//   host-decision.ts       membership, targets, release, acquisition, convergence
//   host-announcements.ts  what we announced and sent, whether a report counts, agreement
//   host-output.ts         the heartbeat, the ownership, the wake-up
import type {
  HostMachineOptions,
  HostStatus,
  Input,
  Ready,
  ReportedState,
  CommandReply,
} from './protocol.js';
import {
  type AnnouncedState,
  type HeartbeatRule,
  type RuleState,
  decodeFailures,
  heartbeatHostIdOffset,
} from './heartbeat.js';
import { command, reportInitialState } from './host-commands.js';
import { decide, defaultHost, mustYield } from './host-decision.js';
import {
  computeOwnership,
  droppedReady,
  maybeSend,
  ownershipChange,
  reportBadHeartbeats,
  wakeAt,
} from './host-output.js';
import { expireOrphans, expirePeers, noteLateness, resumeIfPaused } from './host-peers.js';
import { receive } from './host-receive.js';
import { MachineState, hex, ownLoadWeight } from './host-state.js';
import { noteOwnReleases } from './routed-forward.js';

export { badHeartbeatReportMs, mismatchReportMs, orphanHoldMs } from './host-state.js';

/** What `HostMachine.details()` returns: extra facts for `nlb query`, `params` and metrics. */
export interface HostDetails {
  keptOut: string | undefined;
  ruleStates: readonly RuleState[];
  /**
   * Per port rule: this host's service health (true without a check), the load weight its
   * service reported (null: the config's), and whether the rule fails open (no member healthy).
   */
  ruleHealth: readonly {
    healthy: boolean;
    reportedWeight: number | null;
    loadWeight: number;
    failingOpen: boolean;
  }[];
  peers: {
    id: number;
    incarnation: number;
    state: AnnouncedState;
    heard: boolean;
    lastHeardMs: number;
    mismatch: string | undefined;
    members: readonly number[];
    /** Where its last accepted heartbeat came from, when the driver said. */
    address: string | undefined;
    /**
     * Per port rule, what its last heartbeat announced: weight, priority, rule state and the
     * buckets it claims (accepts new flows for). Empty for a peer whose config differs.
     */
    rules: readonly HeartbeatRule[];
  }[];
  counters: {
    heartbeatsSent: number;
    heartbeatsReceived: number;
    decisionsSkipped: number;
    decisionsBatched: number;
    convergences: number;
    lastConvergenceMs: number;
    lastConvergedAtMs: number;
  };
  heartbeatsRejected: Record<string, number>;
}

/**
 * The process (`id:incarnation`) that a datagram's host id names, if it is a heard peer; read
 * before and after the datagram is taken in, so that only datagrams of a peer heard all along
 * (no newcomer, no restart, no return) may join a batch: membership changes decide at once.
 */
function heardProcess(s: MachineState, bytes: Uint8Array): string | undefined {
  const peer = s.peers.get(senderIdOf(bytes));
  return peer !== undefined && s.heardIds.includes(peer.id)
    ? `${peer.id}:${peer.incarnation}`
    : undefined;
}

/** The host id a heartbeat names (read before it is decoded); -1 when it is too short. */
function senderIdOf(bytes: Uint8Array): number {
  return bytes[heartbeatHostIdOffset] ?? -1;
}

/**
 * How long a batch may hold the decision back: past this a datagram decides though more wait
 * (a flood that never lets the queue empty still gets decisions this often).
 */
export const batchDeferMaxMs = 5;

/**
 * Batches: a datagram that changed something, stepped while more wait right behind it, leaves
 * the decision to the last of them (or to the next step of any kind). The decision is a function
 * takes all of them in, as if they had arrived at once (a burst can arrive within one poll of the
 * event loop anyway), and the work of the decisions in between is saved: with 32 hosts a failover
 * brought each survivor ~30 heartbeats at once, and ~30 decisions. Never in decideEveryStep.
 */
function deferDecision(
  s: MachineState,
  now: number,
  moreQueued: boolean,
  answerPeer: boolean,
): boolean {
  // Two sides of a healed partition that claim the same buckets: the higher id gives them up
  // at once, never a moment later.
  if (!moreQueued || s.decideEveryStep || mustYield(s)) return false;
  const since = s.decisionOwedSinceMs ?? now;
  if (now - since >= batchDeferMaxMs) return false;
  s.decisionOwedSinceMs = since;
  s.answerOwed ||= answerPeer;
  s.counters.decisionsBatched += 1;
  return true;
}

export class HostMachine {
  private readonly s: MachineState;

  constructor(options: HostMachineOptions) {
    if (options.key.length < 16) {
      throw new Error('HostMachine: the cluster key must be at least 16 bytes');
    }
    if (!Number.isSafeInteger(options.incarnation) || options.incarnation < 0) {
      throw new Error('HostMachine: incarnation must be a non-negative safe integer');
    }
    const s = (this.s = new MachineState(options));
    s.lastOwnership = computeOwnership(s);
    s.lastOwnershipKey = JSON.stringify(s.lastOwnership);
    reportInitialState(s, options.nowMs);
    s.pendingEvents = s.events;
    s.events = [];
  }

  step(input: Input): Ready {
    const s = this.s;
    s.events = s.pendingEvents;
    s.pendingEvents = [];
    s.send = [];
    s.flush = [];
    s.rejoined = false;
    const now = input.nowMs;
    resumeIfPaused(s, now);
    // Late: stepped after the wake-up it asked for fell due (none before the first step), or
    // a datagram that waited to be stepped.
    noteLateness(
      s,
      now,
      Math.max(
        s.lastWakeAtMs > 0 ? now - s.lastWakeAtMs : 0,
        input.kind === 'datagram' ? (input.waitedMs ?? 0) : 0,
      ),
    );
    s.lastNowMs = now;
    let reply: CommandReply | undefined;
    let answerPeer = false;
    switch (input.kind) {
      case 'tick':
        break;
      case 'datagram': {
        // Only a datagram that may join a batch needs its sender read (the common routine
        // heartbeat does not).
        const batchable = input.moreQueued === true;
        const sender = batchable ? heardProcess(s, input.bytes) : undefined;
        const outcome = receive(s, now, input.bytes, input.from);
        if (outcome === 'dropped') {
          // Nothing but a counter changed: the decision is not run again. A flood of forged or
          // replayed datagrams then costs little more than its HMAC, and whatever falls due
          // meanwhile is handled at the wake-up already asked for.
          reportBadHeartbeats(s, now, false);
          return droppedReady(s, now);
        }
        const routine = outcome === 'routine' && !s.decideEveryStep;
        const owed = s.decisionOwedSinceMs !== undefined;
        const agreeing =
          s.converged || (!s.decisionMoved && s.agreeing.has(senderIdOf(input.bytes)));
        if (routine && !owed && agreeing && !s.pending && now < s.lastWakeAtMs) {
          // The steady state: a member announced again what it did before, its check in the
          // last decision's agreement passed (so it passes again: only its acks moved on, and
          // every test in the check grows with them), that decision moved no bucket (so it is
          // a fixpoint: run again on the same inputs it comes out the same; converged implies
          // both), nothing waits, and nothing falls due before the wake-up already asked for.
          // Time moves the decision only at wake-ups, so it is not run: a heartbeat costs its
          // HMAC and the peer table's update, whatever the size of the cluster. While
          // converging, this spares the decisions on every repeat of a report that already
          // counts, which at 32 hosts are most of them.
          s.counters.decisionsSkipped += 1;
          reportBadHeartbeats(s, now, false);
          return droppedReady(s, now);
        }
        answerPeer = outcome === 'answer';
        const same = sender !== undefined && sender === heardProcess(s, input.bytes);
        if (deferDecision(s, now, batchable && same, answerPeer)) {
          reportBadHeartbeats(s, now, false);
          // Woken at once as a backstop: the datagrams queued behind this one normally take
          // the decision first.
          return { ...droppedReady(s, now), wakeAtMs: now };
        }
        break;
      }
      case 'command':
        reply = command(s, now, input.command);
        break;
    }
    answerPeer ||= s.answerOwed;
    s.decisionOwedSinceMs = undefined;
    s.answerOwed = false;
    expirePeers(s, now);
    expireOrphans(s, now);
    decide(s, now);
    noteOwnReleases(s, now);
    maybeSend(s, now, answerPeer);
    reportBadHeartbeats(s, now, false);
    const changed = ownershipChange(s);
    s.lastWakeAtMs = wakeAt(s, now);
    return {
      ownership: changed,
      flush: s.flush,
      // With no port rules a rejoin flushes nothing, and the driver has always left the
      // sockets alone then too: the flag keeps that.
      rejoined: s.rejoined && s.flush.length > 0,
      send: s.send,
      events: s.events,
      wakeAtMs: s.lastWakeAtMs,
      reply,
    };
  }

  status(): HostStatus {
    const s = this.s;
    const state: ReportedState =
      s.keptOut !== undefined
        ? 'stopped'
        : s.adminState === 'stopped' || s.adminState === 'suspended' || s.adminState === 'draining'
          ? s.adminState
          : !s.converged
            ? 'converging'
            : defaultHost(s) === s.hostId
              ? 'converged as default'
              : 'converged';
    return {
      hostId: s.hostId,
      incarnation: s.incarnation,
      state,
      members: [...s.members],
      memberIncarnations: s.members.map((id) =>
        id === s.hostId ? s.incarnation : s.peers.get(id)!.incarnation,
      ),
      defaultHost: defaultHost(s),
      converged: s.converged,
      mapDigest: hex(s.mapDigest),
      target: s.targets.map((t) => [...t]),
      ownership: s.lastOwnership,
      ...(s.config.cluster.mode === 'routed'
        ? { held: s.held.reduce((n, held) => n + held.size, 0) }
        : {}),
    };
  }

  /** Extra facts for `nlb query`, `params` and metrics. */
  details(): HostDetails {
    const s = this.s;
    return {
      keptOut: s.keptOut,
      ruleStates: [...s.ruleStates],
      ruleHealth: s.ruleHealth.map((healthy, r) => ({
        healthy,
        reportedWeight: s.reportedWeights[r] ?? null,
        loadWeight: ownLoadWeight(s, r),
        failingOpen: s.failingOpen[r] ?? false,
      })),
      peers: [...s.peers.values()]
        .sort((a, b) => a.id - b.id)
        .map((p) => ({
          id: p.id,
          incarnation: p.incarnation,
          state: p.heartbeat.state,
          heard: p.heard,
          lastHeardMs: p.lastHeardMs,
          mismatch: p.mismatch,
          members: p.heartbeat.members,
          address: p.address,
          rules: p.mismatch === undefined ? p.heartbeat.rules : [],
        })),
      counters: { ...s.counters },
      heartbeatsRejected: Object.fromEntries(
        decodeFailures.map((r) => [r, s.badCountsTotal.get(r) ?? 0]),
      ),
    };
  }
}
