// The lab's network namespaces, through the data plane's command runner (dataplane/exec.ts):
// always an argument array, never a shell string, and every network command carries
// `-n <namespace>` or runs under `ip netns exec`, so nothing the lab does can change the root
// namespace's addresses, routes or links.
import { type CommandResult, localRunner, netnsRunner, runChecked } from '../dataplane/exec.js';

/** Every lab command must succeed; when one does not, its error output says why. */
const labCommandHint = 'the lab needs root and iproute2 (ip netns)';

/** Guards every namespaced command: the lab only ever configures namespaces it named `nlb-…`. */
export function assertLabNamespace(namespace: string): void {
  if (!/^nlb-[A-Za-z0-9_]+-(sw|rt|h\d+|c\d+|b1)$/.test(namespace)) {
    throw new Error(`refusing to touch namespace '${namespace}': not a lab namespace`);
  }
}

function ip(args: readonly string[]): Promise<CommandResult> {
  return runChecked(localRunner(), 'ip', args, labCommandHint);
}

/** `ip -n <namespace> …`: configures links and addresses inside one lab namespace only. */
export function ipIn(namespace: string, args: readonly string[]): Promise<CommandResult> {
  assertLabNamespace(namespace);
  return ip(['-n', namespace, ...args]);
}

/** `ip netns exec <namespace> <argv…>`, collecting the output; throws on a non-zero exit. */
export function execIn(namespace: string, argv: readonly string[]): Promise<CommandResult> {
  assertLabNamespace(namespace);
  const [file, ...args] = argv;
  if (file === undefined) {
    throw new Error('execIn needs a command to run');
  }
  return runChecked(netnsRunner(namespace), file, args, labCommandHint);
}

export function netnsAdd(namespace: string): Promise<CommandResult> {
  assertLabNamespace(namespace);
  return ip(['netns', 'add', namespace]);
}

export function netnsDelete(namespace: string): Promise<CommandResult> {
  assertLabNamespace(namespace);
  return ip(['netns', 'delete', namespace]);
}

/** Names of every network namespace that `ip netns` knows (all of them, not only the lab's). */
export async function netnsList(): Promise<string[]> {
  const { stdout } = await ip(['-j', 'netns', 'list']);
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
  const { stdout } = await ip(['netns', 'pids', namespace]);
  return stdout
    .split(/\s+/)
    .filter((word) => /^\d+$/.test(word))
    .map(Number);
}
