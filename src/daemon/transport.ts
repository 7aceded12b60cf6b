// The heartbeat transport: how one host's datagrams reach every other host of the cluster and
// theirs reach it. The implementations pass one contract suite (test/transport-contract.ts):
//   UdpTransport     UDP multicast on the cluster interface (node:dgram), what nlbd uses;
//   UnicastTransport UDP unicast to the configured peers (cluster.heartbeat.peers), for networks
//                    that carry no multicast between the hosts;
//   MemoryTransport  an in-process segment (MemoryNetwork), for daemon unit tests.
// The contract (docs/protocol.md#transport): a datagram one endpoint sends reaches every
// other started endpoint of its segment byte for byte, never the sender itself; nothing is
// delivered after close; datagrams over `datagramBytesMax` are neither sent nor delivered.
// Delivery is best effort (UDP may lose a datagram); the protocol copes with loss.
import dgram from 'node:dgram';
import { datagramBytesMax } from '../core/heartbeat-size.js';
import type { TransportView } from '../control/protocol.js';

/** Where a datagram came from: the sender's dedicated IP and UDP port. */
export interface DatagramSource {
  readonly address: string;
  readonly port: number;
}

export type DatagramHandler = (bytes: Uint8Array, from: DatagramSource) => void;

/** What the transport counts; its shape is the control protocol's (`params`). */
export type TransportStats = TransportView;

export interface Transport {
  /** Starts receiving; `onDatagram` is called once per datagram. Call once. */
  start(onDatagram: DatagramHandler): Promise<void>;
  /** Sends one datagram to every other host; resolves once the kernel (or segment) took it. */
  send(bytes: Uint8Array): Promise<void>;
  /** Stops receiving and sending; safe to call twice. */
  close(): Promise<void>;
  stats(): TransportStats;
}

/**
 * A datagram too large to send is a bug in the caller (the codec never produces one); it is
 * refused as a rejected promise, so callers handle every send failure in one place.
 */
function sendableProblem(bytes: Uint8Array): Error | undefined {
  return bytes.length === 0 || bytes.length > datagramBytesMax
    ? new Error(`transport: a datagram must be 1..${datagramBytesMax} bytes, got ${bytes.length}`)
    : undefined;
}

// ------------------------------------------------------------------------------------ memory

/**
 * One broadcast segment in memory. Delivery is asynchronous (a later turn of the event loop),
 * as on a wire, so a handler never runs inside the sender's call.
 */
export class MemoryNetwork {
  private readonly members = new Set<MemoryTransport>();
  private nextPort = 40_000;

  /** A new endpoint on this segment, reporting `address` as its source. */
  transport(address: string): MemoryTransport {
    return new MemoryTransport(this, address, this.nextPort++);
  }

  /** @internal */
  join(member: MemoryTransport): void {
    this.members.add(member);
  }

  /** @internal */
  leave(member: MemoryTransport): void {
    this.members.delete(member);
  }

  /** @internal */
  broadcast(from: MemoryTransport, bytes: Uint8Array): void {
    const source = { address: from.address, port: from.port };
    for (const member of this.members) {
      if (member !== from) {
        // Each receiver gets its own copy, as each host gets its own frame.
        const copy = Uint8Array.from(bytes);
        setImmediate(() => member.deliver(copy, source));
      }
    }
  }
}

export class MemoryTransport implements Transport {
  private handler: DatagramHandler | undefined;
  private closed = false;
  private counts = { sent: 0, received: 0, sendErrors: 0, oversize: 0 };

  constructor(
    private readonly network: MemoryNetwork,
    readonly address: string,
    readonly port: number,
  ) {}

  start(onDatagram: DatagramHandler): Promise<void> {
    if (this.handler !== undefined || this.closed) {
      throw new Error('MemoryTransport.start: already started or closed');
    }
    this.handler = onDatagram;
    this.network.join(this);
    return Promise.resolve();
  }

  send(bytes: Uint8Array): Promise<void> {
    const problem = sendableProblem(bytes);
    if (problem !== undefined) {
      return Promise.reject(problem);
    }
    if (this.closed || this.handler === undefined) {
      return Promise.reject(new Error('MemoryTransport.send: not started, or closed'));
    }
    this.counts.sent++;
    this.network.broadcast(this, bytes);
    return Promise.resolve();
  }

  /** @internal */
  deliver(bytes: Uint8Array, from: DatagramSource): void {
    if (this.closed || this.handler === undefined) {
      return;
    }
    this.counts.received++;
    this.handler(bytes, from);
  }

  close(): Promise<void> {
    this.closed = true;
    this.network.leave(this);
    return Promise.resolve();
  }

  stats(): TransportStats {
    return { ...this.counts };
  }
}

/** What a transport counts, as it counts it. */
type Counts = { -readonly [K in keyof TransportStats]: TransportStats[K] };

/** Binds `socket` to address:port; a port in use or a bad address is a TransportError with its fix. */
function bindHeartbeatSocket(
  socket: dgram.Socket,
  address: string,
  port: number,
  badAddressHint: string,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const fail = (error: NodeJS.ErrnoException): void => {
      socket.close();
      reject(
        error.code === 'EADDRINUSE'
          ? new TransportError(
              `heartbeat port ${address}:${port} is already in use in this network namespace`,
              'is another nlbd running here? stop it, or give this cluster another heartbeat.port',
            )
          : new TransportError(
              `cannot bind the heartbeat socket to ${address}:${port}: ${error.message}`,
              badAddressHint,
            ),
      );
    };
    socket.once('error', fail);
    socket.bind({ address, port }, () => {
      socket.off('error', fail);
      resolve();
    });
  });
}

/**
 * Hands every datagram of `socket` to `onDatagram` (none once `closed()`; an oversize one only
 * counted). After start, socket errors are per-datagram (ICMP feedback) and never fatal.
 */
function receiveHeartbeats(
  socket: dgram.Socket,
  counts: Counts,
  closed: () => boolean,
  onDatagram: DatagramHandler,
): void {
  socket.on('message', (message, rinfo) => {
    if (closed()) return;
    if (message.length > datagramBytesMax) {
      counts.oversize++;
      return;
    }
    counts.received++;
    onDatagram(new Uint8Array(message), { address: rinfo.address, port: rinfo.port });
  });
  socket.on('error', () => {
    counts.sendErrors++;
  });
}

// --------------------------------------------------------------------------------------- UDP

export interface UdpTransportOptions {
  /** The host's dedicated IP on the cluster interface: joins, multicast interface and source. */
  readonly dedicatedIp: string;
  /** The heartbeat group (IPv4 multicast) and port, from cluster.heartbeat. */
  readonly group: string;
  readonly port: number;
}

/** Why the transport could not start, with the fix; the daemon prints both and refuses to run. */
export class TransportError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'TransportError';
  }
}

/**
 * UDP multicast on the cluster interface. The socket is bound to the group address and port,
 * so it receives only heartbeats (not unicast to the port, nor other groups some other socket
 * joined on this port); it joins the group on the dedicated IP, sends through that interface with
 * TTL 1 (heartbeats never leave the segment) and without loopback (a host never hears itself).
 * Bound to a multicast address, the kernel takes the source address from the multicast interface,
 * so heartbeats leave from the dedicated IP even when the interface also carries cluster IPs: sent
 * from a cluster IP every peer would drop them (docs/protocol.md#transport).
 */
export class UdpTransport implements Transport {
  private socket: dgram.Socket | undefined;
  private closed = false;
  private counts = { sent: 0, received: 0, sendErrors: 0, oversize: 0 };

  constructor(private readonly options: UdpTransportOptions) {}

  async start(onDatagram: DatagramHandler): Promise<void> {
    if (this.socket !== undefined || this.closed) {
      throw new Error('UdpTransport.start: already started or closed');
    }
    const { dedicatedIp, group, port } = this.options;
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    this.socket = socket;
    await bindHeartbeatSocket(socket, group, port, 'check cluster.heartbeat.group and port');
    try {
      socket.addMembership(group, dedicatedIp);
      socket.setMulticastInterface(dedicatedIp);
      socket.setMulticastTTL(1);
      socket.setMulticastLoopback(false);
    } catch (error) {
      socket.close();
      throw new TransportError(
        `cannot join heartbeat group ${group} on ${dedicatedIp}: ${(error as Error).message}`,
        `host.dedicatedIp (${dedicatedIp}) must be an address of the cluster interface, and the interface must be up`,
      );
    }
    receiveHeartbeats(socket, this.counts, () => this.closed, onDatagram);
  }

  send(bytes: Uint8Array): Promise<void> {
    const problem = sendableProblem(bytes);
    if (problem !== undefined) {
      return Promise.reject(problem);
    }
    const socket = this.socket;
    if (socket === undefined || this.closed) {
      return Promise.reject(new Error('UdpTransport.send: not started, or closed'));
    }
    return new Promise((resolve, reject) => {
      socket.send(bytes, this.options.port, this.options.group, (error) => {
        if (error) {
          this.counts.sendErrors++;
          reject(error);
        } else {
          this.counts.sent++;
          resolve();
        }
      });
    });
  }

  close(): Promise<void> {
    if (this.closed) {
      return Promise.resolve();
    }
    this.closed = true;
    const socket = this.socket;
    if (socket === undefined) {
      return Promise.resolve();
    }
    return new Promise((resolve) => socket.close(() => resolve()));
  }

  stats(): TransportStats {
    return { ...this.counts };
  }
}

// ----------------------------------------------------------------------------------- unicast

export interface UnicastTransportOptions {
  /** The host's dedicated IP: the socket is bound to it, so heartbeats leave from it. */
  readonly dedicatedIp: string;
  /** The heartbeat port, from cluster.heartbeat. */
  readonly port: number;
  /** The dedicated IPs of the cluster's hosts (cluster.heartbeat.peers); this host's is skipped. */
  readonly peers: readonly string[];
}

/**
 * UDP unicast to a configured list of peers (cluster.heartbeat.peers): for networks that do not
 * carry multicast between the hosts, such as a routed cluster whose hosts sit in different
 * subnets (a TTL-1 multicast heartbeat cannot cross a router). Each heartbeat is one datagram
 * per peer. The socket is bound to the dedicated IP and the heartbeat port: heartbeats leave
 * from the dedicated IP and arrive only there. Authentication and replay protection are the
 * protocol's, as with multicast (a unicast socket hears whoever sends to it).
 */
export class UnicastTransport implements Transport {
  private socket: dgram.Socket | undefined;
  private closed = false;
  private counts = { sent: 0, received: 0, sendErrors: 0, oversize: 0 };
  private readonly peers: readonly string[];

  constructor(private readonly options: UnicastTransportOptions) {
    this.peers = [...new Set(options.peers)].filter((peer) => peer !== options.dedicatedIp);
  }

  async start(onDatagram: DatagramHandler): Promise<void> {
    if (this.socket !== undefined || this.closed) {
      throw new Error('UnicastTransport.start: already started or closed');
    }
    const { dedicatedIp, port } = this.options;
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    this.socket = socket;
    await bindHeartbeatSocket(
      socket,
      dedicatedIp,
      port,
      `host.dedicatedIp (${dedicatedIp}) must be an address of this host, and the port free`,
    );
    receiveHeartbeats(socket, this.counts, () => this.closed, onDatagram);
  }

  /** One datagram to every peer; resolves once the kernel took them all, rejects if any failed. */
  async send(bytes: Uint8Array): Promise<void> {
    const problem = sendableProblem(bytes);
    if (problem !== undefined) throw problem;
    const socket = this.socket;
    if (socket === undefined || this.closed) {
      throw new Error('UnicastTransport.send: not started, or closed');
    }
    const results = await Promise.allSettled(
      this.peers.map(
        (peer) =>
          new Promise<void>((resolve, reject) => {
            socket.send(bytes, this.options.port, peer, (error) => {
              if (error) {
                this.counts.sendErrors++;
                reject(error);
              } else {
                resolve();
              }
            });
          }),
      ),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason as Error;
    this.counts.sent++;
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    const socket = this.socket;
    if (socket === undefined) return Promise.resolve();
    return new Promise((resolve) => socket.close(() => resolve()));
  }

  stats(): TransportStats {
    return { ...this.counts };
  }
}
