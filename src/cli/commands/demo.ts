// `nlb demo`: the README's first command. A 3-host lab cluster under load; host 1's service
// fails and is mended; host 2 crashes and rejoins; host 3 drainstops; then a summary per phase. Live counters go to stderr as they
// happen; the summary is the verb's output (a table, or one JSON document with --json).
import { type Command, Option } from 'commander';
import { type DemoPhase, type DemoResult, runLabDemo, runSimulatorDemo } from '../../demo/demo.js';
import { NlbError, badArgument } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import { type Listen, listenDefault, parseListen, startClusterDashboard } from './dashboard.js';
import type { CliContext } from '../program.js';
import { type CommandOutput, table } from '../render.js';

interface DemoOptions {
  readonly phaseSeconds: string;
  readonly rate: string;
  readonly holds: string;
  readonly mode: 'unicast' | 'multicast' | 'igmp' | 'routed';
  readonly ipv6: boolean;
  /** `--dashboard` alone: true; with an address: that address. */
  readonly dashboard?: boolean | string;
}

function bounded(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw badArgument(
      name,
      `'${text}' is not a whole number from ${min} to ${max}`,
      `e.g. ${name} ${min}`,
    );
  }
  return value;
}

function cell(value: number | null | undefined, unit = ''): string {
  return value === null || value === undefined ? '-' : `${Math.round(value)}${unit}`;
}

export async function demo(
  options: DemoOptions,
  ctx: CliContext,
): Promise<CommandOutput<DemoResult>> {
  const phaseSeconds = bounded('--phase-seconds', options.phaseSeconds, 3, 60);
  const ratePerSecond = bounded('--rate', options.rate, 10, 2000);
  const holds = bounded('--holds', options.holds, 0, 200);
  const dashboard: Listen | undefined =
    options.dashboard === undefined || options.dashboard === false
      ? undefined
      : parseListen(options.dashboard === true ? listenDefault : options.dashboard, '--dashboard');
  const log = (line: string): void => {
    ctx.io.stderr.write(`${line}\n`);
  };
  let result: DemoResult;
  if (process.getuid?.() !== 0) {
    if (dashboard !== undefined)
      log('--dashboard: the dashboard shows a lab, and the lab needs root');
    result = runSimulatorDemo(log);
  } else {
    const abort = new AbortController();
    const onSignal = (): void => {
      log('interrupted: stopping the load and tearing the lab down...');
      abort.abort();
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      result = await runLabDemo({
        phaseSeconds,
        ratePerSecond,
        holds,
        mode: options.mode,
        ipv6: options.ipv6,
        log,
        signal: abort.signal,
        onLabUp:
          dashboard === undefined
            ? undefined
            : async (lab) => {
                const running = await startClusterDashboard({ lab: lab.name }, dashboard, log);
                log(
                  `dashboard: ${running.url} (control token for actions in ${running.tokenFile})`,
                );
                return () => running.close();
              },
      });
    } catch (error) {
      // Ctrl-C stops the phase that waits with an AbortError; the lab is down by now.
      if (abort.signal.aborted) {
        throw new NlbError(
          'failed',
          'the demo was interrupted; its lab is torn down',
          '',
          exitCodes.failed,
        );
      }
      throw error;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
  const rows: DemoPhase[] = [...result.phases];
  return {
    data: result,
    human: table<DemoPhase>(
      [
        { header: 'PHASE', cell: (p) => p.description },
        { header: 'SENT', cell: (p) => String(p.requestsSent), align: 'right' },
        { header: 'FAILED', cell: (p) => String(p.requestsFailed), align: 'right' },
        { header: 'BROKEN', cell: (p) => String(p.connectionsBroken), align: 'right' },
        { header: 'TAKEOVER', cell: (p) => cell(p.takeoverMs, ' ms'), align: 'right' },
        {
          header: 'ANSWERED BY',
          cell: (p) =>
            Object.entries(p.answeredPerHost)
              .map(([h, n]) => `${h} ${n}`)
              .join(', '),
        },
      ],
      rows,
      [
        'SENT/FAILED: new connections started in the phase and how many got no answer.',
        "BROKEN: long-lived connections that broke; only the crashed host's may (its clients get a reset).",
        'TAKEOVER: from the crash until hosts 1 and 3 owned every bucket of host 2.',
        ...result.phases
          .filter((p) => p.firstAnsweredInDeadBucketMs !== null)
          .map(
            (p) =>
              `First request answered in a dead host's bucket: ${p.firstAnsweredInDeadBucketMs} ms after the crash.`,
          ),
        ...result.phases
          .filter((p) => p.requestsFailed > 0)
          .map((p) => `${p.name}: failures by kind: ${JSON.stringify(p.failuresByKind)}`),
        ...result.notes,
      ],
    ),
  };
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('demo')
    .description(
      'the demo: a 3-host lab cluster under load, a crash and rejoin, a drainstop, a summary',
    )
    .option('--phase-seconds <n>', 'length of each of the five phases', '8')
    .option('--rate <n>', 'new connections per second', '200')
    .option('--holds <n>', 'long-lived connections held open through the demo', '12')
    .addOption(
      new Option('--mode <mode>', "the lab cluster's operation mode")
        .choices(['unicast', 'multicast', 'igmp', 'routed'])
        .default('unicast'),
    )
    .option('--ipv6', 'clients connect to the IPv6 cluster IP (2001:db8:18::100)', false)
    .option(
      '--dashboard [addr:port]',
      `serve the live dashboard of the demo's lab while it runs (default ${listenDefault})`,
    )
    .action(ctx.action((options: DemoOptions) => demo(options, ctx)));
}
