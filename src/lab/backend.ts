// The service every lab host runs behind the cluster IP: it tells a client which host answered,
// so tests and the demo can see where each connection landed. It binds 0.0.0.0 so it answers on
// the dedicated IP and on the VIP alike. One line decides what a connection is:
//   `GET`            → `host <id>` and close (a short connection);
//   `HOLD`           → `host <id>`, then echo every line back until the client leaves
//                      (a long-lived connection, to prove it survives convergence);
//   `GET /… HTTP/1.x`→ a minimal HTTP response with the same body, so curl, wrk and haproxy
//                      work too (HTTP/1.1 keep-alive honoured, HTTP/1.0 closes); `/health`
//                      answers `ok` (nlbd's health check in the lab), `/weight` the weight set
//                      for the agent check (404 without one).
// How it behaves is set per host in its service file (service.ts: ok, refuse, hang, 503, slow),
// read again whenever it changes, so a test can break the service and mend it.
import net from 'node:net';
import { type ServiceState, serviceDefault } from './service.js';

/** A request line or header block longer than this is not one of ours: close. */
export const requestBytesMax = 16 * 1024;
/** A client that says nothing for this long is gone; HOLD connections have no idle limit. */
export const firstLineTimeoutMs = 10_000;

/** The body every answer carries; `parseHostReply` reads it back. */
export function hostReply(hostId: number): string {
  return `host ${hostId}\n`;
}

/** The host id in a `host <id>` line, or undefined when the text is not such a line. */
export function parseHostReply(line: string): number | undefined {
  const match = /^host (\d{1,2})\s*$/.exec(line);
  return match ? Number(match[1]) : undefined;
}

export interface BackendOptions {
  readonly hostId: number;
  readonly port: number;
  /** 0.0.0.0 by default so the VIP is served as well as the dedicated IP. */
  readonly bindAddress?: string;
  /** How the service behaves now (service.ts); always `ok` when not given. */
  readonly service?: () => ServiceState;
}

export interface Backend {
  readonly port: number;
  /** Connections accepted since start, by kind; for logs and tests. */
  readonly counters: BackendCounters;
  close(): Promise<void>;
}

export interface BackendCounters {
  short: number;
  hold: number;
  http: number;
  rejected: number;
}

function httpResponse(
  hostId: number,
  keepAlive: boolean,
  head: boolean,
  status = '200 OK',
  body = hostReply(hostId),
): string {
  return (
    `HTTP/1.1 ${status}\r\n` +
    'Content-Type: text/plain\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    `X-Nlb-Host: ${hostId}\r\n` +
    `Connection: ${keepAlive ? 'keep-alive' : 'close'}\r\n` +
    '\r\n' +
    (head ? '' : body)
  );
}

/** The answer to an HTTP request for `target` while the service is in `state`. */
function httpAnswer(
  hostId: number,
  target: string,
  state: ServiceState,
  keepAlive: boolean,
  head: boolean,
): string {
  if (state.mode === '503') {
    return httpResponse(hostId, keepAlive, head, '503 Service Unavailable', 'unavailable\n');
  }
  if (target === '/health') return httpResponse(hostId, keepAlive, head, '200 OK', 'ok\n');
  if (target === '/weight') {
    return state.weight === null
      ? httpResponse(hostId, keepAlive, head, '404 Not Found', 'no weight set\n')
      : httpResponse(hostId, keepAlive, head, '200 OK', `${state.weight}\n`);
  }
  return httpResponse(hostId, keepAlive, head);
}

/** What the backend needs of an HTTP request's head: whether to keep the connection, and HEAD. */
function parseHttpRequest(request: string): { keepAlive: boolean; head: boolean; target: string } {
  const [requestLine = '', ...headers] = request.split(/\r?\n/);
  const [method = '', target = '/', version = ''] = requestLine.split(' ');
  const connection = headers
    .map((h) => /^connection:\s*(.*)$/i.exec(h)?.[1]?.trim().toLowerCase())
    .find((v) => v !== undefined);
  const keepAlive = version === 'HTTP/1.1' ? connection !== 'close' : connection === 'keep-alive';
  return { keepAlive, head: method === 'HEAD', target };
}

/**
 * Echoes the whole lines of `buffered` (a HOLD connection's pings) and returns the rest: whole
 * lines only, so a ping split over two segments comes back as one line.
 */
function echoLines(socket: net.Socket, buffered: string): string {
  const last = buffered.lastIndexOf('\n');
  if (last < 0) return buffered;
  socket.write(buffered.slice(0, last + 1));
  return buffered.slice(last + 1);
}

/** A `refuse` service resets the connection, a `hang` one never answers: true when so. */
function refusedOrHung(
  socket: net.Socket,
  state: ServiceState,
  counters: BackendCounters,
): boolean {
  if (state.mode === 'refuse') {
    counters.rejected++;
    socket.resetAndDestroy();
    return true;
  }
  if (state.mode === 'hang') {
    // Accepted, never answered: the client times out (or gives up after firstLineTimeoutMs).
    socket.on('error', () => socket.destroy());
    socket.setTimeout(firstLineTimeoutMs, () => socket.destroy());
    socket.resume();
    return true;
  }
  return false;
}

/** Serves one connection; exported so tests can drive it over any duplex socket. */
export function serveConnection(
  socket: net.Socket,
  hostId: number,
  counters: BackendCounters,
  service: () => ServiceState = () => serviceDefault,
): void {
  const state = service();
  if (refusedOrHung(socket, state, counters)) return;
  // `slow` answers late: every write waits slowMs.
  const later = (write: () => void): void => {
    if (state.mode === 'slow') setTimeout(write, state.slowMs);
    else write();
  };
  let buffered = '';
  let mode: 'first' | 'hold' | 'http' = 'first';
  socket.setEncoding('utf8');
  socket.setNoDelay(true);
  socket.setTimeout(firstLineTimeoutMs, () => socket.destroy());
  // Resets and aborts from clients are normal in load tests; never let them crash the backend.
  socket.on('error', () => socket.destroy());

  const reject = (why: string): void => {
    counters.rejected++;
    socket.end(`error ${why}\n`);
    mode = 'first';
    buffered = '';
    socket.removeAllListeners('data');
  };

  // Answers every complete HTTP request in the buffer (pipelined requests included).
  const serveHttp = (): void => {
    for (;;) {
      const blank = /\r?\n\r?\n/.exec(buffered);
      if (blank === null) {
        if (buffered.length > requestBytesMax) {
          reject('request too large');
        }
        return;
      }
      const end = blank.index;
      const headerEnd = end + blank[0].length;
      const request = buffered.slice(0, end);
      buffered = buffered.slice(headerEnd);
      const { keepAlive, head, target } = parseHttpRequest(request);
      counters.http++;
      const response = httpAnswer(hostId, target, service(), keepAlive, head);
      if (!keepAlive) {
        later(() => socket.end(response));
        socket.removeAllListeners('data');
        return;
      }
      later(() => socket.write(response));
      // Between keep-alive requests the same idle limit applies as before the first one.
      socket.setTimeout(firstLineTimeoutMs);
    }
  };

  socket.on('data', (chunk: string) => {
    buffered += chunk;
    if (mode === 'hold') {
      buffered = echoLines(socket, buffered);
      if (buffered.length > requestBytesMax) reject('line too long');
      return;
    }
    if (mode === 'http') {
      serveHttp();
      return;
    }
    const newline = buffered.indexOf('\n');
    if (newline < 0) {
      if (buffered.length > requestBytesMax) {
        reject('request too large');
      }
      return;
    }
    const line = buffered.slice(0, newline).replace(/\r$/, '');
    if (line === 'GET') {
      counters.short++;
      const reply = state.mode === '503' ? 'error 503\n' : hostReply(hostId);
      later(() => socket.end(reply));
      socket.removeAllListeners('data');
    } else if (line === 'HOLD') {
      counters.hold++;
      mode = 'hold';
      socket.setTimeout(0);
      socket.write(hostReply(hostId));
      buffered = echoLines(socket, buffered.slice(newline + 1));
    } else if (/^(GET|HEAD) \S+ HTTP\/1\.[01]$/.test(line)) {
      mode = 'http';
      serveHttp();
    } else {
      reject('unknown request: send GET, HOLD or an HTTP GET');
    }
  });
}

export function startBackend(options: BackendOptions): Promise<Backend> {
  const counters: BackendCounters = { short: 0, hold: 0, http: 0, rejected: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    serveConnection(socket, options.hostId, counters, options.service);
  });
  // Load tests open connections in bursts; the default backlog (511) is capped by somaxconn.
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(
      { port: options.port, host: options.bindAddress ?? '0.0.0.0', backlog: 4096 },
      () => {
        server.off('error', reject);
        const address = server.address();
        const port = typeof address === 'object' && address !== null ? address.port : options.port;
        resolve({
          port,
          counters,
          close: () =>
            new Promise<void>((done) => {
              for (const socket of sockets) {
                socket.destroy();
              }
              server.close(() => done());
            }),
        });
      },
    );
  });
}
