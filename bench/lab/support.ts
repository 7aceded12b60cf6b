// What the parts of the lab benchmark share: running a helper inside a lab namespace, asking the
// daemons through their control sockets, choosing source ports by bucket, reading the nlbd logs,
// and small statistics.
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseAddress } from '../../src/core/address.js';
import { type AssignMember, assign } from '../../src/core/assign.js';
import { flowBucket } from '../../src/core/flow.js';
import { controlRequest } from '../../src/control/client.js';
import type { QueryData } from '../../src/control/protocol.js';
import { defaultSocketPath } from '../../src/daemon/paths.js';
import { labClusterName } from '../../src/lab/host-config.js';
import type { DriverStats } from '../../src/daemon/host-driver.js';
import {
  type LabState,
  type LabUpOptions,
  labDown,
  labUp,
  repoRoot,
  targetNamespace,
} from '../../src/lab/lab.js';
import { acquireLabTestLock } from '../../src/lab/lock.js';
import { loadConfigFile } from '../../src/node/config-file.js';

export const viteNodePath = path.join(repoRoot, 'node_modules', 'vite-node', 'vite-node.mjs');

/** Wall-clock ms with sub-ms resolution; comparable across the processes of this machine. */
export function nowEpochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** A figure for a report: fixed digits, '-' for none. */
export function fmt(value: number | null | undefined, digits = 1): string {
  return value === null || value === undefined ? '-' : value.toFixed(digits);
}

export function round(value: number, digits = 1): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** The q-quantile by nearest rank; null for no samples. */
export function quantile(values: readonly number[], q: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index]!;
}

/** The middle value, or the mean of the two middle values of an even count. */
/**
 * Per round, the VIP run's value over the dedicated-IP run's (the filter's cost, round by round;
 * a round missing either is left out), and their median.
 */
export function pairedRatios<Run extends { round: number; path: string }>(
  runs: readonly Run[],
  rounds: number,
  value: (run: Run) => number,
): { roundRatios: number[]; ratio: number | null } {
  const roundRatios = Array.from({ length: rounds }, (_, r) => {
    const pair = runs.filter((x) => x.round === r + 1);
    const dedicated = pair.find((x) => x.path === 'dedicated');
    const vip = pair.find((x) => x.path === 'vip');
    const d = dedicated === undefined ? undefined : value(dedicated);
    const v = vip === undefined ? undefined : value(vip);
    return d === undefined || v === undefined || d === 0 ? NaN : round(v / d, 3);
  }).filter((x) => !Number.isNaN(x));
  return { roundRatios, ratio: median(roundRatios) };
}

export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const half = sorted.length / 2;
  return Number.isInteger(half)
    ? (sorted[half - 1]! + sorted[half]!) / 2
    : sorted[Math.floor(half)]!;
}

export function maxOf(values: readonly number[]): number | null {
  return values.length === 0 ? null : Math.max(...values);
}

export function machineInfo(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    loadAverageAtStart: os.loadavg().map((x) => round(x, 2)),
  };
}

// ------------------------------------------------------------------------------ helpers

export interface HelperHandle<Result> {
  /** Sends one line to the helper's stdin. */
  send(line: unknown): void;
  /** Resolves when the helper printed {"type":"ready"}. */
  readonly ready: Promise<void>;
  /** The helper's next {"type":"result"} line, in order. */
  next(): Promise<Result>;
  /** Closes the helper's stdin: helpers that serve requests exit then. */
  end(): void;
  kill(): void;
}

/**
 * Runs `bench/lab/<script>.ts` inside `target` of the lab with vite-node (no build step for the
 * benchmark's own code), sends `config` (if given) as the first stdin line, and reads JSON lines
 * back. `hardTimeoutMs` kills a helper that outlives its own bounds.
 */
export function startHelper<Result>(
  lab: LabState,
  target: string,
  script: 'prober' | 'http-client',
  config: unknown,
  hardTimeoutMs: number,
): HelperHandle<Result> {
  if (!existsSync(viteNodePath)) {
    throw new Error(`${viteNodePath} is missing: install the dev dependencies (npm ci)`);
  }
  const namespace = targetNamespace(lab, target);
  const child: ChildProcess = spawn(
    'ip',
    [
      'netns',
      'exec',
      namespace,
      process.execPath,
      viteNodePath,
      path.join(repoRoot, 'bench', 'lab', `${script}.ts`),
    ],
    { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4096);
  });
  child.stdin!.on('error', () => undefined);
  if (config !== undefined) child.stdin!.write(`${JSON.stringify(config)}\n`);
  const hardStop = setTimeout(() => child.kill('SIGKILL'), hardTimeoutMs);

  // Results arrive in order; each `next()` takes the oldest one not yet taken.
  const results: Result[] = [];
  const waiters: { resolve: (r: Result) => void; reject: (e: Error) => void }[] = [];
  let failure: Error | undefined;
  let markReady: () => void = () => undefined;
  let failReady: (e: Error) => void = () => undefined;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    failReady = reject;
  });
  ready.catch(() => undefined);
  const fail = (error: Error): void => {
    failure ??= error;
    failReady(failure);
    for (const waiter of waiters.splice(0)) waiter.reject(failure);
  };
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (line) => {
    let record: { type?: string; message?: string };
    try {
      record = JSON.parse(line) as { type?: string };
    } catch {
      return;
    }
    if (record.type === 'ready') markReady();
    if (record.type === 'result') {
      const waiter = waiters.shift();
      if (waiter !== undefined) waiter.resolve(record as Result);
      else results.push(record as Result);
    }
    if (record.type === 'error') {
      fail(new Error(`${script} in ${namespace}: ${record.message ?? 'failed'}`));
    }
  });
  child.once('error', (error) => fail(error));
  child.once('close', (code) => {
    clearTimeout(hardStop);
    child.stdin!.destroy();
    fail(
      new Error(
        `${script} in ${namespace} ended (exit ${String(code)})${stderr.trim() === '' ? '' : `: ${stderr.trim()}`}`,
      ),
    );
  });
  return {
    send: (line) => {
      if (child.stdin!.writable) child.stdin!.write(`${JSON.stringify(line)}\n`);
    },
    ready,
    next: () => {
      const buffered = results.shift();
      if (buffered !== undefined) return Promise.resolve(buffered);
      if (failure !== undefined) return Promise.reject(failure);
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
    },
    end: () => child.stdin!.end(),
    kill: () => child.kill('SIGKILL'),
  };
}

/** Waits for a helper's ready line, at most `timeoutMs`. */
export async function helperReady(
  helper: HelperHandle<unknown>,
  timeoutMs = 30_000,
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      helper.ready,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`a benchmark helper did not start within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// ------------------------------------------------------------------------------ the cluster

export function socketOf(lab: LabState, hostId: number): string {
  return defaultSocketPath(labClusterName(lab.name), hostId);
}

export async function query(lab: LabState, hostId: number): Promise<QueryData | undefined> {
  try {
    const response = await controlRequest(socketOf(lab, hostId), { verb: 'query' }, 1_000);
    return response.ok ? (response.data as QueryData) : undefined;
  } catch {
    return undefined;
  }
}

export async function command(
  lab: LabState,
  hostId: number,
  verb: string,
  fields: Record<string, unknown> = {},
): Promise<string> {
  const response = await controlRequest(socketOf(lab, hostId), { verb, ...fields }, 5_000);
  if (!response.ok) throw new Error(`${verb} on host ${hostId}: ${response.error.message}`);
  const reply = response.data as { code: string; message: string };
  if (reply.code !== 'ok') throw new Error(`${verb} on host ${hostId}: ${reply.message}`);
  return reply.message;
}

/**
 * Waits until every host of `members` reports converged on exactly `members`, with its kernel
 * in sync; returns the milliseconds waited. Throws after `timeoutMs`. Every `pollMs` it asks each
 * host: in a large lab, poll slowly, or the questions themselves starve the daemons.
 */
export async function waitConverged(
  lab: LabState,
  members: readonly number[],
  timeoutMs: number,
  signal?: AbortSignal,
  pollMs = 20,
): Promise<number> {
  const start = nowEpochMs();
  const want = [...members].sort((a, b) => a - b).join(',');
  for (;;) {
    signal?.throwIfAborted();
    const views = await Promise.all(members.map((id) => query(lab, id)));
    if (
      views.every(
        (v) => v !== undefined && v.converged && v.dataplaneInSync && v.members.join(',') === want,
      )
    ) {
      return nowEpochMs() - start;
    }
    if (nowEpochMs() - start > timeoutMs) {
      const seen = views.map((v, i) =>
        v === undefined
          ? `h${members[i]}: no answer`
          : `h${members[i]}: members ${v.members.join(',')} converged ${v.converged}`,
      );
      throw new Error(
        `lab ${lab.name}: hosts ${want} did not converge within ${timeoutMs} ms (${seen.join('; ')}); see the nlbd logs in ${lab.dir}`,
      );
    }
    await sleep(pollMs);
  }
}

/** Owner of every bucket of rule 0, from what each host says it owns (null: nobody). */
export async function ownersNow(
  lab: LabState,
  hostIds: readonly number[],
  buckets: number,
): Promise<(number | null)[]> {
  const owners = new Array<number | null>(buckets).fill(null);
  for (const id of hostIds) {
    const view = await query(lab, id);
    for (const bucket of view?.rules[0]?.owned ?? []) {
      if (owners[bucket] !== null) {
        throw new Error(`bucket ${bucket} is owned by hosts ${owners[bucket]} and ${id} at once`);
      }
      owners[bucket] = id;
    }
  }
  return owners;
}

/**
 * The map the cluster converges to after a change, by the same pure function the hosts use:
 * every lab host has the default (equal) load weight and its id as handling priority.
 */
export function targetOwners(
  owners: readonly (number | null)[],
  members: readonly { id: number; draining?: boolean }[],
): (number | null)[] {
  const assignMembers: AssignMember[] = members.map((m) => ({
    id: m.id,
    loadWeight: 50,
    handlingPriority: m.id,
    draining: m.draining ?? false,
  }));
  return assign({ mode: 'multiple', buckets: owners.length, owners, members: assignMembers });
}

export interface LabFlowConfig {
  readonly hashSeed: number;
  readonly buckets: number;
}

export async function flowConfigOf(lab: LabState): Promise<LabFlowConfig> {
  const loaded = await loadConfigFile(lab.hosts[0]!.config);
  if (!loaded.ok) throw new Error(`the lab's config ${lab.hosts[0]!.config} does not load`);
  const rule = loaded.config.cluster.portRules[0];
  if (rule === undefined || rule.affinity !== 'none') {
    throw new Error('the lab benchmark expects one port rule with affinity none');
  }
  return { hashSeed: loaded.config.cluster.hashSeed, buckets: rule.buckets };
}

/**
 * Source ports of `sourceIp` that hash into each bucket, from [portFirst, portLast]. The default
 * range sits below Linux's ephemeral ports (32768-60999), so bound probe ports never collide
 * with the connections of other programs in the namespace.
 */
export function portsByBucket(
  sourceIp: string,
  flow: LabFlowConfig,
  portFirst = 20_000,
  portLast = 32_767,
): number[][] {
  const address = parseAddress(sourceIp);
  if (address === undefined) throw new Error(`bad source address ${sourceIp}`);
  const ports: number[][] = Array.from({ length: flow.buckets }, () => []);
  for (let port = portFirst; port <= portLast; port++) {
    ports[flowBucket({ address, port }, 'none', flow.buckets, flow.hashSeed)]!.push(port);
  }
  return ports;
}

// ------------------------------------------------------------------------------ nlbd logs

export interface LogRecord {
  readonly by?: number;
  readonly event?: string;
  readonly time?: string;
  readonly [field: string]: unknown;
}

/** Every JSON line of host `hostId`'s nlbd log (the lab directory goes with `labDown`). */
export function daemonLog(lab: LabState, hostId: number): LogRecord[] {
  const host = lab.hosts.find((h) => h.id === hostId);
  if (host === undefined) return [];
  let text: string;
  try {
    text = readFileSync(host.daemonLog, 'utf8');
  } catch {
    return [];
  }
  const records: LogRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      records.push({ by: hostId, ...(JSON.parse(line) as LogRecord) });
    } catch {
      // A line cut by a SIGKILL is no record.
    }
  }
  return records;
}

export interface ProgramSample {
  readonly hostId: number;
  readonly programMs: number;
  readonly how: string;
  /** Where the time went, when nlbd says (`ownership programmed`). */
  readonly inputWaitMs?: number;
  readonly waitMs?: number;
  readonly kernelMs?: number;
}

/** Decision → kernel programmed, as nlbd logs it for each ownership change ("ownership programmed"). */
export function programSamples(lab: LabState): ProgramSample[] {
  return lab.hosts.flatMap((h) =>
    daemonLog(lab, h.id)
      .filter((r) => r.event === 'ownership programmed' && typeof r.programMs === 'number')
      .map((r) => ({
        hostId: h.id,
        programMs: r.programMs as number,
        how: String(r.how),
        ...(typeof r.inputWaitMs === 'number' ? { inputWaitMs: r.inputWaitMs } : {}),
        ...(typeof r.waitMs === 'number' ? { waitMs: r.waitMs } : {}),
        ...(typeof r.kernelMs === 'number' ? { kernelMs: r.kernelMs } : {}),
      })),
  );
}

// ------------------------------------------------------------------------------ lab lifetime

/** Labs this process has up, so a signal handler can take them down. */
export const labsUp = new Set<string>();

export interface LabRunOutput<T> {
  readonly value: T;
  readonly labName: string;
  /** Every "ownership programmed" of every host over the lab's life. */
  readonly program: ProgramSample[];
  /** What each running nlbd's `params` says of its programming (last 256 samples). */
  readonly driverProgram: Record<string, unknown>;
}

/**
 * Builds a lab, runs `body`, reads the daemons' logs and stats, and always takes the lab down.
 * Holds the lab-test lock meanwhile, so no lab test loads the two cores during a measurement.
 */
export async function withLab<T>(
  options: LabUpOptions & { name: string },
  body: (lab: LabState) => Promise<T>,
  log: (line: string) => void,
): Promise<LabRunOutput<T>> {
  const release = await acquireLabTestLock();
  labsUp.add(options.name);
  try {
    const lab = await labUp(options);
    log(`lab ${lab.name} up (${options.hosts} hosts)`);
    const value = await body(lab);
    const driverProgram: Record<string, unknown> = {};
    for (const host of lab.hosts) {
      try {
        const response = await controlRequest(socketOf(lab, host.id), { verb: 'params' }, 2_000);
        if (response.ok) {
          driverProgram[`h${host.id}`] = (response.data as { driver: DriverStats }).driver.program;
        }
      } catch {
        // A host whose daemon is stopped has no stats to give.
      }
    }
    const keepDir = process.env.NLB_BENCH_KEEP_LOGS;
    if (keepDir !== undefined && keepDir !== '') {
      // For looking into a result afterwards: the lab directory goes with the lab.
      mkdirSync(path.join(keepDir, lab.name), { recursive: true });
      for (const host of lab.hosts) {
        if (existsSync(host.daemonLog)) {
          copyFileSync(host.daemonLog, path.join(keepDir, lab.name, path.basename(host.daemonLog)));
        }
      }
    }
    return { value, labName: lab.name, program: programSamples(lab), driverProgram };
  } finally {
    await labDown(options.name).catch((error: unknown) =>
      log(`labDown ${options.name} failed: ${String(error)}`),
    );
    labsUp.delete(options.name);
    release();
  }
}
