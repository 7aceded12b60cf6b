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
import { type Endpoint, parseAddress, parseEndpoint } from '../core/address.js';
import { type ControlAnswer, type ControlResponse, changingVerbNames } from './control.js';
import type { ControlHandler } from './control-server.js';
import type { EventSink } from './host-driver.js';
import { readSecretFile } from './secret-file.js';

/** TCP 2504: the port of NLB.exe's remote control (UDP there), free for TCP. */
export const remoteControlPortDefault = 2504;
/** Fewer than 16 characters is a password, not a token. */
export const tokenCharsMin = 16;
/** A token is a line; a larger file is the wrong path. */
export const tokenFileBytesMax = 4_096;
/** A client hammering with bad tokens is logged once per this interval, with a count. */
const refusalReportMs = 5_000;

export const tokenCreateHint =
  'create one with `openssl rand -hex 32 > /etc/nlb/control.token; chmod 600 /etc/nlb/control.token` ' +
  '(or `head -c 32 /dev/urandom | base64`), and give the same file to nlb --token-file';

export type TokenFileResult =
  | {
      readonly ok: true;
      readonly token: string;
      /**
       * Always undefined: a file group or others may read is refused now (secret-file.ts), and
       * nothing reads it any more. Left for the readers' tests, which still name it.
       */
      readonly warning: string | undefined;
    }
  | { readonly ok: false; readonly message: string; readonly hint: string };

/**
 * Reads a token file: its text with the trailing newline (any trailing white space) removed.
 * The token goes inside a JSON request, so it must be printable ASCII without spaces.
 */
export async function readTokenFile(path: string): Promise<TokenFileResult> {
  const read = await readSecretFile(path, {
    what: 'token file',
    bytesMax: tokenFileBytesMax,
    createHint: tokenCreateHint,
    tooLargeHint: `--token-file must name the token itself; ${tokenCreateHint}`,
    readHint: 'check the path and that you may read it (root)',
    risk: 'whoever can read the token controls this host, and whoever can write it can lock its operators out',
  });
  if (!read.ok) {
    return read;
  }
  const text = read.bytes.toString('latin1');
  const token = text.replace(/\s+$/, '');
  if (!/^[\x21-\x7e]*$/.test(token)) {
    return {
      ok: false,
      message: `token file '${path}' holds bytes that are not printable ASCII (is it a raw binary key?)`,
      hint: tokenCreateHint,
    };
  }
  if (token.length < tokenCharsMin) {
    return {
      ok: false,
      message: `token file '${path}' holds ${token.length} characters; a token needs at least ${tokenCharsMin}`,
      hint: tokenCreateHint,
    };
  }
  return { ok: true, token, warning: undefined };
}

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

/** Parses `addr[:port]` (IPv6 as `[addr]:port` or a bare address); the port defaults to 2504. */
export function parseListenAddress(
  text: string,
  portDefault: number,
): Endpoint | { readonly error: string } {
  const bare = parseAddress(text.trim().replace(/^\[(.*)\]$/, '$1'));
  if (bare !== undefined) {
    return { address: bare, port: portDefault };
  }
  return parseEndpoint(text);
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
