// Writing a small file so that a reader (another process, or the next start after a crash)
// sees the old content or the new, never half of it: write a temporary file beside it, then
// rename it over. With `durable`, the data and the rename are on disk before this returns
// (fsync of the file, then of its directory), for state that must survive a power cut.
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';

/** The temporary file `writeFileAtomic` writes `file` through (a crash may leave it). */
export function tempPathOf(file: string): string {
  return `${file}.tmp`;
}

export interface AtomicWriteOptions {
  /** The file's mode. */
  readonly mode: number;
  /** Creates the directory with this mode when it is missing (else it must exist). */
  readonly dirMode?: number;
  /** Syncs the data and the rename to disk before returning. */
  readonly durable?: boolean;
  /** The temporary file, when several processes may write `file` at once; `tempPathOf` else. */
  readonly temp?: string;
}

export function writeFileAtomic(file: string, text: string, options: AtomicWriteOptions): void {
  const dir = path.dirname(file);
  if (options.dirMode !== undefined) mkdirSync(dir, { recursive: true, mode: options.dirMode });
  const temp = options.temp ?? tempPathOf(file);
  const fd = openSync(temp, 'w', options.mode);
  try {
    writeSync(fd, text);
    if (options.durable === true) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, file);
  if (options.durable === true) {
    // The rename is durable only once the directory entry is on disk too.
    const dirFd = openSync(dir, 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  }
}
