// The verbs that show what nlbd knows, as nlb.exe has them and a little more:
//   nlb params     the effective parameters and the statistics (counters per port rule,
//                  heartbeats, convergences, data plane latencies)
//   nlb display    the configuration, the cluster interface's addresses, the recent events
//   nlb events     the recent events; --follow prints new ones as they happen, until Ctrl-C
//   nlb metrics    the Prometheus metrics, as an HTTP scrape (nlbd --metrics-listen) gets them
import type { Command } from 'commander';
import { stringify } from 'yaml';
import type {
  DisplayData,
  EventEntry,
  EventsData,
  MetricsData,
  ParamsData,
  RequestOf,
} from '../../control/protocol.js';
import { ControlUnreachable, controlFollow } from '../../control/client.js';
import { NlbError, badArgument } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import type { CliCommand, CliContext } from '../program.js';
import {
  type CommandOutput,
  type StreamedOutput,
  fields,
  renderHuman,
  table,
  text,
} from '../render.js';
import {
  type ControlOptions,
  addDaemonOptions,
  askLink,
  daemonOptionsHelp,
  resolveDaemon,
  responseError,
  unreachableError,
  withToken,
} from './control.js';

// ---------------------------------------------------------------------------------- params

function ms(value: number | null): string {
  return value === null ? '-' : `${value} ms`;
}

/** `params`' table of the port rules: state, weight, health and the filter's counters. */
function paramsRules(data: ParamsData): string {
  const { config, protocol } = data;
  const c = config.cluster;
  const counters = data.counters;
  return renderHuman(
    table(
      [
        { header: 'rule', cell: (i: number) => String(i), align: 'right' },
        { header: 'cluster ip', cell: (i: number) => c.portRules[i]!.vip },
        { header: 'ports', cell: (i: number) => c.portRules[i]!.ports },
        { header: 'protocol', cell: (i: number) => c.portRules[i]!.protocol },
        { header: 'mode', cell: (i: number) => c.portRules[i]!.mode },
        { header: 'affinity', cell: (i: number) => c.portRules[i]!.affinity },
        { header: 'state', cell: (i: number) => protocol.ruleStates[i] ?? 'enabled' },
        {
          header: 'weight',
          cell: (i: number) => {
            const machine = protocol.ruleHealth[i];
            return machine?.reportedWeight === null || machine === undefined
              ? String(config.host.rules[i]?.loadWeight ?? '-')
              : `${machine.reportedWeight} (reported)`;
          },
          align: 'right',
        },
        {
          header: 'health',
          cell: (i: number) => {
            const machine = protocol.ruleHealth[i];
            const verdict =
              data.health[i]?.check == null && machine?.healthy !== false
                ? '-'
                : machine?.healthy === false
                  ? 'UNHEALTHY'
                  : 'ok';
            return machine?.failingOpen === true ? `${verdict}, failing open` : verdict;
          },
        },
        {
          header: 'priority',
          cell: (i: number) => String(config.host.rules[i]?.handlingPriority ?? '-'),
          align: 'right',
        },
        {
          header: 'accepted',
          cell: (i: number) =>
            counters === null
              ? '?'
              : `${counters.rules[i]!.accepted.packets} pkts ${counters.rules[i]!.accepted.bytes} B`,
          align: 'right',
        },
        {
          header: 'dropped',
          cell: (i: number) =>
            counters === null ? '?' : String(counters.rules[i]!.dropped.packets),
          align: 'right',
        },
        {
          header: 'reset',
          cell: (i: number) => (counters === null ? '?' : String(counters.rules[i]!.reset.packets)),
          align: 'right',
        },
      ],
      c.portRules.map((_, i) => i),
    ),
  ).trimEnd();
}

/** One line per rule with a health check: the check and its last probe. */
function healthLines(data: ParamsData): string[] {
  const notes: string[] = [];
  for (const check of data.health) {
    if (check.check === null) continue;
    const last = check.last;
    notes.push(
      `rule ${check.rule} health: ${check.check}; ${last === null ? 'not probed yet' : `last ${last.ok ? 'ok' : 'FAILED'}: ${last.detail} in ${last.latencyMs} ms at ${last.at}`}`,
    );
  }
  return notes;
}

export function renderParams(data: ParamsData): CommandOutput<ParamsData> {
  const { identity, config, protocol, driver } = data;
  const c = config.cluster;
  const rejected = Object.entries(protocol.heartbeatsRejected).filter(([, n]) => n > 0);
  const entries: [string, string][] = [
    ['host', `${identity.hostId} (cluster ${identity.cluster})`],
    ['nlbd', `${identity.version}, pid ${identity.pid}, incarnation ${identity.incarnation}`],
    ['config file', identity.configPath],
    ['cluster IPs', c.clusterIps.join(', ')],
    ['mode', `${c.mode} on ${c.interface}`],
    ['dedicated IP', config.host.dedicatedIp],
    [
      'heartbeat',
      `every ${c.heartbeat.periodMs} ms, dead after ${c.heartbeat.tolerance} missed, ${c.heartbeat.group}:${c.heartbeat.port}`,
    ],
    ['hash seed', `0x${c.hashSeed.toString(16)}`],
    [
      'heartbeats',
      `sent ${protocol.counters.heartbeatsSent}, received ${protocol.counters.heartbeatsReceived}, rejected ${
        rejected.length === 0 ? 0 : rejected.map(([reason, n]) => `${n} ${reason}`).join(', ')
      }`,
    ],
    [
      'convergences',
      `${protocol.counters.convergences}, the last took ${protocol.counters.lastConvergenceMs} ms`,
    ],
    [
      'kernel programs',
      `${driver.program.count} (set updates ${driver.program.sets}, tables ${driver.program.table}), last ${ms(driver.program.lastMs)}, p99 ${ms(driver.program.p99Ms)}`,
    ],
    [
      'problems',
      `data plane errors ${driver.dataplaneErrors}, heartbeats withheld ${driver.heartbeatsWithheld}, datagrams dropped ${driver.datagramsDropped}`,
    ],
  ];
  if (protocol.keptOut !== null) entries.push(['kept out', protocol.keptOut]);
  if (data.counters !== null) {
    const u = data.counters.uncovered;
    entries.push([
      'uncovered ports',
      `accepted ${u.accepted.packets} packets, dropped ${u.dropped.packets}; lease expired drops ${data.counters.leaseExpired.packets}`,
    ]);
  }
  const rules = paramsRules(data);
  const notes = [rules];
  notes.push(...healthLines(data));
  if (data.countersError !== null) notes.push(`note: counters unknown: ${data.countersError}`);
  return { data, human: fields(entries, notes) };
}

export async function params(options: ControlOptions): Promise<CommandOutput<ParamsData>> {
  const link = await resolveDaemon(options);
  return renderParams(await askLink(link, { verb: 'params' }));
}

// --------------------------------------------------------------------------------- events

const hiddenFields = new Set(['seq', 'time', 'event', 'atMs']);

/** The fields of an event after its name, `key=value`, values as compact JSON. */
export function eventDetails(entry: EventEntry): string {
  return Object.entries(entry)
    .filter(([key]) => !hiddenFields.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
}

export function eventLine(entry: EventEntry): string {
  const details = eventDetails(entry);
  return `${entry.time}  ${entry.event}${details === '' ? '' : `  ${details}`}`;
}

function eventsTable(entries: readonly EventEntry[]): string {
  if (entries.length === 0) return 'no events yet\n';
  return renderHuman(
    table<EventEntry>(
      [
        { header: 'time', cell: (e) => e.time },
        { header: 'event', cell: (e) => e.event },
        { header: 'details', cell: (e) => eventDetails(e) },
      ],
      entries,
    ),
  );
}

function parseLimit(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (!/^\d{1,4}$/.test(text) || Number(text) < 1 || Number(text) > 1024) {
    throw badArgument('--limit', `'${value}' is not a number from 1 to 1024`, 'e.g. --limit 50');
  }
  return Number(text);
}

export async function events(
  options: ControlOptions & { readonly limit?: string; readonly follow?: boolean },
  json: boolean,
  ctx: CliContext,
): Promise<CommandOutput<EventsData> | StreamedOutput> {
  const limit = parseLimit(options.limit);
  const link = await resolveDaemon(options);
  const request: RequestOf<'events'> = {
    verb: 'events',
    ...(limit === undefined ? {} : { limit }),
  };
  if (options.follow !== true) {
    const data = await askLink(link, request);
    return { data, human: text(eventsTable(data.events)) };
  }
  // --follow: one line per event on stdout as it comes (JSON lines under --json), the recent
  // ones first. Ctrl-C ends it: the output is complete, so nlb exits 0 once stdout is flushed.
  const print = (entry: EventEntry): void => {
    ctx.io.stdout.write(json ? `${JSON.stringify(entry)}\n` : `${eventLine(entry)}\n`);
  };
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let failure: NlbError | undefined;
  let how: 'closed' | 'aborted';
  try {
    how = await controlFollow(
      link.endpoint,
      withToken(link, { ...request, follow: true }),
      {
        onResponse: (response) => {
          if (!response.ok) {
            failure = responseError(link, response);
            return false;
          }
          for (const entry of response.data.events) print(entry);
          return true;
        },
        onLine: (entry) => print(entry),
      },
      abort.signal,
    );
  } catch (error) {
    if (error instanceof ControlUnreachable) throw unreachableError(link, error);
    throw error;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (failure !== undefined) throw failure;
  if (how === 'closed') {
    throw new NlbError(
      'failed',
      `nlbd at ${link.where} closed the event stream (it stopped, or this reader fell behind)`,
      'see whether nlbd still runs: nlb query',
      exitCodes.failed,
    );
  }
  // Everything was printed as it came: no final document after the stream.
  return { streamed: true, exitCode: exitCodes.ok };
}

// -------------------------------------------------------------------------------- display

export function renderDisplay(data: DisplayData): CommandOutput<DisplayData> {
  const { identity } = data;
  const view = data.interface;
  const entries: [string, string][] = [
    ['host', `${identity.hostId} (cluster ${identity.cluster})`],
    ['nlbd', `${identity.version}, pid ${identity.pid}, socket ${identity.socket}`],
    ['config file', identity.configPath],
  ];
  if (view !== null) {
    entries.push(
      [
        'interface',
        `${view.interface} ${view.up ? 'up' : 'down'} (${view.operState}), MAC ${view.mac}`,
      ],
      ['addresses', view.addresses.join(', ') || '-'],
    );
  } else {
    entries.push(['interface', `unknown: ${data.interfaceError ?? ''}`]);
  }
  const config = `configuration:\n${stringify(data.config)
    .trimEnd()
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n')}`;
  const recent = `recent events:\n${eventsTable(data.events).trimEnd()}`;
  return { data, human: fields(entries, [config, '', recent]) };
}

export async function display(
  options: ControlOptions & { readonly events?: string },
): Promise<CommandOutput<DisplayData>> {
  const limit = parseLimit(options.events);
  const link = await resolveDaemon(options);
  return renderDisplay(
    await askLink(link, {
      verb: 'display',
      ...(limit === undefined ? {} : { events: limit }),
    }),
  );
}

// -------------------------------------------------------------------------------- metrics

export async function metrics(options: ControlOptions): Promise<CommandOutput<MetricsData>> {
  const link = await resolveDaemon(options);
  const data = await askLink(link, { verb: 'metrics' });
  return { data, human: text(data.text) };
}

// ---------------------------------------------------------------------------------- verbs

export const paramsVerb: CliCommand = {
  register(program: Command, ctx: CliContext): void {
    addDaemonOptions(
      program
        .command('params')
        .description(
          'show the effective parameters and statistics: counters per port rule, heartbeats, convergences',
        ),
    )
      .addHelpText('after', daemonOptionsHelp)
      .action(ctx.action((options: ControlOptions) => params(options)));
  },
};

export const displayVerb: CliCommand = {
  register(program: Command, ctx: CliContext): void {
    addDaemonOptions(
      program
        .command('display')
        .description(
          'show the configuration, the cluster interface and its addresses, and recent events',
        )
        .option('--events <n>', 'how many recent events (default 20)'),
    )
      .addHelpText('after', daemonOptionsHelp)
      .action(ctx.action((options: ControlOptions & { events?: string }) => display(options)));
  },
};

export const eventsVerb: CliCommand = {
  register(program: Command, ctx: CliContext): void {
    addDaemonOptions(
      program
        .command('events')
        .description('show the recent events of nlbd; --follow prints new ones as they come')
        .option('--limit <n>', 'at most this many recent events (nlbd keeps the last 256)')
        .option('-f, --follow', 'keep printing new events until Ctrl-C (JSON lines with --json)'),
    )
      .addHelpText(
        'after',
        `${daemonOptionsHelp}\nEvent names are stable (started, converged, host declared dead, config reloaded...).\n` +
          'Examples:\n  nlb events --limit 50\n  nlb events --follow --json\n',
      )
      .action(
        ctx.action(
          (options: ControlOptions & { limit?: string; follow?: boolean }, command: Command) =>
            events(options, command.optsWithGlobals<{ json?: boolean }>().json === true, ctx),
        ),
      );
  },
};

export const metricsVerb: CliCommand = {
  register(program: Command, ctx: CliContext): void {
    addDaemonOptions(
      program
        .command('metrics')
        .description('print the Prometheus metrics of nlbd (the text /metrics serves)'),
    )
      .addHelpText(
        'after',
        `${daemonOptionsHelp}\nFor Prometheus itself, start nlbd with --metrics-listen <addr:port>.\n`,
      )
      .action(ctx.action((options: ControlOptions) => metrics(options)));
  },
};
