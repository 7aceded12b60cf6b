// Remote control: nlbd's control protocol over TCP, off unless `nlbd --control-listen
// <addr[:port]> --token-file <path>` asks for it, bound exactly where told. Every request must
// carry `"token"`, the shared secret from the token file; the token is checked before anything
// else and removed, so the control handler never sees it. A request with no token or a wrong
// one gets `unauthorized` and is never executed.
//
// Tokens are compared as SHA-256 digests with crypto.timingSafeEqual: both digests are 32
// bytes whatever the token lengths, so the comparison takes the same time for every wrong
// token and leaks neither its length nor how much of it matched. The token travels in clear
// text: the listener belongs on a management network, a VPN, or behind an SSH tunnel
// (NLB.exe's remote control had the same limit; Microsoft advised against enabling it).
import { createHash, timingSafeEqual } from 'node:crypto';
import { type ControlResponse, changingVerbNames } from '../control/protocol.js';
import { type ControlAnswer } from './control.js';
import type { ControlHandler } from './control-server.js';
import type { EventSink } from './event-names.js';

/** A client hammering with bad tokens is logged once per this interval, with a count. */
const refusalReportMs = 5_000;

export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token, 'latin1').digest();
}

/** True when `given` is the token whose digest is `expected`; constant time for any `given`. */
export function tokenMatches(expected: Buffer, given: unknown): boolean {
  if (typeof given !== 'string') {
    return false;
  }
  return timingSafeEqual(tokenDigest(given), expected);
}

function unauthorized(message: string): ControlResponse {
  return {
    ok: false,
    error: {
      code: 'unauthorized',
      message,
      hint: 'give nlb the token file nlbd was started with: --token-file <path>',
    },
  };
}

/**
 * Wraps the control handler for the TCP listener: checks and strips `token`, refuses without
 * executing when it is missing or wrong, and logs refusals (rate-limited) and remote commands.
 */
export function remoteHandler(
  expectedDigest: Buffer,
  inner: ControlHandler,
  log: EventSink,
  nowMs: () => number,
): ControlHandler {
  let lastReportMs = -Infinity;
  let suppressed = 0;
  return async (request, peer): Promise<ControlResponse | ControlAnswer> => {
    const object =
      request !== null && typeof request === 'object' && !Array.isArray(request)
        ? (request as Record<string, unknown>)
        : undefined;
    const given = object?.token;
    if (!tokenMatches(expectedDigest, given)) {
      const now = nowMs();
      if (now - lastReportMs >= refusalReportMs) {
        log({
          event: 'remote control refused',
          peer,
          reason: given === undefined ? 'no token' : 'wrong token',
          ...(suppressed > 0 ? { suppressed } : {}),
        });
        lastReportMs = now;
        suppressed = 0;
      } else {
        suppressed++;
      }
      return unauthorized(
        given === undefined
          ? 'remote control needs a token: this request carries none'
          : 'remote control refused: wrong token',
      );
    }
    const { token: _token, ...rest } = object!;
    if (typeof rest.verb === 'string' && changingVerbNames.has(rest.verb)) {
      log({ event: 'remote command', peer, verb: rest.verb });
    }
    return inner(rest, peer);
  };
}
