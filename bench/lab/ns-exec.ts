// Running programs inside a lab namespace, for the benchmark parts that drive outside tools
// (iperf3, haproxy, ipvsadm, nft): one bounded command, one long-lived child, and waiting for a
// listener. Every argv runs under `ip netns exec`, never in the root namespace.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { type LabState, targetNamespace } from '../../src/lab/lab.js';
import { nowEpochMs } from './support.js';

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `argv` in `target` of the lab, killed after `timeoutMs`; `input`, if given, on stdin. */
export function execNs(
  lab: LabState,
  target: string,
  argv: readonly string[],
  timeoutMs: number,
  input?: string,
): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(
      'ip',
      ['netns', 'exec', targetNamespace(lab, target), ...argv],
      { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.on('error', () => undefined);
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Like execNs, but a non-zero exit is an error that names the command and its stderr. */
export async function execNsChecked(
  lab: LabState,
  target: string,
  argv: readonly string[],
  timeoutMs: number,
  input?: string,
): Promise<string> {
  const out = await execNs(lab, target, argv, timeoutMs, input);
  if (out.code !== 0) {
    throw new Error(
      `${argv.join(' ')} in ${target} failed (exit ${out.code}): ${out.stderr.trim()}`,
    );
  }
  return out.stdout;
}

export function spawnNs(lab: LabState, target: string, argv: readonly string[]): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', targetNamespace(lab, target), ...argv], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.on('error', () => undefined);
  return child;
}

export async function stopChild(child: ChildProcess, graceMs = 2_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await closed;
  clearTimeout(timer);
}

export async function waitListening(
  lab: LabState,
  target: string,
  port: number,
  timeoutMs: number,
  listeners = 1,
): Promise<void> {
  const deadline = nowEpochMs() + timeoutMs;
  while (nowEpochMs() < deadline) {
    const { stdout } = await execNs(lab, target, ['ss', '-Htln', `sport = :${port}`], 5_000);
    if (stdout.split('\n').filter((line) => line.trim() !== '').length >= listeners) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on :${port} in ${target} after ${timeoutMs} ms`);
}
