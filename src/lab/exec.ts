// Running the system tools the lab is built from (iproute2, bridge). Always execFile with an
// argument array, never a shell string, and every network command carries `-n <namespace>` so
// nothing the lab does can change the root namespace's addresses, routes or links.
import { execFile } from 'node:child_process';

/** Each tool call is a local netlink request; 10 s means something is stuck, not slow. */
export const commandTimeoutMs = 10_000;
/** `ip -j` listings of a lab stay small; this bounds a runaway output. */
const commandOutputBytesMax = 16 * 1024 * 1024;

export class LabCommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(
      `'${argv.join(' ')}' failed${exitCode === null ? '' : ` (exit ${exitCode})`}: ${stderr.trim() || 'no error output'}`,
    );
    this.name = 'LabCommandError';
  }
}

export interface CommandOutput {
  readonly stdout: string;
  readonly stderr: string;
}

export function run(file: string, args: readonly string[]): Promise<CommandOutput> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: commandTimeoutMs, maxBuffer: commandOutputBytesMax, encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (error) {
          const code = typeof error.code === 'number' ? error.code : null;
          const detail = stderr || (typeof error.code === 'string' ? error.code : error.message);
          reject(new LabCommandError([file, ...args], code, detail));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
  });
}

/** Guards every namespaced command: the lab only ever configures namespaces it named `nlb-…`. */
function assertLabNamespace(namespace: string): void {
  if (!/^nlb-[A-Za-z0-9_]+-(sw|h\d+|c\d+)$/.test(namespace)) {
    throw new Error(`refusing to touch namespace '${namespace}': not a lab namespace`);
  }
}

/** `ip -n <namespace> …`: configures links and addresses inside one lab namespace only. */
export function ipIn(namespace: string, args: readonly string[]): Promise<CommandOutput> {
  assertLabNamespace(namespace);
  return run('ip', ['-n', namespace, ...args]);
}

/** `ip netns exec <namespace> <argv…>`, collecting the output. */
export function execIn(namespace: string, argv: readonly string[]): Promise<CommandOutput> {
  assertLabNamespace(namespace);
  if (argv.length === 0) {
    throw new Error('execIn needs a command to run');
  }
  return run('ip', ['netns', 'exec', namespace, ...argv]);
}

export function netnsAdd(namespace: string): Promise<CommandOutput> {
  assertLabNamespace(namespace);
  return run('ip', ['netns', 'add', namespace]);
}

export function netnsDelete(namespace: string): Promise<CommandOutput> {
  assertLabNamespace(namespace);
  return run('ip', ['netns', 'delete', namespace]);
}

/** Names of every network namespace that `ip netns` knows (all of them, not only the lab's). */
export async function netnsList(): Promise<string[]> {
  const { stdout } = await run('ip', ['-j', 'netns', 'list']);
  if (stdout.trim() === '') {
    return [];
  }
  const parsed = JSON.parse(stdout) as Array<{ name?: unknown }>;
  return parsed
    .map((entry) => entry.name)
    .filter((name): name is string => typeof name === 'string');
}

/** Process ids of everything running in one lab namespace. */
export async function netnsPids(namespace: string): Promise<number[]> {
  assertLabNamespace(namespace);
  const { stdout } = await run('ip', ['netns', 'pids', namespace]);
  return stdout
    .split(/\s+/)
    .filter((word) => /^\d+$/.test(word))
    .map(Number);
}

export { assertLabNamespace };
