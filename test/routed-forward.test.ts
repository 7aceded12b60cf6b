// Routed mode's forwarding maps (src/core/routed-forward.ts), on small clusters of host machines
// with the minimal driver: every bucket a host does not own is forwarded to the host that owns
// it, a bucket taken over from a live host gets a second chance at it until the timeout or that
// host's death, and the other modes carry no routed maps at all.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Ownership } from '../src/core/protocol.js';
import { MiniNet, dedicatedIpOf, hostConfig } from './support/mini-net.js';

const buckets = 30;
const secondChanceMs = 5_000;

function routedConfig(id: number, hosts: number) {
  return hostConfig(id, {
    cluster: {
      mode: 'routed',
      buckets,
      heartbeat: {
        peers: Array.from({ length: hosts }, (_, i) => dedicatedIpOf(i + 1)),
      },
      routed: { as: 65001, secondChanceMs },
    },
    host: { routed: { peers: [{ address: '198.18.0.1', as: 65000 }] } },
  });
}

type Step =
  | { readonly host: number; readonly verb: 'drainstop' | 'stop' | 'start' | 'suspend' | 'resume' }
  | { readonly host: number; readonly verb: 'crash' | 'restart' };

/** After any history of planned changes and crashes, once settled: the maps are right. */
function expectSettledMaps(net: MiniNet, alive: ReadonlySet<number>): void {
  const owner = owners(net);
  for (const id of alive) {
    const ownership = net.ownership.get(id);
    const routed = ownership?.routed;
    if (ownership === undefined || routed === undefined) throw new Error(`h${id}: no ownership`);
    const owned = new Set(ownership.rules[0]!.owned);
    const forward = new Map(routed.rules[0]!.forward);
    for (let b = 0; b < buckets; b++) {
      const to = forward.get(b);
      // Never to itself, never to a dead host, and to the owner whenever the bucket has one.
      expect(to, `h${id} forwards its own bucket ${b}`).not.toBe(id);
      if (to !== undefined) expect(alive.has(to), `h${id} forwards ${b} to dead h${to}`).toBe(true);
      if (!owned.has(b) && owner.has(b)) expect(to, `h${id} bucket ${b}`).toBe(owner.get(b));
    }
    for (const [b, previous] of routed.rules[0]!.secondChance) {
      expect(alive.has(previous), `h${id} second chance of ${b} at dead h${previous}`).toBe(true);
      expect(previous).not.toBe(id);
    }
  }
}

function cluster(hosts: number): MiniNet {
  const net = new MiniNet();
  net.sendFrom = true;
  for (let id = 1; id <= hosts; id++) net.add(routedConfig(id, hosts));
  net.run(3_000);
  return net;
}

/** Who owns each bucket of rule 0, from every host's programmed ownership. */
function owners(net: MiniNet): Map<number, number> {
  const map = new Map<number, number>();
  for (const [id, ownership] of net.ownership) {
    for (const b of ownership.rules[0]!.owned) map.set(b, id);
  }
  return map;
}

function routedOf(net: MiniNet, id: number): NonNullable<Ownership['routed']> {
  const routed = net.ownership.get(id)?.routed;
  if (routed === undefined) throw new Error(`host ${id} has no routed ownership`);
  return routed;
}

/** Every bucket is owned by one host, and every other host forwards it there. */
function expectForwardingToOwners(net: MiniNet): void {
  const owner = owners(net);
  expect(owner.size).toBe(buckets);
  for (const id of net.hosts.keys()) {
    const routed = routedOf(net, id);
    const forward = new Map(routed.rules[0]!.forward);
    const owned = new Set(net.ownership.get(id)!.rules[0]!.owned);
    for (let b = 0; b < buckets; b++) {
      if (owned.has(b)) expect(forward.has(b), `host ${id} bucket ${b}`).toBe(false);
      else expect(forward.get(b), `host ${id} bucket ${b}`).toBe(owner.get(b));
    }
    // Each host named has the address its heartbeats come from.
    for (const [host, address] of routed.addresses) expect(address).toBe(dedicatedIpOf(host));
  }
}

describe('routed forwarding maps', () => {
  it('forward every bucket a host does not own to its owner', () => {
    const net = cluster(3);
    expectForwardingToOwners(net);
    // Nothing moved from a live host yet: no second chance.
    for (const id of [1, 2, 3]) expect(routedOf(net, id).rules[0]!.secondChance).toEqual([]);
  });

  it("give a drained host's buckets a second chance at it on their new owners, until the timeout", () => {
    const net = cluster(3);
    const before = owners(net);
    net.command(3, { verb: 'drainstop' });
    net.run(net.nowMs + 2_000);
    expectForwardingToOwners(net);
    const after = owners(net);
    const moved = [...before].filter(([, host]) => host === 3).map(([b]) => b);
    expect(moved.length).toBeGreaterThan(0);
    for (const b of moved) {
      const owner = after.get(b)!;
      expect([1, 2]).toContain(owner);
      const second = new Map(routedOf(net, owner).rules[0]!.secondChance);
      expect(second.get(b), `bucket ${b} on host ${owner}`).toBe(3);
    }
    // Only moved buckets have one, and only on their owner.
    for (const id of [1, 2]) {
      for (const [b, host] of routedOf(net, id).rules[0]!.secondChance) {
        expect(moved).toContain(b);
        expect(host).toBe(3);
        expect(after.get(b)).toBe(id);
      }
    }
    net.run(net.nowMs + secondChanceMs);
    for (const id of [1, 2]) expect(routedOf(net, id).rules[0]!.secondChance).toEqual([]);
  });

  it('end the second chance at a drained host once its last connection ended, before the timeout', () => {
    const net = cluster(3);
    net.command(3, { verb: 'drainstop' });
    net.run(net.nowMs + 2_000);
    const during = [1, 2].flatMap((id) => routedOf(net, id).rules[0]!.secondChance);
    expect(during.length).toBeGreaterThan(0);
    // The daemon reports that the draining host's last connection ended: it stops.
    net.command(3, { verb: 'connectionsEnded' });
    net.run(net.nowMs + 500);
    expect(net.hosts.get(3)!.status().state).toBe('stopped');
    for (const id of [1, 2]) expect(routedOf(net, id).rules[0]!.secondChance).toEqual([]);
    expect(net.nowMs).toBeLessThan(secondChanceMs + 5_000);
  });

  // A join moves buckets from hosts that go on serving: each one's second chances end bucket by
  // bucket, as soon as a count of its connections (begun after it let go of the bucket) finds
  // none left there, and not before.
  it('end the second chance of each bucket once its previous owner counted no connection there', () => {
    const net = cluster(3);
    net.command(3, { verb: 'stop' });
    net.run(net.nowMs + 2_000);
    const beforeJoin = net.nowMs;
    net.command(3, { verb: 'start' });
    net.run(net.nowMs + 2_000);
    const second = () => routedOf(net, 3).rules[0]!.secondChance;
    const from = (host: number) =>
      second()
        .filter(([, h]) => h === host)
        .map(([b]) => b);
    const fromOne = from(1);
    const fromTwo = from(2);
    expect(fromOne.length).toBeGreaterThan(1);
    expect(fromTwo.length).toBeGreaterThan(0);
    expect(net.hosts.get(1)!.status().held).toBe(fromOne.length);
    // A count begun before the release proves nothing.
    net.command(1, { verb: 'connectionsHeld', countedAtMs: beforeJoin, buckets: [[]] });
    net.run(net.nowMs + 500);
    expect(from(1)).toEqual(fromOne);
    // Host 1 still has a connection in its first released bucket only.
    const busy = fromOne[0]!;
    net.command(1, { verb: 'connectionsHeld', countedAtMs: net.nowMs, buckets: [[busy]] });
    net.run(net.nowMs + 500);
    expect(from(1)).toEqual([busy]);
    expect(from(2)).toEqual(fromTwo);
    expect(net.hosts.get(1)!.status().held).toBe(1);
    // Host 1 serves on: its own buckets, and the forwarding to host 3, are unchanged.
    expect(net.hosts.get(1)!.status().state).toMatch(/^converged/);
    expectForwardingToOwners(net);
    net.command(1, { verb: 'connectionsHeld', countedAtMs: net.nowMs, buckets: [[]] });
    net.run(net.nowMs + 500);
    expect(from(1)).toEqual([]);
    expect(from(2)).toEqual(fromTwo);
    expect(net.nowMs - beforeJoin).toBeLessThan(secondChanceMs);
    // Without a count, host 2 holds its buckets until the timeout, and then lets go of them.
    net.run(beforeJoin + secondChanceMs + 1_000);
    expect(from(2)).toEqual([]);
    expect(net.hosts.get(2)!.status().held).toBe(0);
  });

  // A newcomer (or a restarted host) first hears its peers in heartbeats that already released
  // buckets to it: the release itself it never sees. Their held lists give the second chance.
  it('give a newcomer second chances at the hosts that released its buckets to it', () => {
    const net = new MiniNet();
    net.sendFrom = true;
    for (const id of [1, 2]) net.add(routedConfig(id, 3));
    net.run(3_000);
    const before = owners(net);
    net.add(routedConfig(3, 3));
    net.run(net.nowMs + 3_000);
    const after = owners(net);
    const taken = [...after].filter(([, host]) => host === 3).map(([b]) => b);
    expect(taken.length).toBe(10);
    expect(Object.fromEntries(routedOf(net, 3).rules[0]!.secondChance)).toEqual(
      Object.fromEntries(taken.map((b) => [b, before.get(b)])),
    );
    // Once each previous owner counted no connection left, they end.
    for (const id of [1, 2]) {
      net.command(id, { verb: 'connectionsHeld', countedAtMs: net.nowMs, buckets: [[]] });
    }
    net.run(net.nowMs + 500);
    expect(routedOf(net, 3).rules[0]!.secondChance).toEqual([]);
  });

  it('give no second chance at a host stopped at once (a stop cuts its connections)', () => {
    const net = cluster(3);
    net.command(3, { verb: 'stop' });
    net.run(net.nowMs + 2_000);
    for (const id of [1, 2]) expect(routedOf(net, id).rules[0]!.secondChance).toEqual([]);
    expectForwardingToOwners(net);
  });

  it('give no second chance at a host that died: its buckets are orphans instead', () => {
    const net = cluster(3);
    net.command(3, { verb: 'drainstop' });
    net.run(net.nowMs + 1_000);
    net.crash(3);
    net.run(net.nowMs + 3_000);
    for (const id of [1, 2]) {
      const routed = routedOf(net, id);
      expect(routed.rules[0]!.secondChance).toEqual([]);
      expect(routed.rules[0]!.forward.every(([, host]) => host !== 3)).toBe(true);
    }
    expectForwardingToOwners(net);
  });

  // A host resumed after a pause longer than the detection time forgets its peers and proves
  // them again (host-peers.ts resumeIfPaused); meanwhile they converge with it and release
  // buckets to it at once, so the first heartbeat it takes from one may already lack them. The
  // buckets it takes from a live peer must still get their second chance at that peer: the
  // peer's connections in them reach it after the router rehashes.
  it.each(['timer first', 'datagrams first'] as const)(
    'give the buckets a host takes on its return from a pause a second chance at the peers that held them (%s)',
    (order) => {
      const net = cluster(3);
      const before = owners(net);
      net.pause(1);
      // Its peers take its buckets while it does not run (MiniNet has no kernel lease).
      net.allowConflictUntilMs = net.nowMs + 3_000 - 0.001;
      net.run(net.nowMs + 3_000);
      const during = owners(net);
      net.resume(1, order);
      net.run(net.nowMs + 1_000);
      const after = owners(net);
      const second = new Map(routedOf(net, 1).rules[0]!.secondChance);
      // Buckets a peer held before the pause and until the return: its connections in them
      // are as old as the held connections a test opens before the hang.
      const taken = [...after]
        .filter(([b, host]) => host === 1 && before.get(b) !== 1 && during.get(b) === before.get(b))
        .map(([b]) => b);
      expect(taken.length).toBeGreaterThan(0);
      expect(Object.fromEntries(taken.map((b) => [b, second.get(b)]))).toEqual(
        Object.fromEntries(taken.map((b) => [b, during.get(b)])),
      );
      // Every bucket it took from a peer, whoever held it before the pause: a second chance at
      // that peer, which says it holds the bucket (it may have opened connections there).
      const back = [...after]
        .filter(([b, host]) => host === 1 && during.get(b) !== 1)
        .map(([b]) => b);
      expect(back.length).toBeGreaterThanOrEqual(taken.length);
      expect(Object.fromEntries(back.map((b) => [b, second.get(b)]))).toEqual(
        Object.fromEntries(back.map((b) => [b, during.get(b)])),
      );
    },
  );

  it('send the uncovered traffic to the default host', () => {
    const net = cluster(3);
    const defaults = [...net.ownership].filter(([, o]) => o.isDefault).map(([id]) => id);
    expect(defaults).toHaveLength(1);
    for (const id of [1, 2, 3]) {
      const expected = id === defaults[0] ? undefined : defaults[0];
      expect(routedOf(net, id).uncovered).toBe(expected);
    }
  });

  it('stay right after any history of planned changes and crashes (property)', () => {
    const hosts = 4;
    const stepArb: fc.Arbitrary<Step> = fc.record({
      host: fc.integer({ min: 1, max: hosts }),
      verb: fc.constantFrom(
        'drainstop',
        'stop',
        'start',
        'suspend',
        'resume',
        'crash',
        'restart',
      ) as fc.Arbitrary<Step['verb']>,
    }) as fc.Arbitrary<Step>;
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 6 }), (steps) => {
        const net = cluster(hosts);
        const alive = new Set([1, 2, 3, 4]);
        for (const step of steps) {
          if (step.verb === 'crash') {
            if (alive.size > 1 && alive.delete(step.host)) net.crash(step.host);
          } else if (step.verb === 'restart') {
            if (!alive.has(step.host)) {
              net.add(routedConfig(step.host, hosts));
              alive.add(step.host);
            }
          } else if (alive.has(step.host)) {
            net.command(step.host, { verb: step.verb });
          }
          net.run(net.nowMs + 400);
        }
        net.run(net.nowMs + 3_000);
        expectSettledMaps(net, alive);
      }),
      { numRuns: 60 },
    );
  });

  it('are absent in the other modes', () => {
    const net = new MiniNet();
    net.sendFrom = true;
    for (const id of [1, 2]) net.add(hostConfig(id));
    net.run(3_000);
    for (const id of [1, 2]) expect(net.ownership.get(id)?.routed).toBeUndefined();
  });
});
