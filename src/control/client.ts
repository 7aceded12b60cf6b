// The client side of the control protocol (protocol.ts; used by `nlb` and the tests): send one request line,
// read one response line; or, for `events --follow`, keep reading lines until either side
// closes. The daemon is a unix socket path, or a TCP address of its remote control listener.
// Failures to reach a daemon are a `ControlUnreachable` with the errno, so the CLI can say "is
// nlbd running?" instead of printing ECONNREFUSED.
import net from 'node:net';
import {
  type ControlResponse,
  type EventEntry,
  type EventsData,
  type RequestOf,
  type Verb,
  type VerbData,
  failureSchema,
  successSchema,
} from './protocol.js';

/** A unix socket path, or the address of nlbd's remote control listener. */
export type ControlEndpoint = string | { readonly host: string; readonly port: number };

export function endpointText(endpoint: ControlEndpoint): string {
  return typeof endpoint === 'string'
    ? endpoint
    : endpoint.host.includes(':')
      ? `[${endpoint.host}]:${endpoint.port}`
      : `${endpoint.host}:${endpoint.port}`;
}

function connect(endpoint: ControlEndpoint): net.Socket {
  return typeof endpoint === 'string'
    ? net.connect(endpoint)
    : net.connect({ host: endpoint.host, port: endpoint.port });
}

/** A response is a few kilobytes; a megabyte is not from nlbd. */
const responseBytesMax = 1024 * 1024;
export const controlTimeoutMsDefault = 5_000;

export class ControlUnreachable extends Error {
  constructor(
    readonly socketPath: string,
    /** ENOENT (no socket), ECONNREFUSED (stale socket), EACCES (not root), timeout, closed. */
    readonly reason: string,
  ) {
    super(`no nlbd answers on ${socketPath} (${reason})`);
    this.name = 'ControlUnreachable';
  }
}

/**
 * Something answered, but not with a control response (`reason` says what is wrong with it): an
 * nlbd of another version, or another program on the socket. A kind of ControlUnreachable, so
 * that every caller which handles an unreachable daemon handles this too.
 */
export class ControlBadResponse extends ControlUnreachable {
  constructor(socketPath: string, reason: string) {
    super(socketPath, reason);
    this.name = 'ControlBadResponse';
  }
}

/**
 * Connects to `endpoint`, sends `request` as one line, and hands each line that comes back
 * (without its newline) to `onLine`, which returns false to read no further. When the text not
 * yet split into lines passes responseBytesMax, `onTooLarge` is called instead. The caller
 * handles 'error' and 'close' and destroys the socket.
 */
function sendRequest(
  endpoint: ControlEndpoint,
  request: unknown,
  onTooLarge: () => void,
  onLine: (line: string) => boolean,
): net.Socket {
  const socket = connect(endpoint);
  let text = '';
  socket.setEncoding('utf8');
  socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
  socket.on('data', (chunk: string) => {
    text += chunk;
    if (text.length > responseBytesMax) {
      onTooLarge();
      return;
    }
    for (let newline = text.indexOf('\n'); newline >= 0; newline = text.indexOf('\n')) {
      const line = text.slice(0, newline);
      text = text.slice(newline + 1);
      if (!onLine(line)) {
        return;
      }
    }
  });
  return socket;
}

/**
 * Why a parsed line is not a control response (`{ok: true, data}` or `{ok: false, error}`), or
 * undefined when it is one: a daemon of another version, or something else on the socket, is
 * then reported as such instead of crashing the caller that reads `response.error.message`.
 */
function responseProblem(value: unknown): string | undefined {
  const ok: unknown =
    value !== null && typeof value === 'object' ? (value as { ok?: unknown }).ok : undefined;
  if (ok !== true && ok !== false) {
    return 'answer is not a control response (no "ok": true or false)';
  }
  const parsed = (ok ? successSchema : failureSchema).safeParse(value);
  if (parsed.success) return undefined;
  const issue = parsed.error.issues[0];
  const where = issue === undefined || issue.path.length === 0 ? '' : ` at ${issue.path.join('.')}`;
  return `answer is not a control response${where}: ${issue?.message ?? 'invalid'}`;
}

/**
 * Asks one verb and returns its response, typed by the verb: the daemon answers it with the
 * handler that the same table (VerbData, through ControlHandlers) types, so the data of a
 * success is this verb's data. The envelope itself is checked (controlRequest).
 */
export async function controlAsk<V extends Verb>(
  endpoint: ControlEndpoint,
  request: RequestOf<V> & { readonly token?: string },
  timeoutMs = controlTimeoutMsDefault,
): Promise<ControlResponse<VerbData[V]>> {
  return (await controlRequest(endpoint, request, timeoutMs)) as ControlResponse<VerbData[V]>;
}

export function controlRequest(
  endpoint: ControlEndpoint,
  request: unknown,
  timeoutMs = controlTimeoutMsDefault,
): Promise<ControlResponse> {
  const socketPath = endpointText(endpoint);
  return new Promise((resolve, reject) => {
    const socket = sendRequest(
      endpoint,
      request,
      () => finish(new ControlUnreachable(socketPath, 'answer too large')),
      (line) => {
        let value: unknown;
        try {
          value = JSON.parse(line) as unknown;
        } catch {
          finish(new ControlUnreachable(socketPath, 'answer is not JSON'));
          return false;
        }
        const problem = responseProblem(value);
        if (problem === undefined) finish(undefined, value as ControlResponse);
        else finish(new ControlBadResponse(socketPath, problem));
        return false;
      },
    );
    let settled = false;
    const finish = (error: Error | undefined, response?: ControlResponse): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error !== undefined) reject(error);
      else resolve(response!);
    };
    const timer = setTimeout(
      () => finish(new ControlUnreachable(socketPath, `no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on('error', (error: NodeJS.ErrnoException) =>
      finish(new ControlUnreachable(socketPath, error.code ?? error.message)),
    );
    socket.on('close', () => finish(new ControlUnreachable(socketPath, 'closed without answer')));
  });
}

export interface FollowHandlers {
  /** The response line; return false to close at once (e.g. it was an error). */
  onResponse(response: ControlResponse<EventsData>): boolean;
  /** Each line that follows: one event. */
  onLine(value: EventEntry): void;
}

/**
 * Sends one request whose answer is a stream (`{"verb":"events","follow":true}`) and reads until
 * the daemon closes or `signal` aborts; resolves with how it ended. The response must arrive
 * within `timeoutMs`; the stream after it may be quiet for as long as it likes.
 */
export function controlFollow(
  endpoint: ControlEndpoint,
  request: RequestOf<'events'> & { readonly token?: string },
  handlers: FollowHandlers,
  signal?: AbortSignal,
  timeoutMs = controlTimeoutMsDefault,
): Promise<'closed' | 'aborted'> {
  const where = endpointText(endpoint);
  return new Promise((resolve, reject) => {
    const socket = sendRequest(
      endpoint,
      request,
      () => finish(new ControlUnreachable(where, 'line too large')),
      (line) => {
        let value: unknown;
        try {
          value = JSON.parse(line) as unknown;
        } catch {
          finish(new ControlUnreachable(where, 'a line is not JSON'));
          return false;
        }
        if (!answered) {
          answered = true;
          clearTimeout(timer);
          const problem = responseProblem(value);
          if (problem !== undefined) {
            finish(new ControlBadResponse(where, problem));
            return false;
          }
          if (!handlers.onResponse(value as ControlResponse<EventsData>)) {
            finish(undefined);
            return false;
          }
        } else {
          // The lines after the answer are the journal's entries (the daemon's followJournal).
          handlers.onLine(value as EventEntry);
        }
        return true;
      },
    );
    let answered = false;
    let settled = false;
    const finish = (error: Error | undefined, how: 'closed' | 'aborted' = 'closed'): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (error !== undefined) reject(error);
      else resolve(how);
    };
    const onAbort = (): void => finish(undefined, 'aborted');
    // The timer exists before any path can call finish (which clears it).
    const timer = setTimeout(
      () => finish(new ControlUnreachable(where, `no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    if (signal?.aborted === true) {
      finish(undefined, 'aborted');
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('error', (error: NodeJS.ErrnoException) =>
      finish(answered ? undefined : new ControlUnreachable(where, error.code ?? error.message)),
    );
    socket.on('close', () =>
      finish(answered ? undefined : new ControlUnreachable(where, 'closed without answer')),
    );
  });
}
