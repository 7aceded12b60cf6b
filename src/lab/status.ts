// `nlb lab status`: every lab with a record, checked against what really exists: its
// namespaces, the processes it started, and the state of each host's port on the switch.
import { assertRoot } from './errors.js';
import { labVip } from './naming.js';
import { ipIn, netnsList } from './netns.js';
import { isAlive } from './process.js';
import { type LabClientState, type LabState, labDir, listLabNames, readState } from './state.js';

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
    result.push(state === undefined ? unreadable(name) : await statusOf(state, present));
  }
  return result;
}

/** A lab whose record is missing or unreadable: only its directory is known. */
function unreadable(name: string): LabStatus {
  return {
    name,
    dir: labDir(name),
    complete: false,
    vip: labVip,
    namespacesMissing: [],
    hosts: [],
    clients: [],
    healthy: false,
  };
}

async function statusOf(state: LabState, present: ReadonlySet<string>): Promise<LabStatus> {
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
  return {
    name: state.name,
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
  };
}
