// Fault injection in a real three-host lab (issue 9, "Hardening"), part 1: faults of the
// network and the kernel's tables. Each fault runs under a steady client load
// (support/lab-faults.ts `runFault`: 200 new connections/s from 11 addresses, SYN-ACKs counted
// per connection in the client namespace, the bridge's MAC table sampled), which prints one line
// per fault with what the client saw, the double answers, and how long after the fault ended
// the host was back in the cluster by itself, and checks the common expectations (no double
// answer outside what the fault makes unavoidable, the bridge never learns the cluster MAC, the
// cluster converged again with every host's share, connections then land as the map says).
//   replayed heartbeats   recorded from the client namespace, replayed across a restart of
//                         host 2 and for two detection windows after it: nothing changes but
//                         counters; replayed while host 2 is crashed: its peers take over in
//                         detection time anyway, and it rejoins while the replay goes on;
//   table altered by hand a rule deleted, a foreign bucket added to `owned`, the netdev table
//                         deleted: each put back by nlbd within a period (the whole ruleset
//                         flushed is test/lab-cluster-heal.test.ts);
//   nft failing           host 2's `nft` fails while its table is deleted: it fails closed
//                         (cluster IPs and MAC gone), its peers take over, and it comes back
//                         by itself once nft works again;
//   interface down/up     carrier lost for less than the detection time; the interface set
//                         down for longer;
// Wall-clock steps are in lab-faults-clock.test.ts.
// Needs root; skipped visibly otherwise, failing instead when NLB_REQUIRE_LAB=1.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stateFilePath } from '../src/daemon/paths.js';
import { execIn } from '../src/lab/netns.js';
import { labClusterName } from '../src/lab/host-config.js';
import {
  cutLink,
  daemonMainPath,
  killHostDaemon,
  restoreLink,
  startHostDaemon,
} from '../src/lab/lab.js';
import {
  type ClusterLab,
  LabSession,
  convergedOn,
  daemonLogTail,
  declareLabRequirement,
  expectConverged,
  installSynAckCapture,
  isRoot,
  labSetupTimeoutMs,
  query,
  waitForHosts,
} from './support/lab-cluster.js';
import {
  type Fault,
  bucketsEach,
  clusterHosts,
  clusterMac,
  detectionMs,
  eventMarks,
  eventsSince,
  heartbeatsRejected,
  hostNamespaceOf,
  interfaceOf,
  lastLogRecord,
  logCount,
  restartDaemon,
  reviveDaemons,
  runFault,
  runScriptIn,
  sampleHosts,
  sum,
  tablesOf,
  waitForLog,
} from './support/lab-faults.js';

declareLabRequirement('lab-faults');

/** A table altered by hand must be put back within one heartbeat period (the lab's 200 ms). */
const periodMs = 200;
/**
 * The window after an alteration of the filter in which the kernel may answer a connection
 * twice: until nlbd, told by `nft monitor`, has put the table back (~60 ms here), with room for
 * a busy machine. The heal test measures the same for a flushed ruleset.
 */
const alterationWindowMs = 300;

/**
 * A table alteration made by hand under load: `alter` changes host `host`'s tables; nlbd must
 * log `dataplane restored` within a period and the cluster never notice.
 */
function alteration(
  name: string,
  host: number,
  alter: (lab: ClusterLab, namespace: string) => Promise<void>,
  doubles: boolean,
): Fault {
  let restoredBefore = 0;
  return {
    name,
    host,
    inject: async ({ lab, note }) => {
      restoredBefore = logCount(lab, host, 'dataplane restored');
      const at = Date.now();
      await alter(lab, hostNamespaceOf(lab, host));
      const restoredAt = await waitForLog(lab, host, 'dataplane restored', restoredBefore, 3_000);
      expect(restoredAt, daemonLogTail(lab, host)).toBeDefined();
      const restored = lastLogRecord(lab, host, 'dataplane restored');
      // From the alteration (as this process saw it end) to the restore in nlbd's log, and
      // nlbd's own account: what noticed it, and from noticing to the table committed.
      note('restoredSeenAfterMs', restoredAt! - at);
      note('detectedBy', restored.detectedBy);
      note('goneMs', restored.goneMs);
      expect(restoredAt! - at).toBeLessThan(3 * periodMs);
      expect(restored.goneMs as number).toBeLessThan(periodMs);
    },
    heal: async () => undefined,
    expect: {
      failuresMax: 0,
      ...(doubles
        ? {
            doubles: {
              why: 'the kernel filters as the altered table says until nlbd has put it back',
              windowMs: alterationWindowMs,
            },
          }
        : {}),
      // The host never left: the cluster is converged as soon as the table is back.
      rejoinMsMax: 500,
    },
  };
}

describe.runIf(isRoot)('lab faults: network, tables', () => {
  const session = new LabSession();
  let lab: ClusterLab;

  beforeAll(async () => {
    await session.lock();
    lab = await session.up('lfa', { hosts: 3, clients: 1, clientExtraIps: 10 });
    await installSynAckCapture(lab);
  }, labSetupTimeoutMs);
  afterAll(() => session.close());
  // A fault test that failed half-way must not take the next ones down with it.
  afterEach(() => reviveDaemons(lab));

  describe('replayed heartbeats', () => {
    /** Records the heartbeat multicast from the client namespace for 2 s; returns the file. */
    async function record(): Promise<{ file: string; recorded: number }> {
      const file = path.join(lab.state.dir, 'heartbeats.b64');
      const { recorded } = await runScriptIn<{ recorded: number }>(
        lab,
        lab.state.clients[0]!.namespace,
        './heartbeat-replay.ts',
        ['record', ...replayArgs(), '--ms', '2000', '--out', file],
      );
      // Three hosts send about five heartbeats a second each.
      expect(recorded).toBeGreaterThan(15);
      return { file, recorded };
    }
    function replayArgs(): string[] {
      const { group, port } = lab.config.cluster.heartbeat;
      return ['--group', group.text, '--port', String(port), '--local', lab.state.clients[0]!.ip];
    }
    /** Sends every recorded datagram to the group every 100 ms for `ms`, in the background. */
    function replay(file: string, ms: number): Promise<{ sent: number }> {
      return runScriptIn(lab, lab.state.clients[0]!.namespace, './heartbeat-replay.ts', [
        'replay',
        ...replayArgs(),
        '--ms',
        String(ms),
        '--interval-ms',
        '100',
        '--in',
        file,
      ]);
    }

    it('host 2 restarted during a replay rejoins; then nothing changes but counters, also after its old incarnation is forgotten', async () => {
      await expectConverged(lab, [...clusterHosts], bucketsEach);
      const recording = await record();
      let rejectedBefore: number[] = [];
      let marks = new Map<number, number>();
      let incarnationBefore = 0;

      const report = await runFault(lab, {
        name: 'heartbeats replayed across a restart of host 2',
        host: 2,
        inject: async ({ note }) => {
          incarnationBefore = (await query(lab.sockets.get(2)!))!.incarnation;
          // One replay across the restart, and a second one from the rejoin on for longer than
          // two detection windows: the peers forget host 2's old incarnation while its
          // recorded heartbeats keep coming.
          const across = replay(recording.file, 3 * detectionMs);
          const restartAt = Date.now();
          await restartDaemon(lab, 2);
          const restarted = await expectConverged(lab, [...clusterHosts], bucketsEach);
          note('restartRejoinMs', restarted.atMs - restartAt);
          rejectedBefore = await Promise.all(
            clusterHosts.map(async (id) => sum(await heartbeatsRejected(lab.sockets.get(id)!))),
          );
          marks = await eventMarks(lab, clusterHosts);
          const watch = sampleHosts(
            lab,
            clusterHosts,
            (d) => convergedOn([...clusterHosts], bucketsEach)(d) && d.keptOut === null,
          );
          const after = replay(recording.file, 2.5 * detectionMs);
          const sent = (await across).sent + (await after).sent;
          const watched = await watch.stop();
          note('recorded', recording.recorded);
          note('replayed', sent);
          note('replayAfterRejoinMs', Date.now() - restarted.atMs);
          note('querySamples', watched.samples);
          expect(Date.now() - restarted.atMs).toBeGreaterThan(2 * detectionMs);
          expect(watched.bad).toEqual([]);
        },
        heal: async () => undefined,
        // Host 2's restart is a planned leave and join: its clients may lose the connections
        // that were in flight at the moment its cluster IPs went.
        expect: { failuresMax: 5 },
      });

      const after = await Promise.all(
        clusterHosts.map(async (id) => await heartbeatsRejected(lab.sockets.get(id)!)),
      );
      const since = await eventsSince(lab, marks);
      console.log(
        `lab-faults: replayed heartbeats: rejected per host before ${JSON.stringify(rejectedBefore)}, after ${JSON.stringify(after)}; events during the replay after the rejoin: ${JSON.stringify(since.map((e) => e.event))}`,
      );
      expect(report.rejoined.answers.get(2)!.incarnation).toBeGreaterThan(incarnationBefore);
      expect(since.filter((e) => e.event !== 'bad heartbeats')).toEqual([]);
      after.forEach((rejected, i) => expect(sum(rejected)).toBeGreaterThan(rejectedBefore[i]!));
    });

    it('host 2 crashed during a replay: its peers take over in detection time anyway, and it rejoins', async () => {
      await expectConverged(lab, [...clusterHosts], bucketsEach);
      const recording = await record();
      let replayed: Promise<{ sent: number }> = Promise.resolve({ sent: 0 });
      await runFault(lab, {
        name: 'heartbeats replayed while host 2 is crashed and started again',
        host: 2,
        inject: async ({ note }) => {
          replayed = replay(recording.file, 4 * detectionMs);
          const crashAt = Date.now();
          expect(await killHostDaemon(lab.state.name, 2)).toBe(true);
          // The replayed heartbeats of host 2 must not keep it alive in its peers' eyes.
          const takeover = await waitForHosts(
            lab,
            [1, 3],
            convergedOn([1, 3], 30),
            3 * detectionMs,
          );
          note('peersTookOverMs', takeover.atMs - crashAt);
          expect(takeover.ok).toBe(true);
          expect(takeover.atMs - crashAt).toBeLessThanOrEqual(detectionMs + 300);
          const startAt = Date.now();
          await startHostDaemon(lab.state.name, 2);
          const back = await expectConverged(lab, [...clusterHosts], bucketsEach);
          note('restartRejoinMs', back.atMs - startAt);
        },
        heal: async ({ note }) => {
          // The replay goes on after host 2 is back, until it ends.
          const { sent } = await replayed;
          note('replayed', sent);
          expect(sent).toBeGreaterThan(0);
        },
        // The connections host 2 held when it crashed are reset by the peers that take over.
        expect: { failuresMax: 10 },
      });
    });
  });

  it('a rule deleted by hand is put back within a period', async () => {
    await runFault(
      lab,
      alteration(
        'table altered: last rule of the rule chain deleted',
        1,
        async (_lab, namespace) => {
          // The chain's last rule drops what no owned bucket took: without it, every SYN falls
          // through to the base chain's accept.
          const { stdout } = await execIn(namespace, [
            'nft',
            '-j',
            '-a',
            'list',
            'chain',
            'inet',
            lab.tableName,
            'rule0',
          ]);
          const rules = (
            JSON.parse(stdout) as { nftables: { rule?: { handle: number } }[] }
          ).nftables.flatMap((item) => (item.rule === undefined ? [] : [item.rule.handle]));
          await execIn(namespace, [
            'nft',
            'delete',
            'rule',
            'inet',
            lab.tableName,
            'rule0',
            'handle',
            String(rules.at(-1)),
          ]);
        },
        true,
      ),
    );
  });

  it('a foreign bucket added to owned by hand is put back within a period', async () => {
    const owned1 = (await query(lab.sockets.get(1)!))!.rules[0]!.owned;
    await runFault(
      lab,
      alteration(
        `table altered: host 1's bucket ${owned1[0]} added to host 2's owned set`,
        2,
        async (_lab, namespace) => {
          await execIn(namespace, [
            'nft',
            'add',
            'element',
            'inet',
            lab.tableName,
            'rule0_owned',
            `{ ${owned1[0]} }`,
          ]);
        },
        true,
      ),
    );
  });

  it('the netdev table deleted by hand is put back within a period, the cluster MAC never leaves', async () => {
    await runFault(
      lab,
      alteration(
        'table altered: netdev table deleted',
        3,
        async (faultLab, namespace) => {
          await execIn(namespace, ['nft', 'delete', 'table', 'netdev', faultLab.tableName]);
        },
        // Without the masking table the MAC guard drops the host's frames: it answers nobody.
        false,
      ),
    );
  });

  it('nft failing while the table is deleted: fails closed, peers take over, back by itself once nft works', async () => {
    // A test-only `nft` first on host 2's nlbd's PATH: the real one, except while the flag
    // file exists, when it fails as a broken or missing nft would.
    const shimDir = path.join(lab.state.dir, 'nft-shim');
    const flag = path.join(lab.state.dir, 'nft-fails');
    const { stdout: realNft } = await execIn(hostNamespaceOf(lab, 2), [
      'sh',
      '-c',
      'command -v nft',
    ]);
    mkdirSync(shimDir, { recursive: true });
    writeFileSync(
      path.join(shimDir, 'nft'),
      [
        '#!/bin/sh',
        `if [ -e '${flag}' ]; then echo 'nft: failing on purpose (lab-faults test shim)' >&2; exit 1; fi`,
        `exec '${realNft.trim()}' "$@"`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    await restartDaemon(lab, 2, [
      'env',
      `PATH=${shimDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
      process.execPath,
      daemonMainPath,
      '--config',
      '{config}',
    ]);
    await expectConverged(lab, [...clusterHosts], bucketsEach);
    const runFile = JSON.parse(
      readFileSync(stateFilePath(labClusterName(lab.state.name), 2), 'utf8'),
    ) as { originalMac: string };
    const lostBefore = logCount(lab, 2, 'dataplane lost');

    try {
      await runFault(lab, {
        name: 'nft failing while the table is deleted',
        host: 2,
        inject: async ({ note }) => {
          writeFileSync(flag, '');
          const at = Date.now();
          await execIn(hostNamespaceOf(lab, 2), ['nft', 'delete', 'table', 'inet', lab.tableName]);
          // The host has its cluster IPs without a filter until nlbd removes them: how long.
          let vipGoneAt: number | undefined;
          while (vipGoneAt === undefined && Date.now() - at < 3_000) {
            const view = await interfaceOf(lab, 2);
            if (!view.addresses.includes(`${lab.state.vip}/32`)) vipGoneAt = Date.now();
          }
          note('clusterIpGoneMs', vipGoneAt === undefined ? 'never' : vipGoneAt - at);
          const lostAt = await waitForLog(lab, 2, 'dataplane lost', lostBefore, 3_000);
          note('lostLoggedMs', lostAt === undefined ? 'never' : lostAt - at);
          // Failed closed at once, not at the next heartbeat (which could be a period away).
          expect(vipGoneAt).toBeDefined();
          expect(vipGoneAt! - at).toBeLessThan(periodMs);
          const takeover = await waitForHosts(
            lab,
            [1, 3],
            convergedOn([1, 3], 30),
            3 * detectionMs,
          );
          note('peersTookOverMs', takeover.atMs - at);
          expect(takeover.ok).toBe(true);
          // Failed closed: no cluster IP, the interface's own MAC back.
          const view = await interfaceOf(lab, 2);
          note('lostInterface', view);
          expect(view.mac).toBe(runFile.originalMac);
          expect(view.addresses).toEqual([`${lab.state.hosts[1]!.ip}/24`]);
          // Lost for more than one retry (nlbd tries the whole table again every second).
          await sleep(1_200);
        },
        heal: async () => {
          rmSync(flag);
        },
        expect: {
          failuresMax: 10,
          // From the table deletion until nlbd has removed the cluster IPs the host has them
          // without a filter, and answers every connection: 28-62 ms here, 0-1 connection
          // answered twice. (Before 1a99bbe it lasted until the next heartbeat step, 113-222
          // ms and ~20 connections answered twice: test/daemon-driver-lost-window.test.ts.)
          doubles: {
            why: 'from the table deletion until nlbd has removed the cluster IPs, the host has them without a filter',
            windowMs: periodMs,
          },
          // One restore retry (1 s), then a rejoin after a silence longer than detection.
          rejoinMsMax: 3_000,
        },
      });
    } finally {
      rmSync(flag, { force: true });
    }
    expect(await tablesOf(lab, 2)).toEqual([`inet ${lab.tableName}`, `netdev ${lab.tableName}`]);
    const view = await interfaceOf(lab, 2);
    expect(view.mac).toBe(clusterMac);
    expect(view.addresses.sort()).toEqual(
      [`${lab.state.hosts[1]!.ip}/24`, `${lab.state.vip}/32`].sort(),
    );
  });

  it('carrier lost for less than the detection time: the host keeps its place', async () => {
    await runFault(lab, {
      name: 'carrier lost for 400 ms',
      host: 3,
      inject: async () => {
        await cutLink(lab.state.name, 3);
        await sleep(400);
      },
      heal: async () => {
        await restoreLink(lab.state.name, 3);
      },
      // Its clients' SYNs wait for it (a retransmission later), but none fails.
      expect: { failuresMax: 0, rejoinMsMax: 2_000 },
    });
  });

  it('interface set down for longer than the detection time: peers take over, it rejoins by itself', async () => {
    const namespace = hostNamespaceOf(lab, 1);
    await runFault(lab, {
      name: 'interface down for 2 s',
      host: 1,
      inject: async ({ note }) => {
        const at = Date.now();
        await execIn(namespace, ['ip', 'link', 'set', 'eth0', 'down']);
        const takeover = await waitForHosts(lab, [2, 3], convergedOn([2, 3], 30), 3 * detectionMs);
        note('peersTookOverMs', takeover.atMs - at);
        expect(takeover.ok).toBe(true);
        await sleep(Math.max(0, 2_000 - (Date.now() - at)));
      },
      heal: async () => {
        await execIn(namespace, ['ip', 'link', 'set', 'eth0', 'up']);
      },
      // The connections host 1 held when it went are reset by the peers that took its buckets.
      expect: { failuresMax: 10, rejoinMsMax: 3_000 },
    });
  });
});
