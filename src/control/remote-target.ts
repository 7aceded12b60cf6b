// What `nlb` needs to reach a remote nlbd, and nlbd to offer one (its --control-listen and
// --token-file): the default port, the address syntax, and the token file.
import { type Endpoint, parseAddress, parseEndpoint } from '../core/address.js';
import { readSecretFile } from '../node/secret-file.js';

/** TCP 2504: the port of NLB.exe's remote control (UDP there), free for TCP. */
export const remoteControlPortDefault = 2504;
/** Fewer than 16 characters is a password, not a token. */
export const tokenCharsMin = 16;
/** A token is a line; a larger file is the wrong path. */
export const tokenFileBytesMax = 4_096;
export const tokenCreateHint =
  'create one with `openssl rand -hex 32 > /etc/nlb/control.token; chmod 600 /etc/nlb/control.token` ' +
  '(or `head -c 32 /dev/urandom | base64`), and give the same file to nlb --token-file';

export type TokenFileResult =
  | {
      readonly ok: true;
      readonly token: string;
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
  return { ok: true, token };
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
