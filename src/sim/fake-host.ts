// A small stand-in for src/core/host.ts, used to develop and test the simulator on its own and
// as a second implementation of the driver contract (src/core/protocol.ts). It keeps the real
// protocol's safety rules in their plainest form, with none of its care about timing:
//   - heartbeats are JSON, "authenticated" by a tag of the key (enough for the simulator);
//   - a peer is dead after tolerance × period without a heartbeat;
//   - the target map is the real `assign` over the members and the owners they announce;
//   - release at once, acquire only when every member announces the same view and map and
//     nobody announces the bucket (release before acquire);
//   - on a merge, the higher host id gives up a bucket both announce;
//   - a newer incarnation that finds its host id taken, or a different cluster config, keeps out.
// It is not the protocol: it has no orphan handling and no flush.
import { createHash } from 'node:crypto';
import { assign } from '../core/assign.js';
import { type Config, clusterDigestHex } from '../core/config.js';
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
} from '../core/protocol.js';
import { protocolEvent, type ProtocolEventFields, type ProtocolEventName } from '../core/events.js';
import { duplicate, stateEvent, type FakeHeartbeat, type FakeState } from './fake-host-shapes.js';

interface Peer {
  readonly inc: number;
  readonly lastMs: number;
  readonly hb: FakeHeartbeat;
}

/** Immediate heartbeats beyond this many per period wait for the next tick: no storms. */
const immediateSendsPerPeriodMax = 8;

function digest(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

function sameList(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export class FakeHost {
  private readonly config: Config;
  private readonly keyTag: string;
  private readonly cfg: string;
  private readonly id: number;
  private readonly incarnation: number;
  private readonly periodMs: number;
  private readonly timeoutMs: number;
  private readonly listenUntilMs: number;
  private state: FakeState;
  /** Older processes that keep this one out (same id, or another cluster config), by when heard. */
  private readonly keptOutBy = new Map<string, number>();
  private seq = 0;
  private nowMs: number;
  private nextHeartbeatMs: number;
  private immediateSends = 0;
  private immediateWindowMs = 0;
  /** Per host id, per incarnation: a restart and a duplicate both show up as a second one. */
  private readonly heard = new Map<number, Map<number, Peer>>();
  /** Per host id, the incarnation that counts: the oldest live one that is not kept out. */
  private readonly peers = new Map<number, Peer>();
  private readonly noted = new Set<string>();
  private owned: Set<number>[];
  private target: (number | null)[][];
  private mapDigest = '';
  private members: number[] = [];
  private lastSent = '';
  private ownership: Ownership;

  constructor(opts: HostMachineOptions) {
    this.config = opts.config;
    this.keyTag = digest(Buffer.from(opts.key).toString('hex'));
    this.cfg = clusterDigestHex(opts.config.cluster);
    this.id = opts.config.host.id;
    this.incarnation = opts.incarnation;
    this.periodMs = opts.config.cluster.heartbeat.periodMs;
    this.timeoutMs = this.periodMs * opts.config.cluster.heartbeat.tolerance;
    this.nowMs = opts.nowMs;
    this.nextHeartbeatMs = opts.nowMs;
    // Two periods of listening before taking buckets: long enough to hear a running cluster.
    this.listenUntilMs = opts.nowMs + 2 * this.periodMs;
    this.state =
      opts.config.host.initialState === 'started' ? 'started' : opts.config.host.initialState;
    const rules = opts.config.cluster.portRules;
    this.owned = rules.map(() => new Set<number>());
    this.target = rules.map((r) => new Array<number | null>(r.buckets).fill(null));
    this.ownership = this.currentOwnership();
  }

  private get keptOut(): boolean {
    for (const [key, lastMs] of this.keptOutBy) {
      if (lastMs + this.timeoutMs <= this.nowMs) this.keptOutBy.delete(key);
    }
    return this.keptOutBy.size > 0;
  }

  private get participating(): boolean {
    return (this.state === 'started' || this.state === 'draining') && !this.keptOut;
  }

  step(input: Input): Ready {
    this.nowMs = Math.max(this.nowMs, input.nowMs);
    const events: ProtocolEvent[] = [];
    let reply: CommandReply | undefined;
    let forceSend = false;
    if (input.kind === 'datagram') {
      this.receive(input.bytes, events);
    } else if (input.kind === 'command') {
      reply = this.command(input.command, events);
      forceSend = true;
    }
    this.expirePeers(events);
    const before = this.ownership;
    const changedView = this.recompute(events);
    const send: Uint8Array[] = [];
    const announced = this.announcement();
    const periodic = this.nowMs >= this.nextHeartbeatMs;
    if (this.nowMs >= this.immediateWindowMs + this.periodMs) {
      this.immediateWindowMs = this.nowMs;
      this.immediateSends = 0;
    }
    const immediate =
      (forceSend || changedView || announced !== this.lastSent) &&
      this.immediateSends < immediateSendsPerPeriodMax;
    if (periodic || immediate) {
      if (!periodic) this.immediateSends += 1;
      send.push(this.heartbeat());
      this.lastSent = announced;
      this.nextHeartbeatMs = this.nowMs + this.periodMs;
    }
    let wakeAtMs = this.nextHeartbeatMs;
    for (const incarnations of this.heard.values()) {
      for (const peer of incarnations.values())
        wakeAtMs = Math.min(wakeAtMs, peer.lastMs + this.timeoutMs);
    }
    for (const lastMs of this.keptOutBy.values())
      wakeAtMs = Math.min(wakeAtMs, lastMs + this.timeoutMs);
    if (this.nowMs < this.listenUntilMs) wakeAtMs = Math.min(wakeAtMs, this.listenUntilMs);
    return {
      ownership: this.ownership === before ? undefined : this.ownership,
      flush: [],
      rejoined: false,
      send,
      events,
      wakeAtMs: Math.max(wakeAtMs, this.nowMs + 0.001),
      reply,
    };
  }

  status(): HostStatus {
    let state: ReportedState;
    const converged = this.converged();
    if (this.state === 'stopped' || this.keptOut) state = 'stopped';
    else if (this.state === 'suspended') state = 'suspended';
    else if (this.state === 'draining') state = 'draining';
    else if (!converged) state = 'converging';
    else state = this.members[0] === this.id ? 'converged as default' : 'converged';
    return {
      hostId: this.id,
      incarnation: this.incarnation,
      state,
      members: this.members,
      memberIncarnations: this.members.map((id) =>
        id === this.id ? this.incarnation : (this.peers.get(id)?.inc ?? 0),
      ),
      defaultHost: this.members.includes(this.id) ? (this.members[0] ?? null) : null,
      converged,
      mapDigest: this.mapDigest,
      target: this.target,
      ownership: this.ownership,
    };
  }

  private note(key: string, event: ProtocolEvent, events: ProtocolEvent[]): void {
    if (!this.noted.has(key)) {
      this.noted.add(key);
      events.push(event);
    }
  }

  private receive(bytes: Uint8Array, events: ProtocolEvent[]): void {
    // The last 16 characters authenticate the rest: a corrupted or foreign datagram is dropped.
    const text = Buffer.from(bytes).toString('utf8');
    const body = text.slice(0, -16);
    if (text.length < 16 || digest(this.keyTag + body) !== text.slice(-16)) {
      return;
    }
    const hb = JSON.parse(body) as FakeHeartbeat;
    if (hb.v !== 'fake1' || hb.key !== this.keyTag) {
      return;
    }
    // Only an older process that takes part itself keeps this one out; an intruder that was
    // kept out keeps nobody out.
    if (hb.id === this.id) {
      if (hb.inc < this.incarnation && !hb.out) {
        if (!this.keptOut)
          events.push(
            this.event('duplicate host id', duplicate(hb.id, hb.inc, this.incarnation, true)),
          );
        this.keptOutBy.set(`id${hb.inc}`, this.nowMs);
      } else {
        this.note(
          `dup${hb.inc}`,
          this.event('duplicate host id', duplicate(hb.id, this.incarnation, hb.inc, false)),
          events,
        );
      }
      return;
    }
    if (hb.cfg !== this.cfg) {
      if (hb.inc < this.incarnation && !hb.out) {
        if (!this.keptOut)
          events.push(
            this.event('kept out', {
              reason: `host ${hb.id} runs a different cluster config`,
              hint: 'the fake host keeps out while an older process of that config is heard',
            }),
          );
        this.keptOutBy.set(`cfg${hb.id}.${hb.inc}`, this.nowMs);
      } else {
        this.note(
          `cfg${hb.id}`,
          this.event('config mismatch', { host: hb.id, differs: 'cluster config' }),
          events,
        );
      }
      return;
    }
    let incarnations = this.heard.get(hb.id);
    if (incarnations === undefined) {
      incarnations = new Map();
      this.heard.set(hb.id, incarnations);
    }
    const known = incarnations.get(hb.inc);
    if (known !== undefined && hb.seq <= known.hb.seq) {
      return; // Replayed or reordered.
    }
    incarnations.set(hb.inc, { inc: hb.inc, lastMs: this.nowMs, hb });
    this.choosePeer(hb.id, events);
  }

  private choosePeer(id: number, events: ProtocolEvent[]): void {
    const incarnations = this.heard.get(id);
    let chosen: Peer | undefined;
    for (const peer of incarnations?.values() ?? []) {
      if (!peer.hb.out && (chosen === undefined || peer.inc < chosen.inc)) chosen = peer;
    }
    const was = this.peers.get(id);
    if (chosen === undefined) {
      this.peers.delete(id);
      return;
    }
    if (was === undefined) {
      events.push(this.event('host joined', { host: id }));
    } else if (was.inc !== chosen.inc) {
      events.push(this.event('host restarted', { host: id, incarnation: chosen.inc }));
    }
    this.peers.set(id, chosen);
  }

  private expirePeers(events: ProtocolEvent[]): void {
    for (const [id, incarnations] of this.heard) {
      let expired = false;
      for (const [inc, peer] of incarnations) {
        if (peer.lastMs + this.timeoutMs <= this.nowMs) {
          incarnations.delete(inc);
          expired = true;
        }
      }
      if (!expired) continue;
      const was = this.peers.get(id);
      this.choosePeer(id, events);
      if (was !== undefined && !this.peers.has(id)) {
        events.push(this.event('host declared dead', { host: id, silentMs: this.timeoutMs }));
      }
      if (incarnations.size === 0) this.heard.delete(id);
    }
  }

  private command(command: Command, events: ProtocolEvent[]): CommandReply {
    const from = this.state;
    switch (command.verb) {
      case 'start':
        if (this.state !== 'suspended') this.state = 'started';
        break;
      case 'stop':
        if (this.state !== 'suspended') this.state = 'stopped';
        break;
      case 'drainstop':
        if (this.state === 'started') this.state = 'draining';
        break;
      case 'connectionsEnded':
        if (this.state === 'draining') this.state = 'stopped';
        break;
      case 'suspend':
        this.state = 'suspended';
        break;
      case 'resume':
        if (this.state === 'suspended') this.state = 'stopped';
        break;
      default:
        return { code: 'refused', message: `the fake host does not implement ${command.verb}` };
    }
    const changed = stateEvent(from, this.state, command, {
      atMs: this.nowMs,
      id: this.id,
      incarnation: this.incarnation,
    });
    if (changed !== undefined) events.push(changed);
    return { code: from === this.state ? 'already' : 'ok', message: `${from} -> ${this.state}` };
  }

  private event<N extends ProtocolEventName>(
    name: N,
    fields: ProtocolEventFields[N],
  ): ProtocolEvent {
    return protocolEvent(name, this.nowMs, this.id, fields);
  }

  private liveMembers(): number[] {
    const ids: number[] = [];
    if (this.participating) ids.push(this.id);
    for (const [id, peer] of this.peers) {
      if ((peer.hb.state === 'started' || peer.hb.state === 'draining') && !peer.hb.out)
        ids.push(id);
    }
    return ids.sort((a, b) => a - b);
  }

  /** Recomputes members, target and ownership; returns whether the view or map changed. */
  private recompute(events: ProtocolEvent[]): boolean {
    const members = this.participating ? this.liveMembers() : [];
    const rules = this.config.cluster.portRules;
    const target = rules.map((rule, r) => {
      const owners: (number | null)[] = new Array<number | null>(rule.buckets).fill(null);
      for (const id of members) {
        const claimed =
          id === this.id ? [...this.owned[r]!] : (this.peers.get(id)?.hb.owned[r] ?? []);
        for (const b of claimed) {
          if (b < rule.buckets && (owners[b] === null || id < owners[b]!)) owners[b] = id;
        }
      }
      return assign({
        mode: rule.mode,
        buckets: rule.buckets,
        owners,
        members: members.map((id) => {
          const hb = id === this.id ? undefined : this.peers.get(id)?.hb;
          const settings = this.config.host.rules[r]!;
          const state = id === this.id ? this.state : hb!.state;
          return {
            id,
            loadWeight: hb === undefined ? settings.loadWeight : (hb.weights[r] ?? 0),
            handlingPriority:
              hb === undefined ? settings.handlingPriority : (hb.priorities[r] ?? id),
            draining: state === 'draining',
          };
        }),
      });
    });
    const mapDigest = digest(JSON.stringify(target));
    const changed = !sameList(members, this.members) || mapDigest !== this.mapDigest;
    if (!sameList(members, this.members)) {
      events.push(this.event('converging', { reason: 'members changed', members }));
    }
    this.members = members;
    this.target = target;
    this.mapDigest = mapDigest;

    // Release whatever the target no longer gives this host, or a lower id also announces.
    let ownershipChanged = false;
    const agreed = this.agreed();
    rules.forEach((rule, r) => {
      const mine = this.owned[r]!;
      const claimedByPeers = new Map<number, number>();
      for (const id of members) {
        if (id === this.id) continue;
        for (const b of this.peers.get(id)?.hb.owned[r] ?? []) claimedByPeers.set(b, id);
      }
      for (const b of [...mine]) {
        const other = claimedByPeers.get(b);
        if (
          target[r]![b] !== this.id ||
          !this.participating ||
          (other !== undefined && other < this.id)
        ) {
          mine.delete(b);
          ownershipChanged = true;
        }
      }
      if (agreed && this.participating && rule.mode !== 'disabled') {
        for (let b = 0; b < rule.buckets; b++) {
          if (target[r]![b] === this.id && !mine.has(b) && !claimedByPeers.has(b)) {
            mine.add(b);
            ownershipChanged = true;
          }
        }
      }
    });
    const next = this.currentOwnership();
    if (ownershipChanged || JSON.stringify(next) !== JSON.stringify(this.ownership)) {
      this.ownership = next;
    }
    return changed;
  }

  /** Every member announces the same view and map (what acquiring needs). */
  private agreed(): boolean {
    if (!this.members.includes(this.id) || this.nowMs < this.listenUntilMs) return false;
    return this.members.every((id) => {
      if (id === this.id) return true;
      const hb = this.peers.get(id)?.hb;
      return hb !== undefined && sameList(hb.members, this.members) && hb.map === this.mapDigest;
    });
  }

  /** Agreed, and settled: every member holds exactly its share of the target. */
  private converged(): boolean {
    if (!this.agreed()) return false;
    return this.members.every((id) => {
      const claims =
        id === this.id
          ? this.owned.map((set) => [...set].sort((a, b) => a - b))
          : this.peers.get(id)!.hb.owned;
      return this.target.every((row, r) => {
        if (this.config.cluster.portRules[r]!.mode === 'disabled') return true;
        const share = row.flatMap((owner, b) => (owner === id ? [b] : []));
        return sameList(claims[r] ?? [], share);
      });
    });
  }

  private currentOwnership(): Ownership {
    const rules = this.config.cluster.portRules;
    return {
      rules: rules.map((rule, r) => ({
        owned: [...this.owned[r]!].sort((a, b) => a - b),
        orphan: [],
        disabled: rule.mode === 'disabled',
      })),
      isDefault: this.participating && this.members[0] === this.id,
      active: this.participating,
      dropEstablished: this.state === 'stopped',
    };
  }

  private announcement(): string {
    return JSON.stringify([
      this.state,
      this.keptOut,
      this.members,
      this.mapDigest,
      this.ownership.rules.map((r) => r.owned),
    ]);
  }

  private heartbeat(): Uint8Array {
    this.seq += 1;
    const hb: FakeHeartbeat = {
      v: 'fake1',
      key: this.keyTag,
      cfg: this.cfg,
      id: this.id,
      inc: this.incarnation,
      seq: this.seq,
      state: this.state,
      out: this.keptOut,
      members: this.members,
      map: this.mapDigest,
      owned: this.ownership.rules.map((r) => [...r.owned]),
      weights: this.config.host.rules.map((r) => r.loadWeight),
      priorities: this.config.host.rules.map((r) => r.handlingPriority),
    };
    const body = JSON.stringify(hb);
    return new Uint8Array(Buffer.from(body + digest(this.keyTag + body), 'utf8'));
  }
}

/** The fake as a host factory for `runSimulation`. */
export function fakeHostFactory(opts: HostMachineOptions): FakeHost {
  return new FakeHost(opts);
}
