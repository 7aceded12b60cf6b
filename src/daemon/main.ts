#!/usr/bin/env node
// `nlbd --config <file> [--socket <path>] [--control-listen <addr[:port]> --token-file <path>]
// [--metrics-listen <addr:port>] [--state-dir <dir>] [--realtime-priority <n>]`: the nlb daemon of one host. See daemon.ts for what it does
// from start to exit, control.ts for the control protocol, remote.ts for remote control and
// metrics.ts for the metrics.
import { Command, CommanderError } from 'commander';
import { parseEndpoint } from '../core/address.js';
import { type ListenAddress, daemonExitCodes, runDaemon } from './daemon.js';
import { packageVersion } from '../node/package-info.js';
import { realtimePriorityDefault, realtimePriorityMax } from './scheduling.js';
import { parseListenAddress, remoteControlPortDefault } from '../control/remote-target.js';

const program = new Command('nlbd')
  .description(
    'the nlb daemon: joins this host to its cluster (heartbeats, convergence) and programs the ' +
      'nftables filter that makes it take its share of the cluster IP traffic',
  )
  .requiredOption('-c, --config <file>', 'the host config YAML (cluster part + host part)')
  .option(
    '--socket <path>',
    'control socket path (default /run/nlb/nlbd-<cluster name>-<host id>.sock)',
  )
  .option(
    '--control-listen <addr[:port]>',
    `remote control over TCP on this address (port ${remoteControlPortDefault} by default); needs --token-file. Off by default`,
  )
  .option('--token-file <path>', 'the shared token remote control requests must carry')
  .option(
    '--metrics-listen <addr:port>',
    'serve Prometheus metrics over HTTP at http://<addr:port>/metrics. Off by default',
  )
  .option(
    '--state-dir <dir>',
    "where the host's incarnation and suspended state are kept across restarts (default $NLBD_STATE_DIR, else /var/lib/nlb)",
  )
  .option(
    '--realtime-priority <n>',
    `run nlbd (and the nft, conntrack and ip processes it starts) under SCHED_RR at this priority, 1-${realtimePriorityMax}, so CPU load cannot delay its heartbeats and kernel updates; 0 leaves the scheduling alone`,
    String(realtimePriorityDefault),
  )
  .version(packageVersion(), '-V, --version', 'show the version')
  .helpOption('-h, --help', 'show help')
  .addHelpText(
    'after',
    '\nRuns until SIGTERM or SIGINT, then leaves the cluster (peers take over at once), removes\n' +
      'the cluster IPs and the filter, and exits 0; a signal during start-up undoes what was\n' +
      'done so far and exits 0 too. Logs one JSON line per event on stdout.\n' +
      'SIGHUP reloads the config file, like `nlb reload`. The listeners bind exactly the\n' +
      'address given: remote control carries its token in clear text and metrics have no\n' +
      'authentication, so use a management address (or 127.0.0.1 and an SSH tunnel).\n' +
      'Exit codes: 0 ok, 1 failed or refused to start, 2 bad usage or config.\n',
  )
  .exitOverride()
  .configureOutput({
    writeOut: (s) => process.stdout.write(s),
    writeErr: (s) => process.stderr.write(s),
  });

async function main(): Promise<number> {
  try {
    program.parse(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.exitCode === 0 ? 0 : daemonExitCodes.usage;
    }
    throw error;
  }
  const options = program.opts<{
    config: string;
    socket?: string;
    controlListen?: string;
    tokenFile?: string;
    metricsListen?: string;
    stateDir?: string;
    realtimePriority: string;
  }>();
  const realtimePriority = Number(options.realtimePriority);
  if (!/^\d+$/.test(options.realtimePriority) || realtimePriority > realtimePriorityMax) {
    return usage(
      `--realtime-priority: '${options.realtimePriority}' is not a priority`,
      `give a whole number from 1 to ${realtimePriorityMax}, or 0 to leave the scheduling alone`,
    );
  }
  let controlListen: ListenAddress | undefined;
  let metricsListen: ListenAddress | undefined;
  if (options.controlListen !== undefined) {
    const parsed = parseListenAddress(options.controlListen, remoteControlPortDefault);
    if ('error' in parsed) {
      return usage(`--control-listen: ${parsed.error}`, 'e.g. --control-listen 10.0.0.11:2504');
    }
    controlListen = { address: parsed.address.text, port: parsed.port };
  }
  if (options.metricsListen !== undefined) {
    const parsed = parseEndpoint(options.metricsListen);
    if ('error' in parsed) {
      return usage(`--metrics-listen: ${parsed.error}`, 'e.g. --metrics-listen 127.0.0.1:9505');
    }
    metricsListen = { address: parsed.address.text, port: parsed.port };
  }
  return runDaemon({
    configPath: options.config,
    ...(options.socket === undefined ? {} : { socketPath: options.socket }),
    ...(controlListen === undefined ? {} : { controlListen }),
    ...(options.tokenFile === undefined ? {} : { tokenFile: options.tokenFile }),
    ...(metricsListen === undefined ? {} : { metricsListen }),
    ...(options.stateDir === undefined ? {} : { stateDir: options.stateDir }),
    realtimePriority,
  });
}

function usage(problem: string, hint: string): number {
  process.stderr.write(`nlbd: ${problem}\nhint: ${hint}\n`);
  return daemonExitCodes.usage;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(
      `nlbd: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n` +
        'hint: this is a bug in nlbd; please report it with the log above\n',
    );
    process.exit(daemonExitCodes.failed);
  },
);
