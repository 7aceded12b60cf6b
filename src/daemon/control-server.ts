// The control socket: a unix socket, mode 0600 (root only, like the data plane it controls),
// framing the control protocol of control.ts: one JSON request line in, one JSON response line
// out, then close; for `events --follow`, new events follow the response as JSON lines until the
// client closes. The path names the cluster and the host id, because in a lab every host's
// nlbd shares /run while living in its own network namespace. The same framing serves the
// optional TCP listener of remote control (remote.ts: `listenTcp`, with a token check in front).
//
// Who may connect and for how long is connection-gate.ts's job: the request line must be
// complete within `requestDeadlineMs` of connecting, the connection ends after the answer, a
// TCP peer holds at most `perPeerMax`, and a full listener evicts a connection that
// has not sent its request yet rather than turning the new one away. That way clients without
// the token, trickling bytes or holding connections open, cannot keep an operator with it out.
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ConnectionGate, type GateLimits, type GateStats, peerOf } from './connection-gate.js';
import { type ControlResponse, parseRequestLine, requestBytesMax } from '../control/protocol.js';
import { type ControlAnswer, type ControlStream } from './control.js';
import { controlRequest } from '../control/client.js';
import { followersMax } from './events.js';

export { defaultSocketPath, runDirDefault } from './paths.js';

/**
 * The limits of a control listener. `nlb` sends its request line as soon as it is connected, so
 * 2 s from accept to a complete line is many round trips even on a slow management network; an
 * answer is a few kilobytes, delivered well within 5 s to a client that reads it. Control
 * clients are people and scripts, a handful at a time: 8 per peer leaves room for an operator's
 * parallel commands, and 64 in all holds the 16 followers events.ts allows with room to spare.
 */
export const controlLimitsDefault: GateLimits = {
  connectionsMax: 64,
  perPeerMax: 8,
  requestDeadlineMs: 2_000,
  answerDeadlineMs: 5_000,
};
if (controlLimitsDefault.connectionsMax < 2 * followersMax) {
  throw new Error('control-server: connectionsMax must leave room beside the followers');
}

/**
 * A follower whose unread output passes this is not reading (a stopped terminal, a dead
 * network path): it is disconnected rather than buffered without bound.
 */
export const followBacklogBytesMax = 256 * 1024;

/**
 * What the server asks of its handler: a response, or an answer with events to stream after
 * it. `peer` names the client (`unix` or `addr:port`), for the log of refused remote requests.
 */
export type ControlHandler = (
  request: unknown,
  peer: string,
) => Promise<ControlResponse | ControlAnswer>;

function isAnswer(value: ControlResponse | ControlAnswer): value is ControlAnswer {
  return 'response' in value;
}

export class ControlSocketError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'ControlSocketError';
  }
}

export class ControlServer {
  private server: net.Server | undefined;
  private socketPath: string | undefined;
  private readonly gate: ConnectionGate;

  constructor(
    private readonly handle: ControlHandler,
    limits: GateLimits = controlLimitsDefault,
  ) {
    this.gate = new ConnectionGate(limits);
  }

  /** Connections open now, and how many the gate evicted, refused, dropped or timed out. */
  get connections(): { readonly open: number } & GateStats {
    return { open: this.gate.size, ...this.gate.counts };
  }

  /** The TCP address it listens on (listenTcp), e.g. for a test that asked for port 0. */
  get tcpAddress(): net.AddressInfo | undefined {
    const address = this.server?.address();
    return address !== null && typeof address === 'object' ? address : undefined;
  }

  /**
   * Listens on TCP `address`:`port` (remote control). It binds exactly there: the caller
   * decides which network may reach it, and the handler must check a token.
   */
  async listenTcp(address: string, port: number): Promise<void> {
    const server = net.createServer((socket) => this.serve(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: address, port, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
  }

  /**
   * Listens on `socketPath`. A socket file left by a dead daemon is replaced; one a live
   * daemon answers on is not: two nlbd for one host would fight over its data plane.
   */
  async listen(socketPath: string): Promise<void> {
    mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 });
    if (existsSync(socketPath)) {
      if (!lstatSync(socketPath).isSocket()) {
        throw new ControlSocketError(
          `${socketPath} exists and is not a socket`,
          'remove it, or give nlbd another path with --socket',
        );
      }
      const answer = await controlRequest(socketPath, { verb: 'identity' }, 1_000).catch(
        () => undefined,
      );
      if (answer !== undefined) {
        const who = answer.ok ? ` (pid ${(answer.data as { pid?: number }).pid ?? '?'})` : '';
        throw new ControlSocketError(
          `another nlbd${who} already answers on ${socketPath}`,
          'stop it first (nlb stop, or kill it), or give this nlbd another --socket',
        );
      }
      unlinkSync(socketPath);
    }
    const server = net.createServer((socket) => this.serve(socket));
    // The umask makes the socket 0600 from the instant it exists; chmod repeats it in case.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(umask);
    }
    chmodSync(socketPath, 0o600);
    this.server = server;
    this.socketPath = socketPath;
  }

  private serve(socket: net.Socket): void {
    socket.on('error', () => undefined);
    const admission = this.gate.admit(socket);
    if (admission === 'dropped') {
      return;
    }
    const peer =
      socket.remoteAddress === undefined ? 'unix' : `${socket.remoteAddress}:${socket.remotePort}`;
    // Whatever comes after the request line (or after a refusal) is read and dropped: unread
    // bytes would make the kernel reset the connection on close, and the answer could be lost.
    socket.setEncoding('utf8');
    if (admission === 'refused') {
      socket.on('data', () => undefined);
      socket.end(
        `${JSON.stringify({
          ok: false,
          error: {
            code: 'failed',
            message: `too many connections from ${peerOf(socket) ?? peer}: at most ${this.gate.limits.perPeerMax} at once`,
            hint: 'wait for the other requests from this address to finish, then try again',
          },
        } satisfies ControlResponse)}\n`,
      );
      return;
    }
    let buffer = '';
    let received = false;
    const respond = (response: ControlResponse): void => {
      socket.end(`${JSON.stringify(response)}\n`);
      this.gate.answered(socket);
    };
    socket.on('data', (chunk: string) => {
      if (received) {
        return;
      }
      // Only the new chunk is searched: a line trickled a byte at a time costs linear time.
      const newlineInChunk = chunk.indexOf('\n');
      const newline = newlineInChunk < 0 ? -1 : buffer.length + newlineInChunk;
      buffer += chunk;
      if (newline < 0 && buffer.length <= requestBytesMax) {
        return;
      }
      received = true;
      if (!this.gate.requestReceived(socket)) {
        return;
      }
      const line = newline < 0 ? undefined : buffer.slice(0, newline);
      buffer = '';
      if (line === undefined || line.length > requestBytesMax) {
        respond({
          ok: false,
          error: {
            code: 'bad-request',
            message: `a request line may be at most ${requestBytesMax} bytes`,
            hint: 'send one JSON object followed by a newline',
          },
        });
        return;
      }
      void this.handle(parseRequestLine(line), peer).then(
        (result) => {
          if (!isAnswer(result)) {
            respond(result);
          } else if (result.stream === undefined) {
            respond(result.response);
          } else {
            this.stream(socket, result.response, result.stream);
          }
        },
        (error: unknown) =>
          respond({
            ok: false,
            error: { code: 'failed', message: String(error), hint: 'see the nlbd log' },
          }),
      );
    });
  }

  /** Writes the response, then every entry of the stream as a line, until the client goes. */
  private stream(socket: net.Socket, response: ControlResponse, stream: ControlStream): void {
    if (socket.destroyed) {
      stream.close();
      return;
    }
    this.gate.streaming(socket);
    socket.on('close', () => stream.close());
    socket.write(`${JSON.stringify(response)}\n`);
    stream.attach((entry) => {
      if (socket.destroyed) return false;
      if (socket.writableLength > followBacklogBytesMax) {
        socket.destroy();
        return false;
      }
      socket.write(`${JSON.stringify(entry)}\n`);
      return true;
    });
  }

  /** Stops listening, closes open connections and removes the socket file. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.gate.closeAll();
    if (server !== undefined) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    if (this.socketPath !== undefined) {
      try {
        unlinkSync(this.socketPath);
      } catch {
        // Already gone (net.Server removes it on close on some platforms).
      }
      this.socketPath = undefined;
    }
  }
}
