// What nlbd of one host keeps across restarts and reboots, in one small JSON file of the state
// directory (paths.ts):
//   - `incarnation`, the last one this host used. The protocol tells a restarted host from a
//     replayed heartbeat by its incarnation, so every start must use a larger one than the last,
//     even after the wall clock was stepped back (NTP, a wrong RTC at boot): the next one is
//     max(now, last + 1), written and synced before the first heartbeat can be sent.
//   - `suspended`: NLB's "retain suspended state". A host suspended by its operator stays
//     suspended across an nlbd restart or a reboot, until `resume` (after which the config's
//     host.initialState applies again at the next start).
// Writes are atomic (a temp file, fsync, rename, fsync of the directory): a crash or power cut
// leaves the old file or the new one, never half of one.
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../node/atomic-file.js';

export interface RetainedState {
  /** The incarnation of the last start; a safe integer, usually epoch ms. */
  readonly incarnation: number;
  /** The host was suspended when last seen: start it suspended. */
  readonly suspended: boolean;
}

/** Bumped when the file's meaning changes; a file of another version is not trusted. */
export const retainedStateVersion = 1;

/** The file is a few dozen bytes; anything over 4 KiB is not ours. */
const retainedStateBytesMax = 4096;

/**
 * The incarnation of a new start: the wall clock, unless that is not larger than the last one
 * used (the clock went back, or two starts within one ms), then one more than the last.
 */
export function chooseIncarnation(wallNowMs: number, last: number | undefined): number {
  const now = Math.floor(wallNowMs);
  if (!Number.isSafeInteger(now) || now < 0) {
    throw new Error(`chooseIncarnation: the wall clock reads ${wallNowMs}`);
  }
  if (last === undefined) {
    return now;
  }
  if (!Number.isSafeInteger(last) || last < 0 || last + 1 > Number.MAX_SAFE_INTEGER) {
    throw new Error(`chooseIncarnation: last incarnation ${last} is not a usable integer`);
  }
  return Math.max(now, last + 1);
}

export type RetainedRead =
  | { readonly ok: true; readonly state: RetainedState | undefined }
  /** The file exists but cannot be used; `problem` says why (the caller logs it and goes on). */
  | { readonly ok: false; readonly problem: string };

/** Reads the retained state; a missing file is `{ ok: true, state: undefined }` (a first start). */
export function readRetainedState(file: string): RetainedRead {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      return { ok: true, state: undefined };
    }
    return { ok: false, problem: `cannot read ${file}: ${code ?? String(error)}` };
  }
  if (text.length > retainedStateBytesMax) {
    return { ok: false, problem: `${file} holds ${text.length} bytes: not a retained state` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, problem: `${file} is not JSON` };
  }
  const record = parsed as Partial<RetainedState> & { version?: unknown };
  if (
    typeof parsed !== 'object' ||
    parsed === null ||
    record.version !== retainedStateVersion ||
    !Number.isSafeInteger(record.incarnation) ||
    (record.incarnation ?? -1) < 0 ||
    typeof record.suspended !== 'boolean'
  ) {
    return {
      ok: false,
      problem: `${file} is not a version ${retainedStateVersion} retained state: ${text.trim().slice(0, 200)}`,
    };
  }
  return { ok: true, state: { incarnation: record.incarnation!, suspended: record.suspended } };
}

/**
 * Writes `state` to `file` atomically and durably, creating the directory (0700) if needed.
 * Throws the file system's error (EACCES, EROFS, ENOSPC...) when it cannot.
 */
export function writeRetainedState(file: string, state: RetainedState): void {
  if (!Number.isSafeInteger(state.incarnation) || state.incarnation < 0) {
    throw new Error(`writeRetainedState: incarnation ${state.incarnation} is not a safe integer`);
  }
  const text = `${JSON.stringify({ version: retainedStateVersion, ...state })}\n`;
  writeFileAtomic(file, text, { mode: 0o600, dirMode: 0o700, durable: true });
}

/** What one start of nlbd takes from, and leaves in, the retained state. */
export interface RetainedStart {
  /** Written and synced: the new incarnation, and the suspended state carried over. */
  readonly state: RetainedState;
  /** Why the old file could not be used (it was replaced), or undefined. */
  readonly unreadable: string | undefined;
}

/**
 * One start's bookkeeping, before its first heartbeat: read what the last start left, choose an
 * incarnation larger than its one (`wallNowMs` is the wall clock, an input so tests can step it
 * back), keep the suspended state, and write both back. Throws when the file cannot be written.
 */
export function beginStart(file: string, wallNowMs: number): RetainedStart {
  const read = readRetainedState(file);
  const previous = read.ok ? read.state : undefined;
  const state: RetainedState = {
    incarnation: chooseIncarnation(wallNowMs, previous?.incarnation),
    suspended: previous?.suspended ?? false,
  };
  writeRetainedState(file, state);
  return { state, unreadable: read.ok ? undefined : read.problem };
}
