// The long-running processes in a lab's hosts: the backend (a small HTTP server on :80 that
// names its host) and nlbd. Each runs detached inside its host's namespace, its output in a log
// in the lab's directory and its pid recorded in state.json, so another process (`nlb lab
// down`, a test) can find and stop it.
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { controlRequest } from '../control/client.js';
import type { QueryData } from '../control/protocol.js';
import { defaultSocketPath } from '../control/paths.js';
import { stateDirEnv } from '../daemon/paths.js';
import { labClusterName } from './host-config.js';
import { labIgmpGroup, steerClusterFrames } from './switch.js';
import { LabError, assertBuilt, assertRoot } from './errors.js';
import { labHttpPort } from './naming.js';
import { backendMainPath, daemonMainPath } from './paths.js';
import { serviceFile } from './service.js';
import { nlbdNodeFlags } from '../daemon/node-flags.js';
import {
  isAlive,
  logTail,
  type ProcessRef,
  spawnInNamespace,
  terminate,
  waitForExit,
} from './process.js';
import {
  type LabHostState,
  type LabRef,
  type LabState,
  hostOf,
  labStateDir,
  loadLab,
  updateState,
  writeState,
} from './state.js';

/** Labs run nlbd in every host unless asked not to (`--no-daemons`, `startDaemons: false`). */
export const startDaemonsDefault = true;
/** `{config}` in the daemon command is replaced with the host's config path. */
export const daemonCommandDefault: readonly string[] = [
  process.execPath,
  ...nlbdNodeFlags,
  daemonMainPath,
  '--config',
  '{config}',
];
/** A backend is a small node process; 5 s to print its first line means something is wrong. */
const backendReadyTimeoutMs = 5_000;
/** A daemon that exits within this window after start is reported as failed to start. */
const daemonSettleMsDefault = 300;

/** Starts the backend in every host of a lab being built, and waits until each listens. */
export async function startBackends(state: LabState): Promise<void> {
  for (const host of state.hosts) {
    host.backend = spawnInNamespace(
      host.namespace,
      [
        process.execPath,
        backendMainPath,
        '--host-id',
        String(host.id),
        '--port',
        String(labHttpPort),
        '--service-file',
        serviceFile(state.dir, host.id),
      ],
      host.backendLog,
    );
  }
  writeState(state);
  await Promise.all(state.hosts.map((host) => waitForBackend(host)));
}

async function waitForBackend(host: LabHostState): Promise<void> {
  const ref = host.backend;
  if (ref === undefined) {
    return;
  }
  const deadline = Date.now() + backendReadyTimeoutMs;
  while (Date.now() < deadline) {
    if (logTail(host.backendLog, 50).includes('"event":"listening"')) {
      return;
    }
    if (!isAlive(ref)) {
      break;
    }
    await sleep(20);
  }
  throw new LabError(
    'process-failed',
    `the backend of host ${host.id} did not start listening on :${labHttpPort}; its log says:\n${logTail(host.backendLog)}`,
  );
}

/** Labs up to this many hosts start every nlbd at once; larger ones in batches (startAllDaemons). */
export const labParallelStartMax = 8;
const daemonStartedTimeoutMs = 30_000;

/** Waits until nlbd of `host` logged `nlbd started` (it runs its protocol), or exited. */
async function waitForDaemonStarted(lab: LabRef, hostId: number): Promise<void> {
  const deadline = Date.now() + daemonStartedTimeoutMs;
  while (Date.now() < deadline) {
    const host = hostOf(loadLab(lab), hostId);
    if (logTail(host.daemonLog, 200).includes('"event":"nlbd started"')) return;
    if (host.daemon === undefined || !isAlive(host.daemon)) return;
    await sleep(50);
  }
}

/**
 * Starts nlbd in every host of the lab. A large lab on a small machine starts them in batches
 * of one per core, each batch once the one before runs its protocol: 32 Node processes
 * starting at once on 2 cores take seconds of CPU together, during which none sends its
 * heartbeats on time, and the cluster's first minute is a storm of false detections.
 */
export async function startAllDaemons(lab: LabRef, hostIds: readonly number[]): Promise<void> {
  if (hostIds.length <= labParallelStartMax) {
    await Promise.all(hostIds.map((id) => startHostDaemon(lab, id, { steer: false })));
    return;
  }
  const batch = Math.max(1, os.cpus().length);
  for (let i = 0; i < hostIds.length; i += batch) {
    const ids = hostIds.slice(i, i + batch);
    await Promise.all(ids.map((id) => startHostDaemon(lab, id, { steer: false })));
    await Promise.all(ids.map((id) => waitForDaemonStarted(lab, id)));
  }
}

export interface StartHostDaemonOptions {
  /** Overrides the lab's daemon command (argv, `{config}` replaced with the config path). */
  readonly command?: readonly string[];
  /** Report a daemon that exits within this long as failed; default 300 ms. */
  readonly settleMs?: number;
  /**
   * IGMP labs: wait until the host joined the cluster's group and make its switch port take
   * the cluster's frames (switch.ts); default true. `labUp` does it for all hosts at once.
   */
  readonly steer?: boolean;
}

/**
 * ── Daemon hook ──  Starts nlbd for host `hostId` inside its namespace:
 * `node <repo>/dist/daemon/main.js --config <lab dir>/h<id>.yaml` (or the lab's configured
 * command), output appended to `<lab dir>/h<id>-nlbd.log`, pid recorded in state.json.
 * nlbd is what adds the VIP and the cluster MAC to the host's interface and loads the filter.
 */
export async function startHostDaemon(
  lab: LabRef,
  hostId: number,
  options: StartHostDaemonOptions = {},
): Promise<ProcessRef> {
  assertRoot();
  const ref = await updateState(lab, (state) => {
    const host = hostOf(state, hostId);
    if (host.daemon !== undefined && isAlive(host.daemon)) {
      throw new LabError(
        'invalid-argument',
        `nlbd of host ${hostId} is already running (pid ${host.daemon.pid})`,
        'stop it first with stopHostDaemon / killHostDaemon',
      );
    }
    const command = (options.command ?? state.daemonCommand).map((arg) =>
      arg === '{config}' ? host.config : arg,
    );
    if (command[1] === daemonMainPath) {
      assertBuilt(daemonMainPath);
    }
    host.daemon = spawnInNamespace(host.namespace, command, host.daemonLog, {
      ...process.env,
      [stateDirEnv]: labStateDir(state.name),
    });
    return host.daemon;
  });
  const settleMs = options.settleMs ?? daemonSettleMsDefault;
  if ((await waitForExit([ref], settleMs)).length === 0) {
    const state = loadLab(lab);
    throw new LabError(
      'process-failed',
      `nlbd of host ${hostId} exited at once; its log says:\n${logTail(hostOf(state, hostId).daemonLog)}`,
    );
  }
  const state = loadLab(lab);
  if (state.mode === 'igmp' && (options.steer ?? true)) {
    await steerClusterFrames(state, labIgmpGroup, [hostId]);
  }
  return ref;
}

/** How long `waitForCluster` gives a lab's daemons: more for more hosts on the same 2 cores. */
export function clusterReadyTimeoutMs(hosts: number): number {
  return 30_000 + 2_000 * hosts;
}

/**
 * Waits until nlbd of every host in `hostIds` runs its protocol and all of them report one
 * converged cluster of exactly those hosts. A daemon that exits first (it refused to start: a
 * mode the interface cannot do, a bad config) fails with its own words from its log; a cluster
 * that does not converge in time fails with what each host said.
 */
export async function waitForCluster(
  lab: LabRef,
  hostIds: readonly number[],
  timeoutMs = clusterReadyTimeoutMs(hostIds.length),
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const name = loadLab(lab).name;
  const members = [...hostIds].sort((a, b) => a - b).join(',');
  let said = new Map<number, string>();
  while (Date.now() < deadline) {
    const state = loadLab(lab);
    const answers = await Promise.all(
      hostIds.map(async (id): Promise<[number, string | true]> => {
        const host = hostOf(state, id);
        if (host.daemon === undefined || !isAlive(host.daemon)) {
          throw new LabError(
            'process-failed',
            `nlbd of host ${id} is not running; its log says:\n${logTail(host.daemonLog)}`,
          );
        }
        const answer = await controlRequest(
          defaultSocketPath(labClusterName(name), id),
          { verb: 'query' },
          1_000,
        ).catch(() => undefined);
        if (answer === undefined || !answer.ok) return [id, 'no answer yet'];
        const data = answer.data as QueryData;
        return data.converged && data.members.join(',') === members
          ? [id, true]
          : [id, `${data.state}, members ${data.members.join(',') || 'none'}`];
      }),
    );
    if (answers.every(([, a]) => a === true)) return;
    said = new Map(answers.filter((a): a is [number, string] => a[1] !== true));
    // Each query costs every daemon a little CPU; a large lab on 2 cores converges slower
    // for being asked too often (32 hosts every 100 ms took the lab minutes to come up).
    await sleep(Math.max(100, 30 * hostIds.length));
  }
  throw new LabError(
    'process-failed',
    `the lab's cluster did not converge on hosts ${members} within ${timeoutMs} ms: ${[...said].map(([id, s]) => `host ${id}: ${s}`).join('; ')}`,
    "the hosts' nlbd logs are in the lab directory (h<id>-nlbd.log)",
  );
}

/** Stops nlbd of one host the polite way (SIGTERM, then SIGKILL after `graceMs`). */
export async function stopHostDaemon(
  lab: LabRef,
  hostId: number,
  graceMs = 3_000,
): Promise<boolean> {
  assertRoot();
  const host = hostOf(loadLab(lab), hostId);
  const ref = host.daemon;
  if (ref === undefined || !isAlive(ref)) {
    return false;
  }
  await terminate([ref], graceMs);
  await updateState(lab, (state) => {
    delete hostOf(state, hostId).daemon;
  });
  return true;
}
