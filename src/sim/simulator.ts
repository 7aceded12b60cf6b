// The discrete-event simulator: a virtual clock, the virtual network, and host processes driven
// exactly as the daemon drives them (src/core/protocol.ts): each Ready is carried out in order:
// ownership (recorded as the host's data plane), flush, send, events, then a tick no later than
// wakeAtMs. The plan's actions (boots, crashes, commands, network faults, replays) are carried
// out by actions.ts. After every step the invariants are checked from outside the hosts
// (safety.ts, convergence-watch.ts). Nothing here reads the wall clock or Math.random: a run is
// a function of its plan, and the plan a function of its seed.
import { carryOutSteps } from '../core/carry-out.js';
import type { HostStatus, Input, Ownership, ProtocolEvent, Ready } from '../core/protocol.js';
import { ActionApplier } from './actions.js';
import { sameIds } from './convergence.js';
import { ConvergenceWatch } from './convergence-watch.js';
import { defaultHostFactory } from './default-host.js';
import { ChangeTracker } from './measure.js';
import { Network } from './network.js';
import { Prng } from './prng.js';
import { EventQueue } from './queue.js';
import { SafetyChecker } from './safety.js';
import {
  type Node,
  type QueueItem,
  type Recorded,
  diff,
  effectiveOwned,
  signatureOf,
} from './sim-node.js';
import { Transcript, formatFields } from './transcript.js';
import type {
  ChangeKind,
  HostFactory,
  SimAction,
  SimPlan,
  SimEvent,
  SimResult,
  Violation,
} from './types.js';

/** A host stepped this often at one virtual instant is spinning (wakeAtMs never advances). */
const stepsPerInstantMax = 10_000;

export interface RunOptions {
  readonly hostFactory?: HostFactory;
  /** Receives the seed line first, and the failure report if an invariant breaks. */
  readonly log?: (line: string) => void;
  /** Transcript ring size (lines). */
  readonly transcriptLinesMax?: number;
  /** Stop at the first violation (default) or keep going and collect up to violationsMax. */
  readonly stopOnViolation?: boolean;
  /** Add a line per datagram copy to the transcript (very verbose). */
  readonly traceDatagrams?: boolean;
  /** Transcript lines printed with a failure. */
  readonly failureLines?: number;
  /** Protocol events kept in the result (the first ones); default 20,000. */
  readonly eventsMax?: number;
  /**
   * I2's allowance, in maximal one-way delays: how long after all members report converged
   * every bucket must sit in exactly its target owner's data plane. 2 (the last
   * release and acquisition in flight) suits a protocol whose `converged` means agreement only;
   * the default 0 demands it at the very instant, as `converged` includes being settled.
   */
  readonly convergedSettleDelays?: number;
}

const violationsMax = 50;

/**
 * Datagrams the eavesdropper keeps for replays; the oldest go first. At 32 hosts and a 50 ms
 * period this is a few seconds of everything, and far more in the usual small runs.
 */
const recordedMax = 20_000;

class Simulation {
  private nowMs = 0;
  private readonly queue = new EventQueue<QueueItem>();
  private readonly nodes: Node[] = [];
  private readonly slotNode: (Node | undefined)[];
  private readonly allSlots: number[];
  private readonly network: Network;
  private readonly safety: SafetyChecker;
  private readonly changes = new ChangeTracker();
  private readonly transcript: Transcript;
  private readonly violations: Violation[] = [];
  private readonly events: SimEvent[] = [];
  private readonly eventsMax: number;
  private readonly actions: ActionApplier;
  private readonly watch: ConvergenceWatch;
  private dirty = true;
  private stopped = false;
  private steps = 0;
  private datagramsSent = 0;
  private copiesDelivered = 0;
  private copiesLost = 0;
  private falseDetections = 0;
  /** Pairs of live hosts split by a false detection, until they list each other again. */
  private readonly splitPairs = new Set<number>();
  private readonly stepsMax: number;
  private readonly recorded: Recorded[] = [];
  /** The id of recorded[0]: ids keep counting when the oldest are dropped. */
  private recordedFromId = 0;

  constructor(
    private readonly plan: SimPlan,
    private readonly options: RunOptions,
  ) {
    const prng = new Prng(plan.seed);
    // The network draws from its own stream so the plan's draws never shift its choices.
    this.network = new Network(plan.slots, prng.fork(), plan.conditions);
    this.slotNode = new Array<Node | undefined>(plan.slots).fill(undefined);
    this.allSlots = Array.from({ length: plan.slots }, (_, i) => i);
    const { periodMs, tolerance } = plan.shape;
    this.safety = new SafetyChecker((tolerance - 1) * periodMs);
    this.transcript = new Transcript(options.transcriptLinesMax ?? 400);
    this.eventsMax = options.eventsMax ?? 20_000;
    this.actions = new ActionApplier(plan, options.hostFactory ?? defaultHostFactory, {
      nowMs: () => this.nowMs,
      nodes: this.nodes,
      slotNode: this.slotNode,
      network: this.network,
      safety: this.safety,
      recording: () => ({ recorded: this.recorded, fromId: this.recordedFromId }),
      step: (node, input) => this.step(node, input),
      note: (text) => this.note(text),
      violate: (invariant, message) => this.violate(invariant, message),
      beginChange: (kind, subject) => this.beginChange(kind, subject),
    });
    this.watch = new ConvergenceWatch(
      plan,
      options.convergedSettleDelays ?? 0,
      this.network,
      this.changes,
      {
        note: (text) => this.note(text),
        violate: (invariant, message) => this.violate(invariant, message),
        settleAt: (atMs, key) => this.queue.push(atMs, { kind: 'settle', key }),
      },
    );
    // A generous ceiling: every host steps for every copy of every heartbeat it hears, a few
    // per period, plus immediate heartbeats; 40× that is a datagram storm, not a protocol.
    const periods = plan.durationMs / periodMs + 1;
    this.stepsMax = Math.ceil(40 * plan.slots * plan.slots * periods + 100_000);
    for (const { atMs, action } of plan.schedule) {
      this.queue.push(atMs, { kind: 'action', action });
    }
    if (plan.quietAtMs !== undefined) {
      this.queue.push(plan.quietAtMs + this.boundMs, { kind: 'bound' });
    }
  }

  get boundMs(): number {
    return this.watch.boundMs;
  }

  private note(text: string): void {
    this.transcript.add(this.nowMs, text);
  }

  private violate(invariant: Violation['invariant'], message: string): void {
    if (this.violations.length >= violationsMax) return;
    this.violations.push({ invariant, atMs: this.nowMs, message });
    this.note(`VIOLATION ${invariant}: ${message}`);
    if (this.options.stopOnViolation ?? true) this.stopped = true;
  }

  run(): SimResult {
    const end = this.plan.durationMs;
    for (;;) {
      if (this.stopped) break;
      const next = this.queue.peekTimeMs();
      if (next === undefined || next > end) break;
      const { atMs, item } = this.queue.pop()!;
      this.nowMs = atMs;
      this.handle(item);
      if (this.dirty && !this.stopped) this.evaluate();
      if (this.steps > this.stepsMax) {
        this.violate(
          'liveness',
          `more than ${this.stepsMax} host steps: a datagram or timer storm`,
        );
      }
    }
    if (!this.stopped) {
      this.nowMs = end;
      this.finish();
    }
    return {
      seed: this.plan.seed,
      profile: this.plan.profile,
      hosts: this.plan.hosts,
      periodMs: this.plan.shape.periodMs,
      tolerance: this.plan.shape.tolerance,
      durationMs: this.plan.durationMs,
      maxOneWayDelayMs: this.network.maxOneWayDelayMs,
      convergenceBoundMs: this.boundMs,
      quietAtMs: this.plan.quietAtMs,
      convergedAfterQuietMs: this.watch.convergedAfterQuietMs,
      changes: this.changes.reports(),
      violations: this.violations,
      stats: {
        steps: this.steps,
        datagramsSent: this.datagramsSent,
        copiesDelivered: this.copiesDelivered,
        copiesLost: this.copiesLost + this.network.lostCopies,
        falseDetections: this.falseDetections,
        replayed: this.actions.replayed,
      },
      events: this.events,
      transcript: this.transcript.toArray(),
      transcriptDropped: this.transcript.droppedLines,
    };
  }

  private finish(): void {
    this.watch.atEnd(this.nowMs);
  }

  private handle(item: QueueItem): void {
    switch (item.kind) {
      case 'deliver':
        this.deliver(item);
        break;
      case 'wake': {
        const node = this.nodes[item.node]!;
        if (!node.alive || node.wakeToken !== item.token) return;
        node.pendingWakeMs = Infinity;
        this.step(node, { kind: 'tick', nowMs: this.nowMs });
        break;
      }
      case 'action':
        this.act(item.action);
        break;
      case 'settle':
        this.dirty = true;
        break;
      case 'bound':
        if (this.dirty) this.evaluate();
        this.watch.atBound(this.nowMs);
        break;
    }
  }

  private deliver(item: Extract<QueueItem, { kind: 'deliver' }>): void {
    const node = this.slotNode[item.toSlot];
    if (!this.network.isUp(item.fromSlot, item.toSlot) || node === undefined || !node.alive) {
      this.copiesLost += 1;
      return;
    }
    this.copiesDelivered += 1;
    if (this.options.traceDatagrams) {
      const from = this.nodes[item.from]!;
      this.note(
        `net h${from.hostId} -> h${node.hostId} ${item.bytes.length} B sent ${item.sentAtMs.toFixed(1)}${item.duplicate ? ' duplicate' : ''}${item.corrupted ? ' corrupted' : ''}`,
      );
    }
    if (!item.corrupted) node.received.add(item.id);
    this.step(node, { kind: 'datagram', nowMs: this.nowMs, bytes: item.bytes });
    if (!item.duplicate && !item.corrupted && node.alive) {
      for (const v of this.safety.heard(node.index, item.from, item.sentAtMs, this.nowMs)) {
        this.violate(v.invariant, v.message);
      }
    }
  }

  private liveNodes(): Node[] {
    return this.slotNode.filter((n): n is Node => n !== undefined && n.alive);
  }

  private beginChange(kind: ChangeKind, subject: Node | undefined): void {
    if (this.dirty) this.evaluate();
    this.changes.begin(
      kind,
      subject?.hostId,
      subject?.index,
      this.watch.view.converged,
      this.watch.view.target,
      this.liveNodes().filter((n) => n !== subject),
      this.nowMs,
    );
  }

  private act(action: SimAction): void {
    this.actions.apply(action);
    this.dirty = true;
  }

  private step(node: Node, input: Input): Ready | undefined {
    if (node.lastStepMs === this.nowMs) {
      node.stepsThisInstant += 1;
      if (node.stepsThisInstant > stepsPerInstantMax) {
        this.violate(
          'liveness',
          `h${node.hostId} stepped ${stepsPerInstantMax} times at one instant: wakeAtMs does not advance`,
        );
        return undefined;
      }
    } else {
      node.lastStepMs = this.nowMs;
      node.stepsThisInstant = 0;
    }
    this.steps += 1;
    let ready: Ready;
    let status: HostStatus;
    try {
      ready = node.machine.step(input);
      status = node.machine.status();
    } catch (error) {
      const what = error instanceof Error ? (error.stack ?? error.message) : String(error);
      this.violate(
        'host-error',
        `h${node.hostId} threw on ${input.kind}: ${what.split('\n').slice(0, 4).join(' | ')}`,
      );
      return undefined;
    }
    if (!Number.isFinite(ready.wakeAtMs)) {
      this.violate('host-error', `h${node.hostId} returned wakeAtMs ${ready.wakeAtMs}`);
      return undefined;
    }
    for (const step of carryOutSteps(ready)) {
      switch (step.step) {
        case 'flush':
          for (const flush of step.flush) {
            this.note(
              `h${node.hostId} flush rule ${flush.rule} buckets ${flush.buckets.join(',')}`,
            );
          }
          break;
        case 'program':
          if (step.ownership !== undefined) this.program(node, step.ownership);
          break;
        case 'send':
          for (const bytes of step.datagrams) this.send(node, bytes);
          break;
        case 'record':
          for (const event of step.events) this.record(node, event);
          break;
        case 'wake':
          this.wake(node, step.atMs);
          break;
      }
    }
    this.afterStatus(node, status);
    return ready;
  }

  /** The data plane: what the invariants judge. */
  private program(node: Node, ownership: Ownership): void {
    const owned = effectiveOwned(ownership);
    const before = node.owned;
    node.owned = owned;
    this.dirty = true;
    const changes: string[] = [];
    const rules = Math.max(before.length, owned.length);
    for (let r = 0; r < rules; r++) {
      const { added, removed } = diff(before[r] ?? [], owned[r] ?? []);
      if (added.length + removed.length > 0) {
        changes.push(
          `r${r}${added.length ? ` +${added.join(',')}` : ''}${removed.length ? ` -${removed.join(',')}` : ''}`,
        );
      }
    }
    if (changes.length > 0) this.changes.ownershipChanged(this.nowMs);
    if (changes.length > 0 || before.length !== owned.length) {
      this.note(
        `h${node.hostId} data plane ${ownership.active ? 'active' : 'inactive'}: ${changes.join('; ') || 'no bucket changes'}`,
      );
    }
    for (const v of this.safety.setOwned(node.index, owned, this.nowMs))
      this.violate(v.invariant, v.message);
  }

  /** A multicast to every other slot; the network decides each copy's fate. */
  private send(node: Node, bytes: Uint8Array): void {
    this.datagramsSent += 1;
    this.changes.sent(node.index, this.nowMs);
    const id = this.recordedFromId + this.recorded.length;
    this.recorded.push({ from: node.index, sentAtMs: this.nowMs, bytes });
    if (this.recorded.length > recordedMax) {
      this.recorded.shift();
      this.recordedFromId += 1;
    }
    for (const copy of this.network.send(node.slot, this.allSlots, bytes, this.nowMs)) {
      this.queue.push(copy.atMs, {
        kind: 'deliver',
        from: node.index,
        fromSlot: node.slot,
        toSlot: copy.to,
        bytes: copy.bytes,
        sentAtMs: this.nowMs,
        duplicate: copy.duplicate,
        corrupted: copy.corrupted,
        id,
      });
    }
  }

  private record(node: Node, event: ProtocolEvent): void {
    if (this.events.length < this.eventsMax) {
      this.events.push({
        atMs: this.nowMs,
        hostId: node.hostId,
        incarnation: node.incarnation,
        event,
      });
    }
    this.note(
      `h${node.hostId} ${event.event} ${formatFields(event, ['event', 'atMs', 'by'])}`.trimEnd(),
    );
  }

  /** The next tick: a wake earlier than the one pending replaces it. */
  private wake(node: Node, atMs: number): void {
    const wakeAtMs = Math.max(atMs, this.nowMs);
    if (wakeAtMs < node.pendingWakeMs) {
      node.pendingWakeMs = wakeAtMs;
      node.wakeToken += 1;
      this.queue.push(wakeAtMs, { kind: 'wake', node: node.index, token: node.wakeToken });
    }
  }

  private afterStatus(node: Node, status: HostStatus): void {
    const previous = node.status;
    node.status = status;
    const signature = signatureOf(status);
    if (signature === node.signature) return;
    node.signature = signature;
    this.dirty = true;
    this.note(
      `h${node.hostId} status ${status.state}${status.converged ? '' : ' (not converged)'} members=${status.members.join(',')} map=${status.mapDigest.slice(0, 8)}`,
    );
    this.changes.statusChanged(node, this.nowMs);
    // A false detection: a live member, over an up link, left this host's view. Counted once
    // per pair and episode (the peer dropping this host in turn is the same episode), until
    // both list each other again.
    if (sameIds(previous.members, status.members)) return;
    const { added, removed } = diff(previous.members, status.members);
    const pairOf = (a: Node, b: Node): number =>
      Math.min(a.index, b.index) * 65536 + Math.max(a.index, b.index);
    for (const id of added) {
      const peer = this.liveNodes().find((n) => n.hostId === id && n.expect === 'member');
      if (peer !== undefined && peer.status.members.includes(node.hostId)) {
        this.splitPairs.delete(pairOf(node, peer));
      }
    }
    if (!status.members.includes(status.hostId)) return;
    for (const id of removed) {
      const peer = this.liveNodes().find((n) => n.hostId === id && n.expect === 'member');
      if (
        peer !== undefined &&
        this.network.isUp(peer.slot, node.slot) &&
        peer.status.state !== 'draining' &&
        !this.splitPairs.has(pairOf(node, peer))
      ) {
        this.splitPairs.add(pairOf(node, peer));
        this.falseDetections += 1;
        this.note(
          `sim false detection: h${node.hostId} dropped h${id}, which is alive and connected`,
        );
      }
    }
  }

  /** I2, the cluster view for measurements, and I3's "stays converged" (convergence-watch.ts). */
  private evaluate(): void {
    this.dirty = false;
    this.watch.evaluate(this.liveNodes(), this.nowMs);
  }
}

/** Runs one plan to its end (or its first violation). */
export function runPlan(plan: SimPlan, options: RunOptions = {}): SimResult {
  const log = options.log ?? (() => {});
  log(
    `nlb simulate: seed=${plan.seed} profile=${plan.profile} hosts=${plan.hosts} period=${plan.shape.periodMs}ms tolerance=${plan.shape.tolerance} rules=${plan.shape.ruleSet}`,
  );
  const result = new Simulation(plan, options).run();
  const first = result.violations[0];
  if (first !== undefined) {
    log(formatFailure(result, options.failureLines ?? 60));
  }
  return result;
}

/** The seed, the invariant and the transcript lines that led to it. */
export function formatFailure(result: SimResult, lines = 60): string {
  const first = result.violations[0];
  if (first === undefined) return `seed=${result.seed}: no violation`;
  const tail = result.transcript.slice(Math.max(0, result.transcript.length - lines));
  return [
    `FAILED seed=${result.seed} profile=${result.profile} hosts=${result.hosts}: ${first.invariant} at ${first.atMs.toFixed(1)} ms: ${first.message}`,
    `replay: nlb simulate --scenario random --seed ${result.seed} (or runSimulation({ seed: ${result.seed}, ... }))`,
    `last ${tail.length} transcript lines:`,
    ...tail.map((line) => `  ${line}`),
  ].join('\n');
}
