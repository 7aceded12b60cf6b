// Issue 4 item 7, a host cut off and reconnected, in a real three-host lab under load (200 new
// connections/s from 11 client addresses, 24 long-lived HOLD connections pinged every 200 ms):
// host 3's link is cut (its nlbd keeps running) until hosts 1 and 2 have declared it dead and
// own all 60 buckets, and host 3 has declared them dead; 500 ms later the link is restored. Then
//   - the three converge again;
//   - host 3 has dropped the connections it held before: none of the VIP connections in its
//     conntrack table before the cut is there after the rejoin (`conntrack -L` in its
//     namespace), and no socket of them is left (`ss`);
//   - its held connections broke with a reset while it was cut off (the survivors reset them),
//     and those of hosts 1 and 2 live on;
//   - connections after the rejoin land as the live map says, host 3 included;
//   - no client ever got SYN-ACKs from two hosts for one connection (counted in the client
//     namespace), before, during or after the partition.
// These tests found that the cut-off host claimed every bucket as a partition of one, so that
// until it heard a peer after the link came back (up to one heartbeat period) a SYN got two
// SYN-ACKs and host 3 reset the live connections of hosts 1 and 2 in its orphan buckets; nlbd
// now takes no bucket while its link has no carrier (commit 178bd4a). The second test holds the
// heartbeats back at the switch for 250 ms after the restore, the worst case of that window
// made certain, so a regression cannot hide behind lucky timing.
// Needs root; skipped visibly otherwise, failing instead when NLB_REQUIRE_LAB=1.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execIn } from '../src/lab/netns.js';
import { cutLink, restoreLink } from '../src/lab/lab.js';
import type { ConnectionRecord, HoldRecord, LoadgenSummary } from '../src/lab/loadgen.js';
import {
  type ClusterLab,
  LabSession,
  bucketOf,
  type SynAckCapture,
  type TimedLoad,
  type WaitResult,
  type ConntrackEntry,
  captureMisses,
  clientSources,
  declareLabRequirement,
  establishedPeers,
  expectConverged,
  installSynAckCapture,
  isRoot,
  labSetupTimeoutMs,
  liveMaps,
  mispredicted,
  readSynAcks,
  startLoad,
  vipConntrack,
  waitForHosts,
  labVariants,
  endpointOf,
} from './support/lab-cluster.js';

declareLabRequirement('lab-cluster-partition');

/** Detection (1 s) and the survivors' convergence, with room for a loaded machine. */
const declaredDeadWaitMs = 3_000;
/** How long host 3 stays cut off once both sides own every bucket. */
const separatedMs = 500;
/** The heal window's worst case is one heartbeat period (200 ms); held back a little longer. */
const heartbeatHoldMs = 250;
/** Slack after the rejoin for this test's 20 ms polling and the loadgen clock offset. */
const windowSlackMs = 100;

interface PartitionRun {
  readonly load: TimedLoad;
  readonly result: LoadgenSummary & { connections: ConnectionRecord[] };
  readonly capture: SynAckCapture;
  readonly cutAt: number;
  readonly restoreAt: number;
  readonly survivors: WaitResult;
  readonly alone: WaitResult;
  readonly rejoined: WaitResult;
  /** Established VIP connections of host 3 just before the cut, as `ip:port`. */
  readonly old: Set<string>;
  /** Host 3's buckets before the cut. */
  readonly deadBuckets: Set<number>;
  readonly conntrackAfter: ConntrackEntry[];
  readonly peersAfter: string[];
}

/**
 * Drops the cluster's heartbeats in the switch (a bridge-family table in the switch namespace)
 * until the returned function removes the table again.
 */
async function holdHeartbeats(lab: ClusterLab): Promise<() => Promise<void>> {
  const table = 'nlbtest_hold';
  const file = path.join(lab.state.dir, 'hold-heartbeats.nft');
  writeFileSync(
    file,
    `table bridge ${table} {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    udp dport ${lab.config.cluster.heartbeat.port} drop\n  }\n}\n`,
    { mode: 0o600 },
  );
  await execIn(lab.state.switchNamespace, ['nft', '-f', file]);
  return async () => {
    await execIn(lab.state.switchNamespace, ['nft', 'delete', 'table', 'bridge', table]);
  };
}

async function partitionHost3(lab: ClusterLab, heartbeatsHeldMs: number): Promise<PartitionRun> {
  const before = await expectConverged(lab, [1, 2, 3], 20);
  const deadBuckets = new Set(before.answers.get(3)!.rules[0]!.owned);
  const load = startLoad(lab, {
    ratePerSecond: 200,
    countMax: 1_400,
    durationMs: 7_000,
    sources: clientSources(lab),
    holds: 24,
    holdPingIntervalMs: 200,
    // Only a reset or a close may break a held connection here, never the echo timer.
    holdPingTimeoutMs: 10_000,
    timeoutMs: 5_000,
  });
  await load.started;
  await new Promise((resolve) => setTimeout(resolve, 1_000));

  const old = new Set(
    (await vipConntrack(lab, 3))
      .filter((e) => e.state === 'ESTABLISHED')
      .map((e) => `${e.src}:${e.sport}`),
  );
  const cutAt = Date.now();
  await cutLink(lab.state.name, 3);
  const survivors = await waitForHosts(
    lab,
    [1, 2],
    (d) => d.converged && d.members.join() === '1,2' && d.rules[0]!.owned.length === 30,
    declaredDeadWaitMs,
  );
  const alone = await waitForHosts(
    lab,
    [3],
    (d) => d.peers.filter((p) => p.view === 'dead').length === 2,
    declaredDeadWaitMs,
  );
  await new Promise((resolve) => setTimeout(resolve, separatedMs));
  const release = heartbeatsHeldMs > 0 ? await holdHeartbeats(lab) : undefined;
  const restoreAt = Date.now();
  await restoreLink(lab.state.name, 3);
  if (release !== undefined) {
    await new Promise((resolve) => setTimeout(resolve, heartbeatsHeldMs));
    await release();
  }
  const rejoined = await expectConverged(lab, [1, 2, 3], 20, 5_000);
  const conntrackAfter = await vipConntrack(lab, 3);
  const peersAfter = await establishedPeers(lab, 3);
  const result = await load.done;
  const capture = await readSynAcks(lab);
  return {
    load,
    result,
    capture,
    cutAt,
    restoreAt,
    survivors,
    alone,
    rejoined,
    old,
    deadBuckets,
    conntrackAfter,
    peersAfter,
  };
}

/** Held connections of hosts 1 and 2 that broke. */
function brokenElsewhere(run: PartitionRun): HoldRecord[] {
  return run.result.holds.filter(
    (h) => h.host !== 3 && (h.host === undefined || h.broken !== undefined),
  );
}

/**
 * Per connection answered by two hosts, the start times (ms after the restore) of every loadgen
 * connection from its client address and port: usually one, more when the port was reused.
 */
function doubleStarts(run: PartitionRun): number[][] {
  const startsOf = new Map<string, number[]>();
  for (const c of run.result.connections) {
    const endpoint = `${c.sourceIp}:${c.sourcePort}`;
    startsOf.set(endpoint, [
      ...(startsOf.get(endpoint) ?? []),
      Math.round(run.load.wallMs(c.atMs) - run.restoreAt),
    ]);
  }
  return run.capture.doubles.map((d) => {
    const { endpoint } = endpointOf(d.connection);
    return startsOf.get(endpoint) ?? [];
  });
}

function describeRun(run: PartitionRun): string {
  const holdsOn3 = run.result.holds.filter((h) => h.host === 3);
  const failed = run.result.connections.filter((c) => c.failure !== undefined);
  const elsewhere = brokenElsewhere(run);
  return [
    `survivors own all ${run.survivors.atMs - run.cutAt} ms after the cut (host 3, alone, owns ${run.alone.answers.get(3)?.rules[0]!.owned.length ?? '?'})`,
    `rejoined ${run.rejoined.atMs - run.restoreAt} ms after the link came back`,
    `host 3 held ${run.old.size} established VIP connections before, ${run.conntrackAfter.filter((e) => run.old.has(`${e.src}:${e.sport}`)).length} after`,
    `${holdsOn3.length} held connections of host 3 broke ${JSON.stringify(holdsOn3.map((h) => h.broken?.kind))}`,
    `${elsewhere.length} held connections of hosts 1,2 broke at ${JSON.stringify(elsewhere.map((h) => Math.round(run.load.wallMs(h.broken?.atMs ?? Number.NaN) - run.restoreAt)))} ms after the restore`,
    `${run.result.started} connections, ${failed.length} failed ${JSON.stringify(run.result.failures)}`,
    `${run.capture.doubles.length} answered by two hosts, started at ${JSON.stringify(doubleStarts(run))} ms after the restore`,
  ].join('; ');
}

for (const variant of labVariants()) {
  describe.runIf(isRoot)(`lab cluster (${variant.name}): a host cut off and reconnected`, () => {
    const session = new LabSession();

    beforeAll(() => session.lock(), labSetupTimeoutMs);
    afterAll(() => session.close());

    it('drops its old connections before it takes buckets again; no client sees two hosts answer', async () => {
      const lab = await session.up('lcq', { hosts: 3, clients: 1, clientExtraIps: 10 }, variant);
      try {
        await installSynAckCapture(lab);
        const run = await partitionHost3(lab, 0);
        console.log(`lab-cluster-partition: natural heal: ${describeRun(run)}`);

        expect(run.survivors.ok).toBe(true);
        // Host 3 declared hosts 1 and 2 dead too (what it then owns is logged, not required).
        expect(run.alone.ok).toBe(true);
        // The rejoin dropped every connection host 3 held before the cut, sockets included.
        expect(run.old.size).toBeGreaterThan(0);
        expect(run.conntrackAfter.filter((e) => run.old.has(`${e.src}:${e.sport}`))).toEqual([]);
        expect(run.peersAfter.filter((peer) => run.old.has(peer))).toEqual([]);
        // Host 3's clients were reset while it was away.
        const holdsOn3 = run.result.holds.filter((h) => h.host === 3);
        expect(holdsOn3.length).toBeGreaterThan(0);
        expect(holdsOn3.map((h) => h.broken?.kind)).toEqual(holdsOn3.map(() => 'reset'));
        expect(brokenElsewhere(run)).toEqual([]);
        // A connection may only fail if host 3 had it when it was cut off: in one of its
        // buckets, started before the cut.
        const failed = run.result.connections.filter((c) => c.failure !== undefined);
        expect(
          failed.filter(
            (c) =>
              !run.deadBuckets.has(bucketOf(lab, c.sourceIp, c.sourcePort)) ||
              run.load.wallMs(c.atMs) > run.cutAt + 50,
          ),
        ).toEqual([]);
        // After the rejoin, connections land as the live map says.
        const later = run.result.connections.filter(
          (c) => run.load.wallMs(c.atMs) > run.rejoined.atMs + windowSlackMs,
        );
        expect(later.length).toBeGreaterThan(100);
        expect(mispredicted(lab, liveMaps(run.rejoined.answers), later)).toEqual([]);
        expect(later.some((c) => c.host === 3)).toBe(true);
        expect(captureMisses(run.capture, run.result.connections)).toEqual([]);
        expect(run.capture.doubles).toEqual([]);
      } finally {
        await session.down(lab);
      }
    });

    it('with the heal window at its worst (heartbeats held back 250 ms), no client sees two hosts answer and hosts 1, 2 keep their connections', async () => {
      const lab = await session.up('lcr', { hosts: 3, clients: 1, clientExtraIps: 10 }, variant);
      try {
        await installSynAckCapture(lab);
        const run = await partitionHost3(lab, heartbeatHoldMs);
        console.log(`lab-cluster-partition: heal window held open: ${describeRun(run)}`);
        expect(run.rejoined.ok).toBe(true);
        expect(run.conntrackAfter.filter((e) => run.old.has(`${e.src}:${e.sport}`))).toEqual([]);
        expect(captureMisses(run.capture, run.result.connections)).toEqual([]);
        expect(run.capture.doubles).toEqual([]);
        expect(brokenElsewhere(run)).toEqual([]);
      } finally {
        await session.down(lab);
      }
    });
  });
}
