// The cluster key: the HMAC-SHA256 key every heartbeat is authenticated with
// (docs/protocol.md#authentication-and-rejected-datagrams).
//
// The key is the file's exact bytes, used as they are: no decoding, no trimming. That makes
// one rule with no ambiguity: hosts agree when their key files are byte-identical. A file of
// 32 random bytes (`head -c 32 /dev/urandom > cluster.key`, what `nlb lab up` writes) and a
// text file (`openssl rand -hex 32 > cluster.key`, newline included) both work, as long as
// every host gets a copy of the same file. Hex text is deliberately not decoded: a raw key
// that happened to look like hex would then mean something else on a host that decoded it.
import { readSecretFile } from '../node/secret-file.js';

/** HMAC-SHA256 wants at least 16 bytes of key to be worth its name (HostMachine asserts it). */
export const keyBytesMin = 16;
/** A key is a few dozen bytes; a larger file is the wrong path (a log, a certificate bundle). */
export const keyFileBytesMax = 4_096;

export type KeyFileResult =
  | {
      readonly ok: true;
      readonly key: Uint8Array;
    }
  | { readonly ok: false; readonly message: string; readonly hint: string };

const createHint =
  'create one with `head -c 32 /dev/urandom > <file>; chmod 600 <file>` and copy it to every host';

export async function readKeyFile(path: string): Promise<KeyFileResult> {
  const read = await readSecretFile(path, {
    what: 'key file',
    bytesMax: keyFileBytesMax,
    createHint,
    tooLargeHint: `cluster.keyFile must name the key itself; ${createHint}`,
    readHint: 'nlbd runs as root; check the path in cluster.keyFile',
    risk: 'whoever can read the key can forge heartbeats, and whoever can write it can split the cluster',
  });
  if (!read.ok) {
    return read;
  }
  const { bytes } = read;
  if (bytes.length < keyBytesMin) {
    return {
      ok: false,
      message: `key file '${path}' holds ${bytes.length} bytes; the cluster key needs at least ${keyBytesMin}`,
      hint: createHint,
    };
  }
  return { ok: true, key: new Uint8Array(bytes) };
}
