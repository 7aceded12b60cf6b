// A minimal deterministic driver for HostMachine unit tests: fixed one-way delay, no faults
// except those a test applies by hand. It carries out each Ready as every driver does, through
// carryOutSteps (src/core/carry-out.ts). The full simulator with fault injection is src/sim.
import { HostMachine } from '../../src/core/host.js';
import { carryOutSteps } from '../../src/core/carry-out.js';
import type { Command, ProtocolEvent, Ownership, Ready } from '../../src/core/protocol.js';
import { validateConfig, type Config } from '../../src/core/config.js';

export const testKey = new Uint8Array(32).fill(7);

export function hostConfig(id: number, extra: { cluster?: object; host?: object } = {}): Config {
  const result = validateConfig({
    cluster: {
      name: 'test',
      clusterIps: ['198.18.0.100'],
      interface: 'eth0',
      keyFile: '/dev/null',
      portRules: [{ vip: 'all', ports: 80, protocol: 'tcp', mode: 'multiple', affinity: 'none' }],
      ...extra.cluster,
    },
    host: { id, dedicatedIp: `198.18.0.${10 + id}/24`, ...extra.host },
  });
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.config;
}

interface Pending {
  atMs: number;
  seq: number;
  to: number;
  from: number;
  bytes: Uint8Array;
}

/** The dedicated IP `hostConfig` gives host `id`: where its datagrams come from (`sendFrom`). */
export function dedicatedIpOf(id: number): string {
  return `198.18.0.${10 + id}`;
}

export class MiniNet {
  nowMs = 0;
  readonly hosts = new Map<number, HostMachine>();
  readonly ownership = new Map<number, Ownership>();
  readonly events: ProtocolEvent[] = [];
  readonly wake = new Map<number, number>();
  private queue: Pending[] = [];
  private seq = 0;
  /** Pairs "a-b" whose link is cut (both directions). */
  readonly cut = new Set<string>();
  /** Every datagram any host sent, as an eavesdropper on the segment records it. */
  readonly captured: { atMs: number; from: number; bytes: Uint8Array }[] = [];
  private incarnation = 1;

  /** Deliver each datagram with its sender's dedicated IP as `from` (as the daemon does). */
  sendFrom = false;

  constructor(readonly delayMs = 1) {}

  /** `node` names the machine; it defaults to the host id (a test of duplicate ids picks another). */
  add(config: Config, node = config.host.id): HostMachine {
    const host = new HostMachine({
      config,
      key: testKey,
      incarnation: this.incarnation++,
      nowMs: this.nowMs,
    });
    this.hosts.set(node, host);
    this.wake.set(node, this.nowMs);
    return host;
  }

  crash(id: number): void {
    this.hosts.delete(id);
    this.ownership.delete(id);
    this.wake.delete(id);
  }

  /** Machines whose process does not run (SIGSTOP): their datagrams wait, their timers too. */
  private readonly paused = new Map<number, Uint8Array[]>();
  /** Per paused machine, how many datagrams its socket holds; later ones are lost. */
  private readonly socketMax = new Map<number, number>();

  pause(id: number, socketDatagramsMax = Infinity): void {
    this.paused.set(id, []);
    this.socketMax.set(id, socketDatagramsMax);
  }

  /**
   * The process runs again: its timer fires and the datagrams that waited arrive, in the order
   * given (an event loop may serve either first).
   */
  resume(id: number, order: 'timer first' | 'datagrams first' = 'timer first'): void {
    const waiting = this.paused.get(id) ?? [];
    this.paused.delete(id);
    const host = this.hosts.get(id);
    if (!host) return;
    const tick = () => this.carry(id, host.step({ kind: 'tick', nowMs: this.nowMs }));
    if (order === 'timer first') tick();
    for (const bytes of waiting) {
      this.carry(id, host.step({ kind: 'datagram', nowMs: this.nowMs, bytes }));
    }
    if (order === 'datagrams first') tick();
  }

  /** Delivers `bytes` to machine `to` now, as a datagram from nobody in particular. */
  inject(to: number, bytes: Uint8Array): void {
    const host = this.hosts.get(to);
    if (host) this.carry(to, host.step({ kind: 'datagram', nowMs: this.nowMs, bytes }));
  }

  command(id: number, command: Command) {
    const ready = this.hosts.get(id)!.step({ kind: 'command', nowMs: this.nowMs, command });
    this.carry(id, ready);
    return ready.reply;
  }

  private linked(a: number, b: number): boolean {
    return !this.cut.has(`${Math.min(a, b)}-${Math.max(a, b)}`);
  }

  readonly flushes: { atMs: number; host: number; rule: number; buckets: number }[] = [];

  /** Carries out a Ready in the contract's order (carryOutSteps), checking no bucket is owned twice. */
  private carry(id: number, ready: Ready): void {
    for (const step of carryOutSteps(ready)) {
      switch (step.step) {
        case 'flush':
          for (const f of step.flush)
            this.flushes.push({
              atMs: this.nowMs,
              host: id,
              rule: f.rule,
              buckets: f.buckets.length,
            });
          break;
        case 'program':
          if (step.ownership) this.ownership.set(id, step.ownership);
          this.checkNoDoubleOwner(id);
          break;
        case 'send':
          for (const bytes of step.datagrams) this.send(id, bytes);
          break;
        case 'record':
          this.events.push(...step.events);
          break;
        case 'wake':
          this.wake.set(id, step.atMs);
          break;
      }
    }
  }

  private send(id: number, bytes: Uint8Array): void {
    this.captured.push({ atMs: this.nowMs, from: id, bytes });
    for (const to of this.hosts.keys()) {
      if (to !== id && this.linked(id, to)) {
        this.queue.push({ atMs: this.nowMs + this.delayMs, seq: this.seq++, to, from: id, bytes });
      }
    }
  }

  /** Advances virtual time to `untilMs`, delivering datagrams and ticks in order. */
  run(untilMs: number): void {
    // A bound on steps turns a livelock (hosts answering each other forever) into a failure.
    const stepsMax = 200_000;
    for (let steps = 0; ; steps++) {
      if (steps >= stepsMax)
        throw new Error(`livelock: ${stepsMax} steps before ${untilMs} ms, now ${this.nowMs} ms`);
      this.queue.sort((a, b) => a.atMs - b.atMs || a.seq - b.seq);
      const nextDatagram = this.queue[0]?.atMs ?? Infinity;
      let nextWake = Infinity;
      let wakeId = -1;
      for (const [id, at] of this.wake) {
        if (this.paused.has(id)) continue;
        if (at < nextWake) {
          nextWake = at;
          wakeId = id;
        }
      }
      const next = Math.min(nextDatagram, nextWake);
      if (next > untilMs) break;
      this.nowMs = next;
      if (nextDatagram <= nextWake) {
        const d = this.queue.shift()!;
        const host = this.hosts.get(d.to);
        const held = this.paused.get(d.to);
        if (held) {
          if (held.length < (this.socketMax.get(d.to) ?? Infinity)) held.push(d.bytes);
        } else if (host)
          this.carry(
            d.to,
            host.step({
              kind: 'datagram',
              nowMs: this.nowMs,
              bytes: d.bytes,
              ...(this.sendFrom ? { from: dedicatedIpOf(d.from) } : {}),
            }),
          );
      } else {
        this.carry(wakeId, this.hosts.get(wakeId)!.step({ kind: 'tick', nowMs: this.nowMs }));
      }
    }
    this.nowMs = untilMs;
  }

  /**
   * Release before acquire, checked after every step: no bucket is owned by two hosts whose
   * link is up. `allowConflictUntilMs` covers the moment a partition heals, when both sides
   * legitimately own the same buckets until they hear each other.
   */
  allowConflictUntilMs = -1;
  private checkNoDoubleOwner(changed: number): void {
    if (this.nowMs <= this.allowConflictUntilMs) return;
    const mine = this.ownership.get(changed);
    if (!mine) return;
    for (const [other, theirs] of this.ownership) {
      if (other === changed || !this.linked(changed, other) || !this.hosts.has(other)) continue;
      mine.rules.forEach((rule, r) => {
        const set = new Set(theirs.rules[r]?.owned ?? []);
        const both = rule.owned.filter((b) => set.has(b));
        if (both.length > 0) {
          throw new Error(
            `at ${this.nowMs} ms hosts ${changed} and ${other} both own rule ${r} buckets ${both.join(',')}`,
          );
        }
      });
    }
  }

  /** The events as transcript lines: `[time] hN event key=value ...`. */
  transcript(filter: (e: ProtocolEvent) => boolean = () => true): string {
    return this.events
      .filter(filter)
      .map((e) => {
        const { event, atMs, by, ...rest } = e;
        const fields = Object.entries(rest)
          .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
          .join(' ');
        return `[${String(atMs).padStart(6)}] h${String(by)} ${event}${fields ? ' ' + fields : ''}`;
      })
      .join('\n');
  }

  owners(rule = 0): Map<number, number[]> {
    const owners = new Map<number, number[]>();
    for (const [id, own] of this.ownership) {
      for (const b of own.rules[rule]?.owned ?? []) owners.set(b, [...(owners.get(b) ?? []), id]);
    }
    return owners;
  }
}
