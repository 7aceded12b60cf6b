// The discrete-event simulator: a virtual clock, the virtual network, and host processes driven
// exactly as the daemon drives them (src/core/protocol.ts): each Ready is carried out in order:
// ownership (recorded as the host's data plane), flush, send, events, then a tick no later than
// wakeAtMs. After every step the invariants are checked from outside the hosts (safety.ts,
// convergence.ts). Nothing here reads the wall clock or Math.random: a run is a function of
// its plan, and the plan a function of its seed.
import type { Config } from '../core/config.js';
import type { RuleState } from '../core/heartbeat.js';
import type { Command, HostStatus, Input, Ownership, Ready } from '../core/protocol.js';
import { buildConfig, configDocument, simKey } from './cluster-config.js';
import {
  type ObservedHost,
  agreedGroups,
  clusterView,
  coverageProblem,
  sameIds,
} from './convergence.js';
import { convergenceBoundPeriods } from './bounds.js';
import { defaultHostFactory } from './default-host.js';
import { ChangeTracker } from './measure.js';
import { Network } from './network.js';
import { Prng } from './prng.js';
import { EventQueue } from './queue.js';
import { SafetyChecker } from './safety.js';
import { Transcript, formatFields } from './transcript.js';
import type {
  ChangeKind,
  Expectation,
  HostFactory,
  SimAction,
  SimHost,
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

interface Node {
  readonly index: number;
  readonly slot: number;
  readonly hostId: number;
  readonly incarnation: number;
  readonly config: Config;
  readonly key: Uint8Array;
  readonly machine: SimHost;
  alive: boolean;
  expect: Expectation;
  status: HostStatus;
  /** Per port rule, as the operator's accepted enable / disable / drain commands left it. */
  ruleStates: RuleState[];
  signature: string;
  owned: readonly (readonly number[])[];
  pendingWakeMs: number;
  wakeToken: number;
  lastStepMs: number;
  stepsThisInstant: number;
  readonly bootMs: number;
  /** Ids of the recorded datagrams this process received (see `replay`). */
  readonly received: Set<number>;
}

/** A datagram as an eavesdropper on the segment recorded it. */
interface Recorded {
  readonly from: number;
  readonly sentAtMs: number;
  readonly bytes: Uint8Array;
}

/**
 * Datagrams the eavesdropper keeps for replays; the oldest go first. At 32 hosts and a 50 ms
 * period this is a few seconds of everything, and far more in the usual small runs.
 */
const recordedMax = 20_000;

type QueueItem =
  | {
      readonly kind: 'deliver';
      readonly from: number;
      readonly toSlot: number;
      readonly fromSlot: number;
      readonly bytes: Uint8Array;
      readonly sentAtMs: number;
      readonly duplicate: boolean;
      readonly corrupted: boolean;
      /** The recorded datagram this is a copy of. */
      readonly id: number;
    }
  | { readonly kind: 'wake'; readonly node: number; readonly token: number }
  | { readonly kind: 'action'; readonly action: SimAction }
  | { readonly kind: 'settle'; readonly key: string }
  | { readonly kind: 'bound' };

function effectiveOwned(ownership: Ownership): number[][] {
  if (!ownership.active) return [];
  return ownership.rules.map((rule) => (rule.disabled ? [] : [...rule.owned]));
}

function signatureOf(status: HostStatus): string {
  return `${status.state}|${status.converged}|${status.members.join(',')}|${status.mapDigest}`;
}

function diff(
  before: readonly number[],
  after: readonly number[],
): { added: number[]; removed: number[] } {
  const b = new Set(before);
  const a = new Set(after);
  return { added: after.filter((x) => !b.has(x)), removed: before.filter((x) => !a.has(x)) };
}

function describeCommand(command: Command): string {
  if ('rules' in command) return `${command.verb} ${command.rules.join(',')}`;
  return command.verb;
}

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
  private readonly factory: HostFactory;
  private readonly configs = new Map<number, Config>();
  private readonly keyGroups = new Map<Uint8Array, number>();
  private incarnations = 0;
  private dirty = true;
  private view: ReturnType<typeof clusterView> = {
    converged: true,
    target: [],
    members: [],
    reason: undefined,
  };
  private convergedSinceMs: number | undefined = 0;
  private convergedAfterQuietMs: number | undefined;
  private readonly agreedSince = new Map<string, number>();
  private stopped = false;
  /** I3's bound has passed with the cluster converged: from now on it must stay so. */
  private boundPassed = false;
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
  private replayed = 0;

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
    this.factory = options.hostFactory ?? defaultHostFactory;
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
    return convergenceBoundPeriods(this.plan.shape.tolerance) * this.plan.shape.periodMs;
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
      convergedAfterQuietMs: this.convergedAfterQuietMs,
      changes: this.changes.reports(),
      violations: this.violations,
      stats: {
        steps: this.steps,
        datagramsSent: this.datagramsSent,
        copiesDelivered: this.copiesDelivered,
        copiesLost: this.copiesLost + this.network.lostCopies,
        falseDetections: this.falseDetections,
        replayed: this.replayed,
      },
      events: this.events,
      transcript: this.transcript.toArray(),
      transcriptDropped: this.transcript.droppedLines,
    };
  }

  private finish(): void {
    if (this.plan.quietAtMs !== undefined && !this.view.converged) {
      this.violate(
        'I3',
        `not converged at the end of the run (${(this.nowMs - this.plan.quietAtMs).toFixed(1)} ms after the last fault healed): ${this.view.reason}`,
      );
    }
    this.note(
      `sim end: ${this.view.converged ? 'converged' : `not converged (${this.view.reason})`}`,
    );
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
        if (!this.view.converged) {
          this.violate(
            'I3',
            `not converged ${this.boundMs} ms (${convergenceBoundPeriods(this.plan.shape.tolerance)} periods) after the last fault healed at ${this.plan.quietAtMs!.toFixed(1)} ms: ${this.view.reason}`,
          );
        } else {
          this.convergedAfterQuietMs = Math.max(
            0,
            (this.convergedSinceMs ?? this.nowMs) - this.plan.quietAtMs!,
          );
          this.boundPassed = true;
        }
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

  private keyGroup(key: Uint8Array): number {
    for (const [known, group] of this.keyGroups) {
      if (known.length === key.length && known.every((b, i) => b === key[i])) return group;
    }
    const group = this.keyGroups.size;
    this.keyGroups.set(key, group);
    return group;
  }

  private configFor(hostId: number): Config {
    let config = this.configs.get(hostId);
    if (config === undefined) {
      const settings = this.plan.settings[hostId - 1];
      if (settings === undefined) throw new Error(`plan has no settings for host ${hostId}`);
      config = buildConfig(configDocument(this.plan.shape, settings));
      this.configs.set(hostId, config);
    }
    return config;
  }

  private observed(node: Node): ObservedHost {
    return node;
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
      this.view.converged,
      this.view.target,
      this.liveNodes().filter((n) => n !== subject),
      this.nowMs,
    );
  }

  private act(action: SimAction): void {
    this.apply(action);
    this.dirty = true;
  }

  private apply(action: SimAction): void {
    switch (action.do) {
      case 'boot': {
        if (this.slotNode[action.slot]?.alive) {
          throw new Error(
            `plan boots slot ${action.slot} while its host is running; crash it first`,
          );
        }
        const previous = this.nodes.some(
          (n) => n.slot === action.slot && n.hostId === action.hostId,
        );
        const config = action.config ?? this.configFor(action.hostId);
        const key = simKey;
        const incarnation = ++this.incarnations;
        let machine: SimHost;
        try {
          machine = this.factory({ config, key, incarnation, nowMs: this.nowMs });
        } catch (error) {
          this.violate('host-error', `h${action.hostId} constructor threw: ${String(error)}`);
          return;
        }
        const status = machine.status();
        const node: Node = {
          index: this.nodes.length,
          slot: action.slot,
          hostId: action.hostId,
          incarnation,
          config,
          key,
          machine,
          alive: true,
          expect: action.expect ?? 'member',
          status,
          ruleStates: config.cluster.portRules.map(() => 'enabled' as const),
          signature: signatureOf(status),
          owned: [],
          pendingWakeMs: Infinity,
          wakeToken: 0,
          lastStepMs: -1,
          stepsThisInstant: 0,
          bootMs: this.nowMs,
          received: new Set(),
        };
        const kind: ChangeKind = node.expect === 'out' ? 'intruder' : previous ? 'restart' : 'join';
        const label = action.initial ? 'initial' : kind;
        if (!action.initial) this.beginChange(kind, node);
        this.nodes.push(node);
        this.slotNode[action.slot] = node;
        this.safety.addNode({
          index: node.index,
          hostId: node.hostId,
          incarnation,
          keyGroup: this.keyGroup(key),
        });
        this.note(
          `sim boot h${node.hostId} incarnation=${incarnation} slot=${action.slot} (${label}${action.reason ? `: ${action.reason}` : ''})`,
        );
        this.step(node, { kind: 'tick', nowMs: this.nowMs });
        break;
      }
      case 'replay':
        this.replay(action);
        break;
      case 'crash': {
        const node = this.slotNode[action.slot];
        if (node === undefined || !node.alive) {
          this.note(`sim crash slot ${action.slot}: nothing running`);
          return;
        }
        this.beginChange('crash', node);
        node.alive = false;
        node.owned = [];
        this.safety.removeNode(node.index);
        this.note(
          `sim crash h${node.hostId} incarnation=${node.incarnation} (its data plane stops with it)`,
        );
        break;
      }
      case 'command': {
        const node = this.slotNode[action.slot];
        if (node === undefined || !node.alive) {
          this.note(
            `sim command ${describeCommand(action.command)} to slot ${action.slot}: nothing running`,
          );
          return;
        }
        const verb = action.command.verb;
        const kind: ChangeKind | undefined =
          verb === 'stop' || verb === 'suspend'
            ? 'stop'
            : verb === 'drainstop'
              ? 'drainstop'
              : verb === 'start' && node.expect === 'off'
                ? 'join'
                : verb === 'connectionsEnded' && node.status.state === 'draining'
                  ? 'drained'
                  : undefined;
        if (kind !== undefined && node.expect !== 'out') this.beginChange(kind, node);
        if (node.expect !== 'out') {
          if (verb === 'stop' || verb === 'suspend' || verb === 'resume') node.expect = 'off';
          else if (verb === 'start') node.expect = 'member';
          else if (verb === 'connectionsEnded' && node.status.state === 'draining')
            node.expect = 'off';
        }
        const ready = this.step(node, {
          kind: 'command',
          nowMs: this.nowMs,
          command: action.command,
        });
        const reply = ready?.reply;
        const c = action.command;
        if (
          reply?.code === 'ok' &&
          (c.verb === 'enable' || c.verb === 'disable' || c.verb === 'drain')
        ) {
          const wanted: RuleState =
            c.verb === 'enable' ? 'enabled' : c.verb === 'disable' ? 'disabled' : 'draining';
          for (const r of c.rules) node.ruleStates[r] = wanted;
        }
        this.note(
          `sim command h${node.hostId} ${describeCommand(action.command)} -> ${reply === undefined ? 'no reply' : `${reply.code}: ${reply.message}`}`,
        );
        break;
      }
      case 'partition':
        this.beginChange('partition', undefined);
        this.network.partition(action.groups.map((g) => [...g]));
        this.note(
          `net partition ${action.groups.map((g) => `{${g.map((s) => this.slotName(s)).join(',')}}`).join(' | ')}`,
        );
        break;
      case 'cut':
        this.beginChange('partition', undefined);
        this.network.cutLink(action.from, action.to);
        this.note(`net cut ${this.slotName(action.from)} -> ${this.slotName(action.to)}`);
        break;
      case 'heal':
        if (this.network.partitioned) this.beginChange('heal', undefined);
        this.network.heal();
        this.note('net heal: every link up');
        break;
      case 'link': {
        this.network.setLinkConditions(action.from, action.to, action.conditions);
        const c = action.conditions;
        const link = `${this.slotName(action.from)} -> ${this.slotName(action.to)}`;
        this.note(
          c === undefined
            ? `net link ${link} back to the default conditions`
            : `net link ${link}: delay ${c.delayMs}+${c.jitterMs} ms, loss ${(c.lossRate * 100).toFixed(1)}%`,
        );
        break;
      }
      case 'conditions': {
        this.network.setConditions(action.conditions);
        const c = action.conditions;
        this.note(
          `net ${action.label}: delay ${c.delayMs}+${c.jitterMs} ms, loss ${(c.lossRate * 100).toFixed(1)}%, dup ${(c.duplicateRate * 100).toFixed(1)}%, reorder ${(c.reorderRate * 100).toFixed(1)}%/${c.reorderMs} ms, corrupt ${(c.corruptRate * 100).toFixed(1)}%`,
        );
        break;
      }
    }
  }

  /**
   * Sends the host on `action.slot` recorded heartbeats again: only ones its process received
   * already or that were sent before it started, so the protocol must drop each (a heartbeat
   * it never received would be indistinguishable from a late one). Delivered outside the
   * network, so the network's generator draws nothing for them, and outside the hearing
   * bookkeeping of the invariants, which counts fresh datagrams only.
   */
  private replay(action: Extract<SimAction, { do: 'replay' }>): void {
    const node = this.slotNode[action.slot];
    if (node === undefined || !node.alive) return;
    const eligible: number[] = [];
    this.recorded.forEach((d, i) => {
      const id = this.recordedFromId + i;
      if (d.from !== node.index && (d.sentAtMs < node.bootMs || node.received.has(id))) {
        eligible.push(i);
      }
    });
    if (eligible.length === 0) return;
    const prng = new Prng(action.pick);
    const chosen = Array.from({ length: action.count }, () => prng.pick(eligible));
    const from = chosen.map((i) => {
      const sender = this.nodes[this.recorded[i]!.from]!;
      return `h${sender.hostId}/${sender.incarnation}`;
    });
    this.note(`sim replay -> h${node.hostId}: ${chosen.length} recorded (${from.join(' ')})`);
    for (const i of chosen) {
      if (!node.alive) break;
      this.replayed += 1;
      this.step(node, { kind: 'datagram', nowMs: this.nowMs, bytes: this.recorded[i]!.bytes });
    }
  }

  private slotName(slot: number): string {
    const node = this.slotNode[slot];
    return node === undefined ? `slot${slot}` : `h${node.hostId}`;
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
    // 1. The data plane: what the invariants judge.
    if (ready.ownership !== undefined) {
      const owned = effectiveOwned(ready.ownership);
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
          `h${node.hostId} data plane ${ready.ownership.active ? 'active' : 'inactive'}: ${changes.join('; ') || 'no bucket changes'}`,
        );
      }
      for (const v of this.safety.setOwned(node.index, owned, this.nowMs))
        this.violate(v.invariant, v.message);
    }
    for (const flush of ready.flush) {
      this.note(`h${node.hostId} flush rule ${flush.rule} buckets ${flush.buckets.join(',')}`);
    }
    // 2. Send: a multicast to every other slot; the network decides each copy's fate.
    for (const bytes of ready.send) {
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
    // 3. Events.
    for (const event of ready.events) {
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
    // 4. The next tick.
    const wakeAtMs = Math.max(ready.wakeAtMs, this.nowMs);
    if (wakeAtMs < node.pendingWakeMs) {
      node.pendingWakeMs = wakeAtMs;
      node.wakeToken += 1;
      this.queue.push(wakeAtMs, { kind: 'wake', node: node.index, token: node.wakeToken });
    }
    this.afterStatus(node, status);
    return ready;
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

  /** I2, the cluster view for measurements, and I3's "stays converged". */
  private evaluate(): void {
    this.dirty = false;
    const live = this.liveNodes().map((n) => this.observed(n));
    const { groups, disagreement } = agreedGroups(live);
    if (disagreement !== undefined) this.violate('I2', disagreement);
    const settleMs = (this.options.convergedSettleDelays ?? 0) * this.network.maxOneWayDelayMs;
    const keys = new Set<string>();
    for (const group of groups) {
      const key = `${group.members.join(',')}|${group.mapDigest}|${group.hosts.map((h) => h.index).join(',')}`;
      keys.add(key);
      const since = this.agreedSince.get(key);
      if (since === undefined) {
        this.agreedSince.set(key, this.nowMs);
        this.queue.push(this.nowMs + settleMs, { kind: 'settle', key });
      } else if (this.nowMs >= since + settleMs) {
        const problem = coverageProblem(group);
        if (problem !== undefined) {
          this.violate(
            'I2',
            `${problem}, ${(this.nowMs - since).toFixed(1)} ms after all members reported converged`,
          );
        }
      }
    }
    for (const key of [...this.agreedSince.keys()])
      if (!keys.has(key)) this.agreedSince.delete(key);

    const wasConverged = this.view.converged;
    this.view = clusterView(live, (a, b) => this.network.isUp(a, b));
    this.changes.observe(this.view.converged, this.view.target, this.view.members, this.nowMs);
    if (this.view.converged && !wasConverged) {
      this.convergedSinceMs = this.nowMs;
      this.note(
        `sim cluster converged (${
          this.view.members.length > 0
            ? `members ${this.view.members
                .map((m) => m.hostId)
                .sort((a, b) => a - b)
                .join(',')}`
            : 'every connected part'
        })`,
      );
    } else if (!this.view.converged && wasConverged) {
      this.convergedSinceMs = undefined;
    }
    // Before the bound, timers started under the faults may still fire (a peer unheard during a
    // short partition is declared dead after the heal): convergence may come and go. After the
    // bound, nothing is left to react to, so losing convergence is a bug.
    if (this.boundPassed && !this.view.converged) {
      this.violate(
        'I3',
        `lost convergence ${(this.nowMs - this.plan.quietAtMs!).toFixed(1)} ms after the last fault healed, with no fault since: ${this.view.reason}`,
      );
    }
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
