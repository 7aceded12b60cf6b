// What every verb that talks to nlbd shares: which daemon (local or remote), how to ask it,
// and how its answers become exit codes.
//
// Which daemon:
//   local   --socket PATH, --config FILE, --lab NAME --host ID, or the nlbd of this network
//           namespace (../local-socket.ts: resolveSocket), over the unix control socket (root only);
//   remote  --host ADDR[:PORT] --token-file PATH: nlbd's remote control listener (TCP, port
//           2504 by default; nlbd --control-listen), every request carrying the token.
// `--host` is a host id with --lab and an address otherwise: the two cannot be confused, a
// host id being a number from 1 to 32 and an address having dots or colons.
//
// Exit codes of commands (src/cli/exit-codes.ts), from the host machine's reply codes:
//   ok -> 0, already -> 3, suspended -> 1 (with the reason), not found -> 4, refused -> 1.
import type { Command } from 'commander';
import { hostsMax } from '../../core/config.js';
import type { ReplyCode } from '../../core/protocol.js';
import type { ControlResponse, RequestOf, Verb, VerbData } from '../../control/protocol.js';
import {
  type ControlEndpoint,
  ControlBadResponse,
  ControlUnreachable,
  controlAsk,
  endpointText,
} from '../../control/client.js';
import {
  parseListenAddress,
  readTokenFile,
  remoteControlPortDefault,
} from '../../control/remote-target.js';
import { NlbError, badArgument } from '../errors.js';
import { type ExitCode, exitCodes } from '../exit-codes.js';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { defaultSocketPath } from '../../control/paths.js';
import { labClusterName } from '../../lab/host-config.js';
import { LabError, loadLab } from '../../lab/lab.js';
import { loadConfigFile } from '../../node/config-file.js';
import { parseHostIdArgument } from '../arguments.js';
import { resolveSocket, runningHint } from '../local-socket.js';

export interface ControlOptions {
  readonly socket?: string;
  readonly config?: string;
  readonly lab?: string;
  readonly host?: string;
  readonly tokenFile?: string;
}

/** One daemon to talk to, and how. */
export interface DaemonLink {
  readonly endpoint: ControlEndpoint;
  /** Set for remote control: sent with every request. */
  readonly token: string | undefined;
  /** `/run/nlb/nlbd-web-2.sock` or `10.0.0.12:2504`, for messages. */
  readonly where: string;
}

/** Adds the options that pick the daemon; every control verb takes the same ones. */
export function addDaemonOptions(command: Command): Command {
  return command
    .option('--socket <path>', 'the control socket of nlbd')
    .option('--config <file>', 'the host config nlbd runs with (its socket path follows from it)')
    .option('--lab <name>', 'a lab host: with --host <id>')
    .option(
      '--host <id|addr[:port]>',
      `with --lab, a lab host id; otherwise a remote nlbd's control address (port ${remoteControlPortDefault} by default), with --token-file`,
    )
    .option('--token-file <path>', 'the remote control token (the file nlbd --token-file reads)');
}

export const daemonOptionsHelp =
  '\nWhich nlbd: --socket PATH, --config FILE or --lab NAME --host ID for a local one (by\n' +
  'default the nlbd of this network namespace); --host ADDR[:PORT] --token-file FILE for a\n' +
  'remote one (nlbd --control-listen).\n';

function isRemote(options: ControlOptions): boolean {
  if (options.tokenFile !== undefined) return true;
  return (
    options.host !== undefined && options.lab === undefined && !/^\s*\d+\s*$/.test(options.host)
  );
}

/**
 * The socket of a lab host, from the lab's record: not from the host's config file, which may
 * be the very file an operator is fixing (`nlb reload` must reach the daemon to hear why the
 * file is rejected).
 */
function labSocket(lab: string, host: string): string | undefined {
  if (!/^\s*\d+\s*$/.test(host)) return undefined;
  const hostId = parseHostIdArgument('--host', host);
  try {
    const state = loadLab(lab);
    if (!state.hosts.some((h) => h.id === hostId)) return undefined;
    return defaultSocketPath(labClusterName(state.name), hostId);
  } catch (error) {
    if (error instanceof LabError) return undefined;
    throw error;
  }
}

/**
 * The socket named by a config file that does not validate: its cluster name and host id, when
 * those two are readable, so that `nlb reload --config F` still reaches nlbd to hear why F is
 * rejected (and nlbd logs 'config rejected').
 */
async function invalidConfigSocket(file: string): Promise<string | undefined> {
  const loaded = await loadConfigFile(file);
  if (loaded.ok || loaded.reason !== 'invalid') return undefined;
  try {
    const doc = parseYaml(await readFile(file, 'utf8')) as {
      cluster?: { name?: unknown };
      host?: { id?: unknown };
    };
    const name = doc.cluster?.name;
    const id = doc.host?.id;
    return typeof name === 'string' &&
      /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name) &&
      typeof id === 'number' &&
      Number.isInteger(id) &&
      id >= 1 &&
      id <= hostsMax
      ? defaultSocketPath(name, id)
      : undefined;
  } catch {
    return undefined;
  }
}

/** The daemon these options name (see the header comment). */
export async function resolveDaemon(options: ControlOptions): Promise<DaemonLink> {
  if (!isRemote(options)) {
    let socket: string | undefined;
    if (options.socket === undefined && options.lab !== undefined && options.host !== undefined) {
      socket = labSocket(options.lab, options.host);
    } else if (options.socket === undefined && options.config !== undefined) {
      socket = await invalidConfigSocket(options.config);
    }
    // Anything else (and every error message) is local-socket.ts's resolution.
    socket ??= await resolveSocket(options);
    return { endpoint: socket, token: undefined, where: socket };
  }
  if (options.host === undefined) {
    throw badArgument(
      '--token-file',
      'is for remote control and needs --host <addr[:port]>',
      'e.g. nlb query --host 10.0.0.12 --token-file /etc/nlb/control.token',
    );
  }
  for (const [flag, value] of [
    ['--socket', options.socket],
    ['--config', options.config],
    ['--lab', options.lab],
  ] as const) {
    if (value !== undefined) {
      throw badArgument(
        flag,
        'names a local nlbd, and --host with --token-file a remote one',
        'give one or the other',
      );
    }
  }
  const parsed = parseListenAddress(options.host, remoteControlPortDefault);
  if ('error' in parsed) {
    throw badArgument(
      '--host',
      parsed.error,
      'give the remote nlbd as addr[:port], e.g. 10.0.0.12 or 10.0.0.12:2504 or [2001:db8::12]:2504',
    );
  }
  if (options.tokenFile === undefined) {
    throw badArgument(
      '--host',
      `'${options.host}' is an address, and remote control needs --token-file <path>`,
      'pass the token file nlbd was started with (nlbd --token-file), or --lab NAME for a lab host id',
    );
  }
  const token = await readTokenArgument(options.tokenFile);
  const endpoint = { host: parsed.address.text, port: parsed.port };
  return { endpoint, token, where: endpointText(endpoint) };
}

/** The token in the file `--token-file` names; a bad file is a usage error with its fix. */
export async function readTokenArgument(file: string): Promise<string> {
  const read = await readTokenFile(file);
  if (!read.ok) {
    throw new NlbError('bad-argument', `--token-file: ${read.message}`, read.hint, exitCodes.usage);
  }
  return read.token;
}

export function unreachableError(link: DaemonLink, error: ControlUnreachable): NlbError {
  if (error instanceof ControlBadResponse) {
    return new NlbError(
      'failed',
      `${link.where} answered, but not as nlbd does (${error.reason})`,
      'is it an nlbd of the same version as this nlb? see its log, or name another with --socket PATH',
      exitCodes.failed,
    );
  }
  const reason =
    error.reason === 'ENOENT'
      ? 'no such socket'
      : error.reason === 'ECONNREFUSED'
        ? typeof link.endpoint === 'string'
          ? 'nobody listens: a stale socket'
          : 'connection refused: is nlbd started with --control-listen there?'
        : error.reason === 'EACCES'
          ? 'permission denied: the control socket is root only'
          : error.reason;
  return new NlbError(
    'failed',
    `no nlbd answers on ${link.where} (${reason})`,
    error.reason === 'EACCES'
      ? 'run nlb as root (sudo nlb ...)'
      : typeof link.endpoint === 'string'
        ? runningHint
        : 'check the address and port (nlbd --control-listen) and that no firewall drops it',
    exitCodes.failed,
  );
}

/** The request with the token added for remote control. */
export function withToken<Request extends object>(
  link: DaemonLink,
  request: Request,
): Request & { readonly token?: string } {
  return link.token === undefined ? request : { ...request, token: link.token };
}

/** A failure response as the error `nlb` prints, with the exit code that fits its kind. */
export function responseError(
  link: DaemonLink,
  response: Extract<ControlResponse<unknown>, { ok: false }>,
): NlbError {
  const { code, message, hint } = response.error;
  switch (code) {
    case 'unauthorized':
      return new NlbError('failed', `nlbd at ${link.where}: ${message}`, hint, exitCodes.failed);
    case 'bad-request':
    case 'unknown-verb':
      return new NlbError('bad-usage', `nlbd: ${message}`, hint, exitCodes.usage);
    default:
      return new NlbError('failed', `nlbd: ${message}`, hint, exitCodes.failed);
  }
}

/** Asks one verb and returns its data, typed by the verb; every failure becomes an NlbError. */
export async function askLink<V extends Verb>(
  link: DaemonLink,
  request: RequestOf<V>,
  timeoutMs?: number,
): Promise<VerbData[V]> {
  let response: ControlResponse<VerbData[V]>;
  try {
    response = await controlAsk<V>(link.endpoint, withToken(link, request), timeoutMs);
  } catch (error) {
    if (error instanceof ControlUnreachable) throw unreachableError(link, error);
    throw error;
  }
  if (!response.ok) {
    throw responseError(link, response);
  }
  return response.data;
}

/** The exit code of a host machine reply that is not an error: ok 0, already 3. */
export function replyExitCode(code: 'ok' | 'already'): ExitCode {
  return code === 'ok' ? exitCodes.ok : exitCodes.alreadyInState;
}

/**
 * Throws the error a reply code stands for (suspended, refused, not found); returns for ok and
 * already, which are output.
 */
export function throwIfFailed<
  Reply extends { readonly code: ReplyCode | string; readonly message: string },
>(reply: Reply, what: string): asserts reply is Reply & { code: 'ok' | 'already' } {
  switch (reply.code) {
    case 'ok':
    case 'already':
      return;
    case 'suspended':
      throw new NlbError(
        'failed',
        `${what}: ${reply.message}`,
        'run `nlb resume` first (then `nlb start` to take traffic)',
        exitCodes.failed,
      );
    case 'not found':
      throw new NlbError(
        'port-in-no-rule',
        `${what}: ${reply.message}`,
        'see the port rules with `nlb display` (or `nlb query`)',
        exitCodes.portInNoRule,
      );
    default:
      throw new NlbError(
        'failed',
        `${what}: ${reply.message}`,
        'see `nlb events` for the reason',
        exitCodes.failed,
      );
  }
}
