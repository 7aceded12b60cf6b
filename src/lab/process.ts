// Processes the lab starts (backends, daemons) are recorded as pid + kernel start time. A pid
// alone can be reused by an unrelated process after ours exited; the pair cannot, so the lab
// never signals a process it did not start. They are started detached inside a namespace
// (`spawnInNamespace`), so they outlive the `nlb lab` call that started them.
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { LabError } from './errors.js';

export interface ProcessRef {
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat: clock ticks since boot when the process started. */
  readonly startTime: string;
}

/** The kernel start time of `pid`, or undefined when no such process exists. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses; fields after the last ')'
  // start at field 3 (state), so starttime (field 22) is the 20th of them.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  if (state === 'Z' || state === 'X') {
    return undefined;
  }
  return rest[19];
}

export function processRef(pid: number): ProcessRef | undefined {
  const startTime = processStartTime(pid);
  return startTime === undefined ? undefined : { pid, startTime };
}

/** True when the very process `ref` names is still running (not a zombie, not a reused pid). */
export function isAlive(ref: ProcessRef): boolean {
  return processStartTime(ref.pid) === ref.startTime;
}

/** Sends `signal` to the process only if it is still the one recorded. */
export function signalProcess(ref: ProcessRef, signal: NodeJS.Signals): boolean {
  if (!isAlive(ref)) {
    return false;
  }
  try {
    process.kill(ref.pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Polls until every process has exited or `timeoutMs` passes; returns those still alive. */
export async function waitForExit(
  refs: readonly ProcessRef[],
  timeoutMs: number,
): Promise<ProcessRef[]> {
  const pollMs = 20;
  const deadline = Date.now() + timeoutMs;
  let alive = refs.filter(isAlive);
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(pollMs);
    alive = alive.filter(isAlive);
  }
  return alive;
}

/** SIGTERM, a grace period, then SIGKILL for whatever is left. */
export async function terminate(refs: readonly ProcessRef[], graceMs: number): Promise<void> {
  for (const ref of refs) {
    signalProcess(ref, 'SIGTERM');
  }
  const left = await waitForExit(refs, graceMs);
  for (const ref of left) {
    signalProcess(ref, 'SIGKILL');
  }
  await waitForExit(left, graceMs);
}

/** Starts `argv` inside `namespace`, detached (it outlives the CLI), output appended to `logPath`. */
export function spawnInNamespace(
  namespace: string,
  argv: readonly string[],
  logPath: string,
  env: NodeJS.ProcessEnv = process.env,
): ProcessRef {
  const log = openSync(logPath, 'a', 0o600);
  try {
    // `ip netns exec` execs the command in place, so the pid is the command's own.
    const child = spawn('ip', ['netns', 'exec', namespace, ...argv], {
      detached: true,
      stdio: ['ignore', log, log],
      env,
    });
    child.on('error', () => undefined);
    child.unref();
    const ref = child.pid === undefined ? undefined : processRef(child.pid);
    if (ref === undefined) {
      throw new LabError('process-failed', `could not start '${argv.join(' ')}' in ${namespace}`);
    }
    return ref;
  } finally {
    closeSync(log);
  }
}

/** The last lines of a process's log, for the message that says it failed. */
export function logTail(logPath: string, lines = 10): string {
  try {
    return readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
