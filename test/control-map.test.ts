// The live map the control API reports (`map`, and the claims in `queryport`): per bucket the
// hosts that claim it — this host from what it told its data plane, each heard peer of the
// same config from its last heartbeat — against the target owner: buckets in flight while
// converging, a disagreement when two hosts claim one or, converged, the claimant is not the
// owner. Pure: a hand-made host view, no machine, no socket.
import { describe, expect, it } from 'vitest';
import type { HeartbeatRule } from '../src/core/heartbeat.js';
import type { HostDetails } from '../src/core/host.js';
import type { HostStatus } from '../src/core/protocol.js';
import { type HostView, bucketClaims, claimsMatch, mapData } from '../src/daemon/control-views.js';
import { hostConfig } from './support/mini-net.js';

const config = hostConfig(1, {
  cluster: {
    clusterIps: ['198.18.0.100'],
    portRules: [
      {
        vip: '198.18.0.100',
        ports: '80-81',
        protocol: 'tcp',
        mode: 'multiple',
        affinity: 'none',
        buckets: 6,
      },
    ],
  },
});

function rule(owned: number[]): HeartbeatRule {
  return {
    buckets: 6,
    ruleDigest: 0,
    loadWeight: 50,
    handlingPriority: 1,
    state: 'enabled',
    healthy: true,
    owned,
  };
}

type Peer = HostDetails['peers'][number];

function peer(id: number, owned: number[], fields: Partial<Peer> = {}): Peer {
  return {
    id,
    incarnation: 1,
    state: 'started',
    heard: true,
    lastHeardMs: 900,
    mismatch: undefined,
    members: [1, 2, 3],
    address: `198.18.0.${id}`,
    rules: [rule(owned)],
    ...fields,
  };
}

function view(options: {
  converged: boolean;
  target: (number | null)[];
  owned: number[];
  peers: Peer[];
  convergedAtMs?: number;
}): HostView {
  const status: HostStatus = {
    hostId: 1,
    incarnation: 1,
    state: options.converged ? 'converged as default' : 'converging',
    members: [1, 2, 3],
    memberIncarnations: [1, 1, 1],
    defaultHost: 1,
    converged: options.converged,
    mapDigest: 'ab'.repeat(16),
    target: [options.target],
    ownership: {
      rules: [{ owned: options.owned, orphan: [], disabled: false }],
      isDefault: true,
      active: true,
      dropEstablished: false,
    },
  };
  const details: HostDetails = {
    keptOut: undefined,
    ruleStates: ['enabled'],
    ruleHealth: [{ healthy: true, reportedWeight: null, loadWeight: 50, failingOpen: false }],
    peers: options.peers,
    counters: {
      heartbeatsSent: 0,
      heartbeatsReceived: 0,
      decisionsSkipped: 0,
      decisionsBatched: 0,
      convergences: 1,
      lastConvergenceMs: 12,
      lastConvergedAtMs: options.convergedAtMs ?? -1,
    },
    heartbeatsRejected: {},
  };
  return { config, nowMs: () => 1_000, status: () => status, details: () => details };
}

describe('the live map and its claims', () => {
  it('converged: every bucket claimed by its owner alone; nothing in flight; the time it converged', () => {
    const host = view({
      converged: true,
      target: [1, 1, 2, 2, 3, 3],
      owned: [0, 1],
      peers: [peer(2, [2, 3]), peer(3, [4, 5])],
      convergedAtMs: 400,
    });
    expect(bucketClaims(host)).toEqual([[[1], [1], [2], [2], [3], [3]]]);
    const data = mapData(host, Date.parse('2026-12-05T10:00:00.000Z'));
    expect(data.rules[0]!.owners).toEqual([1, 1, 2, 2, 3, 3]);
    expect(data.rules[0]!.inFlight).toEqual([]);
    expect(data.rules[0]).toMatchObject({ portStart: 80, portEnd: 81, ports: '80-81', buckets: 6 });
    // Machine time 400 was 600 ms before machine time 1000, which is the wall time given.
    expect(data.convergedAt).toBe('2026-12-05T09:59:59.400Z');
    expect(data).toMatchObject({
      clusterIps: ['198.18.0.100'],
      members: [1, 2, 3],
      defaultHost: 1,
    });
  });

  it('converging: a released bucket nobody claims yet and a claim not yet released are in flight', () => {
    // Host 3 is taking bucket 1 from host 1 (released, not yet acquired) and bucket 3 from
    // host 2 (host 2 still claims it).
    const host = view({
      converged: false,
      target: [1, 3, 2, 3, 3, 3],
      owned: [0],
      peers: [peer(2, [2, 3]), peer(3, [4, 5])],
      convergedAtMs: 400,
    });
    const data = mapData(host, 0);
    expect(data.rules[0]!.claims).toEqual([[1], [], [2], [2], [3], [3]]);
    expect(data.rules[0]!.inFlight).toEqual([1, 3]);
    expect(data.convergedAt).toBeNull();
  });

  it('two claimants of one bucket are both listed, sorted; dead and mismatched peers claim nothing', () => {
    const host = view({
      converged: true,
      target: [1, 1, 2, 2, 3, 3],
      owned: [0, 1, 2],
      peers: [
        peer(2, [2, 3]),
        peer(3, [4, 5, 0], { heard: false }),
        peer(4, [5], { mismatch: 'cluster.hashSeed differs', rules: [] }),
      ],
    });
    const claims = bucketClaims(host)[0]!;
    expect(claims).toEqual([[1], [1], [1, 2], [2], [], []]);
    expect(claimsMatch(claims[2]!, 2)).toBe(false);
    expect(claimsMatch(claims[4]!, 3)).toBe(false);
    expect(claimsMatch([], null)).toBe(true);
    expect(claimsMatch([3], 3)).toBe(true);
  });
});
