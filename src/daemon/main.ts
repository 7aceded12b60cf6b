#!/usr/bin/env node
// `nlbd --config <file> [--socket <path>]`: the nlb daemon of one host. See daemon.ts for what
// it does from start to exit, control.ts for the control socket protocol.
import { Command, CommanderError } from 'commander';
import { daemonExitCodes, runDaemon } from './daemon.js';

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
  .helpOption('-h, --help', 'show help')
  .addHelpText(
    'after',
    '\nRuns until SIGTERM or SIGINT, then leaves the cluster (peers take over at once), removes\n' +
      'the cluster IPs and the filter, and exits 0. Logs one JSON line per event on stdout.\n' +
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
  const options = program.opts<{ config: string; socket?: string }>();
  return runDaemon({
    configPath: options.config,
    ...(options.socket === undefined ? {} : { socketPath: options.socket }),
  });
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
