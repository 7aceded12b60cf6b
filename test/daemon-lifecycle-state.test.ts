// The pieces of nlbd's life cycle that need no network: incarnations that only grow (a fake wall
// clock stepped back between starts), the retained state file (atomic, refused when unusable),
// the resource stack that undoes in reverse order from any point, and the network namespace
// lock (an abstract unix socket of the test's own name: nothing is configured anywhere).
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDaemon } from '../src/daemon/daemon.js';
import { NetnsLockBusy, claimNetnsLock, readLockOwner } from '../src/daemon/netns-lock.js';
import { retainedStatePath, stateDirDefault, stateDirOf } from '../src/daemon/paths.js';
import { ResourceStack } from '../src/daemon/resource-stack.js';
import {
  beginStart,
  chooseIncarnation,
  readRetainedState,
  writeRetainedState,
} from '../src/daemon/retained-state.js';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nlbd-lifecycle-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('incarnations only grow', () => {
  it('chooses the wall clock, or one more than the last when the clock is not ahead', () => {
    expect(chooseIncarnation(5_000, undefined)).toBe(5_000);
    expect(chooseIncarnation(5_000, 4_000)).toBe(5_000);
    expect(chooseIncarnation(5_000, 5_000)).toBe(5_001);
    expect(chooseIncarnation(3_000, 5_000)).toBe(5_001);
    expect(chooseIncarnation(5_000.7, undefined)).toBe(5_000);
    expect(() => chooseIncarnation(Number.NaN, undefined)).toThrow(/wall clock/);
    expect(() => chooseIncarnation(1, Number.MAX_SAFE_INTEGER)).toThrow(/not a usable/);
  });

  it('grows over restarts while a fake wall clock steps back, stands still and jumps', () => {
    const file = retainedStatePath('web', 1, path.join(dir, 'grow'));
    // Each value is the wall clock at one start of nlbd: an NTP step back of a minute, two
    // starts within one millisecond, a clock reset to 1970 by a dead RTC, then the clock fixed.
    const wall = [
      1_700_000_000_000, 1_700_000_060_000, 1_700_000_000_000, 1_700_000_000_000, 0, 5,
      1_700_000_120_000,
    ];
    const chosen = wall.map((now) => beginStart(file, now).state.incarnation);
    for (let i = 1; i < chosen.length; i++) {
      expect(chosen[i], `start ${i} at wall clock ${wall[i]}`).toBeGreaterThan(chosen[i - 1]!);
    }
    expect(chosen).toEqual([
      1_700_000_000_000, 1_700_000_060_000, 1_700_000_060_001, 1_700_000_060_002, 1_700_000_060_003,
      1_700_000_060_004, 1_700_000_120_000,
    ]);
    // What the last start wrote is on disk, whole, and no temp file is left.
    expect(readRetainedState(file)).toEqual({
      ok: true,
      state: { incarnation: 1_700_000_120_000, suspended: false },
    });
    expect(readdirSync(path.dirname(file))).toEqual([path.basename(file)]);
  });

  it('carries the suspended state over a start, and starts over from a corrupt file', () => {
    const file = retainedStatePath('web', 2, path.join(dir, 'carry'));
    beginStart(file, 1_000);
    writeRetainedState(file, { incarnation: 1_000, suspended: true });
    expect(beginStart(file, 2_000)).toEqual({
      state: { incarnation: 2_000, suspended: true },
      unreadable: undefined,
    });
    writeFileSync(file, '{"version":1,"incarnation":"soon"');
    const fresh = beginStart(file, 3_000);
    expect(fresh.state).toEqual({ incarnation: 3_000, suspended: false });
    expect(fresh.unreadable).toMatch(/is not JSON/);
    writeFileSync(file, JSON.stringify({ version: 9, incarnation: 1, suspended: true }));
    expect(readRetainedState(file)).toMatchObject({
      ok: false,
      problem: expect.stringMatching(/not a version 1 retained state/),
    });
    // The file is written with the version, readable by root only.
    beginStart(file, 4_000);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({
      version: 1,
      incarnation: 4_000,
      suspended: false,
    });
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('throws when the state directory cannot be written', () => {
    const notADir = path.join(dir, 'plain-file');
    writeFileSync(notADir, '');
    expect(() => beginStart(retainedStatePath('web', 1, path.join(notADir, 'nlb')), 1)).toThrow(
      /ENOTDIR/,
    );
  });

  it('takes the state directory from --state-dir, then NLBD_STATE_DIR, then /var/lib/nlb', () => {
    expect(stateDirOf('/x/y', { NLBD_STATE_DIR: '/z' })).toBe('/x/y');
    expect(stateDirOf(undefined, { NLBD_STATE_DIR: '/z' })).toBe('/z');
    expect(stateDirOf(undefined, { NLBD_STATE_DIR: '' })).toBe(stateDirDefault);
    expect(stateDirOf(undefined, {})).toBe('/var/lib/nlb');
  });
});

describe('ResourceStack', () => {
  it('releases newest first, goes on past a failure, and reports it', async () => {
    const stack = new ResourceStack();
    const done: string[] = [];
    stack.push('signals', () => void done.push('signals'));
    stack.push('lock', async () => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      done.push('lock');
    });
    stack.push('table', () => {
      throw new Error('nft said no');
    });
    stack.push('mac', () => void done.push('mac'));
    expect(stack.size).toBe(4);
    expect(await stack.releaseAll()).toEqual(['table: nft said no']);
    expect(done).toEqual(['mac', 'lock', 'signals']);
    expect(stack.size).toBe(0);
    // Each release runs once.
    expect(await stack.releaseAll()).toEqual([]);
    expect(done).toHaveLength(3);
  });

  it('refuses a registration while releasing', async () => {
    const stack = new ResourceStack();
    let thrown: unknown;
    stack.push('outer', () => {
      try {
        stack.push('late', () => undefined);
      } catch (error) {
        thrown = error;
      }
    });
    await stack.releaseAll();
    expect(String(thrown)).toMatch(/already releasing/);
  });
});

describe('the network namespace lock', () => {
  const hint = (holder: { pid: number } | undefined): string => `stop ${holder?.pid ?? 'it'}`;
  const name = `\0nlbd-test-${process.pid}-${randomBytes(3).toString('hex')}`;
  const owner = {
    cluster: 'web',
    hostId: 3,
    pid: process.pid,
    socket: '/run/nlb/nlbd-web-3.sock',
    configPath: '/etc/nlb/nlb.yaml',
  };

  it('refuses a second claim naming the holder, and is free again once released', async () => {
    const lock = await claimNetnsLock(owner, name, hint);
    try {
      expect(await readLockOwner(name)).toEqual(owner);
      const second = claimNetnsLock({ ...owner, cluster: 'other', hostId: 1 }, name, hint);
      await expect(second).rejects.toBeInstanceOf(NetnsLockBusy);
      await expect(second).rejects.toThrow(
        `another nlbd (pid ${process.pid}) already answers on @${name.slice(1)} in this network namespace: cluster 'web', host 3`,
      );
      await expect(second).rejects.toMatchObject({ hint: `stop ${process.pid}` });
    } finally {
      await lock.release();
    }
    const again = await claimNetnsLock(owner, name, hint);
    await again.release();
    expect(await readLockOwner(name)).toBeUndefined();
  });

  it('takes only abstract names', async () => {
    await expect(claimNetnsLock(owner, path.join(dir, 'lock.sock'), hint)).rejects.toThrow(
      /abstract/,
    );
  });
});

describe('runDaemon', () => {
  it('leaves no signal handler behind when it refuses to start', async () => {
    const before = ['SIGTERM', 'SIGINT', 'SIGHUP'].map((s) => process.listenerCount(s));
    const stderr = process.stderr.write.bind(process.stderr);
    process.stderr.write = () => true;
    try {
      const code = await runDaemon({ configPath: path.join(dir, 'absent.yaml') });
      expect(code).toBe(2);
    } finally {
      process.stderr.write = stderr;
    }
    expect(['SIGTERM', 'SIGINT', 'SIGHUP'].map((s) => process.listenerCount(s))).toEqual(before);
    expect(existsSync(path.join(dir, 'absent.yaml'))).toBe(false);
  });
});
