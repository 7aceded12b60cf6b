// Realtime scheduling for nlbd. On a busy host (a web server saturating the cores, a load
// generator, a 32-host lab on two cores) a daemon at normal priority waits behind every runnable
// process: its timers fire late, heartbeats sit in its socket, and its nft transactions wait for
// the CPU. Measured on this kind of machine (2 cores, four busy loops beside it), one ownership
// transaction through the long-lived nft process took p99 10.7 ms at normal priority and 1.8 ms
// with nlbd (and so the nft process it starts) at SCHED_FIFO 20. Cluster membership daemons do
// the same for the same reason (corosync runs SCHED_RR by default; keepalived offers it).
//
// nlbd asks for SCHED_RR at a modest priority (`--realtime-priority`, default 10; 0 leaves the
// scheduling alone) for every thread it has (`chrt --all-tasks`); the processes it starts later
// (the interactive nft, nft monitor, conntrack, ip, ss) inherit it. nlbd sleeps almost all of the
// time, and the kernel's realtime throttling (sched_rt_runtime_us, 95 % by default) keeps a share
// of every core for everything else even if it ever spun. Without the right to do it (no
// CAP_SYS_NICE, e.g. systemd's RestrictRealtime=, or a container that forbids it) nlbd runs on
// at normal priority and says so; a service manager that already set a realtime policy
// (CPUSchedulingPolicy=) is reported as it is.
//
// The long-lived `nft -i` that carries every ownership change runs one priority above nlbd
// (`kernelUpdatePriority`). Its transactions take ~1-2 ms, so it can starve nothing, but at
// nlbd's own priority it waits behind every other busy realtime process: SCHED_RR hands the CPU
// round in 100 ms slices, and in a 32-host lab on two cores, where every survivor of a crash
// works at once, the new owners' updates took 74-125 ms in the kernel (three crashes); one
// above, 2.3 and 5.7 ms (one crash).
import { type Runner } from '../dataplane/exec.js';
import { errorText } from '../core/error-text.js';
import type { EventRecord } from './event-names.js';

/** Above every normal process, below the kernel's threaded interrupts (50). */
export const realtimePriorityDefault = 10;
export const realtimePriorityMax = 99;

export interface SchedulingOutcome {
  /** The policy nlbd runs under afterwards, as chrt names it: 'SCHED_RR', 'SCHED_OTHER', ... */
  readonly policy: string;
  readonly priority: number;
  /** True when nlbd set it itself just now. */
  readonly applied: boolean;
  /** Why it could not (absent when it could, or was not asked to). */
  readonly problem?: string;
}

/** Parses `chrt --pid <pid>`: "pid 12's current scheduling policy: SCHED_RR" and "... priority: 10". */
export function parseChrtPolicy(text: string): { policy: string; priority: number } | undefined {
  const policy = /scheduling policy:\s*(SCHED_[A-Z]+)/.exec(text);
  const priority = /scheduling priority:\s*(\d+)/.exec(text);
  if (policy === null || priority === null) {
    return undefined;
  }
  return { policy: policy[1]!, priority: Number(priority[1]) };
}

async function currentPolicy(
  runner: Runner,
  pid: number,
): Promise<{ policy: string; priority: number } | undefined> {
  try {
    const result = await runner.run('chrt', ['--pid', String(pid)]);
    return result.code === 0 ? parseChrtPolicy(result.stdout) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Puts every thread of process `pid` under SCHED_RR at `priority` (0: leaves it alone and
 * reports what it is). Never throws: a host where it is not allowed runs at normal priority.
 */
export async function applyRealtime(
  runner: Runner,
  pid: number,
  priority: number,
): Promise<SchedulingOutcome> {
  let problem: string | undefined;
  if (priority > 0) {
    try {
      const argv = ['--rr', '--all-tasks', '--pid', String(priority), String(pid)];
      const result = await runner.run('chrt', argv);
      if (result.code === 0) return { policy: 'SCHED_RR', priority, applied: true };
      problem = result.stderr.trim() || `chrt exited ${result.code}`;
    } catch (error) {
      problem = errorText(error);
    }
  }
  const now = await currentPolicy(runner, pid);
  return {
    policy: now?.policy ?? 'unknown',
    priority: now?.priority ?? 0,
    applied: false,
    ...(problem === undefined ? {} : { problem }),
  };
}

function isRealtime(policy: string): boolean {
  return policy === 'SCHED_RR' || policy === 'SCHED_FIFO';
}

/**
 * The priority for the long-lived nft process that programs ownership changes: one above
 * nlbd's when nlbd runs realtime (set by itself, or by a service manager: deploy/nlbd.service
 * allows the one step up with LimitRTPRIO=), else undefined (it inherits nlbd's scheduling). If
 * chrt may not, the nft adapter falls back to inheriting after one failed start.
 */
export function kernelUpdatePriority(outcome: SchedulingOutcome): number | undefined {
  return isRealtime(outcome.policy) && outcome.priority > 0
    ? Math.min(outcome.priority + 1, realtimePriorityMax)
    : undefined;
}

/**
 * Puts this nlbd under SCHED_RR at `priority` (applyRealtime), logs how it is scheduled, and
 * returns the priority for its long-lived nft process (kernelUpdatePriority).
 */
export async function scheduleDaemon(
  runner: Runner,
  priority: number,
  log: (record: EventRecord) => void,
): Promise<number | undefined> {
  const outcome = await applyRealtime(runner, process.pid, priority);
  log(schedulingEvent(outcome, priority));
  return kernelUpdatePriority(outcome);
}

/** The event that says how nlbd is scheduled: `scheduling`, or a warning when it could not be. */
export function schedulingEvent(outcome: SchedulingOutcome, asked: number): EventRecord {
  if (outcome.problem !== undefined && !isRealtime(outcome.policy)) {
    return {
      event: 'realtime scheduling unavailable',
      asked,
      policy: outcome.policy,
      problem: outcome.problem,
      hint: 'nlbd runs at normal priority: under CPU load its timers and kernel updates may be late. Give it CAP_SYS_NICE (systemd: drop RestrictRealtime=, or set CPUSchedulingPolicy=rr), or pass --realtime-priority 0 to silence this',
    };
  }
  return {
    event: 'scheduling',
    policy: outcome.policy,
    priority: outcome.priority,
    setBy: outcome.applied ? 'nlbd' : 'inherited',
  };
}
