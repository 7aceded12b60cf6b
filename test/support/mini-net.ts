// A minimal deterministic driver for HostMachine unit tests: fixed one-way delay, no faults
// except those a test applies by hand. The full simulator with fault injection is src/sim.
import { HostMachine } from '../../src/core/host.js';
import type { Command, ProtocolEvent, Ownership } from '../../src/core/protocol.js';
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
  bytes: Uint8Array;
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
  private incarnation = 1;

  constructor(readonly delayMs = 1) {}

  add(config: Config): HostMachine {
    const host = new HostMachine({
      config,
      key: testKey,
      incarnation: this.incarnation++,
      nowMs: this.nowMs,
    });
    this.hosts.set(config.host.id, host);
    this.wake.set(config.host.id, this.nowMs);
    return host;
  }

  crash(id: number): void {
    this.hosts.delete(id);
    this.ownership.delete(id);
    this.wake.delete(id);
  }

  command(id: number, command: Command) {
    const ready = this.hosts.get(id)!.step({ kind: 'command', nowMs: this.nowMs, command });
    this.carry(id, ready);
    return ready.reply;
  }

  private linked(a: number, b: number): boolean {
    return !this.cut.has(`${Math.min(a, b)}-${Math.max(a, b)}`);
  }

  private carry(id: number, ready: ReturnType<HostMachine['step']>): void {
    if (ready.ownership) this.ownership.set(id, ready.ownership);
    for (const bytes of ready.send) {
      for (const to of this.hosts.keys()) {
        if (to !== id && this.linked(id, to)) {
          this.queue.push({ atMs: this.nowMs + this.delayMs, seq: this.seq++, to, bytes });
        }
      }
    }
    this.events.push(...ready.events);
    this.wake.set(id, ready.wakeAtMs);
  }

  /** Advances virtual time to `untilMs`, delivering datagrams and ticks in order. */
  run(untilMs: number): void {
    for (;;) {
      this.queue.sort((a, b) => a.atMs - b.atMs || a.seq - b.seq);
      const nextDatagram = this.queue[0]?.atMs ?? Infinity;
      let nextWake = Infinity;
      let wakeId = -1;
      for (const [id, at] of this.wake) {
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
        if (host)
          this.carry(d.to, host.step({ kind: 'datagram', nowMs: this.nowMs, bytes: d.bytes }));
      } else {
        this.carry(wakeId, this.hosts.get(wakeId)!.step({ kind: 'tick', nowMs: this.nowMs }));
      }
    }
    this.nowMs = untilMs;
  }

  owners(rule = 0): Map<number, number[]> {
    const owners = new Map<number, number[]>();
    for (const [id, own] of this.ownership) {
      for (const b of own.rules[rule]?.owned ?? []) owners.set(b, [...(owners.get(b) ?? []), id]);
    }
    return owners;
  }
}
