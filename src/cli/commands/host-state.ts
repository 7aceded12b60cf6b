// The verbs that change this host's state, as nlb.exe names them:
//   nlb start       take part in the cluster again (after stop, drainstop or resume)
//   nlb stop        leave the cluster at once; this host's existing connections are dropped
//   nlb drainstop   take no new connections, stop once the existing ones end; with
//                   --timeout <s>, wait that long for them and then stop anyway
//   nlb suspend     leave the cluster and ignore every command but resume (and query)
//   nlb resume      leave suspended: the host is then stopped; `nlb start` takes traffic again
// Each prints nlbd's answer; exit codes: 0 ok, 3 already in that state, 1 suspended or failed.
import type { Command } from 'commander';
import { NlbError, badArgument } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import type { CliCommand, CliContext } from '../program.js';
import { type CommandOutput, text } from '../render.js';
import {
  type ControlOptions,
  type DaemonLink,
  addDaemonOptions,
  askLink,
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

export async function stateCommand(
  verb: StateVerb,
  options: ControlOptions,
): Promise<CommandOutput<StateCommandData>> {
  const link = await resolveDaemon(options);
  const reply = await askLink(link, { verb });
  throwIfFailed(reply, verb);
  const data: StateCommandData = { verb, code: reply.code, message: reply.message };
  return { data, human: text(`${verb}: ${reply.message}`), exitCode: replyExitCode(reply.code) };
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
async function waitStopped(link: DaemonLink, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const data = await askLink(link, { verb: 'query' });
    if (data.state !== 'draining') return data.state;
    const left = deadline - Date.now();
    if (left <= 0) return 'timeout';
    await new Promise((resolve) => setTimeout(resolve, Math.min(drainPollMs, left)));
  }
}

export async function drainstop(
  options: ControlOptions & { readonly timeout?: string },
): Promise<CommandOutput<DrainstopData>> {
  const timeoutMs =
    options.timeout === undefined ? undefined : parseTimeoutSeconds(options.timeout) * 1000;
  const link = await resolveDaemon(options);
  const reply = await askLink(link, { verb: 'drainstop' });
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
  const ended = await waitStopped(link, timeoutMs);
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
  const stop = await askLink(link, { verb: 'stop' });
  throwIfFailed(stop, 'stop after the drain timeout');
  const message = `connections were still open after ${options.timeout} s: stopped anyway (${stop.message})`;
  return {
    data: { verb: 'drainstop', code: 'ok', message, outcome: 'forced', waitedMs },
    human: text(`drainstop: ${message}`),
  };
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
      addDaemonOptions(program.command(verb).description(descriptions[verb]))
        .addHelpText('after', `${daemonOptionsHelp}\nExample:\n  nlb ${verb} --lab demo --host 2\n`)
        .action(ctx.action((options: ControlOptions) => stateCommand(verb, options)));
    },
  };
}

export const start = stateVerb('start');
export const stop = stateVerb('stop');
export const suspend = stateVerb('suspend');
export const resume = stateVerb('resume');

export const drainstopVerb: CliCommand = {
  register(program: Command, ctx: CliContext): void {
    addDaemonOptions(program.command('drainstop').description(descriptions.drainstop))
      .option(
        '--timeout <seconds>',
        'wait at most this long for the existing connections to end, then stop anyway',
      )
      .addHelpText(
        'after',
        `${daemonOptionsHelp}\nWithout --timeout nlb returns at once; the host stops by itself when its last\n` +
          'connection ends (see nlb query). Examples:\n  nlb drainstop\n  nlb drainstop --timeout 30\n',
      )
      .action(ctx.action((options: ControlOptions & { timeout?: string }) => drainstop(options)));
  },
};
