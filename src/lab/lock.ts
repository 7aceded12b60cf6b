// File locks between processes: one for the read-modify-write of a lab's state.json (the CLI and
// a test may start daemons at the same time), and one that lab tests take so that only one of
// them loads the machine's two cores at a time (see vitest.config.ts). A lock is a file created
// with O_EXCL holding the owner's pid and start time; a lock whose owner is gone is stale and
// taken over.
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive, processRef, type ProcessRef } from './process.js';

export class LockTimeoutError extends Error {
  constructor(
    readonly lockPath: string,
    readonly waitedMs: number,
    readonly holder: string,
  ) {
    super(
      `lock ${lockPath} still held by ${holder} after ${waitedMs} ms; if that process is gone, remove the file`,
    );
    this.name = 'LockTimeoutError';
  }
}

function tryCreate(lockPath: string, owner: ProcessRef): boolean {
  try {
    writeFileSync(lockPath, JSON.stringify(owner), { flag: 'wx', mode: 0o600 });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      return false;
    }
    throw error;
  }
}

function holderOf(lockPath: string): ProcessRef | undefined {
  try {
    const parsed = JSON.parse(readFileSync(lockPath, 'utf8')) as ProcessRef;
    return typeof parsed.pid === 'number' ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Waits up to `waitMs` for the lock and returns its release function. Not reentrant: within
 * one process, callers serialise themselves before taking it (see `withStateLock` in state.ts).
 */
export async function acquireFileLock(lockPath: string, waitMs: number): Promise<() => void> {
  const self = processRef(process.pid);
  if (self === undefined) {
    throw new Error('cannot read /proc/self/stat: the lab needs Linux /proc');
  }
  mkdirSync(path.dirname(lockPath), { recursive: true, mode: 0o700 });
  const deadline = Date.now() + waitMs;
  let pollMs = 5;
  for (;;) {
    if (tryCreate(lockPath, self)) {
      return () => {
        const holder = holderOf(lockPath);
        if (holder?.pid === self.pid && holder.startTime === self.startTime) {
          unlinkSync(lockPath);
        }
      };
    }
    const holder = holderOf(lockPath);
    // A holder that exited without releasing (killed test run) leaves a stale file. A file with
    // no readable holder may be one being written this instant: give it one more round.
    if (holder !== undefined && !isAlive(holder)) {
      try {
        unlinkSync(lockPath);
      } catch {
        // Another waiter removed it first; just retry.
      }
      continue;
    }
    if (Date.now() >= deadline) {
      throw new LockTimeoutError(
        lockPath,
        waitMs,
        holder ? `pid ${holder.pid}` : 'an unknown process',
      );
    }
    await sleep(pollMs);
    pollMs = Math.min(pollMs * 2, 200);
  }
}

export async function withFileLock<T>(
  lockPath: string,
  waitMs: number,
  body: () => Promise<T>,
): Promise<T> {
  const release = await acquireFileLock(lockPath, waitMs);
  try {
    return await body();
  } finally {
    release();
  }
}

/** Lab tests hold this while their lab exists, so two never compete for the two cores. */
export const labTestLockPath = '/run/nlb/lab-test.lock';
/** A whole lab test file should finish well within this. */
export const labTestLockWaitMs = 5 * 60 * 1000;

export function acquireLabTestLock(): Promise<() => void> {
  return acquireFileLock(labTestLockPath, labTestLockWaitMs);
}
