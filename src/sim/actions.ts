// Carrying out a plan's actions: booting and crashing host processes, the operator's commands,
// the network's faults and the eavesdropper's replays. The simulation (simulator.ts) owns the
// clock, the nodes and the queue and lends them through a `SimulationPort`; what a host does in
// answer (its Ready) is carried out by the simulation's own `step`.
import type { Config } from '../core/config.js';
import type { RuleState } from '../core/heartbeat.js';
import type { Command, Input, Ready } from '../core/protocol.js';
import { buildConfig, configDocument, simKey } from './cluster-config.js';
import type { Network } from './network.js';
import { Prng } from './prng.js';
import type { SafetyChecker } from './safety.js';
import { type Node, type Recorded, signatureOf } from './sim-node.js';
import type { ChangeKind, HostFactory, SimAction, SimHost, SimPlan, Violation } from './types.js';

/** What the action handlers may see and do of the simulation that runs them. */
export interface SimulationPort {
  /** The virtual clock's reading. */
  nowMs(): number;
  /** Every host process ever booted, by index; booting appends. */
  readonly nodes: Node[];
  /** The process on each machine slot, alive or the last one that ran there. */
  readonly slotNode: (Node | undefined)[];
  readonly network: Network;
  readonly safety: SafetyChecker;
  /** The eavesdropper's datagrams (oldest first) and the id of the oldest. */
  recording(): { readonly recorded: readonly Recorded[]; readonly fromId: number };
  /** Feeds one input to a host and carries out its Ready. */
  step(node: Node, input: Input): Ready | undefined;
  note(text: string): void;
  violate(invariant: Violation['invariant'], message: string): void;
  /** Marks the start of a change the measurements follow (a crash, a join, a partition…). */
  beginChange(kind: ChangeKind, subject: Node | undefined): void;
}

type Boot = Extract<SimAction, { do: 'boot' }>;
type CommandAction = Extract<SimAction, { do: 'command' }>;
type Replay = Extract<SimAction, { do: 'replay' }>;

function describeCommand(command: Command): string {
  if ('rules' in command) return `${command.verb} ${command.rules.join(',')}`;
  return command.verb;
}

export class ActionApplier {
  private readonly configs = new Map<number, Config>();
  private readonly keyGroups = new Map<Uint8Array, number>();
  private incarnations = 0;
  /** Recorded heartbeats sent again so far. */
  replayed = 0;

  constructor(
    private readonly plan: SimPlan,
    private readonly factory: HostFactory,
    private readonly sim: SimulationPort,
  ) {}

  apply(action: SimAction): void {
    switch (action.do) {
      case 'boot':
        this.boot(action);
        break;
      case 'replay':
        this.replay(action);
        break;
      case 'crash':
        this.crash(action.slot);
        break;
      case 'command':
        this.command(action);
        break;
      case 'partition':
      case 'cut':
      case 'heal':
      case 'link':
      case 'conditions':
        this.applyNetwork(action);
        break;
    }
  }

  private boot(action: Boot): void {
    const nowMs = this.sim.nowMs();
    if (this.sim.slotNode[action.slot]?.alive) {
      throw new Error(`plan boots slot ${action.slot} while its host is running; crash it first`);
    }
    const previous = this.sim.nodes.some(
      (n) => n.slot === action.slot && n.hostId === action.hostId,
    );
    const config = action.config ?? this.configFor(action.hostId);
    const key = simKey;
    const incarnation = ++this.incarnations;
    let machine: SimHost;
    try {
      machine = this.factory({ config, key, incarnation, nowMs });
    } catch (error) {
      this.sim.violate('host-error', `h${action.hostId} constructor threw: ${String(error)}`);
      return;
    }
    const status = machine.status();
    const node: Node = {
      index: this.sim.nodes.length,
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
      health: config.cluster.portRules.map(() => true),
      weights: config.host.rules.map((r) => r.loadWeight),
      signature: signatureOf(status),
      owned: [],
      pendingWakeMs: Infinity,
      wakeToken: 0,
      lastStepMs: -1,
      stepsThisInstant: 0,
      bootMs: nowMs,
      received: new Set(),
    };
    const kind: ChangeKind = node.expect === 'out' ? 'intruder' : previous ? 'restart' : 'join';
    const label = action.initial ? 'initial' : kind;
    if (!action.initial) this.sim.beginChange(kind, node);
    this.sim.nodes.push(node);
    this.sim.slotNode[action.slot] = node;
    this.sim.safety.addNode({
      index: node.index,
      hostId: node.hostId,
      incarnation,
      keyGroup: this.keyGroup(key),
    });
    this.sim.note(
      `sim boot h${node.hostId} incarnation=${incarnation} slot=${action.slot} (${label}${action.reason ? `: ${action.reason}` : ''})`,
    );
    this.sim.step(node, { kind: 'tick', nowMs });
  }

  private crash(slot: number): void {
    const node = this.sim.slotNode[slot];
    if (node === undefined || !node.alive) {
      this.sim.note(`sim crash slot ${slot}: nothing running`);
      return;
    }
    this.sim.beginChange('crash', node);
    node.alive = false;
    node.owned = [];
    this.sim.safety.removeNode(node.index);
    this.sim.note(
      `sim crash h${node.hostId} incarnation=${node.incarnation} (its data plane stops with it)`,
    );
  }

  private command(action: CommandAction): void {
    const node = this.sim.slotNode[action.slot];
    if (node === undefined || !node.alive) {
      this.sim.note(
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
    if (kind !== undefined && node.expect !== 'out') this.sim.beginChange(kind, node);
    if (node.expect !== 'out') {
      if (verb === 'stop' || verb === 'suspend' || verb === 'resume') node.expect = 'off';
      else if (verb === 'start') node.expect = 'member';
      else if (verb === 'connectionsEnded' && node.status.state === 'draining') node.expect = 'off';
    }
    const ready = this.sim.step(node, {
      kind: 'command',
      nowMs: this.sim.nowMs(),
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
    if (reply?.code === 'ok' && c.verb === 'health') node.health[c.rule] = c.healthy;
    if (reply?.code === 'ok' && c.verb === 'weight') {
      node.weights[c.rule] = c.weight ?? node.config.host.rules[c.rule]?.loadWeight ?? 0;
    }
    this.sim.note(
      `sim command h${node.hostId} ${describeCommand(action.command)} -> ${reply === undefined ? 'no reply' : `${reply.code}: ${reply.message}`}`,
    );
  }

  private applyNetwork(
    action: Extract<SimAction, { do: 'partition' | 'cut' | 'heal' | 'link' | 'conditions' }>,
  ): void {
    const { network } = this.sim;
    switch (action.do) {
      case 'partition':
        this.sim.beginChange('partition', undefined);
        network.partition(action.groups.map((g) => [...g]));
        this.sim.note(
          `net partition ${action.groups.map((g) => `{${g.map((s) => this.slotName(s)).join(',')}}`).join(' | ')}`,
        );
        break;
      case 'cut':
        this.sim.beginChange('partition', undefined);
        network.cutLink(action.from, action.to);
        this.sim.note(`net cut ${this.slotName(action.from)} -> ${this.slotName(action.to)}`);
        break;
      case 'heal':
        if (network.partitioned) this.sim.beginChange('heal', undefined);
        network.heal();
        this.sim.note('net heal: every link up');
        break;
      case 'link': {
        network.setLinkConditions(action.from, action.to, action.conditions);
        const c = action.conditions;
        const link = `${this.slotName(action.from)} -> ${this.slotName(action.to)}`;
        this.sim.note(
          c === undefined
            ? `net link ${link} back to the default conditions`
            : `net link ${link}: delay ${c.delayMs}+${c.jitterMs} ms, loss ${(c.lossRate * 100).toFixed(1)}%`,
        );
        break;
      }
      case 'conditions': {
        network.setConditions(action.conditions);
        const c = action.conditions;
        this.sim.note(
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
  private replay(action: Replay): void {
    const node = this.sim.slotNode[action.slot];
    if (node === undefined || !node.alive) return;
    // The record is the simulation's own array: the steps below may append to it and drop its
    // oldest entries, exactly as they would inside the simulation.
    const { recorded, fromId } = this.sim.recording();
    const eligible: number[] = [];
    recorded.forEach((d, i) => {
      const id = fromId + i;
      if (d.from !== node.index && (d.sentAtMs < node.bootMs || node.received.has(id))) {
        eligible.push(i);
      }
    });
    if (eligible.length === 0) return;
    const prng = new Prng(action.pick);
    const chosen = Array.from({ length: action.count }, () => prng.pick(eligible));
    const from = chosen.map((i) => {
      const sender = this.sim.nodes[recorded[i]!.from]!;
      return `h${sender.hostId}/${sender.incarnation}`;
    });
    this.sim.note(`sim replay -> h${node.hostId}: ${chosen.length} recorded (${from.join(' ')})`);
    for (const i of chosen) {
      if (!node.alive) break;
      this.replayed += 1;
      this.sim.step(node, { kind: 'datagram', nowMs: this.sim.nowMs(), bytes: recorded[i]!.bytes });
    }
  }

  private slotName(slot: number): string {
    const node = this.sim.slotNode[slot];
    return node === undefined ? `slot${slot}` : `h${node.hostId}`;
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
}
