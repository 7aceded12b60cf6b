/* eslint-disable max-lines -- one class doing five jobs; splitting it is issue 10 item 2, not done yet */
// The host state machine: the whole protocol of one nlb host as a pure function of its inputs
// (ticks, received heartbeats, operator commands). See protocol.ts for the driver contract and
// DESIGN.md §5 for the requirements. The rules, in brief:
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
import { createHash } from 'node:crypto';
import { assign, type AssignMember } from './assign.js';
import { acksMax } from './heartbeat-size.js';
import type { Config, PortRule } from './config.js';
import { portRuleIdentity } from './config-identity.js';
import { protocolEvent, type ProtocolEventFields, type ProtocolEventName } from './events.js';
import {
  type AnnouncedState,
  type DecodeFailure,
  type Heartbeat,
  type HeartbeatAck,
  type RuleState,
  ackFor,
  clusterIdOf,
  configDigestOf,
  decodeFailures,
  decodeHeartbeat,
  encodeHeartbeat,
} from './heartbeat.js';
import type {
  Command,
  CommandReply,
  HostMachineOptions,
  HostStatus,
  Input,
  Ownership,
  ProtocolEvent,
  Ready,
  ReportedState,
} from './protocol.js';

/**
 * How long a bucket inherited from a dead host keeps resetting unknown non-SYN packets. The dead
 * host's clients retransmit within seconds, so they fail over at once; a connection idle for
 * longer is dropped silently and times out on its own. Bounded so that the reset can never
 * outlive its reason for long.
 */
export const orphanHoldMs = 60_000;
/** Bad heartbeats are summarised in one event at most this often, so a flood cannot flood logs. */
export const badHeartbeatReportMs = 10_000;
/** A config mismatch or duplicate id is reported again at most this often per peer. */
export const mismatchReportMs = 30_000;

interface PeerRecord {
  readonly id: number;
  incarnation: number;
  lastSequence: number;
  lastHeardMs: number;
  heartbeat: Heartbeat;
  heard: boolean;
  /** Set when this host declared the peer dead; cleared when it is heard again. */
  declaredDeadAtMs: number | undefined;
  /** What differs from our config, or undefined when compatible. */
  mismatch: string | undefined;
  mismatchReportedAtMs: number;
  /** The (members, map digest) the peer last reported, to answer a changed report once. */
  reportKey: string;
  /** Every incarnation recently heard for this id (normally one; two around a restart). */
  readonly incarnations: Map<number, IncarnationEntry>;
}

type ReceiveOutcome = 'answer' | 'taken' | 'dropped';

interface IncarnationEntry {
  /** When this process first proved itself fresh to us. */
  readonly firstHeardMs: number;
  lastHeardMs: number;
  lastSequence: number;
  heartbeat: Heartbeat;
}

/** A run of heartbeats that announced one target (see `HostMachine.reportCounts`). */
interface Announcement {
  readonly digest: string;
  readonly firstSequence: number;
  lastSequence: number;
  readonly targets: readonly (readonly (number | null)[])[];
  /** Each peer member's incarnation and generation, as the digest covers them. */
  readonly identities: ReadonlyMap<number, { incarnation: number; generation: number }>;
}

/** Announcement runs remembered; an ack older than all of them falls back to the strict rule. */
const announcementsMax = 16;

/** Incarnations remembered per host id: a restart needs two; more only come from a fault. */
const incarnationsPerPeerMax = 4;

/**
 * A process heard but not proven fresh (see Freshness in the header): remembered only to echo
 * it in our acks, so it can prove that it hears us.
 */
interface Candidate {
  readonly host: number;
  readonly incarnation: number;
  lastSequence: number;
  lastHeardMs: number;
  /** The state its last heartbeat announced (unproven: used only to wait, never to act). */
  state: AnnouncedState;
  /**
   * It was newer than any process heard before on its id: it may be a host that started with
   * us and has not heard us yet (see `update`).
   */
  readonly newest: boolean;
}

/**
 * Unproven processes remembered at once. A genuine one proves itself within a round trip; the
 * rest are replays or processes that cannot hear us, so a bounded table (the longest silent
 * goes first) only limits how many of those we echo, never what we believe.
 */
const candidatesMax = 64;

/**
 * Our own heartbeats remembered with their send times, to judge the acks of others. At one
 * heartbeat per 0.95 period plus answers, this covers the freshness window many times over; a
 * storm of answers only shortens the window, which is the safe direction.
 */
const sentLogMax = 4_096;
interface DeadClaim {
  readonly host: number;
  readonly untilMs: number;
}

type AdminState = 'started' | 'draining' | 'stopped' | 'suspended';

/** Whether a host in this state takes part (owns buckets or is about to). */
function takesPart(state: AnnouncedState | AdminState): boolean {
  return state === 'started' || state === 'draining';
}

/**
 * Makes room in a bounded table of heard processes: forgets the one silent longest, never
 * `keep` (the one speaking for its id). A flood of new processes cannot grow memory.
 */
function forgetLongestSilent<K>(table: Map<K, { readonly lastHeardMs: number }>, keep?: K): void {
  let oldest: K | undefined;
  let oldestMs = Infinity;
  for (const [key, entry] of table) {
    if (key !== keep && entry.lastHeardMs < oldestMs) {
      oldestMs = entry.lastHeardMs;
      oldest = key;
    }
  }
  if (oldest !== undefined) table.delete(oldest);
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

function sameList(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function ruleDigestOf(rule: PortRule): number {
  return createHash('sha256')
    .update(JSON.stringify(portRuleIdentity(rule)))
    .digest()
    .readUInt32BE(0);
}

/** What `HostMachine.details()` returns: extra facts for `nlb query`, `params` and metrics. */
export interface HostDetails {
  keptOut: string | undefined;
  ruleStates: readonly RuleState[];
  peers: {
    id: number;
    incarnation: number;
    state: AnnouncedState;
    heard: boolean;
    lastHeardMs: number;
    mismatch: string | undefined;
    members: readonly number[];
  }[];
  counters: {
    heartbeatsSent: number;
    heartbeatsReceived: number;
    convergences: number;
    lastConvergenceMs: number;
  };
  heartbeatsRejected: Record<string, number>;
}

export class HostMachine {
  private config: Config;
  private readonly key: Uint8Array;
  private readonly incarnation: number;
  private readonly hostId: number;
  private clusterId: Uint8Array;
  private configDigest: Uint8Array;
  private ruleDigests: number[];

  private adminState: AdminState;
  /** Why this host may not take part (duplicate id, config mismatch), or undefined. */
  private keptOut: string | undefined;
  private ruleStates: RuleState[];
  private sequence = 0;
  /** See Heartbeat.generation. */
  private generation = 0;
  private wasParticipating = false;
  /** The sequence of our first heartbeat since we last began to take part. */
  private participatingFromSequence = 1;
  /** What this host last fed into the assignment (state, rule states, weights, config). */
  private lastInputsKey = '';
  private nextSendMs: number;
  private lastSentKey = '';
  /** The last target digest announced, and the sequence of the last heartbeat announcing it. */
  private lastSentDigest = '';
  private lastSentSequence = 0;
  /** The sequence of the last heartbeat that announced a digest other than the current one. */
  private previousDigestSequence = 0;
  /**
   * The targets this host recently announced, one entry per run of heartbeats with the same
   * digest, oldest first. It covers every announcement with a sequence from
   * `announcedFromSequence` on; see `reportCounts`.
   */
  private announced: Announcement[] = [];
  private announcedFromSequence = 1;
  /**
   * A heard, participating peer is not (yet) a member: this host's view is about to change, so
   * it announces no target (an all-zero digest, which matches nobody's) until it settles.
   * Nobody can act on a view that is known to be transient, and the acknowledgement rule below
   * then need not wait for reports about it.
   */
  private pending = false;
  /** The wake-up the last full step asked for. */
  private lastWakeAtMs = 0;
  /** When this host last sent a heartbeat (see `resumeIfPaused`). */
  private lastSentAtMs = 0;
  /** No heard peer takes part (see `update`): acting alone waits for `listenUntilMs`. */
  private alone = true;
  private lastNowMs = 0;

  private readonly peers = new Map<number, PeerRecord>();
  /** Proven processes other than this one that use our host id (a misconfiguration). */
  private readonly rivals = new Map<number, IncarnationEntry>();
  /** Processes heard but not proven fresh, keyed `host:incarnation` (see Freshness). */
  private readonly candidates = new Map<string, Candidate>();
  /**
   * The highest incarnation heard per host id, proven or not. Incarnations only grow, so a
   * process below it is an old one (a replay) and never makes anyone wait.
   */
  private readonly highestIncarnation = new Map<number, number>();
  /** The send time of each heartbeat from `sentLogFromSequence` on, in order. */
  private sentLog: number[] = [];
  private sentLogFromSequence = 1;
  /** Acks below this prove nothing: they were made before this host's last pause. */
  private freshFloorSequence = 0;
  private members: number[] = [];
  private heardIds: number[] = [];
  private targets: (number | null)[][] = [];
  private mapDigest: Uint8Array = new Uint8Array(8);
  private owned: Set<number>[];
  private orphans: Map<number, DeadClaim>[];
  private deadClaims: Map<number, DeadClaim>[];

  /**
   * A host that hears nobody takes no bucket before it has listened for a whole detection
   * window: a peer it has not heard yet may own them. Once it hears a peer, agreement protects
   * it instead (that peer's view names every host it hears).
   */
  private listenUntilMs: number;
  private converged = false;
  private convergingSinceMs: number;
  private convergingReason = 'started';
  private lastConvergedTargets: (number | null)[][] = [];
  private lastOwnershipKey = '';
  private lastOwnership: Ownership;

  private readonly badCounts = new Map<DecodeFailure, number>();
  private readonly badCountsTotal = new Map<DecodeFailure, number>();
  private badReportedAtMs = -Infinity;
  private duplicateReportedAtMs = -Infinity;
  private rejoinFlushedAtMs = -Infinity;
  private counters = {
    heartbeatsSent: 0,
    heartbeatsReceived: 0,
    convergences: 0,
    lastConvergenceMs: 0,
  };

  // Per-step output being collected; events raised outside a step wait for the next one.
  private pendingEvents: ProtocolEvent[] = [];
  private events: ProtocolEvent[] = [];
  private send: Uint8Array[] = [];
  private flush: { rule: number; buckets: number[] }[] = [];
  /** Whether this step rejoined (see `Ready.rejoined`). */
  private rejoined = false;
  private replyNeeded = false;

  constructor(options: HostMachineOptions) {
    if (options.key.length < 16) {
      throw new Error('HostMachine: the cluster key must be at least 16 bytes');
    }
    if (!Number.isSafeInteger(options.incarnation) || options.incarnation < 0) {
      throw new Error('HostMachine: incarnation must be a non-negative safe integer');
    }
    this.config = options.config;
    this.key = options.key;
    this.incarnation = options.incarnation;
    this.hostId = options.config.host.id;
    this.clusterId = clusterIdOf(options.config.cluster.name);
    this.configDigest = configDigestOf(options.config);
    this.ruleDigests = options.config.cluster.portRules.map(ruleDigestOf);
    this.adminState = options.initialState ?? options.config.host.initialState;
    this.keptOut = undefined;
    const ruleCount = options.config.cluster.portRules.length;
    this.ruleStates = Array.from({ length: ruleCount }, () => 'enabled' as RuleState);
    this.owned = Array.from({ length: ruleCount }, () => new Set<number>());
    this.orphans = Array.from({ length: ruleCount }, () => new Map<number, DeadClaim>());
    this.deadClaims = Array.from({ length: ruleCount }, () => new Map<number, DeadClaim>());
    // The first heartbeat waits one period: a host listens before it speaks, so it hears a
    // duplicate of its id, or the cluster's current claims, before it announces anything.
    this.nextSendMs = options.nowMs + options.config.cluster.heartbeat.periodMs;
    this.convergingSinceMs = options.nowMs;
    this.listenUntilMs =
      options.nowMs +
      options.config.cluster.heartbeat.periodMs * options.config.cluster.heartbeat.tolerance;
    this.lastOwnership = this.computeOwnership();
    this.lastOwnershipKey = JSON.stringify(this.lastOwnership);
    this.emit(options.nowMs, this.adminState, { incarnation: this.incarnation });
    this.pendingEvents = this.events;
    this.events = [];
  }

  private get periodMs(): number {
    return this.config.cluster.heartbeat.periodMs;
  }

  /**
   * Heartbeats leave a little more often than the period: peers declare a host dead exactly
   * tolerance × period after its last heartbeat, and with sends exactly one period apart the
   * tolerance-th heartbeat would arrive just after that deadline (by its jitter or a late
   * timer), so tolerance - 1 losses would already kill. 5% earlier keeps that margin.
   */
  private get sendIntervalMs(): number {
    return this.config.cluster.heartbeat.periodMs * 0.95;
  }

  private get deadAfterMs(): number {
    return this.config.cluster.heartbeat.periodMs * this.config.cluster.heartbeat.tolerance;
  }

  private get participating(): boolean {
    return (
      takesPart(this.adminState) && this.keptOut === undefined && this.linkDownSinceMs === undefined
    );
  }

  /** Set while the daemon reports the cluster interface without carrier. */
  private linkDownSinceMs: number | undefined;

  step(input: Input): Ready {
    this.events = this.pendingEvents;
    this.pendingEvents = [];
    this.send = [];
    this.flush = [];
    this.rejoined = false;
    const now = input.nowMs;
    this.resumeIfPaused(now);
    this.lastNowMs = now;
    let reply: CommandReply | undefined;
    let answerPeer = false;
    switch (input.kind) {
      case 'tick':
        break;
      case 'datagram': {
        const outcome = this.receive(now, input.bytes);
        if (outcome === 'dropped') {
          // Nothing but a counter changed: the decision is not run again. A flood of forged or
          // replayed datagrams then costs little more than its HMAC, and whatever falls due
          // meanwhile is handled at the wake-up already asked for.
          this.reportBadHeartbeats(now, false);
          return {
            ownership: undefined,
            flush: [],
            rejoined: false,
            send: [],
            events: this.events,
            wakeAtMs: Math.max(this.lastWakeAtMs, now),
            reply: undefined,
          };
        }
        answerPeer = outcome === 'answer';
        break;
      }
      case 'command':
        reply = this.command(now, input.command);
        break;
    }
    this.expirePeers(now);
    this.expireOrphans(now);
    this.update(now);
    this.maybeSend(now, answerPeer);
    this.reportBadHeartbeats(now, false);
    const ownership = this.computeOwnership();
    const ownershipKey = JSON.stringify(ownership);
    let changed: Ownership | undefined;
    if (ownershipKey !== this.lastOwnershipKey) {
      this.lastOwnershipKey = ownershipKey;
      this.lastOwnership = ownership;
      changed = ownership;
    }
    this.lastWakeAtMs = this.wakeAt(now);
    return {
      ownership: changed,
      flush: this.flush,
      // With no port rules a rejoin flushes nothing, and the driver has always left the
      // sockets alone then too: the flag keeps that.
      rejoined: this.rejoined && this.flush.length > 0,
      send: this.send,
      events: this.events,
      wakeAtMs: this.lastWakeAtMs,
      reply,
    };
  }

  /**
   * A driver steps the machine at least once a period (`wakeAtMs`), so a longer gap means the
   * process did not run: SIGSTOP, a virtual machine paused or migrated, heavy swapping. If no
   * heartbeat of ours left for a whole detection window meanwhile, the peers have declared this
   * host dead and taken its buckets (resetting its clients), while its own view, frozen, still
   * has it owning them: acting on that view would answer clients twice, and announcing it
   * (members that no longer count it) would make the peers take themselves for the smaller side
   * of a partition and drop their own connections. So the host takes what happened as its own
   * absence, not its peers': it releases every bucket, drops its connections, listens again
   * before acting alone, and forgets what it heard of its peers without declaring them dead:
   * it takes them back as it hears them (their heartbeats sent meanwhile wait in its socket).
   */
  private resumeIfPaused(now: number): void {
    const pausedMs = now - this.lastNowMs;
    // Before its first heartbeat no peer knows this host: nothing to rejoin.
    if (
      this.sequence === 0 ||
      pausedMs <= 2 * this.periodMs ||
      now - this.lastSentAtMs < this.deadAfterMs
    ) {
      return;
    }
    // What waits in the socket was sent while we did not run: the oldest of it still counts us
    // and acks our heartbeats from before, and stepped one by one it would make us converge on
    // the old map and take our old buckets back while our peers hold them. So every process
    // proves itself again, by acking a heartbeat we send from now on (see Freshness).
    for (const peer of this.peers.values()) {
      peer.heard = false;
      peer.reportKey = '';
      peer.incarnations.clear();
    }
    this.rivals.clear();
    this.freshFloorSequence = this.sequence + 1;
    this.emit(now, 'paused', {
      pausedMs,
      hint: 'nlbd did not run for longer than the detection time (SIGSTOP, a virtual machine paused or migrated, swapping): its peers took its buckets; it drops its connections and rejoins',
    });
    this.listenUntilMs = Math.max(this.listenUntilMs, now + this.deadAfterMs);
    this.convergingReason = 'resumed after a pause';
    if (!this.participating) return;
    for (const owned of this.owned) owned.clear();
    this.rejoin(now, { afterPauseMs: pausedMs });
  }

  /**
   * The peers declared this host dead and reset its clients (a partition it was on the
   * smaller side of, a long link-down, a pause): it drops every connection to the cluster IPs
   * and forgets what it inherited from hosts it took for dead, before it takes buckets again.
   */
  private rejoin(
    now: number,
    why: Omit<ProtocolEventFields['rejoining: dropping connections'], 'host'>,
  ): void {
    this.rejoinFlushedAtMs = now;
    this.rejoined = true;
    this.emit(now, 'rejoining: dropping connections', { host: this.hostId, ...why });
    this.config.cluster.portRules.forEach((rule, r) => {
      this.flush.push({ rule: r, buckets: Array.from({ length: rule.buckets }, (_, b) => b) });
      this.orphans[r]!.clear();
      this.deadClaims[r]!.clear();
    });
  }

  status(): HostStatus {
    const state: ReportedState =
      this.keptOut !== undefined
        ? 'stopped'
        : this.adminState === 'stopped' ||
            this.adminState === 'suspended' ||
            this.adminState === 'draining'
          ? this.adminState
          : !this.converged
            ? 'converging'
            : this.defaultHost() === this.hostId
              ? 'converged as default'
              : 'converged';
    return {
      hostId: this.hostId,
      incarnation: this.incarnation,
      state,
      members: [...this.members],
      memberIncarnations: this.members.map((id) =>
        id === this.hostId ? this.incarnation : this.peers.get(id)!.incarnation,
      ),
      defaultHost: this.defaultHost(),
      converged: this.converged,
      mapDigest: hex(this.mapDigest),
      target: this.targets.map((t) => [...t]),
      ownership: this.lastOwnership,
    };
  }

  /** Extra facts for `nlb query`, `params` and metrics. */
  details(): HostDetails {
    return {
      keptOut: this.keptOut,
      ruleStates: [...this.ruleStates],
      peers: [...this.peers.values()]
        .sort((a, b) => a.id - b.id)
        .map((p) => ({
          id: p.id,
          incarnation: p.incarnation,
          state: p.heartbeat.state,
          heard: p.heard,
          lastHeardMs: p.lastHeardMs,
          mismatch: p.mismatch,
          members: p.heartbeat.members,
        })),
      counters: { ...this.counters },
      heartbeatsRejected: Object.fromEntries(
        decodeFailures.map((r) => [r, this.badCountsTotal.get(r) ?? 0]),
      ),
    };
  }

  // ---------------------------------------------------------------- inputs

  private countBad(reason: DecodeFailure): void {
    this.badCounts.set(reason, (this.badCounts.get(reason) ?? 0) + 1);
    this.badCountsTotal.set(reason, (this.badCountsTotal.get(reason) ?? 0) + 1);
  }

  /**
   * How recent an ack of ours must be for a heartbeat to prove it is not a replay. A live peer
   * acks our last heartbeat it received, normally under one period old; one that has missed
   * ours for a whole detection window is about to declare us dead anyway. One period more
   * covers delay and timer phase.
   */
  private get freshWindowMs(): number {
    return this.deadAfterMs + this.periodMs;
  }

  /**
   * The first sequence we sent within the freshness window (one past the last if none), and
   * never one sent before a pause (`resumeIfPaused`).
   */
  private freshFromSequence(now: number): number {
    const from = now - this.freshWindowMs;
    let dropped = 0;
    while (dropped < this.sentLog.length && this.sentLog[dropped]! < from) dropped++;
    if (dropped > 0) {
      this.sentLog = this.sentLog.slice(dropped);
      this.sentLogFromSequence += dropped;
    }
    return Math.max(this.sentLogFromSequence, this.freshFloorSequence);
  }

  private recordSent(now: number, sequence: number): void {
    if (this.sentLog.length === 0) this.sentLogFromSequence = sequence;
    this.sentLog.push(now);
    if (this.sentLog.length > sentLogMax) {
      this.sentLog.shift();
      this.sentLogFromSequence += 1;
    }
  }

  /**
   * Handles one datagram. 'answer': send a heartbeat at once (the sender's report newly
   * differs from ours, or a process newly proved itself and needs our ack to hear us);
   * 'taken': something may have changed; 'dropped': nothing did but a counter.
   */
  private receive(now: number, bytes: Uint8Array): ReceiveOutcome {
    const decoded = decodeHeartbeat(bytes, this.key, this.clusterId);
    if (!decoded.ok) {
      this.countBad(decoded.reason);
      return 'dropped';
    }
    const hb = decoded.heartbeat;
    if (hb.hostId === this.hostId && hb.incarnation === this.incarnation) {
      return 'dropped'; // Our own datagram looped back: harmless.
    }
    // Freshness (see the header): a process we have not proven must ack a heartbeat we sent
    // within the window; one we have proven is guarded by its sequence numbers from then on
    // (its acks of us may be old for good reasons: indirect evidence keeps a peer heard while
    // the direct link is cut, and when it heals the peer's first heartbeats ack our last one
    // before the cut).
    const known =
      hb.hostId === this.hostId
        ? this.rivals.get(hb.incarnation)
        : this.peers.get(hb.hostId)?.incarnations.get(hb.incarnation);
    if (known !== undefined) {
      if (hb.sequence <= known.lastSequence) {
        this.countBad('replayed or stale');
        return 'dropped';
      }
    } else {
      const ackOfUs = ackFor(hb, this.hostId, this.incarnation);
      const fresh =
        ackOfUs !== undefined && ackOfUs >= this.freshFromSequence(now) && ackOfUs <= this.sequence;
      if (!fresh) {
        const noted = this.noteCandidate(now, hb);
        // An ack of our current incarnation below the window proves the heartbeat is old.
        this.countBad(ackOfUs === undefined ? 'unproven' : 'replayed or stale');
        return noted;
      }
    }
    this.candidates.delete(`${hb.hostId}:${hb.incarnation}`);
    if (hb.incarnation > (this.highestIncarnation.get(hb.hostId) ?? -1)) {
      this.highestIncarnation.set(hb.hostId, hb.incarnation);
    }
    if (hb.hostId === this.hostId) {
      return this.receiveRival(now, hb, known) ? 'answer' : 'taken';
    }
    return this.receivePeer(now, hb, known) ? 'answer' : 'taken';
  }

  /**
   * Remembers an unproven process to echo it (bounded; the longest silent goes first). 'answer'
   * while we are still listening after we started and it is newer than anything heard on its
   * id: it may be a host that started with us, and our echo lets it prove itself within a round
   * trip. 'taken' when a new one may make us wait (see `update`); else 'dropped' (only the echo
   * changes, at our next heartbeat).
   */
  private noteCandidate(now: number, hb: Heartbeat): ReceiveOutcome {
    const key = `${hb.hostId}:${hb.incarnation}`;
    const candidate = this.candidates.get(key);
    if (candidate !== undefined) {
      candidate.lastHeardMs = now;
      candidate.lastSequence = Math.max(candidate.lastSequence, hb.sequence);
      candidate.state = hb.state;
      return 'dropped';
    }
    if (this.candidates.size >= candidatesMax) forgetLongestSilent(this.candidates);
    const newest =
      hb.hostId !== this.hostId && hb.incarnation > (this.highestIncarnation.get(hb.hostId) ?? -1);
    if (newest) this.highestIncarnation.set(hb.hostId, hb.incarnation);
    this.candidates.set(key, {
      host: hb.hostId,
      incarnation: hb.incarnation,
      lastSequence: hb.sequence,
      lastHeardMs: now,
      state: hb.state,
      newest,
    });
    if (newest && now < this.listenUntilMs) return 'answer';
    return this.peers.get(hb.hostId)?.heard === true ? 'dropped' : 'taken';
  }

  /** A proven heartbeat of a peer; returns whether to answer at once. */
  private receivePeer(now: number, hb: Heartbeat, known: IncarnationEntry | undefined): boolean {
    let peer = this.peers.get(hb.hostId);
    if (peer === undefined) {
      peer = {
        id: hb.hostId,
        incarnation: hb.incarnation,
        lastSequence: hb.sequence,
        lastHeardMs: now,
        heartbeat: hb,
        heard: false,
        declaredDeadAtMs: undefined,
        mismatch: undefined,
        mismatchReportedAtMs: -Infinity,
        reportKey: '',
        incarnations: new Map(),
      };
      this.peers.set(hb.hostId, peer);
    }
    // Every incarnation speaking for this id is tracked apart, each with its own replay guard,
    // so a restart and a second host with the same id are told apart whatever order their
    // datagrams arrive in.
    let entry = known;
    if (entry === undefined) {
      if (peer.incarnations.size >= incarnationsPerPeerMax) {
        forgetLongestSilent(peer.incarnations, peer.incarnation);
      }
      entry = { firstHeardMs: now, lastHeardMs: now, lastSequence: hb.sequence, heartbeat: hb };
      peer.incarnations.set(hb.incarnation, entry);
    }
    entry.lastHeardMs = now;
    entry.lastSequence = hb.sequence;
    entry.heartbeat = hb;
    const active = this.activeIncarnation(now, peer);
    if (hb.keptOut || active.incarnation !== hb.incarnation) {
      if ((hb.keptOut || active.coexists) && now - peer.mismatchReportedAtMs >= mismatchReportMs) {
        peer.mismatchReportedAtMs = now;
        this.emit(now, 'duplicate host id', {
          host: hb.hostId,
          incarnations: [active.incarnation, hb.incarnation].sort((a, b) => a - b),
          keptOut: Math.max(active.incarnation, hb.incarnation),
        });
      }
      return false;
    }
    if (hb.incarnation !== peer.incarnation) {
      if (hb.incarnation > peer.incarnation) {
        // A restart: the old incarnation's claims die with it; its buckets are free now, and
        // they reset the old incarnation's clients, as for a host that died.
        if (peer.heard && this.members.includes(peer.id)) this.recordDeadClaims(now, peer);
        if (peer.heard || peer.declaredDeadAtMs !== undefined) {
          this.emit(now, 'host restarted', { host: hb.hostId, incarnation: hb.incarnation });
        }
      }
      peer.incarnation = hb.incarnation;
      peer.declaredDeadAtMs = undefined;
      peer.heard = false;
    }
    if (hb.state !== peer.heartbeat.state && peer.heard) {
      this.convergingReason = `host ${hb.hostId} ${hb.state}`;
    }
    this.counters.heartbeatsReceived += 1;
    peer.lastSequence = hb.sequence;
    peer.lastHeardMs = now;
    peer.heartbeat = hb;
    if (!peer.heard) {
      peer.heard = true;
      if (peer.declaredDeadAtMs !== undefined) {
        this.merge(now, peer);
      }
    }
    this.checkCompatible(now, peer);
    const reportKey = `${hb.members.join(',')}/${hex(hb.mapDigest)}`;
    // Answer once whenever a peer announces something new, so that it gets a report made after
    // its announcement without waiting for our next period (see `ackNeeded`).
    const newlyDifferent = reportKey !== peer.reportKey;
    peer.reportKey = reportKey;
    return newlyDifferent;
  }

  /**
   * Which incarnation speaks for a host id. The newest one replaces its predecessor at once
   * after a restart, which always leaves the predecessor silent for more than a period (a
   * process starts, then listens a period before it speaks). An older one that spoke after,
   * or within a period before, the newest first proved itself keeps the id: two hosts share
   * it (`coexists`), or we cannot tell yet, and the older one, there first, keeps it until it
   * falls silent for a detection window. Incarnations that announce they keep themselves out,
   * or have been silent for a detection window, never count. Only proven incarnations are
   * here, so a replay of an earlier incarnation can never speak again.
   */
  private activeIncarnation(
    now: number,
    peer: PeerRecord,
  ): { incarnation: number; coexists: boolean } {
    for (const [incarnation, e] of peer.incarnations) {
      if (now >= e.lastHeardMs + 2 * this.deadAfterMs && incarnation !== peer.incarnation) {
        peer.incarnations.delete(incarnation);
      }
    }
    const live = [...peer.incarnations.entries()]
      .filter(([, e]) => !e.heartbeat.keptOut && now < e.lastHeardMs + this.deadAfterMs)
      .sort((a, b) => a[0] - b[0]);
    const newest = live[live.length - 1];
    if (newest === undefined) return { incarnation: peer.incarnation, coexists: false };
    const older = live.find(
      ([incarnation, e]) =>
        incarnation < newest[0] && e.lastHeardMs + this.periodMs > newest[1].firstHeardMs,
    );
    if (older === undefined) return { incarnation: newest[0], coexists: false };
    return { incarnation: older[0], coexists: older[1].lastHeardMs > newest[1].firstHeardMs };
  }

  /** A proven heartbeat of another process on our own id; returns whether to answer at once. */
  private receiveRival(now: number, hb: Heartbeat, known: IncarnationEntry | undefined): boolean {
    let entry = known;
    if (entry === undefined) {
      if (this.rivals.size >= incarnationsPerPeerMax) forgetLongestSilent(this.rivals);
      entry = { firstHeardMs: now, lastHeardMs: now, lastSequence: hb.sequence, heartbeat: hb };
      this.rivals.set(hb.incarnation, entry);
    }
    entry.lastHeardMs = now;
    entry.lastSequence = hb.sequence;
    entry.heartbeat = hb;
    if (hb.incarnation > this.incarnation && now - this.duplicateReportedAtMs >= mismatchReportMs) {
      // The newcomer on our id keeps itself out because of us: say so, at a bounded rate. (The
      // case where we are the newcomer is decided in `reviewDuplicateKeepOut`.)
      this.duplicateReportedAtMs = now;
      this.emit(now, 'duplicate host id', {
        host: this.hostId,
        incarnations: [this.incarnation, hb.incarnation],
        keptOut: hb.incarnation,
      });
    }
    // Answer at once when it is new to us: it learns from our ack that we hear it.
    return known === undefined;
  }

  /**
   * Another live host that uses our id and was there first (a lower incarnation) keeps us out
   * for as long as we hear it; once it has been silent for a detection window we are admitted.
   */
  private reviewDuplicateKeepOut(now: number): void {
    for (const [incarnation, e] of this.rivals) {
      if (now >= e.lastHeardMs + 2 * this.deadAfterMs) this.rivals.delete(incarnation);
    }
    // A live rival we hear ourselves, or one a heard peer's heartbeat (proven fresh, so not a
    // replay) says it hears: the rival may not hear us (a one-way link), but the cluster does.
    const earlier: number[] = [];
    for (const [incarnation, e] of this.rivals) {
      if (
        incarnation < this.incarnation &&
        !e.heartbeat.keptOut &&
        now < e.lastHeardMs + this.deadAfterMs
      ) {
        earlier.push(incarnation);
      }
    }
    for (const peer of this.peers.values()) {
      if (!peer.heard) continue;
      for (const ack of peer.heartbeat.acks) {
        if (ack.host === this.hostId && ack.incarnation < this.incarnation) {
          earlier.push(ack.incarnation);
        }
      }
    }
    const first = earlier.length === 0 ? undefined : Math.min(...earlier);
    if (first !== undefined && this.keptOut === undefined) {
      this.keptOut = `duplicate host id ${this.hostId}: another host (incarnation ${first}) already uses it`;
      this.duplicateReportedAtMs = now;
      this.emit(now, 'duplicate host id', {
        host: this.hostId,
        incarnations: [first, this.incarnation],
        keptOut: this.incarnation,
        hint: 'give this host a unique host.id in its config and restart nlbd; it takes part again by itself once the other host is gone',
      });
      for (const owned of this.owned) owned.clear();
      for (const orphans of this.orphans) orphans.clear();
    } else if (first === undefined && this.keptOut?.startsWith('duplicate')) {
      this.keptOut = undefined;
      this.emit(now, 'admitted', {
        reason: `no other host uses host id ${this.hostId} any more`,
      });
    }
  }

  /**
   * Our acks, in order of use: every heard peer's current process; a process that shares a
   * peer's id with it (two hosts on one id: each must hear that we hear it, and the one that
   * keeps out learns it from us, see `reviewDuplicateKeepOut`); a rival on our own id; then,
   * for ids with none of those, the newest unproven process heard within a detection window
   * (an echo, so it can prove itself: see Freshness). At most `acksMax`.
   */
  private acksOf(now: number): HeartbeatAck[] {
    const acks: HeartbeatAck[] = [];
    const acked = new Set<number>();
    const add = (host: number, incarnation: number, sequence: number): void => {
      if (acks.length < acksMax) acks.push({ host, incarnation, sequence });
      acked.add(host);
    };
    for (const peer of this.peers.values()) {
      if (peer.heard) add(peer.id, peer.incarnation, peer.lastSequence);
    }
    for (const peer of this.peers.values()) {
      const active = peer.incarnations.get(peer.incarnation);
      if (!peer.heard || active === undefined) continue;
      for (const [incarnation, e] of peer.incarnations) {
        if (this.coexists(now, incarnation, e, peer.incarnation, active)) {
          add(peer.id, incarnation, e.lastSequence);
        }
      }
    }
    const rival = [...this.rivals.entries()]
      .filter(([, e]) => now < e.lastHeardMs + this.deadAfterMs)
      .sort((a, b) => a[0] - b[0])[0];
    if (rival !== undefined) add(this.hostId, rival[0], rival[1].lastSequence);
    const echoes = new Map<number, Candidate>();
    for (const [key, c] of this.candidates) {
      if (now >= c.lastHeardMs + this.deadAfterMs) {
        this.candidates.delete(key);
        continue;
      }
      if (acked.has(c.host)) continue;
      const best = echoes.get(c.host);
      if (
        best === undefined ||
        c.incarnation > best.incarnation ||
        (c.incarnation === best.incarnation && c.lastHeardMs > best.lastHeardMs)
      ) {
        echoes.set(c.host, c);
      }
    }
    for (const c of echoes.values()) add(c.host, c.incarnation, c.lastSequence);
    return acks.sort((a, b) => a.host - b.host || a.incarnation - b.incarnation);
  }

  /**
   * Whether a proven process other than the one speaking for its id is live beside it: it is
   * newer (a duplicate that appeared while the active one spoke), or it spoke after the active
   * one first proved itself. A predecessor that fell silent before its successor appeared (a
   * restart) is not.
   */
  private coexists(
    now: number,
    incarnation: number,
    entry: IncarnationEntry,
    activeIncarnation: number,
    active: IncarnationEntry,
  ): boolean {
    return (
      incarnation !== activeIncarnation &&
      !entry.heartbeat.keptOut &&
      now < entry.lastHeardMs + this.deadAfterMs &&
      (incarnation > activeIncarnation || entry.lastHeardMs > active.firstHeardMs)
    );
  }

  /**
   * Whether a peer can be a member with us: the same cluster config, and (as NLB requires) a
   * handling priority of its own on every `single` rule. A heartbeat whose config digest
   * matches but whose rules do not (a faulty peer: only a key holder can send one) is
   * incompatible too, so nothing downstream ever reads a rule it lacks.
   */
  private checkCompatible(now: number, peer: PeerRecord): void {
    const hb = peer.heartbeat;
    const cluster = this.config.cluster;
    let mismatch: string | undefined;
    let hint =
      'the cluster part of the config must be identical on every host; compare with `nlb display`';
    const ruleDifferences = (): string[] => {
      if (hb.rules.length !== cluster.portRules.length) {
        return [`${hb.rules.length} port rule(s) vs ${cluster.portRules.length}`];
      }
      const differences: string[] = [];
      hb.rules.forEach((rule, i) => {
        if (rule.buckets !== cluster.portRules[i]!.buckets) {
          differences.push(
            `portRules[${i}].buckets ${rule.buckets} vs ${cluster.portRules[i]!.buckets}`,
          );
        } else if (rule.ruleDigest !== this.ruleDigests[i]) {
          differences.push(`portRules[${i}] (cluster IP, ports, protocol, mode or affinity)`);
        }
      });
      return differences;
    };
    if (hex(hb.configDigest) !== hex(this.configDigest)) {
      const differences: string[] = [];
      if (hb.periodMs !== cluster.heartbeat.periodMs)
        differences.push(`heartbeat.periodMs ${hb.periodMs} vs ${cluster.heartbeat.periodMs}`);
      if (hb.tolerance !== cluster.heartbeat.tolerance)
        differences.push(`heartbeat.tolerance ${hb.tolerance} vs ${cluster.heartbeat.tolerance}`);
      if (hb.mode !== cluster.mode) differences.push(`mode ${hb.mode} vs ${cluster.mode}`);
      if (hb.hashSeed !== cluster.hashSeed)
        differences.push(`hashSeed ${hb.hashSeed} vs ${cluster.hashSeed}`);
      differences.push(...ruleDifferences());
      if (differences.length === 0) differences.push('cluster IPs or heartbeat port/group');
      mismatch = differences.join('; ');
    } else {
      const differences = ruleDifferences();
      if (differences.length > 0) {
        mismatch = `port rules differ although the config digest matches (a faulty peer): ${differences.join('; ')}`;
        hint = 'restart nlbd on that host; if it persists, report it as a bug';
      } else {
        const conflicts = cluster.portRules.flatMap((rule, r) => {
          const mine = this.config.host.rules[r]?.handlingPriority ?? this.hostId;
          return rule.mode === 'single' && hb.rules[r]!.handlingPriority === mine
            ? [`portRules[${r}] handling priority ${mine} on both hosts`]
            : [];
        });
        if (conflicts.length > 0) {
          mismatch = conflicts.join('; ');
          hint =
            'each host needs its own handling priority for a single-host rule: set host.handlingPriority (or host.rules[].handlingPriority) to a value no other host uses, then `nlb reload`';
        }
      }
    }
    if (
      mismatch !== undefined &&
      (peer.mismatch !== mismatch || now - peer.mismatchReportedAtMs >= mismatchReportMs)
    ) {
      peer.mismatchReportedAtMs = now;
      this.emit(now, 'config mismatch', { host: peer.id, differs: mismatch, hint });
    }
    peer.mismatch = mismatch;
  }

  /** A peer we had declared dead speaks again with the same incarnation: a partition healed. */
  private merge(now: number, peer: PeerRecord): void {
    const mine = this.members;
    const theirs = peer.heartbeat.members;
    this.emit(now, 'partition healed', {
      host: peer.id,
      ourSide: mine,
      theirSide: theirs,
      separatedMs: peer.declaredDeadAtMs === undefined ? 0 : now - peer.declaredDeadAtMs,
    });
    peer.declaredDeadAtMs = undefined;
    this.convergingReason = `partition healed (host ${peer.id})`;
    if (!this.participating || theirs.length === 0 || mine.length === 0) {
      return;
    }
    // The smaller side (ties: the side without the lowest host id) is the one that rejoins: it
    // drops every connection it holds, since the larger side reset those clients meanwhile, and
    // stops resetting in buckets whose "dead" owner is back. The larger side keeps resetting
    // the rejoining side's old clients, whose connections are gone now.
    const rejoining =
      mine.length < theirs.length ||
      (mine.length === theirs.length && Math.min(...mine) > Math.min(...theirs));
    // One drop per merge: the other side's hosts are heard one after another.
    if (rejoining && now - this.rejoinFlushedAtMs >= this.deadAfterMs) {
      this.rejoin(now, { joins: theirs });
    }
  }

  private command(now: number, command: Command): CommandReply {
    if (command.verb === 'link') return this.link(now, command.up, command.silentSinceMs);
    if (this.adminState === 'suspended' && command.verb !== 'resume') {
      return {
        code: 'suspended',
        message: 'the host is suspended: only resume (and query) are accepted',
      };
    }
    switch (command.verb) {
      case 'start':
        if (this.adminState === 'started') return { code: 'already', message: 'already started' };
        this.setAdmin(now, 'started');
        return { code: 'ok', message: 'started' };
      case 'stop':
        if (this.adminState === 'stopped') return { code: 'already', message: 'already stopped' };
        this.setAdmin(now, 'stopped');
        return { code: 'ok', message: 'stopped: existing connections were dropped' };
      case 'drainstop':
        if (this.adminState === 'stopped') return { code: 'already', message: 'already stopped' };
        if (this.adminState === 'draining') return { code: 'already', message: 'already draining' };
        this.setAdmin(now, 'draining');
        return {
          code: 'ok',
          message: 'draining: no new connections; stops when the existing ones end',
        };
      case 'connectionsEnded':
        if (this.adminState !== 'draining') return { code: 'already', message: 'not draining' };
        this.emit(now, 'drain completed', { host: this.hostId });
        this.setAdmin(now, 'stopped');
        return { code: 'ok', message: 'drain completed: stopped' };
      case 'suspend':
        this.setAdmin(now, 'suspended');
        return { code: 'ok', message: 'suspended: every command but resume is ignored' };
      case 'resume':
        if (this.adminState !== 'suspended') return { code: 'already', message: 'not suspended' };
        this.setAdmin(now, 'stopped');
        return { code: 'ok', message: 'resumed: the host is stopped; use start to take traffic' };
      case 'enable':
      case 'disable':
      case 'drain': {
        const wanted: RuleState =
          command.verb === 'enable'
            ? 'enabled'
            : command.verb === 'disable'
              ? 'disabled'
              : 'draining';
        const bad = command.rules.filter((r) => r < 0 || r >= this.ruleStates.length);
        if (bad.length > 0 || command.rules.length === 0) {
          return { code: 'not found', message: `no port rule ${bad.join(', ')}` };
        }
        const changing = command.rules.filter((r) => this.ruleStates[r] !== wanted);
        if (changing.length === 0) return { code: 'already', message: `already ${wanted}` };
        for (const r of changing) {
          this.ruleStates[r] = wanted;
          const event =
            wanted === 'enabled'
              ? 'rule enabled'
              : wanted === 'disabled'
                ? 'rule disabled'
                : 'rule drained';
          this.emit(now, event, { rule: r });
          if (wanted === 'disabled') {
            // Disable drops the rule's existing connections too (drain does not).
            this.flush.push({
              rule: r,
              buckets: Array.from(
                { length: this.config.cluster.portRules[r]!.buckets },
                (_, b) => b,
              ),
            });
          }
        }
        this.convergingReason = `rule(s) ${changing.join(', ')} ${wanted}`;
        return { code: 'ok', message: `rule(s) ${changing.join(', ')} ${wanted}` };
      }
      case 'reload':
        return this.reload(now, command.config);
    }
  }

  private link(now: number, up: boolean, silentSinceMs: number | undefined): CommandReply {
    if (!up) {
      if (this.linkDownSinceMs !== undefined)
        return { code: 'already', message: 'link already down' };
      this.linkDownSinceMs = Math.min(now, silentSinceMs ?? now);
      this.emit(now, 'link down', { interface: this.config.cluster.interface });
      for (const owned of this.owned) owned.clear();
      for (const orphans of this.orphans) orphans.clear();
      this.convergingReason = 'link down';
      return { code: 'ok', message: 'link down: taking no buckets until it is back' };
    }
    if (this.linkDownSinceMs === undefined) return { code: 'already', message: 'link already up' };
    const downMs = now - this.linkDownSinceMs;
    this.linkDownSinceMs = undefined;
    this.emit(now, 'link up', { interface: this.config.cluster.interface, downMs });
    this.convergingReason = 'link up';
    if (downMs >= this.deadAfterMs) {
      // The peers declared this host dead meanwhile and reset its clients: its old connections
      // are gone for them, so it drops them before it takes buckets again.
      this.rejoin(now, { afterLinkDownMs: downMs });
    }
    return { code: 'ok', message: 'link up: rejoining' };
  }

  private reload(now: number, config: Config): CommandReply {
    if (config.host.id !== this.hostId) {
      this.emit(now, 'config rejected', { reason: 'host.id cannot change on reload' });
      return {
        code: 'refused',
        message: 'host.id cannot change on reload; restart nlbd to change it',
      };
    }
    const digest = configDigestOf(config);
    const clusterChanged = hex(digest) !== hex(this.configDigest);
    const previousRuleCount = this.config.cluster.portRules.length;
    this.config = config;
    this.clusterId = clusterIdOf(config.cluster.name);
    this.configDigest = digest;
    this.ruleDigests = config.cluster.portRules.map(ruleDigestOf);
    const ruleCount = config.cluster.portRules.length;
    if (clusterChanged) {
      // Buckets of the old rules mean nothing under the new ones: start the rules afresh. The
      // kernel keeps established connections; new flows wait for the new map.
      if (ruleCount !== previousRuleCount) {
        this.ruleStates = Array.from({ length: ruleCount }, () => 'enabled' as RuleState);
      }
      this.owned = Array.from({ length: ruleCount }, () => new Set<number>());
      this.orphans = Array.from({ length: ruleCount }, () => new Map<number, DeadClaim>());
      this.deadClaims = Array.from({ length: ruleCount }, () => new Map<number, DeadClaim>());
      this.targets = [];
      // Targets announced under the old rules cannot be compared with new ones: reports made
      // before now must meet the strict acknowledgement rule.
      this.announced = [];
      this.announcedFromSequence = this.sequence + 1;
    }
    for (const peer of this.peers.values()) {
      this.checkCompatible(now, peer);
    }
    this.emit(now, 'config reloaded', { clusterChanged });
    this.convergingReason = 'config reloaded';
    return {
      code: 'ok',
      message: clusterChanged ? 'config reloaded (cluster part changed)' : 'config reloaded',
    };
  }

  private setAdmin(now: number, state: AdminState): void {
    const previous = this.adminState;
    this.adminState = state;
    if (state === 'draining') this.emit(now, 'drain started', { host: this.hostId });
    if (state === 'started')
      this.emit(now, previous === 'suspended' ? 'resumed' : 'started', {
        incarnation: this.incarnation,
      });
    if (state === 'stopped') this.emit(now, previous === 'suspended' ? 'resumed' : 'stopped', {});
    if (state === 'suspended') this.emit(now, 'suspended', {});
    if (state === 'stopped' || state === 'suspended') {
      for (const owned of this.owned) owned.clear();
      for (const orphans of this.orphans) orphans.clear();
    }
    this.convergingReason = `host ${this.hostId} ${state}`;
  }

  // ---------------------------------------------------------------- time

  /**
   * When a peer counts as last heard of: its own last heartbeat, or later when another heard
   * host reports (in its acks) a newer sequence from it than any we received. Then the peer is
   * alive and only its heartbeats to us were lost: with independent loss, declaring it dead
   * would take `tolerance` losses on every path at once, not on one. Without loss every ack
   * equals our own last sequence, so crash detection time is unchanged; and a crashed host
   * produces no newer sequence, so the evidence runs out by itself.
   */
  private lastEvidenceMs(peer: PeerRecord): number {
    let latest = peer.lastHeardMs;
    for (const other of this.peers.values()) {
      if (other === peer || !other.heard || other.lastHeardMs <= latest) continue;
      const ack = ackFor(other.heartbeat, peer.id, peer.incarnation);
      if (ack !== undefined && ack > peer.lastSequence) latest = other.lastHeardMs;
    }
    return latest;
  }

  private expirePeers(now: number): void {
    for (const peer of this.peers.values()) {
      if (peer.heard && now >= this.lastEvidenceMs(peer) + this.deadAfterMs) {
        peer.heard = false;
        const hb = peer.heartbeat;
        const wasMember = this.members.includes(peer.id);
        if (takesPart(hb.state)) {
          peer.declaredDeadAtMs = now;
          this.emit(now, 'host declared dead', { host: peer.id, silentMs: now - peer.lastHeardMs });
          this.convergingReason = `host ${peer.id} declared dead`;
          if (wasMember) this.recordDeadClaims(now, peer);
        }
      }
    }
  }

  /** A dead host's connections die with it: its clients get a reset from whoever inherits them. */
  private recordDeadClaims(now: number, peer: PeerRecord): void {
    peer.heartbeat.rules.forEach((rule, r) => {
      const claims = this.deadClaims[r];
      if (claims === undefined) return;
      for (const b of rule.owned) claims.set(b, { host: peer.id, untilMs: now + orphanHoldMs });
    });
  }

  private expireOrphans(now: number): void {
    for (const maps of [this.orphans, this.deadClaims]) {
      for (const map of maps) {
        for (const [bucket, claim] of map) {
          if (claim.untilMs <= now) map.delete(bucket);
        }
      }
    }
  }

  private wakeAt(now: number): number {
    let wake = Math.min(now + this.periodMs, this.nextSendMs);
    if (now < this.listenUntilMs) wake = Math.min(wake, this.listenUntilMs);
    for (const peer of this.peers.values()) {
      if (peer.heard) wake = Math.min(wake, this.lastEvidenceMs(peer) + this.deadAfterMs);
    }
    for (const map of this.orphans) {
      for (const claim of map.values()) wake = Math.min(wake, claim.untilMs);
    }
    if (this.keptOut?.startsWith('duplicate')) {
      // Admitted as soon as the rival on our id has been silent for a detection window.
      for (const rival of this.rivals.values()) {
        const silentAtMs = rival.lastHeardMs + this.deadAfterMs;
        if (silentAtMs > now) wake = Math.min(wake, silentAtMs);
      }
    }
    return Math.max(wake, now);
  }

  // ---------------------------------------------------------------- the decision

  // eslint-disable-next-line max-lines-per-function -- seven phases sharing state; splitting them into named phases is issue 10 item 2, not done yet
  private update(now: number): void {
    // Kept out while another host that was there first uses our id, or for a config mismatch
    // while a larger (or equal, lower-id) cluster disagrees.
    this.reviewDuplicateKeepOut(now);
    this.reviewConfigKeepOut(now);
    this.pending = false;
    // A new generation whenever what this host feeds into the assignment changes while it takes
    // part (taking part again, draining, a rule enabled, disabled or drained, a reload): a
    // target computed before can then never be this host's target again, which lets peers
    // disregard their older announcements of it (see `reportCounts`).
    const inputsKey = JSON.stringify([
      this.adminState,
      this.ruleStates,
      this.config.host.rules,
      hex(this.configDigest),
    ]);
    if (this.participating && (!this.wasParticipating || inputsKey !== this.lastInputsKey)) {
      this.generation += 1;
    }
    this.lastInputsKey = inputsKey;
    if (this.participating && !this.wasParticipating) {
      // Taking part again (start, link up, admitted): listen for a whole detection window
      // before taking buckets alone, as at the first start.
      this.listenUntilMs = Math.max(this.listenUntilMs, now + this.deadAfterMs);
      this.participatingFromSequence = this.sequence + 1;
    }
    this.wasParticipating = this.participating;

    this.heardIds = [...this.peers.values()]
      .filter((p) => p.heard && p.mismatch === undefined)
      .map((p) => p.id)
      .sort((a, b) => a - b);
    const members: number[] = [];
    if (this.participating) {
      members.push(this.hostId);
      for (const id of this.heardIds) {
        const hb = this.peers.get(id)!.heartbeat;
        // It hears us back: it lists us, or it acks this process (a newcomer acks what it hears
        // before it has proven us fresh, so this saves a round trip on every join).
        const hearsUs =
          hb.heard.includes(this.hostId) || ackFor(hb, this.hostId, this.incarnation) !== undefined;
        if (takesPart(hb.state) && hearsUs) {
          members.push(id);
        }
      }
      members.sort((a, b) => a - b);
    }
    const membersChanged = !sameList(members, this.members);
    if (membersChanged && this.participating && this.members.length > 0) {
      const joined = members.filter((id) => !this.members.includes(id) && id !== this.hostId);
      const left = this.members.filter((id) => !members.includes(id) && id !== this.hostId);
      for (const id of joined) this.emit(now, 'host joined', { host: id });
      for (const id of left) {
        const peer = this.peers.get(id);
        if (peer?.heard) {
          const reason = takesPart(peer.heartbeat.state)
            ? 'it no longer hears this host'
            : `it is ${peer.heartbeat.state}`;
          this.emit(now, 'host left', { host: id, reason });
          if (!(peer.heartbeat.state === 'stopped' || peer.heartbeat.state === 'suspended')) {
            this.emit(now, 'partition detected', { host: id, reason });
          }
        }
      }
      if (joined.length > 0) this.convergingReason = `host(s) ${joined.join(', ')} joined`;
      else if (left.length > 0 && !this.convergingReason.includes('dead'))
        this.convergingReason = `host(s) ${left.join(', ')} left`;
    }
    this.members = members;

    // A bucket that a heard, participating peer with a lower id also claims (two sides of a
    // healed partition) is given up at once, before that peer is even a member: releasing is
    // always safe, and the target resolves such conflicts the same way.
    const rules = this.config.cluster.portRules;
    if (this.participating) {
      for (const id of this.heardIds) {
        const hb = this.peers.get(id)!.heartbeat;
        if (id > this.hostId || !takesPart(hb.state)) continue;
        hb.rules.forEach((rule, r) => {
          const owned = this.owned[r];
          if (owned === undefined) return;
          for (const b of rule.owned) {
            if (owned.delete(b)) this.orphans[r]!.delete(b);
          }
        });
      }
    }

    // Targets from claims.
    const targets: (number | null)[][] = rules.map((rule, r) => {
      if (!this.participating) return Array.from({ length: rule.buckets }, () => null);
      const owners: (number | null)[] = Array.from({ length: rule.buckets }, () => null);
      const infos: AssignMember[] = [];
      for (const id of members) {
        let claimed: Iterable<number>;
        let info: AssignMember;
        if (id === this.hostId) {
          claimed = this.owned[r]!;
          info = {
            id,
            loadWeight: this.config.host.rules[r]?.loadWeight ?? 0,
            handlingPriority: this.config.host.rules[r]?.handlingPriority ?? id,
            draining: this.adminState === 'draining' || this.ruleStates[r] !== 'enabled',
          };
        } else {
          const hb = this.peers.get(id)!.heartbeat;
          const ruleHb = hb.rules[r]!;
          claimed = ruleHb.owned;
          info = {
            id,
            loadWeight: ruleHb.loadWeight,
            handlingPriority: ruleHb.handlingPriority,
            draining: hb.state === 'draining' || ruleHb.state !== 'enabled',
          };
        }
        infos.push(info);
        for (const b of claimed) {
          if (b < rule.buckets) {
            const current = owners[b];
            owners[b] = current === null || current === undefined ? id : Math.min(current, id);
          }
        }
      }
      return assign({ mode: rule.mode, buckets: rule.buckets, owners, members: infos });
    });
    const digest = this.digestOf(members, targets);
    const targetChanged = hex(digest) !== hex(this.mapDigest);
    this.targets = targets;
    this.mapDigest = digest;
    if ((membersChanged || targetChanged) && this.converged) {
      this.converged = false;
      this.convergingSinceMs = now;
      this.emit(now, 'converging', { reason: this.convergingReason, members });
    }

    if (!this.participating) {
      this.converged = false;
      return;
    }

    // Release first: what the target does not give us, we stop taking new flows for now.
    targets.forEach((target, r) => {
      const owned = this.owned[r]!;
      for (const b of [...owned]) {
        if (target[b] !== this.hostId) {
          owned.delete(b);
          this.orphans[r]!.delete(b);
        }
      }
    });

    // Acquire only on agreement, and only buckets no heard peer still claims.
    const digestHex = hex(digest);
    const agreed = this.heardIds.concat(members).every((id) => {
      if (id === this.hostId) return true;
      const hb = this.peers.get(id)!.heartbeat;
      const ack = ackFor(hb, this.hostId, this.incarnation) ?? 0;
      if (!members.includes(id)) {
        // A heard peer that does not take part (stopped, suspended) may have started at the
        // same moment as we did, each seeing the other stopped and taking everything alone:
        // its report must show that it heard us taking part. From then on, if it starts, it
        // sees us as a member and needs our agreement.
        return ack >= this.participatingFromSequence;
      }
      return (
        sameList(hb.members, members) &&
        hex(hb.mapDigest) === digestHex &&
        this.reportCounts(id, hb, ack, digestHex, targets)
      );
    });
    const pending = (this.pending = this.viewAboutToChange(now, members));
    // Alone: no heard peer takes part. A stopped peer's report names no members, so hearing
    // only stopped hosts says nothing about who owns what: listen a whole detection window
    // first, as a host that hears nobody does (a restarted host proves its peers one answer at
    // a time, and a stopped one may answer first).
    const alone = (this.alone = !this.heardIds.some((id) => {
      const state = this.peers.get(id)!.heartbeat.state;
      return takesPart(state);
    }));
    // A heard host of another configuration that still claims buckets (a config rollout in
    // progress) may serve the same clients under other rules: take nothing until it yields.
    // The keep-out rule makes one side of any mismatch yield and clear its claims.
    const foreignClaims = [...this.peers.values()].some(
      (p) =>
        p.heard &&
        p.mismatch !== undefined &&
        takesPart(p.heartbeat.state) &&
        p.heartbeat.rules.some((rule) => rule.owned.length > 0),
    );
    if (agreed && !pending && !foreignClaims && (!alone || now >= this.listenUntilMs)) {
      const claimedByPeers = rules.map(() => new Set<number>());
      for (const id of this.heardIds) {
        const hb = this.peers.get(id)!.heartbeat;
        hb.rules.forEach((rule, r) => {
          const set = claimedByPeers[r];
          if (set !== undefined) for (const b of rule.owned) set.add(b);
        });
      }
      targets.forEach((target, r) => {
        const owned = this.owned[r]!;
        target.forEach((owner, b) => {
          if (owner === this.hostId && !owned.has(b) && !claimedByPeers[r]!.has(b)) {
            owned.add(b);
            const dead = this.deadClaims[r]!.get(b);
            if (dead !== undefined && dead.untilMs > now) this.orphans[r]!.set(b, dead);
          }
        });
      });
    }

    const settledAll =
      agreed &&
      !pending &&
      this.isSettled() &&
      members.every((id) => id === this.hostId || this.peers.get(id)!.heartbeat.settled);
    if (settledAll && !this.converged) {
      this.converged = true;
      const moved = this.lastConvergedTargets.length === 0 ? 0 : this.countMovedSinceConverged();
      this.lastConvergedTargets = targets.map((t) => [...t]);
      this.counters.convergences += 1;
      this.counters.lastConvergenceMs = now - this.convergingSinceMs;
      this.emit(now, 'converged', {
        members,
        defaultHost: this.defaultHost(),
        isDefault: this.defaultHost() === this.hostId,
        durationMs: now - this.convergingSinceMs,
        bucketsMoved: moved,
        reason: this.convergingReason,
      });
    } else if (!settledAll && this.converged) {
      this.converged = false;
      this.convergingSinceMs = now;
      this.emit(now, 'converging', { reason: this.convergingReason, members });
    }
  }

  /**
   * Whether this host's view is about to change, so that it announces no target and acquires
   * nothing (see `pending`).
   */
  private viewAboutToChange(now: number, members: readonly number[]): boolean {
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
    for (const c of this.candidates.values()) {
      if (now < c.lastHeardMs + this.deadAfterMs && !this.peers.get(c.host)?.heard) {
        unproven.add(c.host);
        if (now < this.listenUntilMs && c.newest && takesPart(c.state)) {
          newcomer = true;
        }
      }
    }
    return (
      newcomer ||
      this.heardIds.some((id) => {
        const state = this.peers.get(id)!.heartbeat.state;
        return takesPart(state) && !members.includes(id);
      }) ||
      (unproven.size > 0 &&
        members.some(
          (id) =>
            id !== this.hostId &&
            this.peers.get(id)!.heartbeat.members.some((m) => m !== this.hostId && unproven.has(m)),
        ))
    );
  }

  /**
   * Whether a peer's report of our current target (`digestHex`), made when the peer had heard
   * our heartbeats up to sequence `ack`, is recent enough to act on.
   *
   * The danger is a report made before the peer heard one of our announcements of another
   * target A: on receiving it the peer may still agree on A with us and acquire under A, and
   * the report we hold cannot show that. (An old report that happens to match our target
   * again would hide such buckets: seed 1822.) So the report counts unless some announcement
   * of ours made after `ack` announced a target A that
   *   - gives this peer a bucket we are about to acquire (under A the peer can only acquire
   *     what A gives it), and
   *   - the peer can still be at: A's digest covers the peer's incarnation and generation, and
   *     a peer whose report shows a newer generation of the same incarnation can never compute
   *     A again (generations only grow).
   * Whatever the peer acquired before its report, the report shows, and we take no bucket a
   * heard peer claims. An announcement the peer received before its report cannot serve it
   * afterwards: it acks none of the peer's later heartbeats, and the peer's own rule asks for
   * that ack.
   *
   * In a planned change the announcement the peer missed is nearly always a periodic repeat of
   * the old map: it gives the peer nothing we now take (stop, join), or the peer is the host
   * that changed and has a new generation (drainstop, rule changes). So the first report of the
   * new map counts, and new owners start within two one-way delays. When our log does not reach
   * back to `ack`, the strict form applies: the report must ack our last announcement of any
   * other target.
   */
  private reportCounts(
    peerId: number,
    report: Heartbeat,
    ack: number,
    digestHex: string,
    targets: readonly (readonly (number | null)[])[],
  ): boolean {
    const strictAckNeeded =
      digestHex === this.lastSentDigest ? this.previousDigestSequence : this.lastSentSequence;
    if (ack >= strictAckNeeded) return true;
    if (ack + 1 < this.announcedFromSequence) return false;
    const incarnation = this.peers.get(peerId)!.incarnation;
    return this.announced.every((announcement) => {
      if (announcement.lastSequence <= ack || announcement.digest === digestHex) return true;
      const then = announcement.identities.get(peerId);
      const outgrown =
        then !== undefined &&
        then.incarnation === incarnation &&
        then.generation < report.generation;
      return outgrown || !this.givesPeerWhatWeTake(announcement.targets, targets, peerId);
    });
  }

  /** Whether `earlier` gives `peerId` a bucket that `targets` gives us and we do not own yet. */
  private givesPeerWhatWeTake(
    earlier: readonly (readonly (number | null)[])[],
    targets: readonly (readonly (number | null)[])[],
    peerId: number,
  ): boolean {
    return targets.some((target, r) => {
      const before = earlier[r];
      if (before === undefined || before.length !== target.length) return true;
      const owned = this.owned[r]!;
      return target.some(
        (owner, b) => owner === this.hostId && !owned.has(b) && before[b] === peerId,
      );
    });
  }

  /** Records that heartbeat `sequence` announced the current target. */
  private recordAnnouncement(sequence: number, digestHex: string): void {
    const last = this.announced[this.announced.length - 1];
    if (last !== undefined && last.digest === digestHex) {
      last.lastSequence = sequence;
      return;
    }
    this.announced.push({
      digest: digestHex,
      firstSequence: sequence,
      lastSequence: sequence,
      targets: this.targets.map((t) => [...t]),
      identities: new Map(
        this.members
          .filter((id) => id !== this.hostId)
          .map((id) => {
            const peer = this.peers.get(id)!;
            return [id, { incarnation: peer.incarnation, generation: peer.heartbeat.generation }];
          }),
      ),
    });
    if (this.announced.length > announcementsMax) {
      const dropped = this.announced.shift()!;
      this.announcedFromSequence = dropped.lastSequence + 1;
    }
  }

  private reviewConfigKeepOut(now: number): void {
    const configReason = 'config mismatch';
    const stronger = [...this.peers.values()].find((p) => {
      if (!p.heard || p.mismatch === undefined || p.heartbeat.members.length === 0) return false;
      const theirs = p.heartbeat.members;
      const mine = this.members.length > 0 ? this.members : [this.hostId];
      return (
        theirs.length > mine.length ||
        (theirs.length === mine.length && Math.min(...theirs) < Math.min(...mine))
      );
    });
    if (stronger !== undefined && this.keptOut === undefined && takesPart(this.adminState)) {
      this.keptOut = `${configReason} with host ${stronger.id}: ${stronger.mismatch}`;
      this.emit(now, 'kept out', {
        reason: this.keptOut,
        hint: "make the cluster part of this host's config identical to the cluster's, then `nlb reload`",
      });
      for (const owned of this.owned) owned.clear();
    } else if (stronger === undefined && this.keptOut?.startsWith(configReason)) {
      this.keptOut = undefined;
      this.emit(now, 'admitted', { reason: 'no conflicting cluster config is heard any more' });
    }
  }

  private isSettled(): boolean {
    return this.targets.every((target, r) => {
      const owned = this.owned[r]!;
      let count = 0;
      for (let b = 0; b < target.length; b++) {
        if (target[b] === this.hostId) {
          if (!owned.has(b)) return false;
          count++;
        }
      }
      return count === owned.size;
    });
  }

  private countMovedSinceConverged(): number {
    let moved = 0;
    this.targets.forEach((target, r) => {
      const before = this.lastConvergedTargets[r];
      target.forEach((owner, b) => {
        if (before === undefined || before[b] !== owner) moved++;
      });
    });
    return moved;
  }

  private digestOf(
    members: readonly number[],
    targets: readonly (readonly (number | null)[])[],
  ): Uint8Array {
    const hash = createHash('sha256');
    for (const id of members) {
      const identity =
        id === this.hostId
          ? [id, this.incarnation, this.generation]
          : [id, this.peers.get(id)!.incarnation, this.peers.get(id)!.heartbeat.generation];
      hash.update(identity.join(':') + ';');
    }
    for (const target of targets) {
      hash.update(Uint8Array.from(target.map((o) => o ?? 0)));
    }
    return new Uint8Array(hash.digest()).subarray(0, 8);
  }

  private defaultHost(): number | null {
    const started = this.members.filter((id) => {
      if (id === this.hostId) return this.adminState === 'started';
      return this.peers.get(id)?.heartbeat.state === 'started';
    });
    return started[0] ?? this.members[0] ?? null;
  }

  // ---------------------------------------------------------------- outputs

  private announcedState(): AnnouncedState {
    return this.keptOut !== undefined ? 'stopped' : this.adminState;
  }

  private maybeSend(now: number, answerPeer: boolean): void {
    const duplicate = this.keptOut !== undefined && this.keptOut.startsWith('duplicate');
    const contentKey = JSON.stringify([
      this.announcedState(),
      this.isSettled(),
      this.heardIds,
      this.members,
      hex(this.mapDigest),
      this.pending,
      this.owned.map((o) => [...o].sort((a, b) => a - b)),
      this.ruleStates,
      this.config.host.rules,
      hex(this.configDigest),
    ]);
    const changed = contentKey !== this.lastSentKey;
    // Before the first scheduled heartbeat a host only listens, unless an operator command
    // changed what it has to say.
    const due = now >= this.nextSendMs;
    if (!due && !(this.sequence > 0 && (changed || answerPeer))) {
      return;
    }
    this.sequence += 1;
    this.lastSentKey = contentKey;
    const announcedDigest = this.pending ? new Uint8Array(8) : this.mapDigest;
    if (!this.pending) {
      const digestHex = hex(this.mapDigest);
      if (digestHex !== this.lastSentDigest) {
        this.previousDigestSequence = this.lastSentSequence;
        this.lastSentDigest = digestHex;
      }
      this.lastSentSequence = this.sequence;
      this.recordAnnouncement(this.sequence, digestHex);
    }
    this.nextSendMs = now + this.sendIntervalMs;
    this.lastSentAtMs = now;
    this.recordSent(now, this.sequence);
    this.counters.heartbeatsSent += 1;
    this.send.push(
      encodeHeartbeat(
        {
          hostId: this.hostId,
          state: this.announcedState(),
          settled: this.isSettled(),
          keptOut: duplicate,
          clusterId: this.clusterId,
          incarnation: this.incarnation,
          sequence: this.sequence,
          generation: this.generation,
          configDigest: this.configDigest,
          periodMs: this.config.cluster.heartbeat.periodMs,
          tolerance: this.config.cluster.heartbeat.tolerance,
          mode: this.config.cluster.mode,
          hashSeed: this.config.cluster.hashSeed,
          heard: this.heardIds,
          members: this.members,
          mapDigest: announcedDigest,
          acks: this.acksOf(now),
          rules: this.config.cluster.portRules.map((rule, r) => ({
            buckets: rule.buckets,
            ruleDigest: this.ruleDigests[r]!,
            loadWeight: this.config.host.rules[r]?.loadWeight ?? 0,
            handlingPriority: this.config.host.rules[r]?.handlingPriority ?? this.hostId,
            state: this.ruleStates[r]!,
            owned: [...this.owned[r]!].sort((a, b) => a - b),
          })),
        },
        this.key,
      ),
    );
  }

  private computeOwnership(): Ownership {
    const active = this.participating;
    return {
      rules: this.config.cluster.portRules.map((rule, r) => {
        const owned = [...(this.owned[r] ?? [])].sort((a, b) => a - b);
        const orphan = [...(this.orphans[r]?.keys() ?? [])]
          .filter((b) => this.owned[r]?.has(b))
          .sort((a, b) => a - b);
        return {
          owned,
          orphan,
          disabled: rule.mode === 'disabled' || this.ruleStates[r] === 'disabled',
        };
      }),
      // A host still listening alone, or whose view is about to change, is not the default
      // host yet: the real default host may be one it has not heard.
      isDefault:
        active &&
        this.defaultHost() === this.hostId &&
        !this.pending &&
        (!this.alone || this.lastNowMs >= this.listenUntilMs),
      active,
      // With the link down, established connections are kept: if it comes back before the
      // peers declare this host dead, they go on; if later, `link` drops them.
      // Only an operator's stop or suspend cuts established connections; a host kept out (a
      // config rollout) or without carrier keeps them.
      dropEstablished:
        !active &&
        (this.adminState === 'stopped' || this.adminState === 'suspended') &&
        this.keptOut === undefined &&
        this.linkDownSinceMs === undefined,
    };
  }

  private emit<N extends ProtocolEventName>(
    now: number,
    event: N,
    fields: ProtocolEventFields[N],
  ): void {
    this.events.push(protocolEvent(event, now, this.hostId, fields));
  }

  /**
   * Summarises rejected heartbeats in one event at most every `badHeartbeatReportMs`. Unproven
   * ones alone raise no event: every host that joins sends one or two before it has heard us
   * (they are counted all the same, and the next event lists them).
   */
  private reportBadHeartbeats(now: number, force: boolean): void {
    const worthReporting = [...this.badCounts.keys()].some((reason) => reason !== 'unproven');
    if (!worthReporting || (!force && now - this.badReportedAtMs < badHeartbeatReportMs)) return;
    this.badReportedAtMs = now;
    this.emit(now, 'bad heartbeats', { counts: Object.fromEntries(this.badCounts) });
    this.badCounts.clear();
  }
}
