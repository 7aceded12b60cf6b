// The host driver without a kernel or a network: real HostMachines and a real Dataplane over
// FakeNft and a fake conntrack, heartbeats on the memory transport, time on a FakeClock. A
// journal records, in the global order they completed, every data plane operation and every
// heartbeat sent, so the tests can check the carry-out order of each Ready (flush, program,
// lease, send) and, across hosts, that no two kernels ever hold the same bucket.
import { beforeEach, describe, expect, it } from 'vitest';
import { datagramsQueuedMax } from '../src/daemon/host-driver.js';
import { Cluster, entriesOf } from './support/driver-cluster.js';
import { dedicatedIpOf, hostConfig } from './support/mini-net.js';

describe('HostDriver on the memory transport', () => {
  let cluster: Cluster;

  beforeEach(() => {
    cluster = new Cluster();
  });

  it('forms a three-host cluster: 20 buckets each, in the kernel too, never a bucket twice', async () => {
    for (const id of [1, 2, 3]) await cluster.add(id);
    await cluster.run(2_000);
    for (const id of [1, 2, 3]) {
      const status = cluster.hosts.get(id)!.driver.status();
      expect(status.converged).toBe(true);
      expect(status.members).toEqual([1, 2, 3]);
      expect(status.ownership.rules[0]!.owned).toHaveLength(20);
      expect(cluster.kernelSet(id)).toEqual(status.ownership.rules[0]!.owned);
      expect(cluster.hosts.get(id)!.driver.dataplaneInSync).toBe(true);
    }
    expect(cluster.overlaps).toEqual([]);
  });

  it('tells the data plane after every batch of heartbeats sent (each refreshed the lease on its way out)', async () => {
    for (const id of [1, 2]) await cluster.add(id);
    await cluster.run(2_000);
    for (const id of [1, 2]) {
      const entries = entriesOf(cluster.journal, id);
      const sends = entries.filter((e) => e.op === 'send').length;
      expect(sends).toBeGreaterThan(5);
      expect(cluster.hosts.get(id)!.driver.stats().leaseRefreshes).toBe(sends);
      entries.forEach((entry, i) => {
        if (entry.op === 'send' && entries[i + 1]?.op !== 'send') {
          expect(entries[i + 1]?.op).toBe('lease');
        }
      });
    }
  });

  it('carries out flush, then ownership, then the heartbeat (rule disabled)', async () => {
    for (const id of [1, 2]) await cluster.add(id);
    await cluster.run(2_000);
    const host = cluster.hosts.get(2)!;
    const mark = cluster.journal.length;
    const reply = await host.driver.command({ verb: 'disable', rules: [0] });
    await cluster.settle();
    expect(reply.code).toBe('ok');
    const after = entriesOf(cluster.journal.slice(mark), 2).map((e) => e.op);
    expect(after.slice(0, 3)).toEqual(['flush', 'program', 'send']);
    // The whole rule's connections went in one conntrack command.
    expect(host.conntrack.deleted).toHaveLength(1);
  });

  it('never lets two kernels hold one bucket while a host joins, drains and stops', async () => {
    for (const id of [1, 2]) await cluster.add(id, { slowDataplane: true });
    await cluster.run(1_500);
    await cluster.add(3, { slowDataplane: true });
    await cluster.run(1_500);
    expect(cluster.hosts.get(3)!.driver.status().ownership.rules[0]!.owned).toHaveLength(20);
    await cluster.hosts.get(2)!.driver.command({ verb: 'drainstop' });
    await cluster.run(1_500);
    expect(cluster.hosts.get(2)!.driver.status().state).toBe('stopped');
    expect(cluster.hosts.get(1)!.driver.status().ownership.rules[0]!.owned).toHaveLength(30);
    await cluster.hosts.get(3)!.driver.shutdown();
    await cluster.run(100);
    // Peers take over at once on the stop announcement, not after the 1 s detection time.
    expect(cluster.hosts.get(1)!.driver.status().ownership.rules[0]!.owned).toHaveLength(60);
    expect(cluster.overlaps).toEqual([]);
    for (const host of cluster.hosts.values()) {
      expect(host.inFlightMax).toBe(1);
    }
  });

  it('a host that rejoins after a partition drops every connection, sockets included', async () => {
    for (const id of [1, 2, 3]) await cluster.add(id);
    await cluster.run(1_500);
    cluster.isolated = new Set([3]);
    await cluster.run(1_500);
    expect(cluster.hosts.get(3)!.driver.status().ownership.rules[0]!.owned).toHaveLength(60);
    const mark = cluster.journal.length;
    cluster.isolated = undefined;
    await cluster.run(1_500);
    // The smaller side (host 3) rejoins: one flush of everything (flushAll), nothing per rule.
    const flushes = cluster.journal.slice(mark).filter((e) => e.op === 'flush');
    expect(flushes).toEqual([{ host: 3, op: 'flush', rule: -1, buckets: -1 }]);
    expect(cluster.hosts.get(3)!.events).toContainEqual(
      expect.objectContaining({ event: 'connections flushed', rule: 'all', socketsKilled: true }),
    );
    for (const id of [1, 2, 3]) {
      expect(cluster.hosts.get(id)!.driver.status()).toMatchObject({
        converged: true,
        members: [1, 2, 3],
      });
    }
  });

  it('finishes a drainstop once the connections end, polling conntrack', async () => {
    const host = await cluster.add(1);
    await cluster.run(1_500);
    host.conntrack.connections = [{ rule: 0, bucket: 3, connections: 2 }];
    expect((await host.driver.command({ verb: 'drainstop' })).code).toBe('ok');
    await cluster.run(1_200);
    expect(host.driver.status().state).toBe('draining');
    host.conntrack.connections = [];
    await cluster.run(600);
    expect(host.driver.status().state).toBe('stopped');
    expect(host.events.map((e) => e.event)).toContain('drain completed');
    expect(host.events.map((e) => e.event)).toContain('drainstop finished');
  });

  // Routed mode: a host that released buckets to a newcomer counts its connections (after a
  // barrier: every release before the count is in the kernel) and stops holding each bucket
  // whose last connection ended; the newcomer then ends that bucket's second chance.
  it('counts connections while holding released buckets (routed), ending second chances bucket by bucket', async () => {
    const config = (id: number) =>
      hostConfig(id, {
        cluster: {
          mode: 'routed',
          heartbeat: { peers: [dedicatedIpOf(1), dedicatedIpOf(2)] },
          routed: { as: 65001 },
        },
        host: { routed: { peers: [{ address: '198.18.0.1', as: 65000 }] } },
      });
    const one = await cluster.add(1, { config: config(1) });
    await cluster.run(1_500);
    expect(one.driver.status().held).toBe(0);
    // Host 1 has connections in every bucket when host 2 joins.
    one.conntrack.connections = Array.from({ length: 60 }, (_, bucket) => ({
      rule: 0,
      bucket,
      connections: 1,
    }));
    const two = await cluster.add(2, { config: config(2) });
    await cluster.run(1_500);
    const second = () => two.driver.status().ownership.routed!.rules[0]!.secondChance;
    const released = second().map(([b]) => b);
    expect(released).toHaveLength(30);
    expect(second().every(([, host]) => host === 1)).toBe(true);
    // Host 1 has connections in two of the buckets it released, and in one it kept.
    const kept = one.driver.status().ownership.rules[0]!.owned[0]!;
    one.conntrack.connections = [
      { rule: 0, bucket: released[3]!, connections: 2 },
      { rule: 0, bucket: released[7]!, connections: 1 },
      { rule: 0, bucket: kept, connections: 4 },
    ];
    await cluster.run(1_000);
    expect(one.driver.status().held).toBe(2);
    expect(second()).toEqual([
      [released[3], 1],
      [released[7], 1],
    ]);
    one.conntrack.connections = [{ rule: 0, bucket: kept, connections: 4 }];
    await cluster.run(1_000);
    expect(one.driver.status().held).toBe(0);
    expect(second()).toEqual([]);
    expect(one.driver.status().state).toBe('converged as default');
    expect(cluster.overlaps).toEqual([]);
  });

  it('withholds heartbeats while the kernel refuses the new ownership, then catches up', async () => {
    const host = await cluster.add(1);
    await cluster.run(1_500);
    expect(host.driver.status().ownership.rules[0]!.owned).toHaveLength(60);
    const mark = cluster.journal.length;
    host.nft.failNext('Error: Could not process rule: Operation not permitted');
    await host.driver.command({ verb: 'disable', rules: [0] });
    expect(host.driver.dataplaneInSync).toBe(false);
    expect(host.events.map((e) => e.event)).toEqual(
      expect.arrayContaining(['dataplane error', 'heartbeat withheld']),
    );
    await cluster.run(400);
    expect(host.driver.dataplaneInSync).toBe(true);
    const ops = entriesOf(cluster.journal.slice(mark), 1).map((e) => e.op);
    // The first heartbeat after the failure follows the successful retry of the program.
    const firstSend = ops.indexOf('send');
    expect(ops.indexOf('program')).toBeGreaterThanOrEqual(0);
    expect(ops.indexOf('program')).toBeLessThan(firstSend);
    expect(host.driver.stats().heartbeatsWithheld).toBeGreaterThan(0);
  });

  it('steps inputs one at a time, and drops datagrams beyond the queue bound', async () => {
    const host = await cluster.add(1, { slowDataplane: true });
    const junk = new Uint8Array(100).fill(1);
    for (let i = 0; i < datagramsQueuedMax + 10; i++)
      host.driver.onDatagram(junk, { address: 'x', port: 1 });
    await cluster.settle();
    // The first datagram is taken off the queue at once; the queue then holds the bound.
    expect(host.driver.stats().datagramsDropped).toBe(9);
    expect(host.driver.details().heartbeatsRejected['bad magic']).toBeGreaterThan(0);
    expect(host.inFlightMax).toBe(1);
  });

  it('measures decision to kernel programmed', async () => {
    for (const id of [1, 2]) await cluster.add(id);
    await cluster.run(2_000);
    const stats = cluster.hosts.get(1)!.driver.stats();
    expect(stats.program.count).toBeGreaterThan(0);
    // The fake clock does not move during a carry-out: the latency is exactly 0 here.
    expect(stats.program.maxMs).toBe(0);
    const programmed = cluster.hosts
      .get(1)!
      .events.filter((e) => e.event === 'ownership programmed');
    expect(programmed.length).toBe(stats.program.count);
  });
});
