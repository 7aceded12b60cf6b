// The cluster as a whole, for `nlb query --cluster`, the cluster-wide verbs and the dashboard:
// which nlbd speaks for each host of the cluster, and how to reach it.
//
//   --lab NAME                 every host of the lab, over its local control socket;
//   --socket/--config/(none)   the local nlbd, and beside it every local socket of the same
//                              cluster (a lab's hosts share /run/nlb); every other host the
//                              local nlbd has heard is reached at the address its heartbeats
//                              come from (its dedicated IP) by remote control, when
//                              --token-file is given;
//   --host ADDR --token-file F a remote nlbd, and every host it has heard, at its heartbeat
//                              address and the same control port, with the same token.
//
// So no list of members is configured anywhere: the hosts the cluster itself has heard are
// the hosts shown. A host heard once and silent since (dead, or nlbd stopped) stays listed at
// its last address, and shows as unreachable when nothing answers there.
//
// `--host ID` (a lab host) names one host and `--cluster` all of them: the two are refused
// together, as is a remote seed without its token (the peers need it too).
//
// Asking: `asker(link)` asks one host as `askLink` does, except that a host nothing answers
// for throws `HostUnreachable`, so a cluster-wide verb tells "unreachable" from "refused";
// `askCluster` asks every host at once and turns each failure into an answer.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { defaultSocketPath, runDirDefault } from '../control/paths.js';
import {
  ControlBadResponse,
  ControlUnreachable,
  controlAsk,
  controlTimeoutMsDefault,
  endpointText,
  type ControlEndpoint,
} from '../control/client.js';
import { parseListenAddress, remoteControlPortDefault } from '../control/remote-target.js';
import type { QueryData, RequestOf, Verb, VerbData } from '../control/protocol.js';
import { labClusterName } from '../lab/host-config.js';
import { LabError, loadLab } from '../lab/lab.js';
import { NlbError, badArgument } from './errors.js';
import { exitCodes } from './exit-codes.js';
import {
  type ControlOptions,
  type DaemonLink,
  readTokenArgument,
  resolveDaemon,
  responseError,
  unreachableError,
  withToken,
} from './commands/control.js';

/** One host of the cluster and how to reach its nlbd, or why it cannot be reached. */
export interface ClusterHost {
  readonly hostId: number;
  /** Null when no way to reach it is known (see `unreachable`). */
  readonly link: DaemonLink | null;
  /** Why `link` is null: e.g. heard, but remote control needs --token-file. */
  readonly unreachable: string | null;
}

/** The hosts of one cluster, sorted by id. */
export interface ClusterLinks {
  readonly cluster: string;
  readonly hosts: readonly ClusterHost[];
}

/** How long one host may take to answer a query before it counts as unreachable. */
export const clusterAskTimeoutMs = 1_500;

/** Asks one daemon one verb, typed by the verb; every failure is an NlbError. */
export type Ask = <V extends Verb>(request: RequestOf<V>) => Promise<VerbData[V]>;

/**
 * Nothing answers for the host (no socket, nobody listening, no answer in time): unlike an
 * answer that refuses, a cluster-wide verb reports the host as unreachable. Printed like any
 * NlbError when one host was asked.
 */
export class HostUnreachable extends NlbError {
  constructor(error: NlbError) {
    super(error.code, error.message, error.hint, error.exitCode);
  }
}

/** `askLink` with HostUnreachable for a host nothing answers for. */
export async function askHost<V extends Verb>(
  link: DaemonLink,
  request: RequestOf<V>,
  timeoutMs = controlTimeoutMsDefault,
): Promise<VerbData[V]> {
  let response;
  try {
    response = await controlAsk<V>(link.endpoint, withToken(link, request), timeoutMs);
  } catch (error) {
    if (error instanceof ControlBadResponse) throw unreachableError(link, error);
    if (error instanceof ControlUnreachable) {
      throw new HostUnreachable(unreachableError(link, error));
    }
    throw error;
  }
  if (!response.ok) throw responseError(link, response);
  return response.data;
}

/** An `Ask` for one link. */
export function asker(link: DaemonLink, timeoutMs?: number): Ask {
  return <V extends Verb>(request: RequestOf<V>) => askHost<V>(link, request, timeoutMs);
}

function labHosts(lab: string): ClusterLinks {
  let state;
  try {
    state = loadLab(lab);
  } catch (error) {
    if (error instanceof LabError) {
      throw new NlbError('bad-argument', error.message, error.hint ?? '', exitCodes.usage);
    }
    throw error;
  }
  const cluster = labClusterName(state.name);
  return {
    cluster,
    hosts: state.hosts
      .map((h) => h.id)
      .sort((a, b) => a - b)
      .map((hostId) => {
        const socket = defaultSocketPath(cluster, hostId);
        return {
          hostId,
          link: { endpoint: socket, token: undefined, where: socket },
          unreachable: null,
        };
      }),
  };
}

/** Local sockets of `cluster` in the run directory: host id → socket path. */
export function localSockets(cluster: string, runDir = runDirDefault): Map<number, string> {
  const found = new Map<number, string>();
  let names: string[];
  try {
    names = readdirSync(runDir);
  } catch {
    return found;
  }
  const prefix = `nlbd-${cluster}-`;
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.sock')) continue;
    const id = name.slice(prefix.length, -'.sock'.length);
    if (/^\d{1,2}$/.test(id)) found.set(Number(id), path.join(runDir, name));
  }
  return found;
}

/** The control port of a remote link (the seed's), for reaching its peers the same way. */
function remotePort(link: DaemonLink): number {
  return typeof link.endpoint === 'string' ? remoteControlPortDefault : link.endpoint.port;
}

function remoteLink(address: string, port: number, token: string): DaemonLink {
  const parsed = parseListenAddress(address, port);
  const host = 'error' in parsed ? address : parsed.address.text;
  const endpoint: ControlEndpoint = { host, port };
  return { endpoint, token, where: endpointText(endpoint) };
}

/** Refuses what cannot name a whole cluster; `verb` is for the examples in the hints. */
function checkClusterOptions(options: ControlOptions, verb: string): void {
  const host = options.host?.trim();
  if (host !== undefined && /^\d+$/.test(host)) {
    throw badArgument(
      '--cluster',
      `acts on every host, and --host ${host} names one host`,
      options.lab === undefined
        ? `drop one of them: --host takes an address with --cluster (e.g. nlb ${verb} --cluster --host 10.0.0.12 --token-file F)`
        : `drop --host ${host} for the whole lab (nlb ${verb} --cluster --lab ${options.lab}), or --cluster for host ${host} alone`,
    );
  }
  if (options.lab !== undefined && options.tokenFile !== undefined) {
    throw badArgument(
      '--token-file',
      "a lab's hosts answer on their local sockets and need no token",
      `drop --token-file: nlb ${verb} --cluster --lab ${options.lab}`,
    );
  }
  if (host !== undefined && options.tokenFile === undefined) {
    throw badArgument(
      '--host',
      `'${host}' is a remote nlbd: reaching it and every host it has heard needs --token-file <path>`,
      `pass the token nlbd was started with, e.g. nlb ${verb} --cluster --host ${host} --token-file /etc/nlb/control.token; or --lab NAME for a lab`,
    );
  }
}

/**
 * Every host of the cluster the options name (see the header comment). The seed daemon must
 * answer: without it nothing names the cluster.
 */
export async function resolveCluster(
  options: ControlOptions,
  verb = 'query',
): Promise<ClusterLinks> {
  checkClusterOptions(options, verb);
  if (options.lab !== undefined && options.host === undefined) {
    if (options.socket !== undefined || options.config !== undefined) {
      throw badArgument(
        '--lab',
        'names a whole lab; --socket and --config name one daemon',
        'give one or the other',
      );
    }
    return labHosts(options.lab);
  }
  // A token file without --host is for the peers of a local seed (real hosts: the local nlbd
  // over its socket, the others by remote control).
  let tokenForPeers: string | undefined;
  if (options.tokenFile !== undefined && options.host === undefined) {
    tokenForPeers = await readTokenArgument(options.tokenFile);
    options = { ...options, tokenFile: undefined };
  }
  const seed = await resolveDaemon(options);
  const query = await askHost(seed, { verb: 'query' }, clusterAskTimeoutMs);
  const token = seed.token ?? tokenForPeers;
  const hosts = new Map<number, ClusterHost>();
  hosts.set(query.hostId, { hostId: query.hostId, link: seed, unreachable: null });
  const local =
    typeof seed.endpoint === 'string' ? localSockets(query.cluster) : new Map<number, string>();
  for (const [hostId, socket] of local) {
    if (!hosts.has(hostId)) {
      hosts.set(hostId, {
        hostId,
        link: { endpoint: socket, token: undefined, where: socket },
        unreachable: null,
      });
    }
  }
  const port = seed.token === undefined ? remoteControlPortDefault : remotePort(seed);
  for (const peer of query.peers) {
    if (hosts.has(peer.id)) continue;
    if (peer.address === null) {
      hosts.set(peer.id, {
        hostId: peer.id,
        link: null,
        unreachable: 'its address is not known (no heartbeat accepted from it)',
      });
    } else if (token === undefined) {
      hosts.set(peer.id, {
        hostId: peer.id,
        link: null,
        unreachable: `remote control of ${peer.address} needs --token-file`,
      });
    } else {
      hosts.set(peer.id, {
        hostId: peer.id,
        link: remoteLink(peer.address, port, token),
        unreachable: null,
      });
    }
  }
  return { cluster: query.cluster, hosts: [...hosts.values()].sort((a, b) => a.hostId - b.hostId) };
}

/** One host's answer to one verb, or why there is none. */
export type HostAnswer<V extends Verb> =
  | {
      readonly hostId: number;
      readonly where: string;
      readonly ok: true;
      readonly data: VerbData[V];
    }
  | {
      readonly hostId: number;
      readonly where: string | null;
      readonly ok: false;
      /** Nothing answered (or no way to reach it is known), as opposed to a refusal. */
      readonly unreachable: boolean;
      readonly error: string;
      readonly hint: string;
    };

/** Asks every host the same request at once; a host that fails is an answer, not a throw. */
export async function askCluster<V extends Verb>(
  links: ClusterLinks,
  request: RequestOf<V>,
  timeoutMs = clusterAskTimeoutMs,
): Promise<HostAnswer<V>[]> {
  return Promise.all(
    links.hosts.map(async (host): Promise<HostAnswer<V>> => {
      if (host.link === null) {
        return {
          hostId: host.hostId,
          where: null,
          ok: false,
          unreachable: true,
          error: host.unreachable ?? 'unreachable',
          hint: '',
        };
      }
      try {
        const data = await askHost<V>(host.link, request, timeoutMs);
        return { hostId: host.hostId, where: host.link.where, ok: true, data };
      } catch (error) {
        if (!(error instanceof NlbError)) throw error;
        return {
          hostId: host.hostId,
          where: host.link.where,
          ok: false,
          unreachable: error instanceof HostUnreachable,
          error: error.message,
          hint: error.hint,
        };
      }
    }),
  );
}

/** A query answer's host id must match the host it was asked as (a stale socket, a wrong address). */
export function checkIdentity(answer: HostAnswer<'query'>): HostAnswer<'query'> {
  if (!answer.ok || answer.data.hostId === answer.hostId) return answer;
  const data: QueryData = answer.data;
  return {
    hostId: answer.hostId,
    where: answer.where,
    ok: false,
    unreachable: false,
    error: `host ${data.hostId} of cluster ${data.cluster} answers there, not host ${answer.hostId}`,
    hint: 'its address changed, or two hosts share one; see `nlb query` on it',
  };
}
