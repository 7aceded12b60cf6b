// A verb on every host of the cluster at once, as `nlb.exe <verb> <cluster>` does: `nlb start,
// stop, drainstop, suspend, resume --cluster` and `nlb enable|disable|drain <rule> --cluster`.
// The hosts are those `resolveCluster` finds (../cluster.ts: a lab's sockets, the local
// sockets, the peers heard); each is asked in parallel, by the same code that asks one host
// (host-state.ts, port-rules.ts), so a host answers exactly what it would answer alone.
//
// Output: one line per host, `host 2 (/run/nlb/nlbd-web-2.sock): stop: stopped ...`, or
// `host 3: unreachable: no nlbd answers on ...`, or `host 1 (...): failed: start: the host is
// suspended`; the distinct hints of the failures; a count. Under --json (ClusterVerbData):
//   { "cluster": "web", "verb": "drainstop",
//     "hosts": [ { "hostId": 1, "where": "/run/nlb/nlbd-web-1.sock", "ok": true,
//                  "code": "ok" | "already", "result": <the one-host --json of the verb> },
//                { "hostId": 3, "where": "10.0.0.13:2504" | null, "ok": false,
//                  "unreachable": true, "error": { "code", "message", "hint", "exitCode" } } ],
//     "counts": { "ok": 1, "already": 0, "failed": 0, "unreachable": 1 } }
// Exit code: 0 when every host did it or was already so (some did), 3 when every host was
// already so, 1 when any host failed or could not be reached (the others still acted).
import type { Command } from 'commander';
import {
  type Ask,
  type ClusterHost,
  type ClusterLinks,
  HostUnreachable,
  asker,
  resolveCluster,
} from '../cluster.js';
import { NlbError, type NlbErrorCode } from '../errors.js';
import { type ExitCode, exitCodes } from '../exit-codes.js';
import { type CommandOutput, renderHuman, text } from '../render.js';
import type { ControlOptions } from './control.js';

/** The options of a verb that takes --cluster. */
export interface ClusterOptions extends ControlOptions {
  readonly cluster?: boolean;
}

/** What one host did, for --json. */
export type HostResult<Data> =
  | {
      readonly hostId: number;
      readonly where: string;
      readonly ok: true;
      readonly code: 'ok' | 'already';
      /** What `nlb <verb> --json` prints for this host alone. */
      readonly result: Data;
    }
  | {
      readonly hostId: number;
      /** Null when no way to reach the host is known. */
      readonly where: string | null;
      readonly ok: false;
      /** Nothing answered, as opposed to an answer that refused. */
      readonly unreachable: boolean;
      readonly error: {
        readonly code: NlbErrorCode;
        readonly message: string;
        readonly hint: string;
        readonly exitCode: ExitCode;
      };
    };

export interface ClusterVerbData<Data> {
  readonly cluster: string;
  /** The verb as typed: `drainstop`, `disable 198.18.0.100:80`. */
  readonly verb: string;
  readonly hosts: readonly HostResult<Data>[];
  readonly counts: {
    readonly ok: number;
    readonly already: number;
    readonly failed: number;
    readonly unreachable: number;
  };
}

/** One host's verb, as the one-host command runs it: its output, or an NlbError thrown. */
export type HostVerb<Data> = (ask: Ask) => Promise<CommandOutput<Data>>;

/** Adds --cluster to a verb. */
export function addClusterOption(command: Command): Command {
  return command.option(
    '--cluster',
    'every host of the cluster at once (with --lab NAME, or the local nlbd and its peers: see nlb query --cluster)',
  );
}

/** The help lines every cluster-wide verb shows, with its own examples. */
export function clusterHelp(examples: readonly string[]): string {
  return (
    '\nWith --cluster, every host of the cluster is asked at once (--lab NAME: the lab; else the\n' +
    'local nlbd, the other local hosts of its cluster, and with --token-file the peers at their\n' +
    'addresses; --host ADDR --token-file F: a remote nlbd and its peers). One line per host;\n' +
    'exit 0 when every host did it, 3 when all already had, 1 when any failed or was unreachable.\n' +
    `Examples:\n${examples.map((example) => `  ${example}\n`).join('')}`
  );
}

function failure<Data>(
  host: ClusterHost,
  where: string | null,
  unreachable: boolean,
  error: NlbError,
): HostResult<Data> {
  const { code, message, hint, exitCode } = error;
  return {
    hostId: host.hostId,
    where,
    ok: false,
    unreachable,
    error: { code, message, hint, exitCode },
  };
}

async function onHost<Data extends { readonly code: 'ok' | 'already' }>(
  host: ClusterHost,
  verb: HostVerb<Data>,
): Promise<{ readonly result: HostResult<Data>; readonly line: string }> {
  if (host.link === null) {
    const reason = host.unreachable ?? 'no way to reach it is known';
    const error = new NlbError('failed', reason, '', exitCodes.failed);
    return { result: failure(host, null, true, error), line: `unreachable: ${reason}` };
  }
  const where = host.link.where;
  try {
    const output = await verb(asker(host.link));
    const line = renderHuman(output.human).trimEnd().replaceAll('\n', '\n  ');
    const result: HostResult<Data> = {
      hostId: host.hostId,
      where,
      ok: true,
      code: output.data.code,
      result: output.data,
    };
    return { result, line };
  } catch (error) {
    // Only an NlbError is an answer; anything else is a bug, which stops the command.
    if (!(error instanceof NlbError)) throw error;
    const unreachable = error instanceof HostUnreachable;
    return {
      result: failure(host, where, unreachable, error),
      line: `${unreachable ? 'unreachable' : 'failed'}: ${error.message}`,
    };
  }
}

/** 0 when every host did it (or some had already), 3 when all had already, 1 on any failure. */
export function clusterExitCode(results: readonly HostResult<unknown>[]): ExitCode {
  if (results.some((r) => !r.ok)) return exitCodes.failed;
  return results.every((r) => r.ok && r.code === 'already')
    ? exitCodes.alreadyInState
    : exitCodes.ok;
}

/** Runs `verb` on every host of the cluster the options name, all at once. */
export async function onCluster<Data extends { readonly code: 'ok' | 'already' }>(
  options: ControlOptions,
  what: string,
  verb: HostVerb<Data>,
): Promise<CommandOutput<ClusterVerbData<Data>>> {
  return runOnCluster(await resolveCluster(options, what.split(' ')[0]), what, verb);
}

/** Runs `verb` on every host of `links` at once; `what` is the verb as typed, for the output. */
export async function runOnCluster<Data extends { readonly code: 'ok' | 'already' }>(
  links: ClusterLinks,
  what: string,
  verb: HostVerb<Data>,
): Promise<CommandOutput<ClusterVerbData<Data>>> {
  const done = await Promise.all(links.hosts.map((host) => onHost(host, verb)));
  const hosts = done.map((d) => d.result);
  const counts = {
    ok: hosts.filter((h) => h.ok && h.code === 'ok').length,
    already: hosts.filter((h) => h.ok && h.code === 'already').length,
    failed: hosts.filter((h) => !h.ok && !h.unreachable).length,
    unreachable: hosts.filter((h) => !h.ok && h.unreachable).length,
  };
  const lines = done.map(({ result, line }) =>
    result.where === null || (!result.ok && result.unreachable)
      ? `host ${result.hostId}: ${line}`
      : `host ${result.hostId} (${result.where}): ${line}`,
  );
  const hints = [
    ...new Set(hosts.flatMap((h) => (!h.ok && h.error.hint !== '' ? [h.error.hint] : []))),
  ];
  const summary =
    `${what} on cluster ${links.cluster}: ${hosts.length} host${hosts.length === 1 ? '' : 's'}, ` +
    `${counts.ok} done, ${counts.already} already, ${counts.failed} failed, ${counts.unreachable} unreachable`;
  return {
    data: { cluster: links.cluster, verb: what, hosts, counts },
    human: text([...lines, ...hints.map((hint) => `hint: ${hint}`), summary].join('\n')),
    exitCode: clusterExitCode(hosts),
  };
}
