// The control socket: a unix socket, mode 0600 (root only, like the data plane it controls),
// framing the control protocol of control.ts: one JSON request line in, one JSON response line
// out, then close; for `events --follow`, new events follow the response as JSON lines until the
// client closes. The path names the cluster and the host id, because in a lab every host's
// nlbd shares /run while living in its own network namespace. The same framing serves the
// optional TCP listener of remote control (remote.ts: `listenTcp`, with a token check in front).
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  type ControlAnswer,
  type ControlResponse,
  type ControlStream,
  parseRequestLine,
  requestBytesMax,
} from './control.js';
import { controlRequest } from './control-client.js';

export { defaultSocketPath, runDirDefault } from './paths.js';

/** A client that sends nothing for this long is gone; its connection is closed. */
const requestTimeoutMs = 5_000;
/** Control clients are people and scripts; more at once is a runaway loop. */
const connectionsMax = 32;
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
  private readonly open = new Set<net.Socket>();

  constructor(private readonly handle: ControlHandler) {}

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
    server.maxConnections = connectionsMax;
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
          'stop it first (nlb stop, or kill it); one host runs one nlbd per cluster',
        );
      }
      unlinkSync(socketPath);
    }
    const server = net.createServer((socket) => this.serve(socket));
    server.maxConnections = connectionsMax;
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
    this.open.add(socket);
    socket.on('close', () => this.open.delete(socket));
    socket.on('error', () => undefined);
    socket.setTimeout(requestTimeoutMs, () => socket.destroy());
    let buffer = '';
    let answered = false;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      if (answered) {
        return;
      }
      buffer += chunk;
      const newline = buffer.indexOf('\n');
      if (newline < 0 && buffer.length <= requestBytesMax) {
        return;
      }
      answered = true;
      const line = newline < 0 ? undefined : buffer.slice(0, newline);
      const respond = (response: ControlResponse): void => {
        socket.end(`${JSON.stringify(response)}\n`);
      };
      const peer =
        socket.remoteAddress === undefined
          ? 'unix'
          : `${socket.remoteAddress}:${socket.remotePort}`;
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
    socket.setTimeout(0);
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
    for (const socket of this.open) {
      socket.destroy();
    }
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
