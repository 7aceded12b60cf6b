// `nlb query`: this host's view of the cluster, from its nlbd over the control socket
// (src/daemon/control.ts): state, members, default host, convergence, the buckets it owns per
// port rule, and its peers as it sees them.
//
// Which daemon: --socket PATH; or --config FILE (the path nlbd derives from that config); or
// --lab NAME --host ID (a lab host's config); or, with none of these, the one nlbd socket in
// /run/nlb, and when there are several (a lab: its hosts share /run), the one whose daemon
// lives in this network namespace. So `nlb lab exec h1 -- nlb query` asks h1's nlbd.
import { readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { DaemonIdentity, QueryData, QueryPeer, QueryRule } from '../../daemon/control.js';
import { ControlUnreachable, controlRequest } from '../../daemon/control-client.js';
import { defaultSocketPath, runDirDefault } from '../../daemon/control-server.js';
import { LabError, loadLab } from '../../lab/lab.js';
import { loadConfigFile } from '../../node/config-file.js';
import { parseHostIdArgument } from '../arguments.js';
import { NlbError, badArgument } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import type { CliContext } from '../program.js';
import { type CommandOutput, fields, renderHuman, table } from '../render.js';
import { type ControlOptions, addDaemonOptions, askLink, resolveDaemon } from './control.js';

export interface SocketOptions {
  readonly socket?: string;
  readonly config?: string;
  readonly lab?: string;
  readonly host?: string;
}

const runningHint =
  'is nlbd running on this host? start it with `nlbd --config <file>`; ' +
  'if it uses another socket, name it with --socket PATH (or --config FILE)';

function unreachable(error: ControlUnreachable): NlbError {
  const reason =
    error.reason === 'ENOENT'
      ? 'no such socket'
      : error.reason === 'ECONNREFUSED'
        ? 'nobody listens: a stale socket'
        : error.reason === 'EACCES'
          ? 'permission denied: the control socket is root only'
          : error.reason;
  return new NlbError(
    'failed',
    `no nlbd answers on ${error.socketPath} (${reason})`,
    error.reason === 'EACCES' ? 'run nlb as root (sudo nlb query)' : runningHint,
    exitCodes.failed,
  );
}

/** Sends one request to nlbd and returns its data; every failure becomes an NlbError. */
export async function askDaemon<T>(socketPath: string, request: unknown): Promise<T> {
  let response;
  try {
    response = await controlRequest(socketPath, request);
  } catch (error) {
    if (error instanceof ControlUnreachable) throw unreachable(error);
    throw error;
  }
  if (!response.ok) {
    throw new NlbError(
      'failed',
      `nlbd: ${response.error.message}`,
      response.error.hint,
      exitCodes.failed,
    );
  }
  return response.data as T;
}

async function socketOfConfig(file: string, flag: string): Promise<string> {
  const loaded = await loadConfigFile(file);
  if (!loaded.ok) {
    throw new NlbError(
      'bad-config',
      loaded.message,
      `${flag} must name a valid host config`,
      exitCodes.usage,
    );
  }
  return defaultSocketPath(loaded.config.cluster.name, loaded.config.host.id);
}

function ownNetns(): string | undefined {
  try {
    return readlinkSync('/proc/self/ns/net');
  } catch {
    return undefined;
  }
}

/** The control socket these options name (see the header comment for the order). */
export async function resolveSocket(options: SocketOptions): Promise<string> {
  if (options.socket !== undefined) {
    return options.socket;
  }
  if (options.lab !== undefined || options.host !== undefined) {
    if (options.lab === undefined || options.host === undefined) {
      const given = options.lab === undefined ? '--host' : '--lab';
      const missing = options.lab === undefined ? '--lab' : '--host';
      throw badArgument(given, `needs ${missing} too`, 'give both, e.g. --lab demo --host 2');
    }
    const hostId = parseHostIdArgument('--host', options.host);
    let configPath: string | undefined;
    try {
      configPath = loadLab(options.lab).hosts.find((h) => h.id === hostId)?.config;
    } catch (error) {
      if (error instanceof LabError) {
        throw new NlbError('bad-argument', error.message, error.hint ?? '', exitCodes.usage);
      }
      throw error;
    }
    if (configPath === undefined) {
      throw badArgument(
        '--host',
        `lab '${options.lab}' has no host ${hostId}`,
        'see `nlb lab status`',
      );
    }
    return socketOfConfig(configPath, '--lab/--host');
  }
  if (options.config !== undefined) {
    return socketOfConfig(options.config, '--config');
  }
  let sockets: string[];
  try {
    sockets = readdirSync(runDirDefault)
      .filter((name) => /^nlbd-.+\.sock$/.test(name))
      .sort()
      .map((name) => path.join(runDirDefault, name));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    sockets = [];
    if (code === 'EACCES') {
      throw new NlbError(
        'failed',
        `cannot list ${runDirDefault}: permission denied`,
        'run nlb as root (sudo nlb query)',
        exitCodes.failed,
      );
    }
  }
  if (sockets.length === 0) {
    throw new NlbError(
      'failed',
      `no nlbd control socket in ${runDirDefault}`,
      runningHint,
      exitCodes.failed,
    );
  }
  if (sockets.length === 1) {
    return sockets[0]!;
  }
  // Several daemons share /run (a lab): take the one in this network namespace.
  const netns = ownNetns();
  const here: string[] = [];
  await Promise.all(
    sockets.map(async (socket) => {
      const answer = await controlRequest(socket, { verb: 'identity' }, 1_000).catch(
        () => undefined,
      );
      if (answer?.ok === true && (answer.data as DaemonIdentity).netns === netns) {
        here.push(socket);
      }
    }),
  );
  if (here.length === 1) {
    return here[0]!;
  }
  throw new NlbError(
    'bad-usage',
    here.length === 0
      ? `${sockets.length} nlbd sockets in ${runDirDefault}, none of a daemon in this network namespace: ${sockets.join(', ')}`
      : `${here.length} nlbd answer in this network namespace: ${here.join(', ')}`,
    'say which with --socket PATH, --config FILE, or --lab NAME --host ID',
    exitCodes.usage,
  );
}

/** `0-19, 40-49` for a sorted bucket list. */
export function bucketRanges(buckets: readonly number[]): string {
  const parts: string[] = [];
  let start: number | undefined;
  let previous: number | undefined;
  for (const bucket of [...buckets, Number.NaN]) {
    if (previous !== undefined && bucket === previous + 1) {
      previous = bucket;
      continue;
    }
    if (start !== undefined && previous !== undefined) {
      parts.push(start === previous ? String(start) : `${start}-${previous}`);
    }
    start = bucket;
    previous = bucket;
  }
  return parts.length === 0 ? '-' : parts.join(', ');
}

export type QueryOutputData = QueryData & { readonly socket: string };

export function renderQuery(data: QueryOutputData): CommandOutput<QueryOutputData> {
  const rules = renderHuman(
    table<QueryRule>(
      [
        { header: 'rule', cell: (r) => String(r.rule), align: 'right' },
        { header: 'cluster ip', cell: (r) => r.vip },
        { header: 'ports', cell: (r) => r.ports },
        { header: 'protocol', cell: (r) => r.protocol },
        { header: 'mode', cell: (r) => r.mode },
        { header: 'state', cell: (r) => r.state },
        { header: 'owned', cell: (r) => `${r.owned.length}/${r.buckets}`, align: 'right' },
        { header: 'buckets', cell: (r) => bucketRanges(r.owned) },
        { header: 'orphan', cell: (r) => bucketRanges(r.orphan) },
      ],
      data.rules,
    ),
  ).trimEnd();
  const peers =
    data.peers.length === 0
      ? 'no peer heard since nlbd started'
      : renderHuman(
          table<QueryPeer>(
            [
              { header: 'peer', cell: (p) => String(p.id), align: 'right' },
              { header: 'view', cell: (p) => p.view },
              { header: 'announced', cell: (p) => p.announced },
              { header: 'last heard', cell: (p) => `${p.lastHeardAgoMs} ms ago`, align: 'right' },
              { header: 'its members', cell: (p) => p.members.join(',') || '-' },
              ...(data.peers.some((p) => p.mismatch !== null)
                ? [{ header: 'mismatch', cell: (p: QueryPeer) => p.mismatch ?? '' }]
                : []),
            ],
            data.peers,
          ),
        ).trimEnd();
  const entries: [string, string][] = [
    ['host', `${data.hostId} (cluster ${data.cluster})`],
    ['state', data.state],
    ['members', data.members.length === 0 ? '-' : data.members.join(', ')],
    ['default host', data.defaultHost === null ? '-' : String(data.defaultHost)],
    ['converged', data.converged ? 'yes' : 'no'],
    ['map digest', data.mapDigest],
    [
      'data plane',
      data.dataplaneInSync
        ? 'in sync'
        : 'behind the decision: heartbeats withheld (see the nlbd log)',
    ],
  ];
  if (data.keptOut !== null) {
    entries.push(['kept out', data.keptOut]);
  }
  return { data, human: fields(entries, [rules, '', peers]) };
}

export async function query(options: ControlOptions): Promise<CommandOutput<QueryOutputData>> {
  // Local or remote (--host ADDR --token-file FILE): see control.ts.
  const link = await resolveDaemon(options);
  const data = await askLink<QueryData>(link, { verb: 'query' });
  return renderQuery({ ...data, socket: link.where });
}

export function register(program: Command, ctx: CliContext): void {
  addDaemonOptions(
    program
      .command('query')
      .description("show this host's view of the cluster: state, members, buckets, peers"),
  )
    .addHelpText(
      'after',
      '\nWithout options: the nlbd socket in /run/nlb (in a lab, the daemon of this network\n' +
        'namespace). Examples:\n  nlb query\n  nlb query --lab demo --host 2 --json\n' +
        '  nlb lab exec h1 -- nlb query\n' +
        '  nlb query --host 10.0.0.12 --token-file /etc/nlb/control.token (remote control)\n',
    )
    .action(ctx.action((options: ControlOptions) => query(options)));
}
