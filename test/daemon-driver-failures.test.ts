// The host driver when its data plane or its heartbeats fail: tables changed or deleted by
// another program, a data plane that cannot be put back, heartbeats that cannot leave (harness:
// test/support/driver-cluster.ts).
import { beforeEach, describe, expect, it } from 'vitest';
import { Cluster, entriesOf } from './support/driver-cluster.js';

describe('HostDriver when another program changes its nftables tables', () => {
  let cluster: Cluster;

  beforeEach(() => {
    cluster = new Cluster();
  });

  function members(id: number): readonly number[] {
    return cluster.hosts.get(id)!.driver.status().members;
  }

  it('puts back a flushed table within a period and goes on sending heartbeats: the peers never notice', async () => {
    for (const id of [1, 2, 3]) await cluster.add(id, { failClosed: true });
    await cluster.run(2_000);
    const host = cluster.hosts.get(2)!;
    const owned = [...host.driver.status().ownership.rules[0]!.owned];
    expect(owned).toHaveLength(20);
    const mark = cluster.journal.length;
    await host.nft.foreign('flush ruleset\n');
    await cluster.run(200);
    expect(cluster.kernelSet(2)).toEqual(owned);
    expect(host.nft.tableNames()).toEqual(['inet nlb', 'netdev nlb']);
    await cluster.run(3_000);
    expect(host.events).toContainEqual(
      expect.objectContaining({
        event: 'dataplane restored',
        problems: ['table inet nlb was deleted', 'table netdev nlb was deleted'],
        detectedBy: 'nft monitor',
      }),
    );
    expect(host.events.map((e) => e.event)).not.toContain('dataplane lost');
    expect(host.driver.stats().heartbeatsWithheld).toBe(0);
    expect(entriesOf(cluster.journal.slice(mark), 2).map((e) => e.op)).not.toContain('detach');
    for (const id of [1, 2, 3]) {
      expect(members(id)).toEqual([1, 2, 3]);
      expect(cluster.hosts.get(id)!.driver.status().converged).toBe(true);
    }
    expect(host.driver.dataplaneState()).toEqual({ restores: 1, losses: 0, lost: null });
    expect(cluster.overlaps).toEqual([]);
  });

  it('fails closed when the table cannot be put back, retries once a second, and returns by itself dropping its old connections first', async () => {
    for (const id of [1, 2, 3]) await cluster.add(id, { failClosed: true });
    await cluster.run(2_000);
    const host = cluster.hosts.get(2)!;
    const mark = cluster.journal.length;
    // nft breaks, then nftables.service flushes the ruleset: nlbd cannot put its table back.
    host.nft.breakNft('Error: Could not process rule: Operation not permitted');
    await host.nft.foreign('flush ruleset\n');
    await cluster.run(200);
    const lost = host.events.find((e) => e.event === 'dataplane lost');
    expect(lost).toMatchObject({
      reason: expect.stringMatching(
        /^table inet nlb was deleted; table netdev nlb was deleted; restoring the table failed: .*Operation not permitted/,
      ),
      failClosed: true,
      hint: expect.stringContaining('nlbd tries again every 1000 ms and rejoins by itself'),
    });
    expect(entriesOf(cluster.journal.slice(mark), 2)).toContainEqual({
      host: 2,
      op: 'detach',
      reason: lost!.reason,
    });
    // Told `link down`: it takes no buckets, and it sends nothing.
    expect(host.driver.status().ownership.rules[0]!.owned).toEqual([]);
    expect(host.driver.dataplaneState()).toMatchObject({ losses: 1, lost: lost!.reason });
    const attempts = (): number => host.nft.scripts.filter((s) => s.kind === 'apply').length;
    const attemptsBefore = attempts();
    await cluster.run(3_000);
    // At most one whole-table attempt per second while nft keeps failing.
    expect(attempts() - attemptsBefore).toBeGreaterThanOrEqual(2);
    expect(attempts() - attemptsBefore).toBeLessThanOrEqual(3);
    const silent = cluster.journal
      .slice(mark)
      .filter((e) => e.host === 2 && e.op === 'send').length;
    expect(silent).toBeLessThanOrEqual(1);
    // Its peers declared it dead and took its buckets.
    for (const id of [1, 3]) {
      expect(members(id)).toEqual([1, 3]);
      expect(cluster.hosts.get(id)!.driver.status().ownership.rules[0]!.owned).toHaveLength(30);
    }
    // A carrier that comes back meanwhile does not bring the host back.
    expect((await host.driver.command({ verb: 'link', up: false })).code).toBe('already');
    expect(await host.driver.command({ verb: 'link', up: true })).toEqual({
      code: 'ok',
      message: 'carrier up: the host stays out until its data plane is restored',
    });
    await cluster.run(100);
    expect(host.driver.status().ownership.active).toBe(false);

    const mended = cluster.journal.length;
    host.nft.breakNft(undefined);
    await cluster.run(4_000);
    const back = entriesOf(cluster.journal.slice(mended), 2);
    const ops = back.map((e) => (e.op === 'flush' && e.rule === -1 ? 'flushAll' : e.op));
    // The table first, then the interface, then the old connections, then buckets.
    const firstOwning = back.findIndex((e) => e.op === 'program' && e.owned.length > 0);
    expect(ops.indexOf('program')).toBeLessThan(ops.indexOf('attach'));
    expect(ops.indexOf('attach')).toBeLessThan(ops.indexOf('flushAll'));
    expect(ops.indexOf('flushAll')).toBeLessThan(firstOwning);
    expect(host.events).toContainEqual(
      expect.objectContaining({
        event: 'dataplane restored',
        detectedBy: 'retry after the data plane was lost',
        rejoining: true,
      }),
    );
    const restored = host.events.find(
      (e) => e.event === 'dataplane restored' && e.detectedBy !== 'nft monitor',
    )!;
    // Lost from soon after the flush for the 3.3 s nft stayed broken, then a retry within a second.
    expect(restored.goneMs).toBeGreaterThanOrEqual(3_200);
    expect(restored.goneMs).toBeLessThanOrEqual(3_300 + 1_100);
    for (const id of [1, 2, 3]) {
      expect(members(id)).toEqual([1, 2, 3]);
      expect(cluster.hosts.get(id)!.driver.status().ownership.rules[0]!.owned).toHaveLength(20);
    }
    expect(cluster.kernelSet(2)).toEqual(host.driver.status().ownership.rules[0]!.owned);
    expect(host.driver.dataplaneState()).toEqual({ restores: 1, losses: 1, lost: null });
    expect(cluster.overlaps).toEqual([]);
  });

  it('without the daemon callbacks still takes the host out of the cluster and brings it back', async () => {
    // Not fail-closed: without onDataplaneLost the host keeps its cluster IPs while its table
    // is gone. What the driver still does: withhold heartbeats, link down, retry, rejoin.
    for (const id of [1, 2]) await cluster.add(id);
    await cluster.run(2_000);
    const host = cluster.hosts.get(2)!;
    host.nft.breakNft(new Error('nft -f did not finish within 1000 ms'));
    await host.nft.foreign('delete table netdev nlb\n');
    await cluster.run(2_000);
    expect(host.events).toContainEqual(
      expect.objectContaining({ event: 'dataplane lost', failClosed: false }),
    );
    expect(members(1)).toEqual([1]);
    host.nft.breakNft(undefined);
    await cluster.run(3_000);
    expect(members(1)).toEqual([1, 2]);
    expect(members(2)).toEqual([1, 2]);
    expect(cluster.hosts.get(1)!.driver.status().converged).toBe(true);
  });

  it('stays out when the interface cannot be attached again: undoes the attach and tries both again', async () => {
    for (const id of [1, 2]) await cluster.add(id, { failClosed: true, attachFailures: 1 });
    await cluster.run(2_000);
    const host = cluster.hosts.get(2)!;
    const mark = cluster.journal.length;
    host.nft.breakNft('Error: Could not process rule: Operation not permitted');
    await host.nft.foreign('flush ruleset\n');
    await cluster.run(1_500);
    host.nft.breakNft(undefined);
    await cluster.run(4_000);
    const ops = entriesOf(cluster.journal.slice(mark), 2)
      .map((e) => e.op)
      .filter((op) => op === 'detach' || op === 'attach');
    // Lost: detach. The table back, the attach fails: detach again. A second later: attach.
    expect(ops).toEqual(['detach', 'detach', 'attach']);
    expect(host.events).toContainEqual(
      expect.objectContaining({
        event: 'dataplane restored: attach failed',
        error: 'ip link set dev eth0 address: Device or resource busy',
      }),
    );
    expect(host.driver.dataplaneState()).toMatchObject({ losses: 1, lost: null });
    expect(members(1)).toEqual([1, 2]);
    expect(members(2)).toEqual([1, 2]);
    expect(cluster.overlaps).toEqual([]);
  });
});

describe('HostDriver when its heartbeats cannot leave', () => {
  let cluster: Cluster;
  beforeEach(() => {
    cluster = new Cluster();
  });

  it('takes itself out before its peers declare it dead, so no bucket is held twice, and returns by itself', async () => {
    for (const id of [1, 2, 3]) await cluster.add(id);
    await cluster.run(2_000);
    const host = cluster.hosts.get(2)!;
    expect(host.driver.status().ownership.rules[0]!.owned).toHaveLength(20);
    // The dedicated IP is removed by hand: every send fails with ENETUNREACH.
    cluster.sendFails.add(2);
    await cluster.run(2_000);
    const blocked = host.events.find((e) => e.event === 'heartbeats blocked');
    expect(blocked).toMatchObject({ error: expect.stringContaining('ENETUNREACH') });
    // Out after tolerance - 2 periods of silence (600 ms), before the peers' 1,000 ms.
    expect(blocked!.silentMs).toBeGreaterThanOrEqual(600);
    expect(blocked!.silentMs).toBeLessThan(800);
    expect(host.driver.status().ownership.active).toBe(false);
    for (const id of [1, 3]) {
      expect(cluster.hosts.get(id)!.driver.status().members).toEqual([1, 3]);
      expect(cluster.hosts.get(id)!.driver.status().ownership.rules[0]!.owned).toHaveLength(30);
    }
    expect(cluster.overlaps).toEqual([]);
    // A carrier event meanwhile does not bring it back.
    expect((await host.driver.command({ verb: 'link', up: false })).code).toBe('already');
    expect((await host.driver.command({ verb: 'link', up: true })).message).toContain(
      'until its heartbeats can be sent again',
    );
    // The address is back: it rejoins, dropping its old connections (silent for > 1 s).
    const mark = cluster.journal.length;
    cluster.sendFails.delete(2);
    await cluster.run(3_000);
    expect(host.events.some((e) => e.event === 'heartbeats flowing')).toBe(true);
    expect(entriesOf(cluster.journal.slice(mark), 2)).toContainEqual({
      host: 2,
      op: 'flush',
      rule: -1,
      buckets: -1,
    });
    for (const id of [1, 2, 3]) {
      expect(cluster.hosts.get(id)!.driver.status().members).toEqual([1, 2, 3]);
      expect(cluster.hosts.get(id)!.driver.status().ownership.rules[0]!.owned).toHaveLength(20);
    }
    expect(cluster.overlaps).toEqual([]);
  });

  it('one failed send is not enough to leave', async () => {
    for (const id of [1, 2]) await cluster.add(id);
    await cluster.run(2_000);
    const host = cluster.hosts.get(2)!;
    cluster.sendFails.add(2);
    await cluster.run(200);
    cluster.sendFails.delete(2);
    await cluster.run(1_000);
    expect(host.events.some((e) => e.event === 'heartbeats blocked')).toBe(false);
    expect(host.driver.status().ownership.rules[0]!.owned).toHaveLength(30);
    expect(cluster.hosts.get(1)!.driver.status().members).toEqual([1, 2]);
  });
});
