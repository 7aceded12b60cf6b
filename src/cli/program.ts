// Builds the `nlb` program from a list of verbs and runs it once. Each verb lives in its own
// file under src/cli/commands/ and exports `register(program, ctx)`; src/cli/main.ts lists them.
// A verb's handler returns a `CommandOutput` (data + human view) or throws an `NlbError`;
// nothing here or in a verb writes to stdout directly, so --json always yields one document.
import { Command } from 'commander';
import { exitCodeMeanings, exitCodes } from './exit-codes.js';
import { type CliIo, type VerbOutput, writeError, writeOutput } from './render.js';

export interface CliContext {
  readonly io: CliIo;
  /**
   * Wraps a handler into a commander action. The handler gets commander's usual arguments
   * (positional arguments, then the options object, then the Command) and returns the output;
   * the wrapper renders it as a table or, under --json, as JSON. Thrown errors are rendered by
   * `runCli`.
   */
  action<Args extends unknown[]>(
    handler: (...args: Args) => VerbOutput | Promise<VerbOutput>,
  ): (...args: Args) => Promise<void>;
}

/** What every file in src/cli/commands/ exports. */
export interface CliCommand {
  /** Adds the verb: `program.command('verb').description(...)....action(ctx.action(handler))`. */
  register(program: Command, ctx: CliContext): void;
}

/** `--json` anywhere before a `--`; used when parsing failed before commander could say. */
function jsonRequested(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).includes('--json');
}

function exitCodeHelp(): string {
  const lines = exitCodeMeanings.map(({ code, meaning }) => `  ${code}  ${meaning}`);
  return `\nExit codes:\n${lines.join('\n')}\n`;
}

/**
 * Parses `argv` (the arguments after `nlb`), runs the verb and returns the exit code (an
 * `ExitCode`, or the child's own status for `nlb lab exec`). Never calls process.exit, so a large
 * output is flushed before the process ends.
 */
export async function runCli(
  commands: readonly CliCommand[],
  argv: readonly string[],
  io: CliIo,
  version: string,
): Promise<number> {
  let exitCode: number = exitCodes.ok;
  let json = jsonRequested(argv);
  let commandName: string | undefined;
  const ctx: CliContext = {
    io,
    action:
      (handler) =>
      async (...args) => {
        const command = args[args.length - 1];
        if (command instanceof Command) {
          json = command.optsWithGlobals<{ json?: boolean }>().json === true;
        }
        exitCode = writeOutput(await handler(...args), json, io);
      },
  };

  const program = new Command('nlb')
    .description(
      'Network Load Balancing for Linux: hosts that share a cluster IP with no load balancer ' +
        'in front. nlb predicts, inspects and controls the cluster.',
    )
    .version(version, '-V, --version', 'print the nlb version')
    .option('--json', 'print exactly one JSON document on stdout instead of a table')
    .helpOption('-h, --help', 'show help')
    .helpCommand('help [command]', 'show help for a command')
    .addHelpText('after', exitCodeHelp())
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    // Commander must not exit or print errors itself: every error goes through writeError,
    // which gives usage errors exit code 2 and prints them once, with a hint.
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: () => {},
    })
    .hook('preSubcommand', (_program, subcommand) => {
      commandName = subcommand.name();
    });

  for (const command of commands) {
    command.register(program, ctx);
  }

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return exitCode;
  } catch (error) {
    return writeError(error, json, io, commandName);
  }
}
