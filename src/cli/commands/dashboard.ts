// `nlb dashboard`: a web page that shows the cluster live (hosts, each port rule's bucket map,
// convergences, events, counters) and carries out drainstop, start, stop and drain from the page
// with the control token. It finds the hosts as the cluster-wide verbs do (../cluster.ts) and
// serves the page until Ctrl-C (src/dashboard/run.ts).
import type { Command } from 'commander';
import { parseListenAddress } from '../../control/remote-target.js';
import { type DashboardHost, controlHost, unreachableHost } from '../../dashboard/hosts.js';
import {
  type RunningDashboard,
  type TokenSource,
  DashboardError,
  dashboardPortDefault,
  startDashboard,
} from '../../dashboard/run.js';
import { type ClusterLinks, resolveCluster } from '../cluster.js';
import { NlbError, badArgument } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import type { CliContext } from '../program.js';
import type { StreamedOutput } from '../render.js';
import { type ControlOptions, addDaemonOptions, readTokenArgument } from './control.js';

export const listenDefault = `127.0.0.1:${dashboardPortDefault}`;

export interface Listen {
  readonly address: string;
  readonly port: number;
}

/** `--listen ADDR[:PORT]`: an IP address of this host and a port (0: any free one). */
export function parseListen(text: string, flag = '--listen'): Listen {
  const parsed = parseListenAddress(text, dashboardPortDefault);
  if ('error' in parsed) {
    throw badArgument(
      flag,
      parsed.error,
      `give an address and port, e.g. ${flag} ${listenDefault} or ${flag} [::1]:${dashboardPortDefault}`,
    );
  }
  return { address: parsed.address.text, port: parsed.port };
}

function dashboardHosts(links: ClusterLinks): DashboardHost[] {
  return links.hosts.map((host) =>
    host.link === null
      ? unreachableHost(host.hostId, host.unreachable ?? 'unreachable')
      : controlHost(host.hostId, host.link.endpoint, host.link.token, host.link.where),
  );
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1';
}

/**
 * Starts the dashboard of the cluster `options` names (a lab, a local nlbd, a remote one), on
 * `listen`; `log` gets what a person should know (a warning for a page open to the network).
 */
export async function startClusterDashboard(
  options: ControlOptions,
  listen: Listen,
  log: (line: string) => void,
): Promise<RunningDashboard> {
  if (options.lab !== undefined && options.host !== undefined) {
    throw badArgument(
      '--host',
      `the dashboard shows every host of lab ${options.lab}, and --host names one`,
      `drop --host: nlb dashboard --lab ${options.lab}`,
    );
  }
  // A lab's hosts answer on their local sockets: its --token-file is the page's token alone.
  const clusterOptions = options.lab === undefined ? options : { ...options, tokenFile: undefined };
  const links = await resolveCluster(clusterOptions, 'dashboard');
  let token: TokenSource = { kind: 'generate', cluster: links.cluster };
  if (options.tokenFile !== undefined) {
    const given = await readTokenArgument(options.tokenFile);
    token = { kind: 'given', token: given, file: options.tokenFile };
  }
  if (!isLoopback(listen.address)) {
    log(
      `warning: the dashboard listens on ${listen.address}: anyone who reaches it sees the cluster (actions still need the control token)`,
    );
  }
  try {
    return await startDashboard({
      cluster: links.cluster,
      hosts: dashboardHosts(links),
      discover: async () => dashboardHosts(await resolveCluster(clusterOptions, 'dashboard')),
      address: listen.address,
      port: listen.port,
      token,
    });
  } catch (error) {
    if (error instanceof DashboardError) {
      throw new NlbError('failed', error.message, error.hint, exitCodes.failed);
    }
    throw error;
  }
}

/** Resolves on the first SIGINT or SIGTERM. */
function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}

export async function dashboard(
  options: ControlOptions & { readonly listen: string },
  json: boolean,
  ctx: CliContext,
): Promise<StreamedOutput> {
  const listen = parseListen(options.listen);
  const log = (line: string): void => void ctx.io.stderr.write(`${line}\n`);
  const running = await startClusterDashboard(options, listen, log);
  const cluster = running.aggregator.current()?.cluster ?? '';
  ctx.io.stdout.write(
    json
      ? `${JSON.stringify({ cluster, url: running.url, tokenFile: running.tokenFile })}\n`
      : `dashboard of cluster ${cluster}: ${running.url}\ncontrol token for actions: ${running.tokenFile}\n(Ctrl-C stops it)\n`,
  );
  try {
    await untilSignal();
  } finally {
    await running.close();
  }
  return { streamed: true, exitCode: exitCodes.ok };
}

export function register(program: Command, ctx: CliContext): void {
  addDaemonOptions(
    program
      .command('dashboard')
      .description(
        'serve a live web page of the cluster: hosts, bucket maps, convergences, events, counters; drainstop/start/stop/drain from the page',
      )
      .option('--listen <addr[:port]>', 'where to serve the page', listenDefault),
  )
    .addHelpText(
      'after',
      '\nWhich cluster: --lab NAME (every host of a lab), --socket/--config or the local nlbd (and\n' +
        'its peers by remote control with --token-file), or --host ADDR --token-file FILE.\n' +
        'Actions from the page need the control token: the --token-file one, or else a token made\n' +
        'for this run, written to /run/nlb/dashboard-<cluster>.token (0600) and removed at the end.\n' +
        '\nExamples:\n  nlb dashboard --lab demo\n  nlb dashboard --host 10.0.0.11 --token-file /etc/nlb/control.token --listen 127.0.0.1:8505\n',
    )
    .action(
      ctx.action((options: ControlOptions & { listen: string }, command: Command) =>
        dashboard(options, command.optsWithGlobals<{ json?: boolean }>().json === true, ctx),
      ),
    );
}
