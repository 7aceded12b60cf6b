// Reading a small secret file: the cluster key (key-file.ts) and the remote control token
// (remote.ts). Both are a few dozen bytes in a file only root should read, and both refuse the
// same mistakes with the same words: not a regular file, far too large (the wrong path), missing
// or unreadable, and a file others may read or change. What the bytes must then hold is each
// caller's own check.
//
// Who may read or change the file is a refusal, not a warning: whoever reads the key can forge
// heartbeats and whoever reads the token controls the host, so a file group or others may read
// is refused like one they may write. The file must be owned by root, or by the user reading it
// (an operator's copy of the token for `nlb --host`: only that user and root can change it);
// for nlbd, which runs as root, that means root. The refusal says the mode, the owner and the
// exact commands that fix it.
//
// The file is opened once and every check is made on the open file (fstat), so what is checked
// is what is read. A symbolic link is followed: the file it leads to is checked, and a link to a
// compliant file is fine (a link's own mode means nothing on Linux; config management often
// links the current key into place). The directories on the way are not checked.
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';

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
  /** What someone who may read or change the file could do, for the refusal of a loose file. */
  readonly risk: string;
}

export type SecretFileRead =
  | { readonly ok: true; readonly bytes: Buffer; readonly mode: number }
  | { readonly ok: false; readonly message: string; readonly hint: string };

/** The hint of every refusal for ownership or mode: the rule, in one line. */
export const secretFileRuleHint =
  'a key or token file must be owned by root (or by the user reading it) and readable by its owner only: mode 600 or 400';

/** `path` quoted for a shell command when it needs it. */
function shellWord(path: string): string {
  return /^[A-Za-z0-9_./:@%+=-]+$/.test(path) ? path : `'${path.replace(/'/g, `'\\''`)}'`;
}

/**
 * Why a secret file with this owner and mode must not be used, and the commands that fix it; or
 * undefined when only root or the reader owns it and nobody else may read, write or run it.
 */
export function looseSecretFile(
  rules: Pick<SecretFileRules, 'what' | 'risk'>,
  path: string,
  owner: { readonly uid: number; readonly mode: number },
  readerUid: number,
): string | undefined {
  const ownerOk = owner.uid === 0 || owner.uid === readerUid;
  const open = owner.mode & 0o077;
  if (ownerOk && open === 0) {
    return undefined;
  }
  const wrong: string[] = [];
  if (!ownerOk) {
    wrong.push(
      readerUid === 0
        ? `owned by uid ${owner.uid}, not by root`
        : `owned by uid ${owner.uid}, neither by root nor by you (uid ${readerUid})`,
    );
  }
  if ((open & 0o022) !== 0) wrong.push('writable by group or others');
  if ((open & 0o044) !== 0) wrong.push('readable by group or others');
  if ((open & 0o066) === 0 && open !== 0) wrong.push('executable by group or others');
  const mode = `0${(owner.mode & 0o7777).toString(8).padStart(3, '0')}`;
  const file = shellWord(path);
  // Root gives the file to root; another user cannot chown, but can make a copy of their own.
  const copy = `~/nlb-${rules.what === 'key file' ? 'cluster.key' : 'control.token'}`;
  const fix =
    readerUid === 0
      ? `\`chown root:root ${file}; chmod 600 ${file}\``
      : ownerOk
        ? `\`chmod 600 ${file}\``
        : `\`install -m 600 ${file} ${copy}\` and use the copy`;
  return `${rules.what} '${path}' is ${wrong.join(' and ')} (mode ${mode}, owner uid ${owner.uid}): ${rules.risk}; fix it: ${fix}`;
}

/** Reads at most `bytesMax + 1` bytes: one more than allowed tells that the file is too large. */
async function readBounded(handle: FileHandle, bytesMax: number): Promise<Buffer> {
  const buffer = Buffer.alloc(bytesMax + 1);
  let length = 0;
  for (;;) {
    const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
    if (bytesRead === 0) break;
    length += bytesRead;
    if (length === buffer.length) break;
  }
  return buffer.subarray(0, length);
}

export async function readSecretFile(
  path: string,
  rules: SecretFileRules,
): Promise<SecretFileRead> {
  const { what, bytesMax, createHint } = rules;
  let handle: FileHandle | undefined;
  try {
    // O_NONBLOCK: a FIFO put where the key should be must not hang nlbd at start.
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
    const info = await handle.stat();
    if (!info.isFile()) {
      return { ok: false, message: `${what} '${path}' is not a regular file`, hint: createHint };
    }
    const loose = looseSecretFile(rules, path, info, process.geteuid?.() ?? 0);
    if (loose !== undefined) {
      return { ok: false, message: loose, hint: secretFileRuleHint };
    }
    const tooLarge = (size: number) => ({
      ok: false as const,
      message: `${what} '${path}' is ${size} bytes, over the ${bytesMax}-byte limit`,
      hint: rules.tooLargeHint,
    });
    if (info.size > bytesMax) {
      return tooLarge(info.size);
    }
    const bytes = await readBounded(handle, bytesMax);
    if (bytes.length > bytesMax) {
      return tooLarge(bytes.length);
    }
    return { ok: true, bytes, mode: info.mode };
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
  } finally {
    await handle?.close();
  }
}
