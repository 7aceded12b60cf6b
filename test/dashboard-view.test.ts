// The dashboard's view of the cluster from the hosts' answers (src/dashboard/build-view.ts) and
// what it remembers of their events (src/dashboard/history.ts). The answers are the daemon's own
// (test/dashboard-fakes.ts), then set to the cluster each test needs: agreeing, disagreeing on
// the map, a bucket claimed twice, a host dead, nobody answering.
import { describe, expect, it } from 'vitest';
import { type HostAnswers, buildView } from '../src/dashboard/build-view.js';
import { EventHistory, sameConvergenceMs } from '../src/dashboard/history.js';
import type { EventEntry, QueryPeer } from '../src/control/protocol.js';
import { answersOf, fakeHost } from './dashboard-fakes.js';

/** Host `hostId`'s answers for a cluster converged on `members`, owners from `ownerOf`. */
async function convergedHost(
  hostId: number,
  members: readonly number[],
  ownerOf: (rule: number, bucket: number) => number,
  digest = 'aaaaaaaaaaaaaaaa',
): Promise<HostAnswers> {
  const a = await answersOf(fakeHost(hostId));
  const q = a.query!;
  const map = a.map!;
  const peers: QueryPeer[] = members
    .filter((id) => id !== hostId)
    .map((id) => ({ ...q.peers[0]!, id, view: 'member', announced: 'converged', members }));
  return {
    ...a,
    query: { ...q, state: 'converged', converged: true, members, mapDigest: digest, peers },
    map: {
      ...map,
      converged: true,
      members,
      mapDigest: digest,
      rules: map.rules.map((r) => ({
        ...r,
        owners: r.owners.map((_, b) => ownerOf(r.rule, b)),
        claims: r.owners.map((_, b) => [ownerOf(r.rule, b)]),
        inFlight: [],
      })),
    },
    queryport: {
      ...a.queryport!,
      rules: a.queryport!.rules.map((r) => ({
        ...r,
        buckets: r.buckets.map((b) => ({
          ...b,
          owner: ownerOf(r.rule, b.bucket),
          claimedBy: [ownerOf(r.rule, b.bucket)],
          disagreement: false,
          inFlight: false,
        })),
      })),
    },
  };
}

const byThirds = (_rule: number, bucket: number): number => 2 + (bucket % 3);

function view(answers: HostAnswers[]) {
  return buildView({
    cluster: 'test',
    version: 1,
    gatheredAt: '2026-01-01T12:00:00.000Z',
    answers,
    rates: new Map([[2, { packetsPerSecond: 50, bytesPerSecond: 5000 }]]),
    timeline: [],
    events: [],
    tokenHint: 'the control token is in /run/nlb/dashboard-test.token',
  });
}

describe('the dashboard view', () => {
  it("marks a host whose service fails a rule's health check, and says when the rule fails open", async () => {
    const answers = await Promise.all(
      [2, 3, 4].map((id) => convergedHost(id, [2, 3, 4], byThirds)),
    );
    const sickHost = (failingOpen: boolean): HostAnswers => {
      const q = answers[1]!.query!;
      const rules = q.rules.map((r, i) =>
        i === 0
          ? {
              ...r,
              health: {
                ...r.health,
                check: 'http 127.0.0.1:80/health every 500 ms',
                healthy: false,
                failures: 2,
                failingOpen,
                last: { ok: false, detail: '503 Service Unavailable', latencyMs: 1, at: '' },
              },
            }
          : r,
      );
      return { ...answers[1]!, query: { ...q, rules } };
    };
    const v = view([answers[0]!, sickHost(false), answers[2]!]);
    expect(v.hosts.map((h) => [h.hostId, h.health])).toEqual([
      [2, 'ok'],
      [3, 'problem'],
      [4, 'ok'],
    ]);
    expect(v.hosts[1]!.healthText).toBe(
      'service unhealthy: rule 0 (503 Service Unavailable); its buckets went to the healthy hosts',
    );
    expect(view([answers[0]!, sickHost(true), answers[2]!]).hosts[1]!.healthText).toMatch(
      /every host is, so the rule fails open$/,
    );
  });

  it('draws the agreed map with every host connections and counters', async () => {
    const v = view(
      await Promise.all([2, 3, 4].map((id) => convergedHost(id, [2, 3, 4], byThirds))),
    );
    expect(v.mapSource).toBe(2);
    expect(v.converged).toBe(true);
    expect(v.disagreements).toEqual([]);
    expect(v.hosts.map((h) => [h.hostId, h.health])).toEqual([
      [2, 'ok'],
      [3, 'ok'],
      [4, 'ok'],
    ]);
    const rule0 = v.rules[0]!;
    expect(rule0.cells.map((c) => c.owner)).toEqual(
      Array.from({ length: 60 }, (_, b) => byThirds(0, b)),
    );
    expect(rule0.owners).toEqual({ 2: 20, 3: 20, 4: 20 });
    // Every fake host holds 2 connections in bucket 3 and 1 in bucket 9 of rule 0.
    expect(rule0.cells[3]).toMatchObject({
      connections: 6,
      connectionsByHost: { 2: 2, 3: 2, 4: 2 },
      inFlight: false,
      disagreement: null,
    });
    expect(rule0.cells[4]!.connections).toBe(0);
    expect(v.hosts[0]!.counters).toEqual({
      acceptedPackets: 100 + 101 + 102 + 103,
      acceptedBytes: 10_000 * 4 + 6,
      droppedPackets: 28,
      packetsPerSecond: 50,
      bytesPerSecond: 5000,
    });
    expect(v.hosts[0]!.connections).toBe(8);
    expect(v.hosts[1]!.counters?.packetsPerSecond).toBeNull();
  });

  it('shows two converged hosts that hold different maps, naming them and the buckets', async () => {
    const other = (rule: number, bucket: number) =>
      rule === 0 && bucket < 6 ? 4 : byThirds(rule, bucket);
    const v = view([
      await convergedHost(2, [2, 3, 4], byThirds),
      await convergedHost(3, [2, 3, 4], byThirds),
      await convergedHost(4, [4], other, 'bbbbbbbbbbbbbbbb'),
    ]);
    expect(v.converged).toBe(false);
    expect(v.disagreements).toHaveLength(1);
    const d = v.disagreements[0]!;
    expect(d.text).toContain('hosts 2, 3 hold map aaaaaaaa (members 2, 3, 4)');
    expect(d.text).toContain('host 4 holds map bbbbbbbb (members 4)');
    // Buckets 0, 1, 3, 4 of rule 0 differ (2 and 5 are host 4's in both maps).
    expect(d.buckets).toEqual([{ rule: 0, buckets: [0, 1, 3, 4] }]);
    expect(d.text).toContain('owners differ in rule 0 buckets 0-1, 3-4');
    const cells = v.rules[0]!.cells;
    expect(cells[0]!.disagreement).toBe('host 4 says owner 4');
    expect(cells[2]!.disagreement).toBeNull();
    // The grid still draws the lowest converged host's map.
    expect(cells[0]!.owner).toBe(2);
  });

  it('shows a bucket a host hears claimed by two hosts', async () => {
    const a = await convergedHost(2, [2, 3], (_r, b) => 2 + (b % 2));
    const rule0 = a.queryport!.rules[0]!;
    const bucket5 = { ...rule0.buckets[5]!, claimedBy: [2, 3], disagreement: true };
    const twice: HostAnswers = {
      ...a,
      queryport: {
        ...a.queryport!,
        rules: [
          { ...rule0, buckets: rule0.buckets.map((b) => (b.bucket === 5 ? bucket5 : b)) },
          ...a.queryport!.rules.slice(1),
        ],
      },
    };
    const v = view([twice, await convergedHost(3, [2, 3], (_r, b) => 2 + (b % 2))]);
    expect(v.disagreements.map((d) => d.text)).toEqual([
      'host 2 hears 1 bucket claimed against the map (rule 0 bucket 5: 2 and 3)',
    ]);
    expect(v.rules[0]!.cells[5]!.disagreement).toBe('host 2 hears claims by 2, 3 (owner 3)');
  });

  it('marks a host that does not answer, and dead when its peers declared it so', async () => {
    const a2 = await convergedHost(2, [2, 3], (_r, b) => 2 + (b % 2));
    const dead: QueryPeer = { ...a2.query!.peers[0]!, id: 4, view: 'dead', announced: 'converged' };
    const withDead: HostAnswers = {
      ...a2,
      query: { ...a2.query!, peers: [...a2.query!.peers, dead] },
    };
    const down: HostAnswers = {
      hostId: 4,
      where: '/run/nlb/nlbd-test-4.sock',
      error: 'no nlbd answers on /run/nlb/nlbd-test-4.sock (ECONNREFUSED)',
      query: null,
      map: null,
      queryport: null,
      params: null,
    };
    const v = view([withDead, await convergedHost(3, [2, 3], (_r, b) => 2 + (b % 2)), down]);
    const host4 = v.hosts.find((h) => h.hostId === 4)!;
    expect(host4).toMatchObject({
      reachable: false,
      health: 'dead',
      counters: null,
      seenAs: { 2: 'dead' },
    });
    expect(host4.healthText).toBe(
      'declared dead by host 2; no nlbd answers on /run/nlb/nlbd-test-4.sock (ECONNREFUSED)',
    );
    expect(v.converged).toBe(true);
    expect(v.rules[0]!.cells.every((c) => c.owner === 2 || c.owner === 3)).toBe(true);
  });

  it('lists a host heard but not reached, and draws nothing when nobody answers', async () => {
    // A fake host hears host 1 (stopped); the dashboard was given hosts 2 and 3 only.
    const a = await answersOf(fakeHost(2));
    const v = view([
      a,
      { ...a, hostId: 3, error: 'remote control of 198.18.0.13 needs --token-file' },
    ]);
    expect(v.hosts.map((h) => [h.hostId, h.health, h.error])).toEqual([
      [1, 'unreachable', 'heard by host 2; the dashboard does not reach it'],
      [2, 'converging', null],
      [3, 'unreachable', 'remote control of 198.18.0.13 needs --token-file'],
    ]);
    // Host 2 alone and converging: its map is drawn, every bucket in flight.
    expect(v.mapSource).toBe(2);
    expect(v.rules[0]!.cells.every((c) => c.inFlight && c.owner === 2)).toBe(true);
    expect(v.converged).toBe(false);

    const none = view([{ ...a, error: 'no nlbd answers (ENOENT)', query: null }]);
    expect(none.mapSource).toBeNull();
    expect(none.rules).toEqual([]);
    expect(none.hosts.map((h) => h.health)).toEqual(['unreachable']);
  });
});

function entry(seq: number, time: string, event: string, fields: object = {}): EventEntry {
  return { seq, time, event, ...fields };
}

describe('the event history', () => {
  it('makes one convergence of the reports of its members, and keeps events newest first', () => {
    const history = new EventHistory();
    const converged = { members: [1, 2], reason: 'host 3 declared dead', defaultHost: 1 };
    expect(
      history.add(
        1,
        entry(7, '2026-01-01T12:00:01.000Z', 'host declared dead', {
          host: 3,
          silentMs: 1000.730224,
        }),
      ),
    ).toBe(true);
    history.add(
      1,
      entry(8, '2026-01-01T12:00:01.010Z', 'converged', {
        ...converged,
        durationMs: 9,
        bucketsMoved: 20,
      }),
    );
    history.add(
      2,
      entry(4, '2026-01-01T12:00:01.012Z', 'converged', {
        ...converged,
        durationMs: 11,
        bucketsMoved: 20,
      }),
    );
    // The same entry again (a reconnect's recent events): ignored.
    expect(history.add(2, entry(4, '2026-01-01T12:00:01.012Z', 'converged', converged))).toBe(
      false,
    );
    const later = new Date(
      Date.parse('2026-01-01T12:00:01.012Z') + sameConvergenceMs + 1,
    ).toISOString();
    history.add(
      1,
      entry(9, later, 'converged', { ...converged, durationMs: 300, bucketsMoved: 0 }),
    );
    expect(history.timeline()).toEqual([
      {
        at: later,
        members: [1, 2],
        durationMs: 300,
        bucketsMoved: 0,
        reasons: ['host 3 declared dead'],
        reportedBy: [1],
      },
      {
        at: '2026-01-01T12:00:01.010Z',
        members: [1, 2],
        durationMs: 11,
        bucketsMoved: 20,
        reasons: ['host 3 declared dead'],
        reportedBy: [1, 2],
      },
    ]);
    const events = history.events();
    expect(events.map((e) => [e.hostId, e.seq, e.event, e.warn])).toEqual([
      [1, 9, 'converged', false],
      [2, 4, 'converged', false],
      [1, 8, 'converged', false],
      [1, 7, 'host declared dead', true],
    ]);
    expect(events[3]!.details).toBe('host=3 silentMs=1000.7');
  });
});
