// Replayed heartbeats (issue 9, item 1). Heartbeats are multicast on the segment, so anyone
// there can record them and send them again without the key. Each story records every datagram,
// changes the cluster, replays what was recorded, and checks that the replay changed nothing:
// no state, no membership, no ownership, no event but the counted reject ('bad heartbeats').
import { describe, expect, it } from 'vitest';
import type { HostMachine } from '../src/core/host.js';
import type { ProtocolEvent } from '../src/core/protocol.js';
import { MiniNet, hostConfig } from './support/mini-net.js';

const periodMs = 200;
const deadAfterMs = 5 * periodMs;

function cluster(ids: number[]): MiniNet {
  const net = new MiniNet(1);
  for (const id of ids) net.add(hostConfig(id));
  net.run(2000);
  return net;
}

function restart(net: MiniNet, id: number, downMs = 300): HostMachine {
  net.crash(id);
  net.run(net.nowMs + downMs);
  const host = net.add(hostConfig(id));
  net.run(net.nowMs + 3000);
  return host;
}

/** What a replay must not change: each host's view, map, ownership and peers. */
function snapshot(net: MiniNet): string {
  return JSON.stringify(
    [...net.hosts.entries()].map(([node, host]) => {
      const status = host.status();
      const details = host.details();
      return {
        node,
        state: status.state,
        members: status.members,
        memberIncarnations: status.memberIncarnations,
        mapDigest: status.mapDigest,
        ownership: status.ownership,
        keptOut: details.keptOut,
        peers: details.peers.map((p) => [p.id, p.incarnation, p.state, p.heard, p.members]),
      };
    }),
  );
}

function eventsSince(net: MiniNet, from: number): ProtocolEvent[] {
  return net.events.slice(from).filter((e) => e.event !== 'bad heartbeats');
}

function replayAll(net: MiniNet, datagrams: readonly Uint8Array[], spacingMs = 0): void {
  for (const bytes of datagrams) {
    for (const node of [...net.hosts.keys()]) net.inject(node, bytes);
    if (spacingMs > 0) net.run(net.nowMs + spacingMs);
  }
}

function rejectedTotal(net: MiniNet): number {
  let total = 0;
  for (const host of net.hosts.values()) {
    const counts = host.details().heartbeatsRejected;
    total += (counts['replayed or stale'] ?? 0) + (counts['unproven'] ?? 0);
  }
  return total;
}

describe('replayed heartbeats change nothing', () => {
  it("a host's own earlier heartbeat, replayed after it restarts, does not keep it out (and not after the next restart either)", () => {
    const net = cluster([1, 2, 3]);
    const old = net.captured.filter((d) => d.from === 2).map((d) => d.bytes);
    restart(net, 2);
    for (let round = 0; round < 2; round++) {
      expect(net.hosts.get(2)!.status().state).toBe('converged');
      const before = snapshot(net);
      const eventsBefore = net.events.length;
      const rejectedBefore = rejectedTotal(net);
      replayAll(net, [old[old.length - 1]!, old[0]!, ...old.slice(-20)]);
      net.run(net.nowMs + 2 * deadAfterMs);
      expect(eventsSince(net, eventsBefore)).toEqual([]);
      expect(snapshot(net)).toBe(before);
      expect(net.hosts.get(2)!.details().keptOut).toBeUndefined();
      expect(rejectedTotal(net)).toBeGreaterThan(rejectedBefore);
      // `start` finds it started and taking part, not kept out.
      expect(net.command(2, { verb: 'start' })?.code).toBe('already');
      restart(net, 2);
    }
  });

  it("an earlier incarnation's heartbeats, replayed after its peers forgot it, do not make the real host a duplicate", () => {
    const net = cluster([1, 2, 3]);
    const old = net.captured.filter((d) => d.from === 2).map((d) => d.bytes);
    restart(net, 2);
    // Peers forget an incarnation two detection windows after it was last heard.
    net.run(net.nowMs + 3 * deadAfterMs);
    const before = snapshot(net);
    const eventsBefore = net.events.length;
    // A whole recorded stream, replayed at its original pace and then some.
    replayAll(net, old.slice(-30), periodMs / 2);
    for (const host of net.hosts.values()) expect(host.status().converged).toBe(true);
    net.run(net.nowMs + 2 * deadAfterMs);
    expect(eventsSince(net, eventsBefore)).toEqual([]);
    expect(snapshot(net)).toBe(before);
  });

  it('a host that restarted is not fooled by anything recorded before its restart, a dead host included', () => {
    const net = cluster([1, 2, 3, 4]);
    net.crash(4);
    net.run(net.nowMs + 3 * deadAfterMs);
    const recorded = net.captured.map((d) => d.bytes);
    restart(net, 1);
    const before = snapshot(net);
    const eventsBefore = net.events.length;
    replayAll(net, recorded.slice(-80), 5);
    net.run(net.nowMs + 2 * deadAfterMs);
    expect(eventsSince(net, eventsBefore)).toEqual([]);
    expect(snapshot(net)).toBe(before);
    expect(net.hosts.get(1)!.status().members).toEqual([1, 2, 3]);
  });

  it('a heartbeat replayed at once (the same sequence again) is dropped as a replay', () => {
    const net = cluster([1, 2]);
    const last = net.captured.filter((d) => d.from === 2).at(-1)!.bytes;
    const before = snapshot(net);
    const rejected = net.hosts.get(1)!.details().heartbeatsRejected['replayed or stale'];
    net.inject(1, last);
    expect(snapshot(net)).toBe(before);
    expect(net.hosts.get(1)!.details().heartbeatsRejected['replayed or stale']).toBe(
      (rejected ?? 0) + 1,
    );
  });
});

describe('a real duplicate host id', () => {
  it('is detected and reported on both sides, and the newcomer takes part once the other is gone', () => {
    const net = cluster([1, 2]);
    // A second machine (node 12) configured with host id 2.
    const newcomer = net.add(hostConfig(2), 12);
    net.run(net.nowMs + 3000);
    expect(newcomer.details().keptOut).toMatch(/duplicate host id 2/);
    expect(newcomer.status().state).toBe('stopped');
    expect(net.ownership.get(12)?.rules[0]?.owned ?? []).toEqual([]);
    expect(net.hosts.get(1)!.status().members).toEqual([1, 2]);
    expect(net.hosts.get(2)!.status().converged).toBe(true);
    const duplicateEvents = net.events.filter((e) => e.event === 'duplicate host id');
    expect(new Set(duplicateEvents.map((e) => e.by))).toEqual(new Set([1, 2]));
    // Reported by the newcomer itself (keptOut is its own incarnation) and by the original.
    expect(duplicateEvents.some((e) => e.hint !== undefined)).toBe(true);
    // The original goes away: the newcomer is admitted by itself and takes its share.
    net.crash(2);
    net.run(net.nowMs + 3 * deadAfterMs);
    expect(newcomer.details().keptOut).toBeUndefined();
    expect(net.events.some((e) => e.event === 'admitted' && e.by === 2)).toBe(true);
    expect(newcomer.status().converged).toBe(true);
    expect(newcomer.status().members).toEqual([1, 2]);
    expect(net.ownership.get(12)?.rules[0]?.owned.length).toBe(30);
  });

  it('stop and start do not clear the flag while the other host still uses the id', () => {
    const net = cluster([1, 2]);
    const newcomer = net.add(hostConfig(2), 12);
    net.run(net.nowMs + 3000);
    net.command(12, { verb: 'stop' });
    net.run(net.nowMs + 500);
    net.command(12, { verb: 'start' });
    net.run(net.nowMs + 3000);
    expect(newcomer.details().keptOut).toMatch(/duplicate host id 2/);
    expect(net.ownership.get(12)?.rules[0]?.owned ?? []).toEqual([]);
  });
});
