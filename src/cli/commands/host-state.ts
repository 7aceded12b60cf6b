// The verbs that change this host's state, as nlb.exe names them:
//   nlb start       take part in the cluster again (after stop, drainstop or resume)
//   nlb stop        leave the cluster at once; this host's existing connections are dropped
//   nlb drainstop   take no new connections, stop once the existing ones end; with
//                   --timeout <s>, wait that long for them and then stop anyway
//   nlb suspend     leave the cluster and ignore every command but resume (and query)
//   nlb resume      leave suspended: the host is then stopped; `nlb start` takes traffic again
// Each prints nlbd's answer; exit codes: 0 ok, 3 already in that state, 1 suspended or failed.
// With --cluster, every host of the cluster at once (cluster-verbs.ts), each asked by the same
// `...On(ask)` function as one host is; `drainstop --cluster --timeout S` drains every host in
// parallel, each waiting at most S seconds.
import type { Command } from 'commander';
import { type Ask, asker } from '../cluster.js';
import { NlbError, badArgument } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import type { CliCommand, CliContext } from '../program.js';
import { type CommandOutput, type VerbOutput, text } from '../render.js';
import { type ClusterOptions, addClusterOption, clusterHelp, onCluster } from './cluster-verbs.js';
import {
  addDaemonOptions,
  daemonOptionsHelp,
  replyExitCode,
  resolveDaemon,
  throwIfFailed,
} from './control.js';

type StateVerb = 'start' | 'stop' | 'drainstop' | 'suspend' | 'resume';

export interface StateCommandData {
  readonly verb: StateVerb;
  readonly code: 'ok' | 'already';
  readonly message: string;
}

/** One host's state verb; throws what a failed reply stands for. */
export async function stateOn(ask: Ask, verb: StateVerb): Promise<CommandOutput<StateCommandData>> {
  const reply = await ask({ verb });
  throwIfFailed(reply, verb);
  const data: StateCommandData = { verb, code: reply.code, message: reply.message };
  return { data, human: text(`${verb}: ${reply.message}`), exitCode: replyExitCode(reply.code) };
}

export async function stateCommand(verb: StateVerb, options: ClusterOptions): Promise<VerbOutput> {
  if (options.cluster === true) return onCluster(options, verb, (ask) => stateOn(ask, verb));
  return stateOn(asker(await resolveDaemon(options)), verb);
}

// ------------------------------------------------------------------------------- drainstop

/** How often `drainstop --timeout` asks whether the host has stopped. */
const drainPollMs = 200;
/** A day: longer is a typo, and a script would hang on it. */
const drainTimeoutSecondsMax = 86_400;

export interface DrainstopData extends StateCommandData {
  /** With --timeout: how it ended; null without. */
  readonly outcome: 'drained' | 'forced' | null;
  readonly waitedMs: number | null;
}

function parseTimeoutSeconds(value: string): number {
  const text = value.trim();
  const seconds = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || seconds > drainTimeoutSecondsMax) {
    throw badArgument(
      '--timeout',
      `'${value}' is not a number of seconds from 0 to ${drainTimeoutSecondsMax}`,
      'e.g. --timeout 30',
    );
  }
  return seconds;
}

/** 'stopped', 'timeout', or the state the host went to instead (someone started it again). */
async function waitStopped(ask: Ask, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const data = await ask({ verb: 'query' });
    if (data.state !== 'draining') return data.state;
    const left = deadline - Date.now();
    if (left <= 0) return 'timeout';
    await new Promise((resolve) => setTimeout(resolve, Math.min(drainPollMs, left)));
  }
}

/** One host's drainstop, waiting `timeoutText` seconds when given; throws a failed reply. */
export async function drainstopOn(
  ask: Ask,
  timeoutText: string | undefined,
): Promise<CommandOutput<DrainstopData>> {
  const timeoutMs = timeoutText === undefined ? undefined : parseTimeoutSeconds(timeoutText) * 1000;
  const reply = await ask({ verb: 'drainstop' });
  throwIfFailed(reply, 'drainstop');
  const stoppedAlready = reply.code === 'already' && /stopped/.test(reply.message);
  if (timeoutMs === undefined || stoppedAlready) {
    return {
      data: {
        verb: 'drainstop',
        code: reply.code,
        message: reply.message,
        outcome: null,
        waitedMs: null,
      },
      human: text(`drainstop: ${reply.message}`),
      exitCode: replyExitCode(reply.code),
    };
  }
  const started = Date.now();
  const ended = await waitStopped(ask, timeoutMs);
  const waitedMs = Date.now() - started;
  if (ended !== 'stopped' && ended !== 'timeout') {
    throw new NlbError(
      'failed',
      `drainstop: the host left draining before it stopped (it is ${ended} now); nothing was forced`,
      'someone else changed its state meanwhile: see `nlb events`',
      exitCodes.failed,
    );
  }
  if (ended === 'stopped') {
    return {
      data: {
        verb: 'drainstop',
        code: 'ok',
        message: 'drained: stopped',
        outcome: 'drained',
        waitedMs,
      },
      human: text(`drainstop: the existing connections ended after ${waitedMs} ms; stopped`),
    };
  }
  const stop = await ask({ verb: 'stop' });
  throwIfFailed(stop, 'stop after the drain timeout');
  const message = `connections were still open after ${timeoutText} s: stopped anyway (${stop.message})`;
  return {
    data: { verb: 'drainstop', code: 'ok', message, outcome: 'forced', waitedMs },
    human: text(`drainstop: ${message}`),
  };
}

export async function drainstop(
  options: ClusterOptions & { readonly timeout?: string },
): Promise<VerbOutput> {
  // A bad --timeout is a usage error before any host is asked.
  if (options.timeout !== undefined) parseTimeoutSeconds(options.timeout);
  if (options.cluster === true) {
    return onCluster(options, 'drainstop', (ask) => drainstopOn(ask, options.timeout));
  }
  return drainstopOn(asker(await resolveDaemon(options)), options.timeout);
}

// -------------------------------------------------------------------------------- the verbs

const descriptions: Record<StateVerb, string> = {
  start: 'start this host: it takes part in the cluster and takes its share of new connections',
  stop: 'stop this host: it leaves the cluster at once and its existing connections are dropped',
  drainstop:
    'drain this host: no new connections; it stops once the existing ones end (--timeout: at most that long)',
  suspend: 'suspend this host: it leaves the cluster and ignores every command but resume',
  resume: 'resume a suspended host (it is then stopped: use start to take traffic)',
};

function stateVerb(verb: Exclude<StateVerb, 'drainstop'>): CliCommand {
  return {
    register(program: Command, ctx: CliContext): void {
      addClusterOption(addDaemonOptions(program.command(verb).description(descriptions[verb])))
        .addHelpText(
          'after',
          `${daemonOptionsHelp}\nExample:\n  nlb ${verb} --lab demo --host 2\n` +
            clusterHelp([
              `nlb ${verb} --cluster --lab demo`,
              `nlb ${verb} --cluster --token-file /etc/nlb/control.token`,
            ]),
        )
        .action(ctx.action((options: ClusterOptions) => stateCommand(verb, options)));
    },
  };
}

export const start = stateVerb('start');
export const stop = stateVerb('stop');
export const suspend = stateVerb('suspend');
export const resume = stateVerb('resume');

export const drainstopVerb: CliCommand = {
  register(program: Command, ctx: CliContext): void {
    addClusterOption(
      addDaemonOptions(program.command('drainstop').description(descriptions.drainstop)),
    )
      .option(
        '--timeout <seconds>',
        'wait at most this long for the existing connections to end, then stop anyway',
      )
      .addHelpText(
        'after',
        `${daemonOptionsHelp}\nWithout --timeout nlb returns at once; the host stops by itself when its last\n` +
          'connection ends (see nlb query). Examples:\n  nlb drainstop\n  nlb drainstop --timeout 30\n' +
          clusterHelp([
            'nlb drainstop --cluster --lab demo --timeout 30   (every host drains at once)',
            'nlb drainstop --cluster --host 10.0.0.12 --token-file /etc/nlb/control.token',
          ]),
      )
      .action(ctx.action((options: ClusterOptions & { timeout?: string }) => drainstop(options)));
  },
};
