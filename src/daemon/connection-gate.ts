// Who gets a connection to nlbd's request/answer listeners (the control socket, remote control,
// the metrics listener), and for how long. Each of them takes one request per connection and
// closes after the answer, so a connection goes through these states:
//
//   waiting    accepted, its request not complete yet: an absolute deadline from accept
//              (`requestDeadlineMs`), however slowly or steadily its bytes trickle in
//   busy       the request is complete and being handled: never evicted, and no deadline
//              unless `busyDeadlineMs` gives one (for remote control only a request with the
//              right token stays busy for more than an instant; the token is checked first)
//   answered   the answer is written and the connection ends: closed after `answerDeadlineMs`
//              at the latest, whether or not the client reads and closes
//   streaming  `nlb events --follow` after its answer: no deadline, never evicted, not counted
//              against its peer (nlbd keeps at most `followersMax` of them, events.ts)
//
// A full gate never turns a new connection away: it evicts an answered connection (it has its
// answer) or else the oldest waiting connection of the peer that holds the most waiting ones,
// so a new connection always gets its chance to send its request. A peer (an IPv4 address, an
// IPv6 /64: what one machine or one customer of a provider typically holds) may hold at most
// `perPeerMax` connections that are not streaming; one more is refused at once, and the caller
// answers it with a refusal. The unix socket has no peers (root only): no per-peer cap there.
//
// What this guarantees to a client with the token, against clients without it: its request is
// read as soon as its line arrives, within `requestDeadlineMs` of connecting, unless the others
// open at least `connectionsMax - followersMax - 1` connections from as many distinct peers
// (each holding just one, else one of theirs is evicted first) between its connect and its
// request line, which is one round trip for a real client. Busy connections are the only other
// ones that are never evicted, and only a request with the token stays busy.
import type net from 'node:net';
import ipaddr from 'ipaddr.js';

export interface GateLimits {
  /** Connections held at once, in every state; at this many a new one evicts another. */
  readonly connectionsMax: number;
  /** Connections one peer may hold that are not streaming; one more is refused. */
  readonly perPeerMax: number;
  /** From accept to a complete request. */
  readonly requestDeadlineMs: number;
  /** From the answer to the end of the connection. */
  readonly answerDeadlineMs: number;
  /** From the complete request to the answer; none when undefined (see `busy` above). */
  readonly busyDeadlineMs?: number;
}

type ConnectionState = 'waiting' | 'busy' | 'answered' | 'streaming';

interface Connection {
  readonly socket: net.Socket;
  /** The peer it counts against; undefined on a unix socket. */
  readonly peer: string | undefined;
  state: ConnectionState;
  timer: NodeJS.Timeout | undefined;
}

/** What `admit` did with a new connection. */
export type Admission =
  /** Admitted: it may send its request. */
  | 'admitted'
  /** Its peer holds `perPeerMax` already: the caller writes a refusal, the gate ends it. */
  | 'refused'
  /** Full of connections that may not be evicted (or a refused peer on a full gate): closed. */
  | 'dropped';

export interface GateStats {
  readonly evicted: number;
  readonly refused: number;
  readonly dropped: number;
  readonly expired: number;
}

/**
 * The peer a connection counts against: its IPv4 address (an IPv4-mapped IPv6 address counts
 * as the IPv4 one), or the /64 of its IPv6 address; undefined on a unix socket.
 */
export function peerOf(socket: net.Socket): string | undefined {
  const remote = socket.remoteAddress;
  if (remote === undefined || !ipaddr.isValid(remote)) {
    return undefined;
  }
  const address = ipaddr.process(remote);
  if (address.kind() === 'ipv4') {
    return address.toString();
  }
  const bytes = address.toByteArray();
  bytes.fill(0, 8);
  return `${ipaddr.fromByteArray(bytes).toString()}/64`;
}

export class ConnectionGate {
  /** In order of arrival (a Map keeps insertion order): the first found is the oldest. */
  private readonly connections = new Map<net.Socket, Connection>();
  /** Connections per peer that are not streaming. */
  private readonly perPeer = new Map<string, number>();
  private stats = { evicted: 0, refused: 0, dropped: 0, expired: 0 };

  constructor(readonly limits: GateLimits) {
    if (!(limits.perPeerMax >= 1 && limits.connectionsMax > limits.perPeerMax)) {
      throw new Error(`ConnectionGate: bad limits ${JSON.stringify(limits)}`);
    }
  }

  get size(): number {
    return this.connections.size;
  }

  get counts(): GateStats {
    return { ...this.stats };
  }

  /** Takes a new connection in (see Admission); the gate closes it when its time is up. */
  admit(socket: net.Socket): Admission {
    const peer = peerOf(socket);
    const refused = peer !== undefined && (this.perPeer.get(peer) ?? 0) >= this.limits.perPeerMax;
    // A refused connection never evicts anyone: it would let a peer over its cap push others out.
    if (this.connections.size >= this.limits.connectionsMax && (refused || !this.evictOne())) {
      this.stats.dropped++;
      socket.destroy();
      return 'dropped';
    }
    const connection: Connection = {
      socket,
      peer,
      state: refused ? 'answered' : 'waiting',
      timer: undefined,
    };
    this.connections.set(socket, connection);
    if (peer !== undefined) {
      this.perPeer.set(peer, (this.perPeer.get(peer) ?? 0) + 1);
    }
    this.expireAfter(
      connection,
      refused ? this.limits.answerDeadlineMs : this.limits.requestDeadlineMs,
    );
    socket.once('close', () => this.forget(socket));
    if (refused) {
      this.stats.refused++;
      return 'refused';
    }
    return 'admitted';
  }

  /**
   * The request is complete: it is handled with `busyDeadlineMs` (if any) to answer. False when
   * the connection is not waiting for one (evicted, expired, refused, or a second request on
   * it): do not handle it.
   */
  requestReceived(socket: net.Socket): boolean {
    if (this.connections.get(socket)?.state !== 'waiting') {
      return false;
    }
    this.move(socket, 'waiting', 'busy', this.limits.busyDeadlineMs);
    return true;
  }

  /** The answer is written: the connection ends within `answerDeadlineMs`. */
  answered(socket: net.Socket): void {
    this.move(socket, 'busy', 'answered', this.limits.answerDeadlineMs);
  }

  /** The answer is followed by a stream: no deadline, and it no longer counts against its peer. */
  streaming(socket: net.Socket): void {
    const connection = this.move(socket, 'busy', 'streaming', undefined);
    if (connection !== undefined) {
      this.release(connection.peer);
    }
  }

  /** Closes every connection (the listener is closing). */
  closeAll(): void {
    for (const socket of [...this.connections.keys()]) {
      this.forget(socket);
      socket.destroy();
    }
  }

  private move(
    socket: net.Socket,
    from: ConnectionState,
    to: ConnectionState,
    deadlineMs: number | undefined,
  ): Connection | undefined {
    const connection = this.connections.get(socket);
    // Evicted or expired meanwhile: its socket is destroyed, nothing to move.
    if (connection === undefined) {
      return undefined;
    }
    if (connection.state !== from) {
      throw new Error(`ConnectionGate: a ${connection.state} connection cannot become ${to}`);
    }
    connection.state = to;
    clearTimeout(connection.timer);
    connection.timer = undefined;
    if (deadlineMs !== undefined) {
      this.expireAfter(connection, deadlineMs);
    }
    return connection;
  }

  private expireAfter(connection: Connection, deadlineMs: number): void {
    const timer = setTimeout(() => {
      // Timers run before I/O in each turn of the event loop: when nlbd was busy past the
      // deadline, a request that arrived in time may still be unread. It is read in this turn's
      // I/O phase, before setImmediate runs; expire only if that did not move the connection.
      setImmediate(() => {
        if (connection.timer !== timer || this.connections.get(connection.socket) !== connection) {
          return;
        }
        this.stats.expired++;
        this.forget(connection.socket);
        connection.socket.destroy();
      });
    }, deadlineMs);
    connection.timer = timer;
  }

  /**
   * Makes room: closes the oldest answered connection, or else the oldest waiting connection of
   * the peer holding the most waiting ones. False when every connection is busy or streaming.
   */
  private evictOne(): boolean {
    let victim: Connection | undefined;
    for (const connection of this.connections.values()) {
      if (connection.state === 'answered') {
        victim = connection;
        break;
      }
    }
    if (victim === undefined) {
      const waiting = new Map<string | undefined, number>();
      for (const c of this.connections.values()) {
        if (c.state === 'waiting') waiting.set(c.peer, (waiting.get(c.peer) ?? 0) + 1);
      }
      let most = 0;
      for (const c of this.connections.values()) {
        const count = c.state === 'waiting' ? waiting.get(c.peer)! : 0;
        if (count > most) {
          most = count;
          victim = c;
        }
      }
    }
    if (victim === undefined) {
      return false;
    }
    this.stats.evicted++;
    this.forget(victim.socket);
    victim.socket.destroy();
    return true;
  }

  /** Drops a connection from the books (at once: its 'close' event comes later). */
  private forget(socket: net.Socket): void {
    const connection = this.connections.get(socket);
    if (connection === undefined) {
      return;
    }
    clearTimeout(connection.timer);
    this.connections.delete(socket);
    if (connection.state !== 'streaming') {
      this.release(connection.peer);
    }
  }

  private release(peer: string | undefined): void {
    if (peer === undefined) return;
    const count = (this.perPeer.get(peer) ?? 0) - 1;
    if (count > 0) this.perPeer.set(peer, count);
    else this.perPeer.delete(peer);
  }
}
