// The heartbeat transport contract (test/transport-contract.ts) run against both transports:
// the memory segment, and real UDP multicast between network namespaces. A test process cannot
// enter a namespace, so each UDP endpoint is the real UdpTransport (from dist/, built by
// test/global-setup.ts) running in its own namespace under `ip netns exec`, driven over
// stdin/stdout by a thin proxy that implements Transport. The UDP part needs root; it is
// skipped visibly otherwise, and fails instead when NLB_REQUIRE_LAB=1.
//
// Topology (all 198.18.7.0/24, inside namespaces this file creates and always removes):
// a switch namespace with a bridge, and one namespace per endpoint whose eth0 carries the
// dedicated IP 198.18.7.(10+i)/24 and, added first, a cluster IP 198.18.7.100/32 on every
// endpoint, as nlbd leaves it: the contract's "from the sender address" then proves that
// heartbeats leave from the dedicated IP, never from the cluster IP.
import { type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireLabTestLock } from '../src/lab/lock.js';
import {
  type DatagramHandler,
  MemoryNetwork,
  type Transport,
  type TransportStats,
} from '../src/daemon/transport.js';
import { Namespaces, isRoot } from './dataplane-netns.js';
import { SimSegment } from './support/sim-transport.js';
import { type Endpoint, type TransportHarness, transportContract } from './transport-contract.js';
import { declareRootRequirement } from './support/root.js';

// ------------------------------------------------------------------------------------ memory

transportContract('memory', (): TransportHarness => {
  let open: Transport[] = [];
  return {
    deliveryWaitMs: 500,
    silenceWaitMs: 20,
    create(count) {
      const network = new MemoryNetwork();
      const endpoints = Array.from({ length: count }, (_, i) => {
        const address = `198.18.7.${11 + i}`;
        return { transport: network.transport(address), address };
      });
      open = endpoints.map((e) => e.transport);
      return Promise.resolve(endpoints);
    },
    async cleanup() {
      await Promise.all(open.map((t) => t.close()));
      open = [];
    },
  };
});

// ------------------------------------------------------------------------- simulator network

transportContract('simulator network', (): TransportHarness => {
  let open: Transport[] = [];
  return {
    deliveryWaitMs: 500,
    silenceWaitMs: 20,
    create(count) {
      const segment = new SimSegment(count);
      const endpoints = Array.from({ length: count }, (_, i) => {
        const address = `198.18.7.${11 + i}`;
        return { transport: segment.transport(address), address };
      });
      open = endpoints.map((e) => e.transport);
      return Promise.resolve(endpoints);
    },
    async cleanup() {
      await Promise.all(open.map((t) => t.close()));
      open = [];
    },
  };
});

// --------------------------------------------------------------------------------------- UDP

declareRootRequirement('transport-contract (udp)', 'the UDP transport tests need root');

const transportModule = path.join(
  fileURLToPath(new URL('..', import.meta.url)),
  'dist',
  'daemon',
  'transport.js',
);
const group = '239.255.78.76';
const port = 2505;
const answerWaitMs = 5_000;

/**
 * The endpoint side: a UdpTransport (multicast to the group) or a UnicastTransport (to the
 * peers, comma-separated) driven by one JSON command per stdin line.
 */
const endpointScript = `
const [modulePath, dedicatedIp, group, port, peers] = process.argv.slice(1);
const { UdpTransport, UnicastTransport } = await import(modulePath);
const t = peers === 'multicast'
  ? new UdpTransport({ dedicatedIp, group, port: Number(port) })
  : new UnicastTransport({ dedicatedIp, port: Number(port), peers: peers.split(',') });
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const readline = await import('node:readline');
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const c = JSON.parse(line);
  try {
    if (c.op === 'start') {
      await t.start((bytes, from) => out({ event: 'datagram', hex: Buffer.from(bytes).toString('hex'), from }));
    } else if (c.op === 'send') {
      await t.send(Uint8Array.from(Buffer.from(c.hex, 'hex')));
    } else if (c.op === 'close') {
      await t.close();
    } else if (c.op === 'stats') {
      out({ id: c.id, event: 'done', stats: t.stats() });
      return;
    }
    out({ id: c.id, event: 'done' });
  } catch (error) {
    out({ id: c.id, event: 'failed', message: String(error && error.message) });
  }
});
out({ event: 'ready' });
`;

interface Answer {
  readonly id?: number;
  readonly event: string;
  readonly message?: string;
  readonly stats?: TransportStats;
  readonly hex?: string;
  readonly from?: { address: string; port: number };
}

/** Implements Transport by forwarding to the endpoint script in a namespace. */
class RemoteTransport implements Transport {
  private nextId = 1;
  private readonly waiting = new Map<number, (answer: Answer) => void>();
  private handler: DatagramHandler | undefined;
  private lastStats: TransportStats = { sent: 0, received: 0, sendErrors: 0, oversize: 0 };
  readonly ready: Promise<void>;

  constructor(private readonly child: ChildProcessWithoutNullStreams) {
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += String(chunk)));
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`endpoint did not start: ${stderr}`)),
        answerWaitMs,
      );
      createInterface({ input: child.stdout }).on('line', (line) => {
        const answer = JSON.parse(line) as Answer;
        if (answer.event === 'ready') {
          clearTimeout(timer);
          resolve();
        } else if (answer.event === 'datagram') {
          this.handler?.(Uint8Array.from(Buffer.from(answer.hex!, 'hex')), answer.from!);
        } else if (answer.id !== undefined) {
          this.waiting.get(answer.id)?.(answer);
          this.waiting.delete(answer.id);
        }
      });
    });
  }

  private call(command: Record<string, unknown>): Promise<Answer> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`endpoint did not answer ${String(command.op)}`)),
        answerWaitMs,
      );
      this.waiting.set(id, (answer) => {
        clearTimeout(timer);
        if (answer.event === 'failed') reject(new Error(answer.message));
        else resolve(answer);
      });
      this.child.stdin.write(`${JSON.stringify({ ...command, id })}\n`);
    });
  }

  async start(onDatagram: DatagramHandler): Promise<void> {
    this.handler = onDatagram;
    await this.call({ op: 'start' });
  }

  async send(bytes: Uint8Array): Promise<void> {
    await this.call({ op: 'send', hex: Buffer.from(bytes).toString('hex') });
  }

  async close(): Promise<void> {
    await this.call({ op: 'close' });
  }

  stats(): TransportStats {
    return this.lastStats;
  }

  /** The contract reads this when present: the counters live in the endpoint process. */
  async remoteStats(): Promise<TransportStats> {
    this.lastStats = (await this.call({ op: 'stats' })).stats!;
    return this.lastStats;
  }
}

describe.runIf(isRoot)('UDP transports (multicast, unicast) between network namespaces', () => {
  const namespaces = new Namespaces();
  const endpointsMax = 3;
  const hosts: string[] = [];
  let releaseLock: (() => void) | undefined;

  beforeAll(async () => {
    releaseLock = await acquireLabTestLock();
    const sw = namespaces.add('sw');
    namespaces.ip(sw, ['link', 'add', 'br0', 'type', 'bridge']);
    namespaces.ip(sw, ['link', 'set', 'br0', 'up']);
    for (let i = 1; i <= endpointsMax; i++) {
      const host = namespaces.add(`h${i}`);
      hosts.push(host);
      namespaces.ip(sw, [
        'link',
        'add',
        `p${i}`,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'netns',
        host,
      ]);
      namespaces.ip(sw, ['link', 'set', `p${i}`, 'master', 'br0']);
      namespaces.ip(sw, ['link', 'set', `p${i}`, 'up']);
      namespaces.ip(host, ['address', 'add', '198.18.7.100/32', 'dev', 'eth0']);
      namespaces.ip(host, ['address', 'add', `198.18.7.${10 + i}/24`, 'dev', 'eth0']);
      namespaces.ip(host, ['link', 'set', 'eth0', 'up']);
    }
  });

  afterAll(() => {
    try {
      namespaces.removeAll();
    } finally {
      releaseLock?.();
    }
  });

  it('set up the namespaces', () => {
    expect(hosts).toHaveLength(endpointsMax);
  });

  /** Endpoints in the namespaces: multicast, or unicast to every endpoint's address. */
  const udpHarness = (kind: 'multicast' | 'unicast') => (): TransportHarness => {
    let open: { transport: RemoteTransport; child: ChildProcessWithoutNullStreams }[] = [];
    return {
      deliveryWaitMs: 2_000,
      silenceWaitMs: 150,
      async create(count): Promise<Endpoint[]> {
        if (count > endpointsMax) throw new Error(`at most ${endpointsMax} endpoints`);
        const endpoints: Endpoint[] = [];
        const addresses = Array.from({ length: count }, (_, i) => `198.18.7.${11 + i}`);
        for (let i = 0; i < count; i++) {
          const address = addresses[i]!;
          const child = namespaces.spawn(hosts[i]!, [
            process.execPath,
            '--input-type=module',
            '-e',
            endpointScript,
            transportModule,
            address,
            group,
            String(port),
            kind === 'multicast' ? 'multicast' : addresses.join(','),
          ]);
          const transport = new RemoteTransport(child);
          open.push({ transport, child });
          endpoints.push({ transport, address });
        }
        await Promise.all(open.map((o) => o.transport.ready));
        return endpoints;
      },
      async cleanup() {
        for (const { child } of open) {
          child.kill('SIGKILL');
          await new Promise((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) resolve(undefined);
            else child.once('exit', resolve);
          });
        }
        open = [];
      },
    };
  };

  transportContract('udp multicast', udpHarness('multicast'));
  transportContract('udp unicast to the peers', udpHarness('unicast'));
});
