// Reading a small secret file: the cluster key (key-file.ts) and the remote control token
// (remote.ts). Both are a few dozen bytes in a file only root should read, and both refuse the
// same mistakes with the same words: not a regular file, far too large (the wrong path), missing
// or unreadable. What the bytes must then hold is each caller's own check.
import { readFile, stat } from 'node:fs/promises';

export interface SecretFileRules {
  /** How messages name the file. */
  readonly what: 'key file' | 'token file';
  /** A larger file is refused unread: it is the wrong path (a log, a certificate bundle). */
  readonly bytesMax: number;
  /** How to make a good file; the hint for most refusals. */
  readonly createHint: string;
  /** The hint when the file is over `bytesMax`. */
  readonly tooLargeHint: string;
  /** The hint when the file exists but cannot be read. */
  readonly readHint: string;
}

export type SecretFileRead =
  | { readonly ok: true; readonly bytes: Buffer; readonly mode: number }
  | { readonly ok: false; readonly message: string; readonly hint: string };

export async function readSecretFile(
  path: string,
  rules: SecretFileRules,
): Promise<SecretFileRead> {
  const { what, bytesMax, createHint } = rules;
  try {
    const info = await stat(path);
    if (!info.isFile()) {
      return { ok: false, message: `${what} '${path}' is not a regular file`, hint: createHint };
    }
    if (info.size > bytesMax) {
      return {
        ok: false,
        message: `${what} '${path}' is ${info.size} bytes, over the ${bytesMax}-byte limit`,
        hint: rules.tooLargeHint,
      };
    }
    return { ok: true, bytes: await readFile(path), mode: info.mode };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return {
      ok: false,
      message: `cannot read ${what} '${path}': ${
        code === 'ENOENT'
          ? 'no such file'
          : code === 'EACCES'
            ? 'permission denied'
            : (error as Error).message
      }`,
      hint: code === 'ENOENT' ? createHint : rules.readHint,
    };
  }
}

/**
 * The warning for a secret file that group or others may read, or undefined when only its owner
 * may; `risk` says what a reader of the file could do.
 */
export function looseModeWarning(
  what: SecretFileRules['what'],
  path: string,
  mode: number,
  risk: string,
): string | undefined {
  return (mode & 0o077) !== 0
    ? `${what} '${path}' is readable by group or others (mode ${(mode & 0o777).toString(8)}); ${risk}: chmod 600 it`
    : undefined;
}
