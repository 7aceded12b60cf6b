// Running the system tools the data plane is made of (nft, conntrack, ip, ss): always an argument
// array, never a shell string, in the network namespace the process runs in. A `Runner` can wrap
// every command (tests wrap it in `ip netns exec <ns>`), and a fake runner stands in for unit
// tests.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';

/** Each call is one local netlink exchange; 10 s means stuck, not slow. */
export const commandTimeoutMsDefault = 10_000;
/**
 * Bounds a runaway output. The biggest legitimate one is a conntrack listing: ~200 bytes per
 * connection, so 64 MiB is ~300,000 connections.
 */
export const commandOutputBytesMax = 64 * 1024 * 1024;

export interface CommandResult {
  /** The exit code; callers decide which codes are failures (conntrack -D exits 1 on "none"). */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** Written to the command's standard input, which is then closed. */
  readonly input?: string;
  readonly timeoutMs?: number;
}

/** The command could not run to completion: missing tool, timeout, signal, output too big. */
export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly problem: string,
    readonly hint: string,
  ) {
    super(`'${argv.join(' ')}' ${problem}; ${hint}`);
    this.name = 'CommandError';
  }
}

export interface Runner {
  run(file: string, args: readonly string[], options?: RunOptions): Promise<CommandResult>;
  /** Starts a long-lived process (the interactive nft); undefined when the runner cannot. */
  spawn?(file: string, args: readonly string[]): ChildProcessWithoutNullStreams;
}

function runArgv(argv: readonly string[], options: RunOptions): Promise<CommandResult> {
  const [file, ...args] = argv;
  const timeoutMs = options.timeoutMs ?? commandTimeoutMsDefault;
  return new Promise((resolve, reject) => {
    const child = spawn(file!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let bytes = 0;
    let failure: CommandError | undefined;
    const fail = (problem: string, hint: string): void => {
      failure ??= new CommandError(argv, problem, hint);
      child.kill('SIGKILL');
    };
    const timer = setTimeout(
      () => fail(`did not finish within ${timeoutMs} ms`, 'the kernel or the tool is stuck'),
      timeoutMs,
    );
    const collect = (into: Buffer[]) => (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > commandOutputBytesMax) {
        fail(`wrote more than ${commandOutputBytesMax} bytes`, 'the output is unexpectedly big');
        return;
      }
      into.push(chunk);
    };
    child.stdout.on('data', collect(out));
    child.stderr.on('data', collect(err));
    child.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        error.code === 'ENOENT'
          ? new CommandError(
              argv,
              'could not start: not found',
              `install it (nft: apt-get install nftables, conntrack: apt-get install conntrack, ip/ss: apt-get install iproute2)`,
            )
          : new CommandError(argv, `could not start: ${error.message}`, 'check permissions'),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (failure !== undefined) {
        reject(failure);
      } else if (code === null) {
        reject(new CommandError(argv, `was killed by ${signal}`, 'see the system log'));
      } else {
        resolve({
          code,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        });
      }
    });
    // A tool that exits before reading its input closes the pipe; its exit code says why.
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}

/** Runs commands in this process's network namespace. */
export function localRunner(): Runner {
  return {
    run: (file, args, options = {}) => runArgv([file, ...args], options),
    spawn: (file, args) => spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] }),
  };
}

/** Runs every command inside network namespace `namespace` (`ip netns exec`), for tests and the lab. */
export function netnsRunner(namespace: string): Runner {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(namespace)) {
    throw new Error(`netnsRunner: '${namespace}' is not a network namespace name`);
  }
  const wrap = (file: string, args: readonly string[]) => [
    'ip',
    'netns',
    'exec',
    namespace,
    file,
    ...args,
  ];
  return {
    run: (file, args, options = {}) => runArgv(wrap(file, args), options),
    spawn: (file, args) => {
      const [head, ...rest] = wrap(file, args);
      return spawn(head!, rest, { stdio: ['pipe', 'pipe', 'pipe'] });
    },
  };
}

/**
 * Runs a command for which every exit but 0 is a failure (the lab's `ip` calls: none of them
 * exits non-zero for a benign reason, unlike `conntrack -D`): such an exit becomes a
 * CommandError carrying the tool's error output and `hint`.
 */
export async function runChecked(
  runner: Runner,
  file: string,
  args: readonly string[],
  hint: string,
): Promise<CommandResult> {
  const result = await runner.run(file, args);
  if (result.code !== 0) {
    const problem = `failed (exit ${result.code}): ${result.stderr.trim() || 'no error output'}`;
    throw new CommandError([file, ...args], problem, hint);
  }
  return result;
}

export interface RecordedCommand {
  readonly argv: readonly string[];
  readonly input: string | undefined;
}

/**
 * A runner for unit tests: records every command and answers from `respond` (default: success
 * with no output). It cannot spawn, so the nft adapter falls back to one process per change.
 */
export class FakeRunner implements Runner {
  readonly commands: RecordedCommand[] = [];

  constructor(
    private readonly respond: (
      argv: readonly string[],
      input: string | undefined,
    ) => Partial<CommandResult> = () => ({}),
  ) {}

  run(file: string, args: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    const argv = [file, ...args];
    this.commands.push({ argv, input: options.input });
    const answer = this.respond(argv, options.input);
    return Promise.resolve({
      code: answer.code ?? 0,
      stdout: answer.stdout ?? '',
      stderr: answer.stderr ?? '',
    });
  }
}
