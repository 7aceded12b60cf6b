// A lab's record on disk, so `nlb lab down`, `status` and `exec` work from another process than
// the one that built it. One directory per lab under /run/nlb/labs (tmpfs: a reboot, which also
// removes every namespace, removes the records too), holding state.json, the cluster key, one
// config per host and the logs of the processes the lab started. Every change to a record is a
// read-modify-write under the lab's lock (`updateState`).
import type { ClusterMode } from '../core/config.js';
import { Serial } from '../core/serial.js';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../node/atomic-file.js';
import { LabError, assertLabName } from './errors.js';
import { withFileLock } from './lock.js';
import type { ProcessRef } from './process.js';

/** Overridable so tests of the record itself could use a scratch directory. */
export function labsRoot(): string {
  return process.env.NLB_LABS_DIR ?? '/run/nlb/labs';
}

export function labDir(name: string): string {
  return path.join(labsRoot(), name);
}

export const stateVersion = 1;

/** What every new lab record starts with; `fields` says what kind of lab it is. */
export function newLabRecord(
  name: string,
  fields: Pick<
    LabState,
    'subnet' | 'vip' | 'switchNamespace' | 'bridge' | 'daemonCommand' | 'mode'
  > &
    Partial<Pick<LabState, 'vip6' | 'routed'>>,
): LabState {
  const dir = labDir(name);
  return {
    version: stateVersion,
    name,
    dir,
    createdAt: new Date().toISOString(),
    keyFile: path.join(dir, 'cluster.key'),
    namespaces: [],
    hosts: [],
    clients: [],
    complete: false,
    ...fields,
  };
}

export interface LabHostState {
  readonly id: number;
  readonly namespace: string;
  /** The interface inside the host namespace (the cluster interface in its config). */
  readonly interface: string;
  /** The other end of the veth, a port of the bridge in the switch namespace. */
  readonly switchPort: string;
  /** The dedicated IP, without prefix length. */
  readonly ip: string;
  /** Path of the host's nlbd config. */
  readonly config: string;
  backend?: ProcessRef;
  daemon?: ProcessRef;
  readonly backendLog: string;
  readonly daemonLog: string;
}

export interface LabClientState {
  readonly index: number;
  readonly namespace: string;
  readonly interface: string;
  readonly switchPort: string;
  readonly ip: string;
  /** Further source addresses on the client's interface, for spreading flows by client IP. */
  readonly extraIps: string[];
  /** IPv6 labs: the client's IPv6 address and its extras (2001:db8:18::<the IPv4 last byte>). */
  readonly ip6?: string;
  readonly extraIps6?: string[];
}

export interface LabState {
  readonly version: number;
  readonly name: string;
  readonly dir: string;
  readonly createdAt: string;
  readonly subnet: string;
  readonly vip: string;
  readonly switchNamespace: string;
  readonly bridge: string;
  readonly keyFile: string;
  /** The argv that starts nlbd, with `{config}` standing for the host's config path. */
  readonly daemonCommand: readonly string[];
  /** Every namespace this lab created, recorded right after creation: `down` deletes exactly these. */
  readonly namespaces: string[];
  readonly hosts: LabHostState[];
  readonly clients: LabClientState[];
  /** The cluster operation mode in the hosts' configs (absent in labs of older versions: unicast). */
  readonly mode?: ClusterMode;
  /** The IPv6 cluster IP when the lab was built with `ipv6` (every host and client has an IPv6 address too). */
  readonly vip6?: string;
  /** A namespace on the switch in no cluster (IGMP labs): what reaches it shows what the switch floods. */
  bystander?: LabClientState;
  /**
   * A routed lab (router.ts): a router running FRR in place of the switch. `switchNamespace` is
   * then the router's namespace (each host's link ends there on port h<id>, as on a switch) and
   * `bridge` the clients' segment behind it. Absent in a switch lab.
   */
  readonly routed?: LabRoutedState;
  /** False while `up` is still building; a lab left incomplete is cleaned by `down`. */
  complete: boolean;
}

export interface LabRoutedState {
  readonly routerNamespace: string;
  readonly routerAs: number;
  /** The AS every host of the lab's cluster announces the cluster IP from. */
  readonly hostAs: number;
  /** `proto` of the marker routes FRR redistributes (`VIP/32 dev lo proto <n>`). */
  readonly markerProtocol: number;
  /** The hosts share one segment and forward on it without encapsulation (absent: VXLAN). */
  readonly segment?: boolean;
}

export function statePath(dir: string): string {
  return path.join(dir, 'state.json');
}

/** Writes atomically (temp file + rename) so a reader in another process never sees half a file. */
export function writeState(state: LabState): void {
  const target = statePath(state.dir);
  writeFileAtomic(target, `${JSON.stringify(state, null, 2)}\n`, {
    mode: 0o600,
    // Several processes may write a lab's record: each through a file of its own.
    temp: `${target}.${process.pid}.tmp`,
  });
}

export function readState(name: string): LabState | undefined {
  let text: string;
  try {
    text = readFileSync(statePath(labDir(name)), 'utf8');
  } catch {
    return undefined;
  }
  const state = JSON.parse(text) as LabState;
  if (state.version !== stateVersion) {
    throw new Error(
      `lab '${name}' was recorded by another nlb version (state version ${String(state.version)}); remove it with the nlb that built it`,
    );
  }
  return state;
}

/** Names of every lab with a directory, complete or not. */
export function listLabNames(): string[] {
  try {
    return readdirSync(labsRoot(), { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name)
      .sort();
  } catch {
    return [];
  }
}

/**
 * Claims a lab name: creating its directory is atomic, so two `up`s with the same name cannot
 * both succeed. Returns false when the name is already taken.
 */
export function claimLabDir(name: string): boolean {
  mkdirSync(labsRoot(), { recursive: true, mode: 0o700 });
  try {
    mkdirSync(labDir(name), { mode: 0o700 });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      return false;
    }
    throw error;
  }
}

/**
 * Where a lab's daemons keep their retained state (incarnation, suspended): in the lab's own
 * directory, so a lab never writes the machine's /var/lib/nlb and `down` removes it with the lab.
 */
export function labStateDir(name: string): string {
  return path.join(labDir(name), 'nlbd-state');
}

/** A lab by name, or its record. */
export type LabRef = string | Pick<LabState, 'name'>;

export function nameOf(lab: LabRef): string {
  return typeof lab === 'string' ? lab : lab.name;
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

/** State updates are a few ms; a 5 s wait means a stuck process holds the lock. */
const stateLockWaitMs = 5_000;

// In-process queue in front of the cross-process file lock: the file lock is not reentrant, and
// parallel callers in one process (Promise.all over hosts) must not lose each other's updates.
const stateQueues = new Map<string, Serial>();

function withStateLock<T>(name: string, body: () => Promise<T>): Promise<T> {
  let queue = stateQueues.get(name);
  if (queue === undefined) {
    queue = new Serial();
    stateQueues.set(name, queue);
  }
  return queue.run(() =>
    withFileLock(path.join(labDir(name), 'state.lock'), stateLockWaitMs, body),
  );
}

/** Read-modify-write of state.json under the lab's lock. */
export async function updateState<T>(
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

export function hostOf(state: LabState, hostId: number): LabHostState {
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
