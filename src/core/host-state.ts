// The state one host's protocol machine keeps (see host.ts for the rules), shared by the parts
// of the machine: the peer table (host-peers.ts, host-receive.ts), the keep-out rules
// (host-keepout.ts), the announcement log (host-announcements.ts), commands (host-commands.ts),
// the decision (host-decision.ts) and the outputs (host-output.ts). Pure, like all of
// src/core: no I/O, no clock, no randomness (docs/architecture.md#the-pure-core).
import { createHash } from 'node:crypto';
import type { Config, PortRule } from './config.js';
import { portRuleIdentity } from './config-identity.js';
import {
  type AnnouncedState,
  type DecodeFailure,
  type Heartbeat,
  type RuleState,
  clusterIdOf,
  configDigestOf,
} from './heartbeat.js';
import { protocolEvent, type ProtocolEventFields, type ProtocolEventName } from './events.js';
import type { HostMachineOptions, Ownership, ProtocolEvent } from './protocol.js';

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
/** Per heard peer, the time in which a token for a heartbeat sent at once comes back. */
export const immediateGapPerPeerMs = 1;
/** Heartbeats a host may send at once in a row before the gap holds them back. */
export const immediateBurst = 4;

export interface PeerRecord {
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
  /** The address its last accepted heartbeat came from (the transport's), if it said. */
  address: string | undefined;
  /** Every incarnation recently heard for this id (normally one; two around a restart). */
  readonly incarnations: Map<number, IncarnationEntry>;
}

/**
 * What a received datagram did: 'answer' (send a heartbeat at once), 'taken' (something may
 * have changed), 'routine' (a heard peer's heartbeat that announces what its previous one did,
 * and made no event: nothing to decide unless something else is due), 'dropped' (nothing
 * changed but a counter).
 */
export type ReceiveOutcome = 'answer' | 'taken' | 'routine' | 'dropped';

export interface IncarnationEntry {
  /** When this process first proved itself fresh to us. */
  readonly firstHeardMs: number;
  lastHeardMs: number;
  lastSequence: number;
  heartbeat: Heartbeat;
}

/** A run of heartbeats that announced one target (see `reportCounts` in host-announcements.ts). */
export interface Announcement {
  readonly digest: string;
  readonly firstSequence: number;
  lastSequence: number;
  readonly targets: readonly (readonly (number | null)[])[];
  /** Each peer member's incarnation and generation, as the digest covers them. */
  readonly identities: ReadonlyMap<number, { incarnation: number; generation: number }>;
}

/** Announcement runs remembered; an ack older than all of them falls back to the strict rule. */
export const announcementsMax = 16;

/** Incarnations remembered per host id: a restart needs two; more only come from a fault. */
export const incarnationsPerPeerMax = 4;

/**
 * A process heard but not proven fresh (see Freshness in the header): remembered only to echo
 * it in our acks, so it can prove that it hears us.
 */
export interface Candidate {
  readonly host: number;
  readonly incarnation: number;
  lastSequence: number;
  lastHeardMs: number;
  /** The state its last heartbeat announced (unproven: used only to wait, never to act). */
  state: AnnouncedState;
  /**
   * It was newer than any process heard before on its id: it may be a host that started with
   * us and has not heard us yet (see `viewAboutToChange`).
   */
  readonly newest: boolean;
}

/**
 * Unproven processes remembered at once. A genuine one proves itself within a round trip; the
 * rest are replays or processes that cannot hear us, so a bounded table (the longest silent
 * goes first) only limits how many of those we echo, never what we believe.
 */
export const candidatesMax = 64;

/**
 * Our own heartbeats remembered with their send times, to judge the acks of others. At one
 * heartbeat per 0.95 period plus answers, this covers the freshness window many times over; a
 * storm of answers only shortens the window, which is the safe direction.
 */
export const sentLogMax = 4_096;
export interface DeadClaim {
  readonly host: number;
  readonly untilMs: number;
}

export type AdminState = 'started' | 'draining' | 'stopped' | 'suspended';

/** Whether a host in this state takes part (owns buckets or is about to). */
export function takesPart(state: AnnouncedState | AdminState): boolean {
  return state === 'started' || state === 'draining';
}

/**
 * Makes room in a bounded table of heard processes: forgets the one silent longest, never
 * `keep` (the one speaking for its id). A flood of new processes cannot grow memory.
 */
export function forgetLongestSilent<K>(
  table: Map<K, { readonly lastHeardMs: number }>,
  keep?: K,
): void {
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

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export function sameList(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function ruleDigestOf(rule: PortRule): number {
  return createHash('sha256')
    .update(JSON.stringify(portRuleIdentity(rule)))
    .digest()
    .readUInt32BE(0);
}

/** Everything one host remembers between steps, and the output of the step being run. */
export class MachineState {
  config: Config;
  readonly key: Uint8Array;
  readonly incarnation: number;
  readonly hostId: number;
  clusterId: Uint8Array;
  configDigest: Uint8Array;
  ruleDigests: number[];

  adminState: AdminState;
  /** Why this host may not take part (duplicate id, config mismatch), or undefined. */
  keptOut: string | undefined;
  ruleStates: RuleState[];
  /** Per rule: this host's service passes its health check (true without a check). */
  ruleHealth: boolean[];
  /** Per rule: the load weight the service reported (agent check); undefined: the config's. */
  reportedWeights: (number | undefined)[];
  /** Per rule: every enabled member was unhealthy at the last decision, so health is ignored. */
  failingOpen: boolean[];
  sequence = 0;
  /** See Heartbeat.generation. */
  generation = 0;
  wasParticipating = false;
  /** The sequence of our first heartbeat since we last began to take part. */
  participatingFromSequence = 1;
  /** What this host last fed into the assignment (state, rule states, weights, config). */
  lastInputsKey = '';
  /** Per port rule, the last target `computeTargets` worked out and the inputs it came from. */
  targetMemo: ({ key: string; target: readonly (number | null)[] } | undefined)[] = [];
  /** The last map digest `digestOf` worked out and the members and targets it came from. */
  digestMemo: { key: string; digest: Uint8Array } | undefined = undefined;
  nextSendMs: number;
  lastSentKey = '';
  /** The last target digest announced, and the sequence of the last heartbeat announcing it. */
  lastSentDigest = '';
  lastSentSequence = 0;
  /** The sequence of the last heartbeat that announced a digest other than the current one. */
  previousDigestSequence = 0;
  /**
   * The targets this host recently announced, one entry per run of heartbeats with the same
   * digest, oldest first. It covers every announcement with a sequence from
   * `announcedFromSequence` on; see `reportCounts`.
   */
  announced: Announcement[] = [];
  announcedFromSequence = 1;
  /**
   * A heard, participating peer is not (yet) a member: this host's view is about to change, so
   * it announces no target (an all-zero digest, which matches nobody's) until it settles.
   * Nobody can act on a view that is known to be transient, and the acknowledgement rule below
   * then need not wait for reports about it.
   */
  pending = false;
  /** The wake-up the last full step asked for. */
  lastWakeAtMs = 0;
  /** When this host last sent a heartbeat (see `resumeIfPaused`). */
  lastSentAtMs = 0;
  /** The most this host ran late within a detection window, and when last (`noteLateness`). */
  lateMaxMs = 0;
  lateAtMs = Number.NEGATIVE_INFINITY;
  /** When the heartbeat owed at once (a change, an answer) leaves, if one is owed. */
  immediateDueMs: number | undefined = undefined;
  /** The tokens for heartbeats sent at once, as of `immediateTokensAtMs` (`immediateTokens`). */
  immediateTokens = immediateBurst;
  immediateTokensAtMs = 0;
  /** No heard peer takes part (see `mayAcquire`): acting alone waits for `listenUntilMs`. */
  alone = true;
  lastNowMs = 0;

  readonly peers = new Map<number, PeerRecord>();
  /** Proven processes other than this one that use our host id (a misconfiguration). */
  readonly rivals = new Map<number, IncarnationEntry>();
  /** Processes heard but not proven fresh, keyed `host:incarnation` (see Freshness). */
  readonly candidates = new Map<string, Candidate>();
  /**
   * The highest incarnation heard per host id, proven or not. Incarnations only grow, so a
   * process below it is an old one (a replay) and never makes anyone wait.
   */
  readonly highestIncarnation = new Map<number, number>();
  /** The send time of each heartbeat from `sentLogFromSequence` on, in order. */
  sentLog: number[] = [];
  sentLogFromSequence = 1;
  /** Acks below this prove nothing: they were made before this host's last pause. */
  freshFloorSequence = 0;
  members: number[] = [];
  heardIds: number[] = [];
  targets: (number | null)[][] = [];
  mapDigest: Uint8Array = new Uint8Array(8);
  owned: Set<number>[];
  orphans: Map<number, DeadClaim>[];
  deadClaims: Map<number, DeadClaim>[];
  /** Routed mode: who released each bucket last, for the second chance (routed-forward.ts). */
  releasedClaims: Map<number, DeadClaim>[];
  /**
   * Routed mode: the buckets this host released that may still hold its connections, with
   * when (routed-forward.ts, `noteOwnReleases`); `heldBase` is what it owned when last noted.
   */
  held: Map<number, number>[];
  heldBase: Set<number>[];

  /**
   * A host that hears nobody takes no bucket before it has listened for a whole detection
   * window: a peer it has not heard yet may own them. Once it hears a peer, agreement protects
   * it instead (that peer's view names every host it hears).
   */
  listenUntilMs: number;
  converged = false;
  /**
   * The heard peers whose check in the last decision's agreement passed (`agreement`): each
   * report counted, or a non-member had heard us take part. A check can only pass again on the
   * same announcement with a later ack (every test in it grows with the ack), so a routine
   * heartbeat from such a peer cannot change the decision (host.ts).
   */
  agreeing = new Set<number>();
  /**
   * Whether the last decision gave up or took a bucket. Its own claims are an input of the
   * target, so such a decision, run again on the same inputs, may come out otherwise.
   */
  decisionMoved = false;
  convergingSinceMs: number;
  convergingReason = 'started';
  lastConvergedTargets: (number | null)[][] = [];
  lastOwnershipKey = '';
  /** Set by `HostMachine`'s constructor, from the state this constructor leaves. */
  lastOwnership: Ownership = { rules: [], isDefault: false, active: false, dropEstablished: false };

  readonly badCounts = new Map<DecodeFailure, number>();
  readonly badCountsTotal = new Map<DecodeFailure, number>();
  badReportedAtMs = -Infinity;
  duplicateReportedAtMs = -Infinity;
  rejoinFlushedAtMs = -Infinity;
  /**
   * Batches: datagrams stepped with `moreQueued` whose decision waits for the next step
   * (host.ts), since when, and whether one of them asked for an answer.
   */
  decisionOwedSinceMs: number | undefined = undefined;
  answerOwed = false;
  /** HostMachineOptions.decideEveryStep. */
  readonly decideEveryStep: boolean;
  counters = {
    heartbeatsSent: 0,
    heartbeatsReceived: 0,
    /** Routine heartbeats stepped without running the decision again (host.ts). */
    decisionsSkipped: 0,
    /** Datagrams of a batch that left the decision to a later step (host.ts). */
    decisionsBatched: 0,
    convergences: 0,
    lastConvergenceMs: 0,
    /** When the last convergence ended (the step's time), or -1 before the first. */
    lastConvergedAtMs: -1,
  };

  // Per-step output being collected; events raised outside a step wait for the next one.
  pendingEvents: ProtocolEvent[] = [];
  events: ProtocolEvent[] = [];
  send: Uint8Array[] = [];
  flush: { rule: number; buckets: number[] }[] = [];
  /** Whether this step rejoined (see `Ready.rejoined`). */
  rejoined = false;

  /** Set while the daemon reports the cluster interface without carrier. */
  linkDownSinceMs: number | undefined;

  constructor(options: HostMachineOptions) {
    this.decideEveryStep = options.decideEveryStep === true;
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
    this.ruleHealth = Array.from({ length: ruleCount }, () => true);
    this.reportedWeights = Array.from({ length: ruleCount }, (): number | undefined => undefined);
    this.failingOpen = Array.from({ length: ruleCount }, () => false);
    this.owned = Array.from({ length: ruleCount }, () => new Set<number>());
    this.orphans = Array.from({ length: ruleCount }, () => new Map<number, DeadClaim>());
    this.deadClaims = Array.from({ length: ruleCount }, () => new Map<number, DeadClaim>());
    this.releasedClaims = Array.from({ length: ruleCount }, () => new Map<number, DeadClaim>());
    this.held = Array.from({ length: ruleCount }, () => new Map<number, number>());
    this.heldBase = Array.from({ length: ruleCount }, () => new Set<number>());
    // The first heartbeat waits one period: a host listens before it speaks, so it hears a
    // duplicate of its id, or the cluster's current claims, before it announces anything.
    this.nextSendMs = options.nowMs + options.config.cluster.heartbeat.periodMs;
    this.convergingSinceMs = options.nowMs;
    this.listenUntilMs =
      options.nowMs +
      options.config.cluster.heartbeat.periodMs * options.config.cluster.heartbeat.tolerance;
  }

  get periodMs(): number {
    return this.config.cluster.heartbeat.periodMs;
  }

  /**
   * Heartbeats leave a little more often than the period: peers declare a host dead exactly
   * tolerance × period after its last heartbeat, and with sends exactly one period apart the
   * tolerance-th heartbeat would arrive just after that deadline (by its jitter or a late
   * timer), so tolerance - 1 losses would already kill. 5% earlier keeps that margin.
   */
  get sendIntervalMs(): number {
    return this.config.cluster.heartbeat.periodMs * 0.95;
  }

  /**
   * The time in which a token for an answer, or for a change while the view is still forming,
   * comes back (`immediateTokens`; a change of a settled view needs none). A cold start makes
   * each of N hosts change its announcement as it hears each peer and receive N - 1 new
   * reports per change: each answered at once, that is N² heartbeats, and at 32 hosts every
   * one of them costs every receiver a decision. Beyond the burst they wait and leave as one,
   * so a cluster sends at most about 1000 of them a second whatever its size: 1 ms per heard
   * peer, never beyond a quarter period.
   */
  get immediateGapMs(): number {
    return Math.min(this.periodMs / 4, this.heardIds.length * immediateGapPerPeerMs);
  }

  get deadAfterMs(): number {
    return this.config.cluster.heartbeat.periodMs * this.config.cluster.heartbeat.tolerance;
  }

  /**
   * How recent an ack of ours must be for a heartbeat to prove it is not a replay. A live peer
   * acks our last heartbeat it received, normally under one period old; one that has missed
   * ours for a whole detection window is about to declare us dead anyway. One period more
   * covers delay and timer phase.
   */
  get freshWindowMs(): number {
    return this.deadAfterMs + this.periodMs;
  }

  get participating(): boolean {
    return (
      takesPart(this.adminState) && this.keptOut === undefined && this.linkDownSinceMs === undefined
    );
  }

  /**
   * The one way an event leaves the machine: collected for the step's `Ready.events` (an event
   * raised outside a step waits for the next one).
   */
  emit<N extends ProtocolEventName>(now: number, event: N, fields: ProtocolEventFields[N]): void {
    this.events.push(protocolEvent(event, now, this.hostId, fields));
  }
}

/** This host's load weight for rule `r` now: the one its service reported, else the config's. */
export function ownLoadWeight(s: MachineState, r: number): number {
  return s.reportedWeights[r] ?? s.config.host.rules[r]?.loadWeight ?? 0;
}
