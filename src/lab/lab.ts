// `nlb lab`: a real cluster on one machine, built from network namespaces (DESIGN.md §6).
//
//   nlb-<name>-sw   the switch: bridge br0, MAC learning on (as a real switch), default ageing;
//                   one port per host (h1, h2, …) and per client (c1, …)
//   nlb-<name>-hI   host I: eth0 = 198.18.0.(10+I)/24, the backend on :80, later nlbd
//   nlb-<name>-cJ   client J: eth0 = 198.18.0.(200+J)/24 (+ optional extra source addresses)
//   VIP 198.18.0.100: configured by nlbd on the hosts, never by the lab.
//
// Every link and address is created inside these namespaces (`ip -n`); veth pairs are created in
// the switch namespace with their far end moved straight into the host's, so the root namespace
// never holds a lab link, address or route, even for an instant. Everything the lab creates is
// recorded in its state directory as it is created, which is what lets `labDown` (also run after
// a failed `labUp`) remove exactly that and nothing else.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Affinity, ClusterMode } from '../core/config.js';
import { daemonRunFiles, daemonStateFiles, stateDirDefault, stateDirEnv } from '../daemon/paths.js';
import { labClusterName, renderHostConfig } from './host-config.js';
import {
  type CommandOutput,
  execIn,
  ipIn,
  netnsAdd,
  netnsDelete,
  netnsList,
  netnsPids,
} from './exec.js';
import { withFileLock } from './lock.js';
import {
  clientIp,
  clientNamespace,
  clientSwitchPort,
  hostIp,
  hostNamespace,
  hostSwitchPort,
  labBridge,
  labClientsMax,
  labExtraAddressFirst,
  labExtraAddressLast,
  labHostsMax,
  labHttpPort,
  labInterface,
  labNameProblem,
  labPrefixLength,
  labSubnet,
  labVip,
  namespacePrefix,
  switchNamespace,
} from './naming.js';
import {
  isAlive,
  type ProcessRef,
  processRef,
  signalProcess,
  terminate,
  waitForExit,
} from './process.js';
import {
  claimLabDir,
  type LabClientState,
  type LabHostState,
  type LabState,
  labDir,
  listLabNames,
  readState,
  stateVersion,
  writeState,
} from './state.js';

export type { LabState, LabHostState, LabClientState } from './state.js';

/** The repository root, from dist/lab/lab.js or src/lab/lab.ts alike. */
export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const backendMainPath = path.join(repoRoot, 'dist', 'lab', 'backend-main.js');
export const loadgenMainPath = path.join(repoRoot, 'dist', 'lab', 'loadgen-main.js');
export const daemonMainPath = path.join(repoRoot, 'dist', 'daemon', 'main.js');

/** Labs run nlbd in every host unless asked not to (`--no-daemons`, `startDaemons: false`). */
export const startDaemonsDefault = true;
/** `{config}` in the daemon command is replaced with the host's config path. */
export const daemonCommandDefault: readonly string[] = [
  process.execPath,
  daemonMainPath,
  '--config',
  '{config}',
];
/** A backend is a small node process; 5 s to print its first line means something is wrong. */
const backendReadyTimeoutMs = 5_000;
/** A daemon that exits within this window after start is reported as failed to start. */
const daemonSettleMsDefault = 300;
const stopGraceMs = 1_000;
/** State updates are a few ms; a 5 s wait means a stuck process holds the lock. */
const stateLockWaitMs = 5_000;

export type LabErrorCode =
  'not-root' | 'invalid-argument' | 'name-in-use' | 'no-such-lab' | 'not-built' | 'process-failed';

/** An operating error with what to do about it; the CLI renders `message` and `hint`. */
export class LabError extends Error {
  constructor(
    readonly code: LabErrorCode,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'LabError';
  }
}

export interface LabUpOptions {
  /** Default: `lab` + 4 random hex digits. Letters, digits and '_' only (no '-'). */
  readonly name?: string;
  /** 1..32 hosts. */
  readonly hosts: number;
  /** 0..16 clients; default 1. */
  readonly clients?: number;
  /** Extra source addresses per client (from 198.18.0.101-199), for flows from many client IPs. */
  readonly clientExtraIps?: number;
  /** Start the backend on :80 in every host; default true. */
  readonly startBackends?: boolean;
  /** Start nlbd in every host; default `startDaemonsDefault`. */
  readonly startDaemons?: boolean;
  /** Argv starting nlbd, `{config}` standing for the config path; default `daemonCommandDefault`. */
  readonly daemonCommand?: readonly string[];
  readonly clusterMode?: ClusterMode;
  /** Affinity of the lab's port rule (tcp 80, multiple); default none. */
  readonly affinity?: Affinity;
  readonly heartbeatPeriodMs?: number;
  /** Missed periods before a host is declared dead (2..100); undefined keeps the config default. */
  readonly heartbeatTolerance?: number;
}

export type LabRef = string | Pick<LabState, 'name'>;

function nameOf(lab: LabRef): string {
  return typeof lab === 'string' ? lab : lab.name;
}

function assertRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new LabError(
      'not-root',
      'nlb lab needs root: it creates and enters network namespaces',
      'run it as root, e.g. `sudo nlb lab up --hosts 3`',
    );
  }
}

function assertLabName(name: string): void {
  const problem = labNameProblem(name);
  if (problem !== undefined) {
    throw new LabError('invalid-argument', problem);
  }
}

function assertBuilt(file: string): void {
  if (!existsSync(file)) {
    throw new LabError('not-built', `${file} does not exist`, 'build first: `npm run build`');
  }
}

function assertIntegerIn(what: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new LabError(
      'invalid-argument',
      `${what} must be an integer from ${min} to ${max}, got ${value}`,
    );
  }
}

/** Reads a lab's record; throws a LabError naming the labs that do exist when it is missing. */
export function loadLab(lab: LabRef): LabState {
  const name = nameOf(lab);
  assertLabName(name);
  const state = readState(name);
  if (state === undefined) {
    const names = listLabNames();
    throw new LabError(
      'no-such-lab',
      `no lab named '${name}'`,
      names.length === 0
        ? 'create one with `nlb lab up --hosts 3`'
        : `existing labs: ${names.join(', ')}`,
    );
  }
  return state;
}

// In-process queue in front of the cross-process file lock: the file lock is not reentrant, and
// parallel callers in one process (Promise.all over hosts) must not lose each other's updates.
const stateQueues = new Map<string, Promise<unknown>>();

async function withStateLock<T>(name: string, body: () => Promise<T>): Promise<T> {
  const previous = stateQueues.get(name) ?? Promise.resolve();
  const next = previous
    .catch(() => undefined)
    .then(() => withFileLock(path.join(labDir(name), 'state.lock'), stateLockWaitMs, body));
  stateQueues.set(name, next);
  try {
    return await next;
  } finally {
    if (stateQueues.get(name) === next) {
      stateQueues.delete(name);
    }
  }
}

/** Read-modify-write of state.json under the lab's lock. */
async function updateState<T>(
  lab: LabRef,
  change: (state: LabState) => Promise<T> | T,
): Promise<T> {
  const name = nameOf(lab);
  return withStateLock(name, async () => {
    const state = loadLab(name);
    const result = await change(state);
    writeState(state);
    return result;
  });
}

function hostOf(state: LabState, hostId: number): LabHostState {
  const host = state.hosts.find((h) => h.id === hostId);
  if (host === undefined) {
    throw new LabError(
      'invalid-argument',
      `lab '${state.name}' has no host ${hostId}`,
      `its hosts are ${state.hosts.map((h) => h.id).join(', ')}`,
    );
  }
  return host;
}

/** Starts `argv` inside `namespace`, detached (it outlives the CLI), output appended to `logPath`. */
function spawnInNamespace(
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

function logTail(logPath: string, lines = 10): string {
  try {
    return readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function randomLabName(): string {
  return `lab${randomBytes(2).toString('hex')}`;
}

/**
 * Where a lab's daemons keep their retained state (incarnation, suspended): in the lab's own
 * directory, so a lab never writes the machine's /var/lib/nlb and `down` removes it with the lab.
 */
export function labStateDir(name: string): string {
  return path.join(labDir(name), 'nlbd-state');
}

/** True when `namespace` has the form of a namespace of lab `name` (its switch, a host, a client). */
function isNamespaceOfLab(name: string, namespace: string): boolean {
  const prefix = namespacePrefix(name);
  return namespace.startsWith(prefix) && /^(sw|h\d+|c\d+)$/.test(namespace.slice(prefix.length));
}

/** Extra source addresses of client `index` (1-based), `perClient` each, disjoint across clients. */
export function clientExtraIps(index: number, perClient: number): string[] {
  const first = labExtraAddressFirst + (index - 1) * perClient;
  return Array.from({ length: perClient }, (_, k) => `198.18.0.${first + k}`);
}

async function addNamespace(state: LabState, namespace: string): Promise<void> {
  await netnsAdd(namespace);
  // Recorded at once, so a failure from here on is cleaned by `labDown`.
  state.namespaces.push(namespace);
  writeState(state);
  await ipIn(namespace, ['link', 'set', 'lo', 'up']);
}

/**
 * Connects `namespace` to the switch: the veth is created in the switch namespace and its far
 * end moved straight into `namespace`, then addressed and brought up there.
 */
async function attach(
  state: LabState,
  namespace: string,
  switchPort: string,
  addresses: readonly string[],
): Promise<void> {
  const sw = state.switchNamespace;
  await ipIn(sw, [
    'link',
    'add',
    switchPort,
    'type',
    'veth',
    'peer',
    'name',
    labInterface,
    'netns',
    namespace,
  ]);
  await ipIn(sw, ['link', 'set', switchPort, 'master', state.bridge]);
  await ipIn(sw, ['link', 'set', switchPort, 'up']);
  for (const address of addresses) {
    await ipIn(namespace, ['address', 'add', `${address}/${labPrefixLength}`, 'dev', labInterface]);
  }
  await ipIn(namespace, ['link', 'set', labInterface, 'up']);
}

/**
 * Builds a lab and returns its record. On any failure it removes whatever it had created and
 * rethrows; a name already in use is refused before anything is created.
 */
export async function labUp(options: LabUpOptions): Promise<LabState> {
  assertRoot();
  const hosts = options.hosts;
  const clients = options.clients ?? 1;
  const extraPerClient = options.clientExtraIps ?? 0;
  assertIntegerIn('hosts', hosts, 1, labHostsMax);
  assertIntegerIn('clients', clients, 0, labClientsMax);
  const extraMax =
    clients === 0 ? 0 : Math.floor((labExtraAddressLast - labExtraAddressFirst + 1) / clients);
  assertIntegerIn('clientExtraIps', extraPerClient, 0, extraMax);
  const startBackends = options.startBackends ?? true;
  const startDaemons = options.startDaemons ?? startDaemonsDefault;
  if (startBackends) {
    assertBuilt(backendMainPath);
  }

  // Claim the name: the directory is created atomically, and a namespace of the same name
  // (from a lab whose record was lost, or anyone else's) is never adopted.
  const existing = new Set(await netnsList());
  let name = options.name;
  if (name !== undefined) {
    assertLabName(name);
  }
  for (let attempt = 0; ; attempt++) {
    const candidate = name ?? randomLabName();
    // Any namespace of the lab's form refuses the name, not only those this `up` would create:
    // that is what lets `labDown` treat every such namespace as the lab's own.
    const clash = [...existing].filter((ns) => isNamespaceOfLab(candidate, ns));
    if (clash.length === 0 && claimLabDir(candidate)) {
      name = candidate;
      break;
    }
    if (options.name !== undefined || attempt >= 20) {
      throw new LabError(
        'name-in-use',
        clash.length > 0
          ? `lab name '${candidate}' is in use: namespace(s) ${clash.join(', ')} exist`
          : `lab name '${candidate}' is in use: ${labDir(candidate)} exists`,
        `pick another --name, or remove the old lab with \`nlb lab down --name ${candidate}\``,
      );
    }
  }

  const dir = labDir(name);
  const sw = switchNamespace(name);
  const state: LabState = {
    version: stateVersion,
    name,
    dir,
    createdAt: new Date().toISOString(),
    subnet: labSubnet,
    vip: labVip,
    switchNamespace: sw,
    bridge: labBridge,
    keyFile: path.join(dir, 'cluster.key'),
    daemonCommand: [...(options.daemonCommand ?? daemonCommandDefault)],
    namespaces: [],
    hosts: [],
    clients: [],
    complete: false,
  };
  try {
    writeState(state);
    writeFileSync(state.keyFile, randomBytes(32), { mode: 0o600 });

    await addNamespace(state, sw);
    // A plain Linux bridge learns MACs and ages them (300 s) like a real switch; STP stays off
    // so ports forward at once.
    await ipIn(sw, ['link', 'add', state.bridge, 'type', 'bridge']);
    await ipIn(sw, ['link', 'set', state.bridge, 'up']);

    const clusterSettings = {
      labName: name,
      keyFile: state.keyFile,
      mode: options.clusterMode ?? 'unicast',
      affinity: options.affinity ?? 'none',
      ...(options.heartbeatPeriodMs === undefined
        ? {}
        : { heartbeatPeriodMs: options.heartbeatPeriodMs }),
      ...(options.heartbeatTolerance === undefined
        ? {}
        : { heartbeatTolerance: options.heartbeatTolerance }),
    } as const;
    for (let id = 1; id <= hosts; id++) {
      const namespace = hostNamespace(name, id);
      const config = path.join(dir, `h${id}.yaml`);
      writeFileSync(config, renderHostConfig(clusterSettings, id).text, { mode: 0o644 });
      await addNamespace(state, namespace);
      state.hosts.push({
        id,
        namespace,
        interface: labInterface,
        switchPort: hostSwitchPort(id),
        ip: hostIp(id),
        config,
        backendLog: path.join(dir, `h${id}-backend.log`),
        daemonLog: path.join(dir, `h${id}-nlbd.log`),
      });
      await attach(state, namespace, hostSwitchPort(id), [hostIp(id)]);
    }
    for (let index = 1; index <= clients; index++) {
      const namespace = clientNamespace(name, index);
      const extraIps = clientExtraIps(index, extraPerClient);
      await addNamespace(state, namespace);
      state.clients.push({
        index,
        namespace,
        interface: labInterface,
        switchPort: clientSwitchPort(index),
        ip: clientIp(index),
        extraIps,
      });
      await attach(state, namespace, clientSwitchPort(index), [clientIp(index), ...extraIps]);
    }
    writeState(state);

    if (startBackends) {
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
          ],
          host.backendLog,
        );
      }
      writeState(state);
      await Promise.all(state.hosts.map((host) => waitForBackend(host)));
    }
    if (startDaemons) {
      await Promise.all(state.hosts.map((host) => startHostDaemon(name, host.id)));
    }
    return await updateState(name, (current) => {
      current.complete = true;
      return current;
    });
  } catch (error) {
    await labDown(name).catch(() => undefined);
    throw error;
  }
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

export interface LabDownResult {
  readonly name: string;
  /** False when there was nothing to remove (down is idempotent). */
  readonly existed: boolean;
  readonly namespacesDeleted: string[];
  readonly processesStopped: number;
}

/**
 * Removes a lab: stops every process it started and every process still running in its
 * namespaces, deletes exactly the namespaces it recorded, then its directory. Safe to repeat
 * and to run on the remains of a failed `labUp`.
 */
export async function labDown(lab: LabRef): Promise<LabDownResult> {
  assertRoot();
  const name = nameOf(lab);
  assertLabName(name);
  const dir = labDir(name);
  if (!existsSync(dir)) {
    return { name, existed: false, namespacesDeleted: [], processesStopped: 0 };
  }
  let state: LabState | undefined;
  try {
    state = readState(name);
  } catch {
    state = undefined;
  }
  const recorded = (state?.hosts ?? [])
    .flatMap((h) => [h.backend, h.daemon])
    .filter((ref): ref is ProcessRef => ref !== undefined && isAlive(ref));
  const present = new Set(await netnsList());
  // The recorded namespaces, plus any of the lab's form: `up` claimed the name only when none
  // existed, so such a namespace was made by this lab's `up`, killed between creating it and
  // recording it.
  const namespaces = [
    ...new Set([
      ...(state?.namespaces ?? []),
      ...[...present].filter((ns) => isNamespaceOfLab(name, ns)),
    ]),
  ].filter((ns) => present.has(ns));

  // Anything else still inside the lab's namespaces (loadgens, `lab exec` shells) is the lab's
  // too: a namespace whose processes live on would keep its links alive after `ip netns delete`.
  const inside: ProcessRef[] = [];
  for (const namespace of namespaces) {
    for (const pid of await netnsPids(namespace)) {
      const ref = processRef(pid);
      if (ref !== undefined && pid !== process.pid) {
        inside.push(ref);
      }
    }
  }
  const all = [...recorded, ...inside.filter((r) => !recorded.some((x) => x.pid === r.pid))];
  await terminate(all, stopGraceMs);

  for (const namespace of namespaces) {
    await netnsDelete(namespace);
  }
  // A daemon killed with SIGKILL (killHostDaemon, a crash test) leaves its control socket and
  // run file in the shared /run/nlb; they belong to the lab's hosts, so they go with it. Their
  // retained state is in the lab directory (labStateDir), removed below; a daemon started by
  // hand with the default state directory may have left its file there too.
  for (const host of state?.hosts ?? []) {
    for (const file of [
      ...daemonRunFiles(labClusterName(name), host.id),
      ...daemonStateFiles(labClusterName(name), host.id, stateDirDefault),
    ]) {
      rmSync(file, { force: true });
    }
  }
  rmSync(dir, { recursive: true, force: true });
  return { name, existed: true, namespacesDeleted: namespaces, processesStopped: all.length };
}

export interface LabHostStatus {
  readonly id: number;
  readonly namespace: string;
  readonly ip: string;
  readonly config: string;
  readonly backendRunning: boolean;
  readonly daemonRunning: boolean;
  /** The switch-side port state: 'down' after `cutLink`. */
  readonly link: 'up' | 'down' | 'missing';
}

export interface LabStatus {
  readonly name: string;
  readonly dir: string;
  readonly createdAt?: string;
  readonly complete: boolean;
  readonly vip: string;
  readonly namespacesMissing: string[];
  readonly hosts: LabHostStatus[];
  readonly clients: Array<Pick<LabClientState, 'index' | 'namespace' | 'ip' | 'extraIps'>>;
  /** Complete, every namespace present and every backend running. */
  readonly healthy: boolean;
}

async function switchPortStates(sw: string): Promise<Map<string, 'up' | 'down'>> {
  const states = new Map<string, 'up' | 'down'>();
  try {
    const { stdout } = await ipIn(sw, ['-j', 'link', 'show']);
    for (const link of JSON.parse(stdout) as Array<{ ifname: string; flags?: string[] }>) {
      states.set(link.ifname, link.flags?.includes('UP') ? 'up' : 'down');
    }
  } catch {
    // A missing switch shows as every link missing.
  }
  return states;
}

/** Every lab with a record, checked against the namespaces and processes that really exist. */
export async function labStatus(): Promise<LabStatus[]> {
  assertRoot();
  const present = new Set(await netnsList());
  const result: LabStatus[] = [];
  for (const name of listLabNames()) {
    let state: LabState | undefined;
    try {
      state = readState(name);
    } catch {
      state = undefined;
    }
    if (state === undefined) {
      result.push({
        name,
        dir: labDir(name),
        complete: false,
        vip: labVip,
        namespacesMissing: [],
        hosts: [],
        clients: [],
        healthy: false,
      });
      continue;
    }
    const ports = present.has(state.switchNamespace)
      ? await switchPortStates(state.switchNamespace)
      : new Map<string, 'up' | 'down'>();
    const hosts = state.hosts.map((h) => ({
      id: h.id,
      namespace: h.namespace,
      ip: h.ip,
      config: h.config,
      backendRunning: h.backend !== undefined && isAlive(h.backend),
      daemonRunning: h.daemon !== undefined && isAlive(h.daemon),
      link: ports.get(h.switchPort) ?? ('missing' as const),
    }));
    const namespacesMissing = state.namespaces.filter((ns) => !present.has(ns));
    result.push({
      name,
      dir: state.dir,
      createdAt: state.createdAt,
      complete: state.complete,
      vip: state.vip,
      namespacesMissing,
      hosts,
      clients: state.clients.map((c) => ({
        index: c.index,
        namespace: c.namespace,
        ip: c.ip,
        extraIps: c.extraIps,
      })),
      healthy:
        state.complete &&
        namespacesMissing.length === 0 &&
        hosts.every((h) => h.backendRunning || h.link === 'missing'),
    });
  }
  return result;
}

/** The namespace of `target`: 'sw', 'h<id>', 'c<index>', or a full namespace name of the lab. */
export function targetNamespace(state: LabState, target: string): string {
  if (target === 'sw') {
    return state.switchNamespace;
  }
  const host = /^h(\d+)$/.exec(target);
  if (host && state.hosts.some((h) => h.id === Number(host[1]))) {
    return hostNamespace(state.name, Number(host[1]));
  }
  const client = /^c(\d+)$/.exec(target);
  if (client && state.clients.some((c) => c.index === Number(client[1]))) {
    return clientNamespace(state.name, Number(client[1]));
  }
  if (state.namespaces.includes(target)) {
    return target;
  }
  const targets = [
    'sw',
    ...state.hosts.map((h) => `h${h.id}`),
    ...state.clients.map((c) => `c${c.index}`),
  ];
  throw new LabError(
    'invalid-argument',
    `lab '${state.name}' has no target '${target}'`,
    `targets: ${targets.join(', ')}`,
  );
}

/**
 * Runs `argv` inside one of the lab's namespaces with the caller's stdin/stdout/stderr and
 * resolves with its exit code (128 + signal number when killed by a signal).
 */
export async function labExec(
  lab: LabRef,
  target: string,
  argv: readonly string[],
): Promise<number> {
  assertRoot();
  if (argv.length === 0) {
    throw new LabError(
      'invalid-argument',
      'no command given',
      'e.g. `nlb lab exec h1 -- ip -br addr`',
    );
  }
  const namespace = targetNamespace(loadLab(lab), target);
  const child = spawn('ip', ['netns', 'exec', namespace, ...argv], { stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      resolve(code ?? 128 + (signal ? (signalNumbers[signal] ?? 0) : 0));
    });
  });
}

const signalNumbers: Partial<Record<NodeJS.Signals, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGTERM: 15,
};

/** Like labExec but collects the output; for tests and the demo. Throws on a non-zero exit. */
export function labRun(
  lab: LabRef,
  target: string,
  argv: readonly string[],
): Promise<CommandOutput> {
  assertRoot();
  return execIn(targetNamespace(loadLab(lab), target), argv);
}

export interface StartHostDaemonOptions {
  /** Overrides the lab's daemon command (argv, `{config}` replaced with the config path). */
  readonly command?: readonly string[];
  /** Report a daemon that exits within this long as failed; default 300 ms. */
  readonly settleMs?: number;
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
  return ref;
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

/**
 * Kills nlbd of one host with SIGKILL, as a crash: what it configured (VIP, MAC, nftables
 * table with its lease) stays behind, exactly as after a real crash.
 */
export async function killHostDaemon(lab: LabRef, hostId: number): Promise<boolean> {
  assertRoot();
  const host = hostOf(loadLab(lab), hostId);
  const ref = host.daemon;
  if (ref === undefined || !signalProcess(ref, 'SIGKILL')) {
    return false;
  }
  await waitForExit([ref], stopGraceMs);
  await updateState(lab, (state) => {
    delete hostOf(state, hostId).daemon;
  });
  return true;
}

/** Unplugs a host: its port on the switch goes down, so its eth0 loses carrier. */
export async function cutLink(lab: LabRef, hostId: number): Promise<void> {
  assertRoot();
  const state = loadLab(lab);
  await ipIn(state.switchNamespace, ['link', 'set', hostOf(state, hostId).switchPort, 'down']);
}

export async function restoreLink(lab: LabRef, hostId: number): Promise<void> {
  assertRoot();
  const state = loadLab(lab);
  await ipIn(state.switchNamespace, ['link', 'set', hostOf(state, hostId).switchPort, 'up']);
}
