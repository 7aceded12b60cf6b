// A host whose process did not run for longer than the detection time (SIGSTOP, a virtual
// machine paused or migrated, swapping) while its peers declared it dead and took its buckets.
// When it runs again its view is frozen from before: it must not act on it (two owners for
// its old buckets) nor announce it (its peers would take themselves for the smaller side of a
// partition and drop their own connections). It drops its connections and rejoins.
import { describe, expect, it } from 'vitest';
import { MiniNet, hostConfig } from './support/mini-net.js';

function cluster(): MiniNet {
  const net = new MiniNet(1);
  for (const id of [1, 2, 3]) net.add(hostConfig(id));
  net.run(2000);
  return net;
}

describe('a host paused and resumed', () => {
  it.each(['timer first', 'datagrams first'] as const)(
    'paused past detection (%s): never two owners, its peers keep their connections, it rejoins dropping its own',
    (order) => {
      const net = cluster();
      net.pause(2);
      // While host 2 does not run, its kernel lease runs out (MiniNet has no kernel): the
      // peers taking its buckets meanwhile is the takeover, not a conflict.
      // Up to, not including, the instant it resumes: what it does with the datagrams that
      // waited (all delivered at that instant) is checked.
      net.allowConflictUntilMs = net.nowMs + 2500 - 0.001;
      net.run(net.nowMs + 2500);
      for (const id of [1, 3]) {
        expect(net.hosts.get(id)!.status().members).toEqual([1, 3]);
        expect(net.ownership.get(id)!.rules[0]!.owned).toHaveLength(30);
      }
      const mark = net.events.length;
      // MiniNet's double-owner check runs after every step: it throws if host 2 takes its old
      // buckets back while hosts 1 and 3 hold them.
      net.resume(2, order);
      net.run(net.nowMs + 2000);
      const after = net.events.slice(mark);
      expect(after).toContainEqual(expect.objectContaining({ event: 'paused', by: 2 }));
      expect(after).toContainEqual(
        expect.objectContaining({ event: 'rejoining: dropping connections', by: 2 }),
      );
      // Neither peer took itself for the side that rejoins.
      expect(
        after.filter((e) => e.event === 'rejoining: dropping connections' && e.by !== 2),
      ).toEqual([]);
      expect(net.flushes.filter((f) => f.host !== 2 && f.atMs >= net.nowMs - 2000)).toEqual([]);
      for (const id of [1, 2, 3]) {
        expect(net.hosts.get(id)!.status().members).toEqual([1, 2, 3]);
        expect(net.ownership.get(id)!.rules[0]!.owned).toHaveLength(20);
      }
    },
  );

  it('paused for less than detection: nothing happens but host 2 noting it ran late', () => {
    const net = cluster();
    const mark = net.events.length;
    net.pause(2);
    net.run(net.nowMs + 600);
    net.resume(2);
    net.run(net.nowMs + 1000);
    expect(net.events.slice(mark)).toEqual([
      expect.objectContaining({ event: 'running late', by: 2 }),
    ]);
  });

  // Lifeguard's case: the stalled host lost what its socket could not hold (the newest
  // heartbeats), so when it runs again its peers look silent for nearly the whole stall. It
  // suspects itself (it ran late) and gives them that much longer: their next heartbeats come
  // before it would accuse them. Its peers, which did not miss a detection time of it, keep it.
  it.each(['timer first', 'datagrams first'] as const)(
    'stalled for most of the detection time with a full socket (%s): it declares no healthy peer dead',
    (order) => {
      const net = cluster();
      // Host 2 stops right after it sent a heartbeat, so its peers hear it within the
      // detection time (200 ms × 5) of the one before: 950 ms without running, and a socket
      // that overflowed (every heartbeat sent meanwhile is lost).
      const lastSentAt = (): number => net.captured.filter((c) => c.from === 2).at(-1)!.atMs;
      const before = lastSentAt();
      while (lastSentAt() === before) net.run(net.wake.get(2)!);
      expect(lastSentAt()).toBe(net.nowMs);
      const mark = net.events.length;
      net.pause(2, 0);
      net.run(net.nowMs + 950);
      net.resume(2, order);
      net.run(net.nowMs + 2000);
      const after = net.events.slice(mark);
      expect(after.filter((e) => e.event === 'host declared dead')).toEqual([]);
      // Late from the wake-up it had asked for (its next heartbeat, due within a period of
      // the pause), and as much grace.
      const late = after.filter((e) => e.event === 'running late' && e.by === 2);
      expect(late).toHaveLength(1);
      expect(late[0]).toMatchObject({ lateMs: expect.any(Number) });
      const { lateMs, graceMs } = late[0] as unknown as { lateMs: number; graceMs: number };
      expect(lateMs).toBeGreaterThan(950 - 200);
      expect(graceMs).toBe(lateMs);
      for (const id of [1, 2, 3]) {
        expect(net.hosts.get(id)!.status().members).toEqual([1, 2, 3]);
      }
    },
  );
});
