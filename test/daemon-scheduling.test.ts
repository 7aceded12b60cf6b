// nlbd's realtime scheduling (src/daemon/scheduling.ts) with a fake runner: what it asks chrt
// for, and what it reports when the host does not allow it or a service manager already set it.
// The real thing (every thread and the nft child at SCHED_RR) is checked in daemon-main.test.ts.
import { describe, expect, it } from 'vitest';
import type { CommandResult, Runner } from '../src/dataplane/exec.js';
import { applyRealtime, parseChrtPolicy } from '../src/daemon/scheduling.js';

function fakeRunner(answers: Record<string, CommandResult | Error>): {
  runner: Runner;
  calls: string[];
} {
  const calls: string[] = [];
  const runner: Runner = {
    run: (file, args) => {
      const line = [file, ...args].join(' ');
      calls.push(line);
      const key = Object.keys(answers).find((k) => line.startsWith(k));
      const answer = key === undefined ? undefined : answers[key];
      if (answer instanceof Error) return Promise.reject(answer);
      return Promise.resolve(answer ?? { code: 1, stdout: '', stderr: 'unexpected' });
    },
  };
  return { runner, calls };
}

const current = (policy: string, priority: number): CommandResult => ({
  code: 0,
  stdout: `pid 42's current scheduling policy: ${policy}\npid 42's current scheduling priority: ${priority}\n`,
  stderr: '',
});

describe('realtime scheduling', () => {
  it('parses what chrt prints', () => {
    expect(parseChrtPolicy(current('SCHED_RR', 10).stdout)).toEqual({
      policy: 'SCHED_RR',
      priority: 10,
    });
    expect(parseChrtPolicy(current('SCHED_OTHER', 0).stdout)).toEqual({
      policy: 'SCHED_OTHER',
      priority: 0,
    });
    expect(parseChrtPolicy('nonsense')).toBeUndefined();
  });

  it('asks for SCHED_RR on every thread of the process', async () => {
    const { runner, calls } = fakeRunner({ 'chrt --rr': { code: 0, stdout: '', stderr: '' } });
    expect(await applyRealtime(runner, 42, 10)).toEqual({
      policy: 'SCHED_RR',
      priority: 10,
      applied: true,
    });
    expect(calls).toEqual(['chrt --rr --all-tasks --pid 10 42']);
  });

  it('reports the policy it runs under when it is not allowed to change it', async () => {
    const refused = {
      code: 1,
      stdout: '',
      stderr: "chrt: failed to set pid 42's policy: Operation not permitted",
    };
    const normal = fakeRunner({ 'chrt --rr': refused, 'chrt --pid': current('SCHED_OTHER', 0) });
    expect(await applyRealtime(normal.runner, 42, 10)).toEqual({
      policy: 'SCHED_OTHER',
      priority: 0,
      applied: false,
      problem: refused.stderr,
    });
    // A service manager that set it already (systemd CPUSchedulingPolicy=rr): realtime anyway.
    const inherited = fakeRunner({ 'chrt --rr': refused, 'chrt --pid': current('SCHED_RR', 5) });
    expect(await applyRealtime(inherited.runner, 42, 10)).toMatchObject({
      policy: 'SCHED_RR',
      priority: 5,
      applied: false,
    });
  });

  it('never throws: a missing chrt is a problem reported, not a failure', async () => {
    const { runner } = fakeRunner({ chrt: new Error('chrt: not found') });
    expect(await applyRealtime(runner, 42, 10)).toEqual({
      policy: 'unknown',
      priority: 0,
      applied: false,
      problem: 'chrt: not found',
    });
  });

  it('with priority 0 changes nothing and reports what it is', async () => {
    const { runner, calls } = fakeRunner({ 'chrt --pid': current('SCHED_OTHER', 0) });
    expect(await applyRealtime(runner, 42, 0)).toEqual({
      policy: 'SCHED_OTHER',
      priority: 0,
      applied: false,
    });
    expect(calls).toEqual(['chrt --pid 42']);
  });
});
