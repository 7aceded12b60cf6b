// Looking into a lab's hosts for the fault tests (test/lab-faults*.test.ts): stray processes,
// the daemons' logs, scripts run in a namespace, daemons revived or restarted.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import ts from 'typescript';
import { expect } from 'vitest';
import type { QueryData } from '../../src/control/protocol.js';
import { execIn, netnsPids } from '../../src/lab/netns.js';
import { daemonMainPath, loadLab, startHostDaemon, stopHostDaemon } from '../../src/lab/lab.js';
import { hostIp } from '../../src/lab/naming.js';
import { isAlive } from '../../src/lab/process.js';
import { type ClusterLab, query, queryHosts } from './lab-cluster.js';

export const clusterHosts = [1, 2, 3] as const;

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/**
 * The processes in a host's namespace that are neither its backend nor its recorded nlbd nor
 * one of that nlbd's descendants (its nft processes): what a killed nlbd left behind.
 */
export async function strayProcesses(lab: ClusterLab, hostId: number): Promise<string[]> {
  const host = loadLab(lab.state.name).hosts.find((h) => h.id === hostId)!;
  const own = new Set([host.backend?.pid, host.daemon?.pid].filter((p) => p !== undefined));
  const stray: string[] = [];
  for (const pid of await netnsPids(host.namespace)) {
    let ancestor: number | undefined = pid;
    for (let depth = 0; ancestor !== undefined && ancestor > 1 && depth < 16; depth++) {
      if (own.has(ancestor)) break;
      ancestor = parentOf(ancestor);
    }
    if (ancestor === undefined || !own.has(ancestor)) {
      let command: string;
      try {
        command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
      } catch {
        // Gone meanwhile: nothing left behind.
        continue;
      }
      stray.push(`${pid} ${command}`);
    }
  }
  return stray;
}

/** Every host's answer to `query`, checked by `accept`, sampled every `everyMs` until `stop`. */
export function sampleHosts(
  lab: ClusterLab,
  ids: readonly number[],
  accept: (data: QueryData, id: number) => boolean,
  everyMs = 100,
): { stop(): Promise<{ samples: number; bad: string[] }> } {
  let running = true;
  let samples = 0;
  const bad: string[] = [];
  const loop = (async () => {
    while (running) {
      const answers = await queryHosts(lab, ids);
      samples++;
      for (const [id, data] of answers) {
        if (data === undefined || !accept(data, id)) {
          bad.push(
            `host ${id}: ${data === undefined ? 'no answer' : `${data.state} members ${data.members.join(',')} owns ${data.rules[0]!.owned.length} keptOut ${data.keptOut}`}`,
          );
        }
      }
      await sleep(everyMs);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { samples, bad };
    },
  };
}

/** How many lines of a host's nlbd log (its stdout and stderr) contain `text`. */
export function logTextCount(lab: ClusterLab, hostId: number, text: string): number {
  const host = lab.state.hosts.find((h) => h.id === hostId)!;
  return readFileSync(host.daemonLog, 'utf8')
    .split('\n')
    .filter((line) => line.includes(text)).length;
}

/** How many lines of a host's nlbd log contain `"event":"<name>"`. */
export function logCount(lab: ClusterLab, hostId: number, event: string): number {
  return logTextCount(lab, hostId, `"event":"${event}"`);
}

/** The last record of `event` in host `hostId`'s nlbd log. */
export function lastLogRecord(
  lab: ClusterLab,
  hostId: number,
  event: string,
): Record<string, unknown> {
  const host = lab.state.hosts.find((h) => h.id === hostId)!;
  const line = readFileSync(host.daemonLog, 'utf8')
    .split('\n')
    .filter((l) => l.includes(`"event":"${event}"`))
    .at(-1);
  return JSON.parse(line!) as Record<string, unknown>;
}

/** Waits until host `hostId`'s log holds more than `count` lines of `event`; returns when. */
export function waitForLog(
  lab: ClusterLab,
  hostId: number,
  event: string,
  count: number,
  waitMs: number,
): Promise<number | undefined> {
  return waitForLogText(lab, hostId, `"event":"${event}"`, count, waitMs);
}

/** Waits until host `hostId`'s log holds more than `count` lines with `text`; returns when. */
export async function waitForLogText(
  lab: ClusterLab,
  hostId: number,
  text: string,
  count: number,
  waitMs: number,
): Promise<number | undefined> {
  const start = Date.now();
  while (Date.now() - start < waitMs) {
    if (logTextCount(lab, hostId, text) > count) return Date.now();
    await sleep(10);
  }
  return undefined;
}

// ------------------------------------------------------------------------------ scripts

/**
 * Runs a standalone TypeScript script of test/support (node builtins only) inside a lab
 * namespace: transpiled with the project's TypeScript into the lab's directory, then started
 * with `ip netns exec`. Resolves with its stdout's last line parsed as JSON.
 */
export async function runScriptIn<T>(
  lab: ClusterLab,
  namespace: string,
  script: string,
  args: readonly string[],
): Promise<T> {
  const source = readFileSync(new URL(script, import.meta.url), 'utf8');
  const output = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  const file = path.join(lab.state.dir, `${path.basename(script, '.ts')}.mjs`);
  writeFileSync(file, output, { mode: 0o600 });
  const { stdout } = await execIn(namespace, [process.execPath, file, ...args]);
  const last = stdout.trim().split('\n').at(-1) ?? '';
  return JSON.parse(last) as T;
}

/**
 * Starts nlbd again on every host of 1..3 whose nlbd is not running or does not answer (one
 * left paused in its start-up; `commands` overrides a host's command): after a fault test that
 * failed half-way, so the next one starts whole.
 */
export async function reviveDaemons(
  lab: ClusterLab,
  commands: ReadonlyMap<number, readonly string[]> = new Map(),
): Promise<void> {
  for (const host of loadLab(lab.state.name).hosts) {
    if (!(clusterHosts as readonly number[]).includes(host.id)) continue;
    if (host.daemon !== undefined && isAlive(host.daemon)) {
      if ((await query(lab.sockets.get(host.id)!)) !== undefined) continue;
      await stopHostDaemon(lab.state.name, host.id);
    }
    const command = commands.get(host.id);
    await startHostDaemon(lab.state.name, host.id, command === undefined ? {} : { command });
  }
}

/** Restarts one host's nlbd the way the lab starts it (SIGTERM, then a new start). */
export async function restartDaemon(
  lab: ClusterLab,
  hostId: number,
  command?: readonly string[],
): Promise<void> {
  expect(await stopHostDaemon(lab.state.name, hostId)).toBe(true);
  await startHostDaemon(lab.state.name, hostId, command === undefined ? {} : { command });
}

/** How a one-off nlbd run ended (`runDaemonIn`). */
export interface DaemonRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs nlbd with `args` in `namespace`, its retained state in `stateDir`, and collects its
 * output; one still running after `waitMs` gets SIGTERM. For the nlbd a test expects refused
 * (a second one, a bad config), which must not change anything.
 */
export function runDaemonIn(
  namespace: string,
  stateDir: string,
  args: readonly string[],
  waitMs = 8_000,
): Promise<DaemonRun> {
  return new Promise((resolve) => {
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        namespace,
        'env',
        `NLBD_STATE_DIR=${stateDir}`,
        process.execPath,
        daemonMainPath,
        ...args,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += String(d)));
    child.stderr.on('data', (d: Buffer) => (stderr += String(d)));
    const timer = setTimeout(() => child.kill('SIGTERM'), waitMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * The nlbd command line (for startHostDaemon) of lab host `hostId` with remote control on its
 * dedicated IP (port 2504) behind `tokenFile`, then `extra` options.
 */
export function remoteControlCommand(
  hostId: number,
  tokenFile: string,
  extra: readonly string[] = [],
): string[] {
  return [
    process.execPath,
    daemonMainPath,
    '--config',
    '{config}',
    '--control-listen',
    hostIp(hostId),
    '--token-file',
    tokenFile,
    ...extra,
  ];
}
