// Heartbeats by unicast (cluster.heartbeat.peers), the transport of clusters whose network
// carries no multicast between the hosts (issue 15 item 1), in a real three-host lab: the hosts
// converge without joining the heartbeat group, each sends one datagram per peer, connections
// land where the map says, and a crashed host's buckets are served by the survivors within the
// detection time, as with multicast. Needs root; skipped visibly otherwise, failing instead when
// NLB_REQUIRE_LAB=1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ParamsData } from '../src/control/protocol.js';
import { controlRequest } from '../src/control/client.js';
import { killHostDaemon } from '../src/lab/lab.js';
import { execIn } from '../src/lab/netns.js';
import {
  type ClusterLab,
  LabSession,
  declareLabRequirement,
  expectConverged,
  isRoot,
  labSetupTimeoutMs,
  liveMaps,
  mispredicted,
  nlbCounter,
  startLoad,
  waitForHosts,
} from './support/lab-cluster.js';

declareLabRequirement('lab-unicast-heartbeats');

const group = '239.255.78.76';

describe.runIf(isRoot)('lab: heartbeats by unicast to the peers', () => {
  const session = new LabSession();
  let lab: ClusterLab;

  beforeAll(async () => {
    await session.lock();
    lab = await session.up('luh', {
      hosts: 3,
      clients: 1,
      clientExtraIps: 10,
      unicastHeartbeats: true,
    });
  }, labSetupTimeoutMs);
  afterAll(() => session.close());

  it('converges without the group, serves as the map says, and fails over within the detection time', async () => {
    const before = await expectConverged(lab, [1, 2, 3], 20);
    expect(lab.config.cluster.heartbeat.peers?.map((p) => p.text)).toEqual([
      '198.18.0.11',
      '198.18.0.12',
      '198.18.0.13',
    ]);
    for (const host of lab.state.hosts) {
      const { stdout } = await execIn(host.namespace, [
        'ip',
        'maddr',
        'show',
        'dev',
        host.interface,
      ]);
      expect(stdout).not.toContain(group);
      const answer = await controlRequest(lab.sockets.get(host.id)!, { verb: 'params' }, 5_000);
      const params = (answer as { data: ParamsData }).data;
      expect(params.config.cluster.heartbeat.peers).toEqual([
        '198.18.0.11',
        '198.18.0.12',
        '198.18.0.13',
      ]);
      // Each heartbeat reaches both peers: about as many received as sent, from each of two.
      expect(params.transport.sent).toBeGreaterThan(0);
      expect(params.transport.received).toBeGreaterThan(params.transport.sent);
    }

    const maps = liveMaps(before.answers);
    const load = startLoad(lab, {
      ratePerSecond: 200,
      countMax: 300,
      durationMs: 5_000,
      sources: lab.sources,
    });
    const result = await load.done;
    expect(result.failed).toBe(0);
    expect(mispredicted(lab, maps, result.connections)).toEqual([]);
    // The unicast heartbeats keep the kernel's lease alive as multicast ones do.
    for (const id of [1, 2, 3]) expect(await nlbCounter(lab, id, 'lease_expired')).toBe(0);

    const killedAt = Date.now();
    await killHostDaemon(lab.state.name, 3);
    const after = await waitForHosts(
      lab,
      [1, 2],
      (d) => d.converged && d.members.join() === '1,2' && d.rules[0]!.owned.length === 30,
      5_000,
    );
    expect(after.ok).toBe(true);
    const tookMs = after.atMs - killedAt;
    console.log(
      `lab-unicast-heartbeats: survivors own host 3's buckets ${tookMs} ms after the kill`,
    );
    // Detection 5 x 200 ms, then a convergence of a few ms (polling adds up to 20 ms).
    expect(tookMs).toBeLessThan(1_000 + 300);
  }, 60_000);
});
