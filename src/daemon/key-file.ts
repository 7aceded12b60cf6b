// The cluster key: the HMAC-SHA256 key every heartbeat is authenticated with (DESIGN.md §5).
//
// The key is the file's exact bytes, used as they are: no decoding, no trimming. That makes
// one rule with no ambiguity: hosts agree when their key files are byte-identical. A file of
// 32 random bytes (`head -c 32 /dev/urandom > cluster.key`, what `nlb lab up` writes) and a
// text file (`openssl rand -hex 32 > cluster.key`, newline included) both work, as long as
// every host gets a copy of the same file. Hex text is deliberately not decoded: a raw key
// that happened to look like hex would then mean something else on a host that decoded it.
import { readFile, stat } from 'node:fs/promises';

/** HMAC-SHA256 wants at least 16 bytes of key to be worth its name (HostMachine asserts it). */
export const keyBytesMin = 16;
/** A key is a few dozen bytes; a larger file is the wrong path (a log, a certificate bundle). */
export const keyFileBytesMax = 4_096;

export type KeyFileResult =
  | {
      readonly ok: true;
      readonly key: Uint8Array;
      /** Set when group or others may read the file: anyone who reads it can forge heartbeats. */
      readonly warning: string | undefined;
    }
  | { readonly ok: false; readonly message: string; readonly hint: string };

const createHint =
  'create one with `head -c 32 /dev/urandom > <file>; chmod 600 <file>` and copy it to every host';

export async function readKeyFile(path: string): Promise<KeyFileResult> {
  let bytes: Buffer;
  let mode: number;
  try {
    const info = await stat(path);
    if (!info.isFile()) {
      return { ok: false, message: `key file '${path}' is not a regular file`, hint: createHint };
    }
    if (info.size > keyFileBytesMax) {
      return {
        ok: false,
        message: `key file '${path}' is ${info.size} bytes, over the ${keyFileBytesMax}-byte limit`,
        hint: `cluster.keyFile must name the key itself; ${createHint}`,
      };
    }
    mode = info.mode;
    bytes = await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return {
      ok: false,
      message: `cannot read key file '${path}': ${
        code === 'ENOENT'
          ? 'no such file'
          : code === 'EACCES'
            ? 'permission denied'
            : (error as Error).message
      }`,
      hint: code === 'ENOENT' ? createHint : 'nlbd runs as root; check the path in cluster.keyFile',
    };
  }
  if (bytes.length < keyBytesMin) {
    return {
      ok: false,
      message: `key file '${path}' holds ${bytes.length} bytes; the cluster key needs at least ${keyBytesMin}`,
      hint: createHint,
    };
  }
  const warning =
    (mode & 0o077) !== 0
      ? `key file '${path}' is readable by group or others (mode ${(mode & 0o777).toString(8)}); anyone who can read it can forge heartbeats: chmod 600 it`
      : undefined;
  return { ok: true, key: new Uint8Array(bytes), warning };
}
