// How the dashboard reaches the nlbd of one host: ask it one verb, or follow its events. An
// interface, so the aggregator and the HTTP server are tested against hosts in the same process
// (test/dashboard-*.test.ts answer with the daemon's own handlers) and run against real ones
// over the control protocol (`controlHost`, a unix socket or remote control with a token).
import {
  type ControlEndpoint,
  type FollowHandlers,
  controlAsk,
  controlFollow,
} from '../control/client.js';
import type { ControlResponse, RequestOf, Verb, VerbData } from '../control/protocol.js';

export interface DashboardHost {
  readonly hostId: number;
  /** The socket path or address it is reached at, for people; null when it cannot be. */
  readonly where: string | null;
  /** Why it cannot be asked at all (no address known, no token for remote control), or null. */
  readonly unreachable: string | null;
  /** Asks one verb. A host that cannot be reached throws (ControlUnreachable for real ones). */
  ask<V extends Verb>(
    request: RequestOf<V>,
    timeoutMs: number,
  ): Promise<ControlResponse<VerbData[V]>>;
  /**
   * Follows the host's events (`events` with follow) until the host closes the stream or
   * `signal` aborts; throws when the host cannot be reached.
   */
  follow(
    request: RequestOf<'events'>,
    handlers: FollowHandlers,
    signal: AbortSignal,
  ): Promise<'closed' | 'aborted'>;
}

/** How a host whose nlbd cannot be asked is listed: every call fails with the reason. */
export function unreachableHost(hostId: number, reason: string): DashboardHost {
  const fail = (): Promise<never> => Promise.reject(new Error(reason));
  return { hostId, where: null, unreachable: reason, ask: fail, follow: fail };
}

/** A real nlbd over the control protocol; `token` for remote control (sent with each request). */
export function controlHost(
  hostId: number,
  endpoint: ControlEndpoint,
  token: string | undefined,
  where: string,
): DashboardHost {
  const withToken = <R extends object>(request: R): R & { token?: string } =>
    token === undefined ? request : { ...request, token };
  return {
    hostId,
    where,
    unreachable: null,
    ask: <V extends Verb>(request: RequestOf<V>, timeoutMs: number) =>
      controlAsk<V>(endpoint, withToken(request), timeoutMs),
    follow: (request, handlers, signal) =>
      controlFollow(endpoint, withToken({ ...request, follow: true }), handlers, signal),
  };
}
