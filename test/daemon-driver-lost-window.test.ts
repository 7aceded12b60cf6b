// Found by the fault-injection lab test (test/lab-faults.test.ts, "nft failing while the table
// is deleted"): when nlbd's table is deleted and nft cannot put it back, the host keeps its
// cluster IPs, without any filter, until the driver's next heartbeat step. The Dataplane learns
// at once (nft monitor reports the deletion, the restore fails, the data plane is lost), but the
// driver only hears of it when its next lease refresh or program throws DataplaneLostError, up
// to one heartbeat period later. Meanwhile the host answers every new connection, its peers'
// buckets included: in the lab, the cluster IP went 113-222 ms after the deletion, and 12-22
// connections were answered by two hosts and reset, most of them clients of the other hosts.
//
// Expected: the host detaches (onDataplaneLost) as soon as the Dataplane finds it cannot
// restore the table, not at the next heartbeat. A likely fix: the Dataplane calls back (or the
// driver subscribes) when a restore it started on its own fails, and the driver runs its
// `dataplaneLost` steps at once, as it does when a lease refresh throws.
//
// Deterministic here: one host on FakeNft and a FakeClock; the table is deleted (nft broken)
// right after a heartbeat went out, so the next heartbeat step is a whole period away. Fixed
// that way (Dataplane.watchLost, subscribed by the driver): this test failed before.
import { describe, expect, it } from 'vitest';
import { HostMachine } from '../src/core/host.js';
import { Dataplane } from '../src/dataplane/dataplane.js';
import { FakeNft } from '../src/dataplane/nft.js';
import { dataplaneSpecFor } from '../src/dataplane/spec.js';
import { FakeClock } from '../src/daemon/clock.js';
import { HostDriver } from '../src/daemon/host-driver.js';
import { MemoryNetwork, type Transport } from '../src/daemon/transport.js';
import { hostConfig, testKey } from './support/mini-net.js';
import { NoConntrack } from './support/no-conntrack.js';

/** Fail-closed well within a period: the restore that failed took no fake time at all. */
const detachWithinMs = 50;

describe('HostDriver when its table is deleted and nft cannot put it back', () => {
  it('detaches the cluster IPs at once, not at the next heartbeat', async () => {
    const clock = new FakeClock();
    const config = hostConfig(1);
    const nft = new FakeNft();
    const dataplane = new Dataplane(nft, new NoConntrack(), undefined, {
      nowMs: () => clock.nowMs(),
    });
    const network = new MemoryNetwork();
    const inner = network.transport('198.18.0.11');
    const sentAt: number[] = [];
    const transport: Transport = {
      start: (handler) => inner.start(handler),
      send: (bytes) => {
        sentAt.push(clock.nowMs());
        return inner.send(bytes);
      },
      close: () => inner.close(),
      stats: () => inner.stats(),
    };
    let detachedAt: number | undefined;
    const driver = new HostDriver({
      machine: new HostMachine({
        config,
        key: testKey,
        incarnation: clock.nowMs(),
        nowMs: clock.nowMs(),
      }),
      clock,
      transport,
      dataplane: {
        program: (spec) => dataplane.program(spec),
        heartbeatSent: () => dataplane.heartbeatSent(),
        flush: (rule, buckets) => dataplane.flush(rule, buckets),
        flushAll: () => Promise.resolve(0),
        connections: () => dataplane.connections(),
        watchLost: (listener) => dataplane.watchLost(listener),
      },
      specFor: (ownership) => dataplaneSpecFor(config, ownership),
      log: () => undefined,
      heartbeat: () => config.cluster.heartbeat,
      onDataplaneLost: () => {
        detachedAt ??= clock.nowMs();
      },
      onDataplaneRestored: () => undefined,
    });
    const settle = async (): Promise<void> => {
      for (let round = 0; round < 50; round++) {
        await new Promise((resolve) => setImmediate(resolve));
        await driver.idle();
      }
    };
    const run = async (ms: number, until?: () => boolean): Promise<void> => {
      for (let t = 0; t < ms && until?.() !== true; t += 5) {
        clock.advance(5);
        await settle();
      }
    };
    await driver.programInitial();
    await transport.start(driver.onDatagram);
    driver.start();
    await run(2_000);
    expect(driver.status().ownership.rules[0]!.owned).toHaveLength(60);

    // Right after a heartbeat went out, nft breaks and the table is deleted.
    const sent = sentAt.length;
    await run(1_000, () => sentAt.length > sent);
    nft.breakNft('Error: Could not process rule: Operation not permitted');
    const deletedAt = clock.nowMs();
    await nft.foreign('delete table inet nlb\n');
    await run(500, () => detachedAt !== undefined);

    expect(detachedAt).toBeDefined();
    expect(detachedAt! - deletedAt).toBeLessThanOrEqual(detachWithinMs);
  });
});
