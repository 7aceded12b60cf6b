// The one contract every heartbeat transport passes (docs/architecture.md#contract-suites, after
// libp2p's interface-compliance-tests): the memory transport the daemon tests use and the real UDP
// multicast transport nlbd uses run exactly these tests, so a daemon test on memory says something
// about the daemon on UDP.
import { afterEach, describe, expect, it } from 'vitest';
import { datagramBytesMax } from '../src/core/heartbeat-size.js';
import type { DatagramSource, Transport } from '../src/daemon/transport.js';

export interface Endpoint {
  readonly transport: Transport;
  /** The source address peers see on its datagrams (its dedicated IP). */
  readonly address: string;
}

export interface TransportHarness {
  /** `count` endpoints on one segment, none started. */
  create(count: number): Promise<Endpoint[]>;
  /** Closes whatever create made; called after every test. */
  cleanup(): Promise<void>;
  /** How long a test waits for a datagram that should arrive. */
  readonly deliveryWaitMs: number;
  /** How long a test waits to conclude that a datagram will not arrive. */
  readonly silenceWaitMs: number;
}

interface Received {
  readonly bytes: Uint8Array;
  readonly from: DatagramSource;
}

class Inbox {
  readonly items: Received[] = [];
  readonly handler = (bytes: Uint8Array, from: DatagramSource): void => {
    this.items.push({ bytes: Uint8Array.from(bytes), from });
  };
}

async function until(condition: () => boolean, waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  while (!condition() && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function payload(tag: number, length = 64): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (tag * 31 + i) & 0xff);
}

export function transportContract(name: string, makeHarness: () => TransportHarness): void {
  describe(`Transport contract: ${name}`, () => {
    const harness = makeHarness();

    afterEach(async () => {
      await harness.cleanup();
    });

    async function started(count: number): Promise<{ endpoints: Endpoint[]; inboxes: Inbox[] }> {
      const endpoints = await harness.create(count);
      const inboxes = endpoints.map(() => new Inbox());
      await Promise.all(endpoints.map((e, i) => e.transport.start(inboxes[i]!.handler)));
      return { endpoints, inboxes };
    }

    it('delivers a datagram byte for byte, from the sender address', async () => {
      const { endpoints, inboxes } = await started(2);
      const bytes = payload(1, 200);
      await endpoints[0]!.transport.send(bytes);
      await until(() => inboxes[1]!.items.length > 0, harness.deliveryWaitMs);
      expect(inboxes[1]!.items).toHaveLength(1);
      expect(Buffer.from(inboxes[1]!.items[0]!.bytes).equals(Buffer.from(bytes))).toBe(true);
      expect(inboxes[1]!.items[0]!.from.address).toBe(endpoints[0]!.address);
    });

    it('reaches every other started endpoint and never the sender', async () => {
      const { endpoints, inboxes } = await started(3);
      await endpoints[1]!.transport.send(payload(2));
      await until(
        () => inboxes[0]!.items.length > 0 && inboxes[2]!.items.length > 0,
        harness.deliveryWaitMs,
      );
      await new Promise((resolve) => setTimeout(resolve, harness.silenceWaitMs));
      expect(inboxes.map((inbox) => inbox.items.length)).toEqual([1, 0, 1]);
      expect(inboxes[0]!.items[0]!.from.address).toBe(endpoints[1]!.address);
      expect(inboxes[2]!.items[0]!.from.address).toBe(endpoints[1]!.address);
    });

    it('keeps the order of one sender', async () => {
      const { endpoints, inboxes } = await started(2);
      const count = 20;
      for (let tag = 0; tag < count; tag++) {
        await endpoints[0]!.transport.send(payload(tag, 16));
      }
      await until(() => inboxes[1]!.items.length >= count, harness.deliveryWaitMs);
      expect(inboxes[1]!.items.map((item) => item.bytes[0])).toEqual(
        Array.from({ length: count }, (_, tag) => payload(tag, 16)[0]),
      );
    });

    it(`carries the largest datagram (${datagramBytesMax} bytes) and refuses larger or empty ones`, async () => {
      const { endpoints, inboxes } = await started(2);
      await endpoints[0]!.transport.send(payload(3, datagramBytesMax));
      await until(() => inboxes[1]!.items.length > 0, harness.deliveryWaitMs);
      expect(inboxes[1]!.items[0]?.bytes.length).toBe(datagramBytesMax);
      await expect(endpoints[0]!.transport.send(payload(4, datagramBytesMax + 1))).rejects.toThrow(
        /1\.\.1400 bytes/,
      );
      await expect(endpoints[0]!.transport.send(new Uint8Array(0))).rejects.toThrow();
      await new Promise((resolve) => setTimeout(resolve, harness.silenceWaitMs));
      expect(inboxes[1]!.items).toHaveLength(1);
    });

    it('delivers nothing to an endpoint that has not started', async () => {
      const endpoints = await harness.create(3);
      const inboxes = [new Inbox(), new Inbox()];
      await endpoints[0]!.transport.start(inboxes[0]!.handler);
      await endpoints[1]!.transport.start(inboxes[1]!.handler);
      await endpoints[0]!.transport.send(payload(5));
      await until(() => inboxes[1]!.items.length > 0, harness.deliveryWaitMs);
      expect(inboxes[1]!.items).toHaveLength(1);
      // The third endpoint starts only now: what was sent before is not replayed to it.
      const late = new Inbox();
      await endpoints[2]!.transport.start(late.handler);
      await new Promise((resolve) => setTimeout(resolve, harness.silenceWaitMs));
      expect(late.items).toHaveLength(0);
    });

    it('after close: delivers nothing, and send rejects; closing twice is fine', async () => {
      const { endpoints, inboxes } = await started(2);
      await endpoints[1]!.transport.close();
      await endpoints[1]!.transport.close();
      await endpoints[0]!.transport.send(payload(6));
      await new Promise((resolve) => setTimeout(resolve, harness.silenceWaitMs));
      expect(inboxes[1]!.items).toHaveLength(0);
      await expect(endpoints[1]!.transport.send(payload(7))).rejects.toThrow();
    });

    it('counts what it sent and received', async () => {
      const { endpoints, inboxes } = await started(2);
      await endpoints[0]!.transport.send(payload(8));
      await endpoints[0]!.transport.send(payload(9));
      await until(() => inboxes[1]!.items.length >= 2, harness.deliveryWaitMs);
      expect(await statsOf(endpoints[0]!.transport)).toMatchObject({ sent: 2, sendErrors: 0 });
      expect(await statsOf(endpoints[1]!.transport)).toMatchObject({ received: 2, sent: 0 });
    });
  });
}

/** stats() is synchronous on a local transport; a remote proxy may answer asynchronously. */
async function statsOf(transport: Transport): Promise<unknown> {
  const remote = transport as Transport & { remoteStats?: () => Promise<unknown> };
  return remote.remoteStats !== undefined ? remote.remoteStats() : transport.stats();
}
