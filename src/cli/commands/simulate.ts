// `nlb simulate`: runs the protocol (the same HostMachine nlbd runs) in the simulator: a virtual
// clock and network, a scenario or a seeded fault schedule, every invariant checked at every
// step (src/sim/README.md). Pure computation: no root, no network, no clock; a seed replays a
// run exactly.
import { randomInt } from 'node:crypto';
import { type Command, Option } from 'commander';
import {
  type ChangeReport,
  type FaultProfile,
  type ScenarioKind,
  type SimResult,
  convergenceBoundPeriods,
  runSimulation,
  faultProfiles,
  namedOnlyProfiles,
  scenarioKinds,
} from '../../sim/index.js';
import { badArgument } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import type { CliContext } from '../program.js';
import { type CommandOutput, renderHuman, table, text } from '../render.js';
import { errorText } from '../../core/error-text.js';

export interface SimulateOptions {
  readonly hosts: string;
  readonly scenario: ScenarioKind;
  readonly seed?: string;
  readonly periodMs?: string;
  readonly tolerance?: string;
  readonly durationMs?: string;
  readonly lossPercent?: string;
  readonly profile?: FaultProfile;
}

/** One membership change, with null where nothing was measured (JSON keeps every key). */
export interface SimulateChange {
  readonly kind: ChangeReport['kind'];
  readonly hostId: number | null;
  readonly atMs: number;
  readonly detectionMs: number | null;
  readonly triggerMs: number | null;
  readonly takeoverMs: number | null;
  readonly convergenceMs: number | null;
  readonly bucketsMoved: number | null;
  readonly bucketsMovedMin: number | null;
  readonly overlapped: boolean;
}

/** The run's shape as the simulator reports it (`profile`: for `random`, the one the seed chose). */
export interface SimulateData extends Pick<
  SimResult,
  'seed' | 'profile' | 'hosts' | 'periodMs' | 'tolerance' | 'durationMs' | 'maxOneWayDelayMs'
> {
  readonly scenario: ScenarioKind;
  readonly convergenceBound: { readonly periods: number; readonly ms: number };
  /** When the last fault healed (I3's clock starts); null when faults last to the end. */
  readonly quietAtMs: number | null;
  readonly convergedAfterQuietMs: number | null;
  readonly changes: readonly SimulateChange[];
  /** Empty when every invariant held. */
  readonly violations: readonly { invariant: string; atMs: number; message: string }[];
  readonly falseDetections: number;
  readonly stats: SimResult['stats'];
  /** The transcript: one line per event, stamped with virtual time. */
  readonly timeline: readonly string[];
  readonly timelineDropped: number;
}

/** Lines of timeline kept; a longer run keeps its last ones. */
const timelineLinesMax = 200_000;

function integer(
  argument: string,
  value: string | undefined,
  low: number,
  high: number,
): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (!/^\d+$/.test(text) || Number(text) < low || Number(text) > high) {
    throw badArgument(
      argument,
      `'${value}' is not a whole number from ${low} to ${high}`,
      `e.g. ${argument} ${low}`,
    );
  }
  return Number(text);
}

function round(value: number | undefined, digits = 3): number | null {
  return value === undefined ? null : Math.round(value * 10 ** digits) / 10 ** digits;
}

export function simulate(options: SimulateOptions): CommandOutput<SimulateData> {
  const hosts = integer('--hosts', options.hosts, 1, 32)!;
  const seed = integer('--seed', options.seed, 0, 0xffffffff) ?? randomInt(0, 0xffffffff);
  const periodMs = integer('--period-ms', options.periodMs, 20, 10_000);
  const tolerance = integer('--tolerance', options.tolerance, 2, 100);
  const durationMs = integer('--duration-ms', options.durationMs, 1, 24 * 3600 * 1000);
  const lossPercent = integer('--loss-percent', options.lossPercent, 0, 100);
  if (options.profile !== undefined && options.scenario !== 'random') {
    throw badArgument(
      '--profile',
      `is for --scenario random, not ${options.scenario}`,
      'drop --profile, or use --scenario random',
    );
  }
  let result: SimResult;
  try {
    result = runSimulation({
      seed,
      scenario: options.scenario,
      hosts,
      periodMs,
      tolerance,
      durationMs,
      lossRate: lossPercent === undefined ? undefined : lossPercent / 100,
      ...(options.profile === undefined ? {} : { profile: options.profile }),
      transcriptLinesMax: timelineLinesMax,
    });
  } catch (error) {
    // Plans refuse impossible combinations (e.g. a partition of one host) with a message.
    throw badArgument('nlb simulate', errorText(error), 'see nlb simulate --help');
  }
  const data: SimulateData = {
    seed: result.seed,
    scenario: options.scenario,
    profile: result.profile,
    hosts: result.hosts,
    periodMs: result.periodMs,
    tolerance: result.tolerance,
    durationMs: result.durationMs,
    maxOneWayDelayMs: round(result.maxOneWayDelayMs)!,
    convergenceBound: {
      periods: convergenceBoundPeriods(result.tolerance),
      ms: result.convergenceBoundMs,
    },
    quietAtMs: round(result.quietAtMs),
    convergedAfterQuietMs: round(result.convergedAfterQuietMs),
    changes: result.changes.map((c) => ({
      kind: c.kind,
      hostId: c.hostId ?? null,
      atMs: round(c.atMs)!,
      detectionMs: round(c.detectionMs),
      triggerMs: round(c.triggerMs),
      takeoverMs: round(c.takeoverMs),
      convergenceMs: round(c.convergenceMs),
      bucketsMoved: c.bucketsMoved ?? null,
      bucketsMovedMin: c.bucketsMovedMin ?? null,
      overlapped: c.overlapped,
    })),
    violations: result.violations.map((v) => ({
      invariant: v.invariant,
      atMs: round(v.atMs)!,
      message: v.message,
    })),
    falseDetections: result.stats.falseDetections,
    stats: result.stats,
    timeline: result.transcript,
    timelineDropped: result.transcriptDropped,
  };
  return {
    data,
    human: text(renderSimulation(data)),
    exitCode: data.violations.length > 0 ? exitCodes.failed : exitCodes.ok,
  };
}

function ms(value: number | null): string {
  return value === null ? '-' : value.toFixed(1);
}

/** The seed first, then the timeline, then the changes and the verdict. */
export function renderSimulation(data: SimulateData): string {
  const replay = `nlb simulate --scenario ${data.scenario} --hosts ${data.hosts} --seed ${data.seed} --period-ms ${data.periodMs} --tolerance ${data.tolerance}`;
  const out: string[] = [`seed ${data.seed} (replay: ${replay})`, ''];
  if (data.timelineDropped > 0)
    out.push(`(${data.timelineDropped} earlier timeline lines not kept)`);
  out.push(...data.timeline, '');
  out.push(
    `${data.hosts} hosts, ${data.profile}, heartbeat ${data.periodMs} ms × ${data.tolerance}, ` +
      `one-way delay up to ${data.maxOneWayDelayMs} ms, ${data.durationMs} ms simulated`,
    '',
  );
  if (data.changes.length > 0) {
    out.push(
      renderHuman(
        table<SimulateChange>(
          [
            { header: 'at ms', cell: (c) => c.atMs.toFixed(1), align: 'right' },
            { header: 'change', cell: (c) => c.kind },
            { header: 'host', cell: (c) => (c.hostId === null ? '-' : `h${c.hostId}`) },
            { header: 'detection ms', cell: (c) => ms(c.detectionMs), align: 'right' },
            { header: 'takeover ms', cell: (c) => ms(c.takeoverMs), align: 'right' },
            { header: 'convergence ms', cell: (c) => ms(c.convergenceMs), align: 'right' },
            {
              header: 'moved/min',
              cell: (c) =>
                c.bucketsMoved === null ? '-' : `${c.bucketsMoved}/${c.bucketsMovedMin}`,
              align: 'right',
            },
            { header: 'note', cell: (c) => (c.overlapped ? 'overlapped another change' : '') },
          ],
          data.changes,
        ),
      ).trimEnd(),
      '',
    );
  }
  if (data.quietAtMs !== null) {
    out.push(
      data.convergedAfterQuietMs === null
        ? `I3: not converged within ${data.convergenceBound.periods} periods of the last fault`
        : `I3: converged ${data.convergedAfterQuietMs.toFixed(1)} ms after the last fault healed (bound ${data.convergenceBound.ms} ms = ${data.convergenceBound.periods} periods)`,
    );
  } else {
    out.push('I3: not applicable (faults last to the end of the run)');
  }
  out.push(`false detections: ${data.falseDetections}`);
  if (data.violations.length === 0) {
    out.push('invariants I1, I1b, I2, I3: held at every step');
  } else {
    for (const v of data.violations)
      out.push(`VIOLATION ${v.invariant} at ${v.atMs.toFixed(1)} ms: ${v.message}`);
    out.push(`seed ${data.seed} reproduces it: ${replay}`);
  }
  return out.join('\n');
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('simulate')
    .description('run the cluster protocol in the simulator: a timeline of events and a summary')
    .requiredOption('--hosts <n>', 'cluster size, 1 to 32')
    .addOption(
      new Option('--scenario <scenario>', 'what happens once the cluster has formed')
        .choices([...scenarioKinds])
        .makeOptionMandatory(),
    )
    .option('--seed <s>', 'the seed (0 to 4294967295); a random one when not given')
    .option('--period-ms <p>', 'heartbeat period in ms (default 200)')
    .option('--tolerance <t>', 'heartbeats missed before a host is declared dead (default 5)')
    .option('--duration-ms <d>', 'simulated time in ms (default: long enough for the scenario)')
    .option('--loss-percent <l>', 'heartbeat loss in percent (default 5 for loss, else 0)')
    .addOption(
      new Option(
        '--profile <profile>',
        'with --scenario random: the fault profile (default: the seed picks one)',
      ).choices([...faultProfiles, ...namedOnlyProfiles]),
    )
    .addHelpText(
      'after',
      '\nScenarios: crash, join, leave (stop), drainstop, partition (and heal), loss (5% with a\n' +
        'crash), restart (new incarnation), duplicate-id and config-mismatch (kept out), random\n' +
        '(the seed picks a fault profile and a whole fault schedule; --profile service adds\n' +
        'services that fail, flap and report weights, which the seed never picks by itself).\n' +
        'Exit code 1 when an invariant broke; the seed replays the run.\n\n' +
        'Examples:\n  nlb simulate --hosts 4 --scenario crash\n' +
        '  nlb simulate --hosts 8 --scenario random --seed 42 --json\n',
    )
    .action(ctx.action((options: SimulateOptions) => simulate(options)));
}
