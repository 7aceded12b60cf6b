// The client side of the control socket (used by `nlb query` and the tests): send one request
// line, read one response line. Failures to reach a daemon are a `ControlUnreachable` with the
// errno, so the CLI can say "is nlbd running?" instead of printing ECONNREFUSED.
import net from 'node:net';
import type { ControlResponse } from './control.js';

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

export function controlRequest(
  socketPath: string,
  request: unknown,
  timeoutMs = controlTimeoutMsDefault,
): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let text = '';
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
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.length > responseBytesMax) {
        finish(new ControlUnreachable(socketPath, 'answer too large'));
        return;
      }
      const newline = text.indexOf('\n');
      if (newline >= 0) {
        try {
          finish(undefined, JSON.parse(text.slice(0, newline)) as ControlResponse);
        } catch {
          finish(new ControlUnreachable(socketPath, 'answer is not JSON'));
        }
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) =>
      finish(new ControlUnreachable(socketPath, error.code ?? error.message)),
    );
    socket.on('close', () => finish(new ControlUnreachable(socketPath, 'closed without answer')));
  });
}
