// Issue 14 item 2-4 in the host machine (MiniNet, virtual time): a host whose service fails a
// rule's health check yields that rule's buckets to the healthy hosts, moving no other bucket;
// it takes its share back when healthy; when every host is unhealthy the rule fails open (the
// map of an all-healthy cluster); a reported weight moves exactly the buckets `assign` says, and
// weight 0 yields everything like a drain. The flags travel in heartbeats, so every host
// computes one map (MiniNet checks no bucket is ever owned twice).
import { describe, expect, it } from 'vitest';
import type { Command } from '../src/core/protocol.js';
import { MiniNet, hostConfig } from './support/mini-net.js';

function cluster(ids: number[]): MiniNet {
  const net = new MiniNet(1);
  for (const id of ids) net.add(hostConfig(id));
  net.run(1500);
  net.events.length = 0;
  return net;
}

function counts(net: MiniNet, ids: number[]): number[] {
  return ids.map((id) => net.ownership.get(id)?.rules[0]?.owned.length ?? 0);
}

/** Owner of every bucket of rule 0 (one each: MiniNet throws on a double owner). */
function ownerMap(net: MiniNet): (number | undefined)[] {
  const owners = net.owners(0);
  return Array.from({ length: 60 }, (_, b) => owners.get(b)?.[0]);
}

function converged(net: MiniNet): boolean {
  return [...net.hosts.values()].every((h) => h.status().converged);
}

function step(net: MiniNet, id: number, command: Command, runMs = 500) {
  const reply = net.command(id, command);
  net.run(net.nowMs + runMs);
  return reply;
}

const unhealthy = (rule: number): Command => ({
  verb: 'health',
  rule,
  healthy: false,
  detail: 'connect 127.0.0.1:80: ECONNREFUSED',
});
const healthy = (rule: number): Command => ({ verb: 'health', rule, healthy: true, detail: 'ok' });

describe('host machine: service health and reported weights', () => {
  it('an unhealthy host yields its buckets to the healthy ones, moving nothing else; healthy again, it takes its share back', () => {
    const net = cluster([1, 2, 3]);
    const before = ownerMap(net);
    expect(step(net, 2, unhealthy(0))?.code).toBe('ok');
    expect(converged(net)).toBe(true);
    expect(counts(net, [1, 2, 3])).toEqual([30, 0, 30]);
    const during = ownerMap(net);
    // Only host 2's buckets moved.
    expect(before.flatMap((o, b) => (o !== 2 && during[b] !== o ? [b] : []))).toEqual([]);
    expect(net.events.filter((e) => e.event === 'service unhealthy').map((e) => e.by)).toEqual([2]);
    // Every host sees host 2 unhealthy in its heartbeats.
    const peer2 = net.hosts
      .get(1)!
      .details()
      .peers.find((p) => p.id === 2)!;
    expect(peer2.rules[0]!.healthy).toBe(false);
    expect(net.hosts.get(2)!.details().ruleHealth[0]).toMatchObject({ healthy: false });

    expect(step(net, 2, unhealthy(0))?.code).toBe('already');
    expect(step(net, 2, healthy(0))?.code).toBe('ok');
    expect(converged(net)).toBe(true);
    expect(counts(net, [1, 2, 3])).toEqual([20, 20, 20]);
    expect(net.events.some((e) => e.event === 'service healthy' && e.by === 2)).toBe(true);
  });

  it('every host unhealthy: the rule fails open and serves as if all were healthy, saying so', () => {
    const net = cluster([1, 2, 3]);
    step(net, 1, unhealthy(0));
    step(net, 2, unhealthy(0));
    expect(counts(net, [1, 2, 3])).toEqual([0, 0, 60]);
    step(net, 3, unhealthy(0));
    expect(converged(net)).toBe(true);
    expect(counts(net, [1, 2, 3])).toEqual([20, 20, 20]);
    const failing = net.events.filter((e) => e.event === 'all hosts unhealthy: failing open');
    expect(failing.map((e) => e.by).sort()).toEqual([1, 2, 3]);
    expect(failing[0]).toMatchObject({ rule: 0, hosts: [1, 2, 3] });
    expect(net.hosts.get(1)!.details().ruleHealth[0]!.failingOpen).toBe(true);
    // One host recovers: it alone serves the rule again.
    step(net, 1, healthy(0));
    expect(counts(net, [1, 2, 3])).toEqual([60, 0, 0]);
    expect(net.events.filter((e) => e.event === 'failing open ended')).toHaveLength(3);
    expect(net.hosts.get(3)!.details().ruleHealth[0]!.failingOpen).toBe(false);
  });

  it('a flapping service never leaves a bucket owned twice, and ends where it started', () => {
    const net = cluster([1, 2, 3]);
    const before = ownerMap(net);
    for (let i = 0; i < 10; i++) {
      net.command(2, unhealthy(0));
      net.run(net.nowMs + 7 + i * 13);
      net.command(2, healthy(0));
      net.run(net.nowMs + 3 + i * 11);
    }
    net.run(net.nowMs + 1000);
    expect(converged(net)).toBe(true);
    expect(counts(net, [1, 2, 3])).toEqual([20, 20, 20]);
    expect(ownerMap(net).every((o) => o !== undefined)).toBe(true);
    expect(before.filter((o) => o === 2)).toHaveLength(20);
  });

  it('a reported weight moves the buckets assign says and no more; weight 0 yields all; null returns to the config', () => {
    const net = cluster([1, 2, 3]);
    // All weigh 50 (equal): 20 each. Host 2 reports 100: it takes 2/4 of the buckets.
    expect(step(net, 2, { verb: 'weight', rule: 0, weight: 100 })?.code).toBe('ok');
    expect(counts(net, [1, 2, 3])).toEqual([15, 30, 15]);
    expect(net.events.find((e) => e.event === 'weight reported')).toMatchObject({
      by: 2,
      rule: 0,
      weight: 100,
      previous: 50,
    });
    const at100 = ownerMap(net);
    step(net, 2, { verb: 'weight', rule: 0, weight: 50 });
    expect(counts(net, [1, 2, 3])).toEqual([20, 20, 20]);
    // Going back to 50 moved only the 10 buckets host 2 gave up.
    expect(ownerMap(net).filter((o, b) => o !== at100[b])).toHaveLength(10);
    step(net, 2, { verb: 'weight', rule: 0, weight: 0 });
    expect(counts(net, [1, 2, 3])).toEqual([30, 0, 30]);
    expect(step(net, 2, { verb: 'weight', rule: 0, weight: null })?.code).toBe('ok');
    expect(counts(net, [1, 2, 3])).toEqual([20, 20, 20]);
    expect(step(net, 2, { verb: 'weight', rule: 0, weight: 101 })?.code).toBe('refused');
    expect(step(net, 2, { verb: 'weight', rule: 7, weight: 10 })?.code).toBe('not found');
  });

  it('health reports are taken while suspended, and count once the host takes part again', () => {
    const net = cluster([1, 2]);
    step(net, 2, { verb: 'suspend' });
    expect(step(net, 2, unhealthy(0))?.code).toBe('ok');
    step(net, 2, { verb: 'resume' });
    step(net, 2, { verb: 'start' }, 2500);
    expect(counts(net, [1, 2])).toEqual([60, 0]);
    step(net, 2, healthy(0));
    expect(counts(net, [1, 2])).toEqual([30, 30]);
  });
});
