// The simulator's virtual network behind the Transport interface, so that it runs the same contract
// suite as the memory segment and real UDP multicast (docs/architecture.md#contract-suites).
// Deliveries the network computes in virtual time are carried out with real timers here: the
// contract speaks of a healthy link, so faults stay off (they are the simulator's business, tested
// there).
import { performance } from 'node:perf_hooks';
import type {
  DatagramHandler,
  DatagramSource,
  Transport,
  TransportStats,
} from '../../src/daemon/transport.js';
import { datagramBytesMax } from '../../src/core/heartbeat-size.js';
import { Network, labLink } from '../../src/sim/network.js';
import { Prng } from '../../src/sim/prng.js';

export class SimSegment {
  private readonly network: Network;
  private readonly endpoints: SimTransport[] = [];

  constructor(slots: number, seed = 1) {
    this.network = new Network(slots, new Prng(seed), { ...labLink, jitterMs: 0 });
  }

  transport(address: string): SimTransport {
    const endpoint = new SimTransport(this, this.endpoints.length, address);
    this.endpoints.push(endpoint);
    return endpoint;
  }

  /** @internal */
  send(from: SimTransport, bytes: Uint8Array): void {
    const nowMs = performance.now();
    const others = this.endpoints.filter((e) => e !== from && e.listening).map((e) => e.slot);
    for (const delivery of this.network.send(from.slot, others, bytes, nowMs)) {
      const to = this.endpoints[delivery.to]!;
      const copy = Uint8Array.from(delivery.bytes);
      setTimeout(
        () => to.deliver(copy, { address: from.address, port: 2505 }),
        Math.max(0, delivery.atMs - nowMs),
      );
    }
  }
}

export class SimTransport implements Transport {
  private handler: DatagramHandler | undefined;
  private closed = false;
  private counts = { sent: 0, received: 0, sendErrors: 0, oversize: 0 };

  constructor(
    private readonly segment: SimSegment,
    readonly slot: number,
    readonly address: string,
  ) {}

  get listening(): boolean {
    return this.handler !== undefined && !this.closed;
  }

  start(onDatagram: DatagramHandler): Promise<void> {
    if (this.handler !== undefined || this.closed)
      throw new Error('SimTransport.start: already started or closed');
    this.handler = onDatagram;
    return Promise.resolve();
  }

  send(bytes: Uint8Array): Promise<void> {
    if (bytes.length === 0 || bytes.length > datagramBytesMax) {
      return Promise.reject(
        new Error(
          `transport: a datagram must be 1..${datagramBytesMax} bytes, got ${bytes.length}`,
        ),
      );
    }
    if (!this.listening)
      return Promise.reject(new Error('SimTransport.send: not started, or closed'));
    this.counts.sent++;
    this.segment.send(this, bytes);
    return Promise.resolve();
  }

  deliver(bytes: Uint8Array, from: DatagramSource): void {
    if (!this.listening) return;
    this.counts.received++;
    this.handler!(bytes, from);
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  stats(): TransportStats {
    return { ...this.counts };
  }
}
