// HostDrivers without a kernel or a network, for test/daemon-driver*.test.ts: real HostMachines
// and a real Dataplane over FakeNft and a fake conntrack, heartbeats on the memory transport,
// time on a FakeClock. A journal records, in the global order they completed, every data plane
// operation and every heartbeat sent, so the tests can check the carry-out order of each Ready
// (flush, program, lease, send) and, across hosts, that no two kernels ever hold the same bucket.
import type { Config } from '../../src/core/config.js';
import { HostMachine } from '../../src/core/host.js';
import type { Address } from '../../src/core/address.js';
import type { BucketConnections, Conntrack } from '../../src/dataplane/conntrack.js';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { FakeNft } from '../../src/dataplane/nft.js';
import { names } from '../../src/dataplane/render.js';
import { dataplaneSpecFor } from '../../src/dataplane/spec.js';
import { FakeClock } from '../../src/daemon/clock.js';
import type { EventRecord } from '../../src/daemon/event-names.js';
import { type DataplanePort, HostDriver } from '../../src/daemon/host-driver.js';
import { MemoryNetwork, type Transport } from '../../src/daemon/transport.js';
import { hostConfig, testKey } from './mini-net.js';

export type Entry =
  | { host: number; op: 'flush'; rule: number; buckets: number }
  | { host: number; op: 'program'; how: string; owned: number[]; active: boolean }
  | { host: number; op: 'lease' }
  | { host: number; op: 'send' }
  | { host: number; op: 'detach'; reason: string }
  | { host: number; op: 'attach' };

export class FakeConntrack implements Conntrack {
  connections: BucketConnections[] = [];
  deleted: number[] = [];
  connectionsByBucket(): Promise<BucketConnections[]> {
    return Promise.resolve(this.connections);
  }
  deleteByMark(mark: number): Promise<number> {
    this.deleted.push(mark);
    return Promise.resolve(0);
  }
  deleteByDestination(_address: Address): Promise<number> {
    return Promise.resolve(0);
  }
}

export interface TestHost {
  readonly id: number;
  readonly config: Config;
  readonly nft: FakeNft;
  readonly conntrack: FakeConntrack;
  readonly driver: HostDriver;
  readonly events: EventRecord[];
  /** Data plane operations in flight at once for this host (must stay at most 1). */
  inFlightMax: number;
}

export class Cluster {
  readonly clock = new FakeClock();
  readonly network = new MemoryNetwork();
  readonly journal: Entry[] = [];
  readonly hosts = new Map<number, TestHost>();
  /** Hosts cut off from the others (a partition), or undefined when the network is whole. */
  isolated: Set<number> | undefined;
  /** Hosts whose heartbeats cannot leave (the send fails, as without a dedicated IP). */
  readonly sendFails = new Set<number>();
  /** Set when two hosts' kernels held one bucket at once. */
  readonly overlaps: string[] = [];
  private readonly kernelOwned = new Map<number, Set<number>>();

  async add(
    id: number,
    options: {
      slowDataplane?: boolean;
      config?: Config;
      failClosed?: boolean;
      /** How many times attaching the interface again fails before it works. */
      attachFailures?: number;
    } = {},
  ): Promise<TestHost> {
    const config = options.config ?? hostConfig(id);
    const nft = new FakeNft();
    const conntrack = new FakeConntrack();
    const dataplane = new Dataplane(nft, conntrack, undefined, {
      nowMs: () => this.clock.nowMs(),
    });
    const events: EventRecord[] = [];
    const journal = this.journal;
    let inFlight = 0;
    // A real carry-out takes a few ms in nft; here each operation yields to the event loop a
    // few times, so datagrams and timers do arrive while one is under way. Hosts differ in
    // speed (host 1 slowest, host 3 fastest), so a host that announced a release before its
    // kernel had it would let a faster peer acquire the bucket first: an overlap.
    const rounds = options.slowDataplane === true ? ((id * 7) % 10) + 1 : 1;
    let attachFailed = 0;
    const pause = async (): Promise<void> => {
      for (let i = 0; i < rounds; i++) {
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    const track = async <T>(body: () => Promise<T>): Promise<T> => {
      inFlight++;
      host.inFlightMax = Math.max(host.inFlightMax, inFlight);
      try {
        await pause();
        return await body();
      } finally {
        inFlight--;
      }
    };
    const port: DataplanePort = {
      program: (spec) =>
        track(async () => {
          const how = await dataplane.program(spec);
          const owned = spec.ownership.active ? [...spec.ownership.rules[0]!.owned] : [];
          journal.push({ host: id, op: 'program', how, owned, active: spec.ownership.active });
          this.kernelChanged(id, owned);
          return how;
        }),
      watchLost: (listener) => dataplane.watchLost(listener),
      heartbeatSent: () => {
        journal.push({ host: id, op: 'lease' });
        return dataplane.heartbeatSent();
      },
      flush: (rule, buckets) =>
        track(async () => {
          const n = await dataplane.flush(rule, buckets);
          journal.push({ host: id, op: 'flush', rule, buckets: buckets.length });
          return n;
        }),
      flushAll: () =>
        track(async () => {
          journal.push({ host: id, op: 'flush', rule: -1, buckets: -1 });
          return Promise.resolve(0);
        }),
      connections: () => dataplane.connections(),
    };
    const inner = this.network.transport(`198.18.0.${10 + id}`);
    const transport: Transport = {
      // A partition drops datagrams between the sides, as a cut link would.
      start: (handler) =>
        inner.start((bytes, from) => {
          const sender = Number(from.address.split('.')[3]) - 10;
          if (this.isolated === undefined || this.isolated.has(sender) === this.isolated.has(id)) {
            handler(bytes, from);
          }
        }),
      send: (bytes) => {
        if (this.sendFails.has(id)) {
          return Promise.reject(new Error('send ENETUNREACH 239.255.78.76:2505'));
        }
        journal.push({ host: id, op: 'send' });
        return inner.send(bytes);
      },
      close: () => inner.close(),
      stats: () => inner.stats(),
    };
    const machine = new HostMachine({
      config,
      key: testKey,
      incarnation: this.clock.nowMs() + id,
      nowMs: this.clock.nowMs(),
    });
    const driver = new HostDriver({
      machine,
      clock: this.clock,
      transport,
      dataplane: port,
      specFor: (ownership) => dataplaneSpecFor(config, ownership),
      log: (record) => events.push(record),
      heartbeat: () => config.cluster.heartbeat,
      // What the daemon does with them: detach the interface, attach it again.
      ...(options.failClosed === true
        ? {
            onDataplaneLost: (reason: string) => {
              journal.push({ host: id, op: 'detach', reason });
              // Without the cluster IPs the host answers nothing, whatever its kernel holds.
              this.kernelChanged(id, []);
            },
            onDataplaneRestored: async () => {
              await pause();
              if ((options.attachFailures ?? 0) > attachFailed) {
                attachFailed++;
                throw new Error('ip link set dev eth0 address: Device or resource busy');
              }
              journal.push({ host: id, op: 'attach' });
            },
          }
        : {}),
    });
    const host: TestHost = { id, config, nft, conntrack, driver, events, inFlightMax: 0 };
    this.hosts.set(id, host);
    await driver.programInitial();
    await transport.start(driver.onDatagram);
    driver.start();
    await this.settle();
    return host;
  }

  kernelChanged(id: number, owned: number[]): void {
    this.kernelOwned.set(id, new Set(owned));
    for (const [other, set] of this.kernelOwned) {
      if (other === id) continue;
      const shared = owned.filter((b) => set.has(b));
      if (shared.length > 0) {
        this.overlaps.push(`hosts ${id} and ${other} both hold buckets ${shared.join(',')}`);
      }
    }
  }

  /** Lets every pending delivery and carry-out finish. */
  async settle(): Promise<void> {
    for (let round = 0; round < 50; round++) {
      await new Promise((resolve) => setImmediate(resolve));
      await Promise.all([...this.hosts.values()].map((h) => h.driver.idle()));
    }
  }

  /** Advances time in 5 ms steps, letting everything settle after each. */
  async run(ms: number): Promise<void> {
    for (let t = 0; t < ms; t += 5) {
      this.clock.advance(5);
      await this.settle();
    }
  }

  kernelSet(id: number): number[] | undefined {
    return this.hosts.get(id)!.nft.elements('nlb', names.owned(0));
  }
}

export function entriesOf(journal: readonly Entry[], host: number): Entry[] {
  return journal.filter((e) => e.host === host);
}
