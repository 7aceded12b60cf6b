// Whether FRR can announce what nlbd's marker routes say (routed mode, docs/routed.md): bgpd
// runs in this network namespace, and its BGP sessions are established. nlbd does not depend on
// FRR to serve (the marker routes wait for it), so what is wrong is an event with the fix, not a
// refusal. bgpd is found by its pid file: Debian's `/run/frr/bgpd.pid`, or with FRR's path space
// per namespace (`-N <ns>`, as the routed lab runs it) `/run/frr/<ns>/bgpd.pid`.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Runner } from '../dataplane/exec.js';
import { bgpSessionStates, frrRunRoot } from '../core/bgp.js';

/** Where bgpd runs for `netns` (its FRR path space), or undefined when it does not run. */
export function bgpdPathSpace(
  netns: string | undefined,
  root = frrRunRoot,
): { namespace?: string } | undefined {
  const candidates = [
    ...(netns === undefined ? [] : [{ namespace: netns }]),
    {} as { namespace?: string },
  ];
  for (const candidate of candidates) {
    const dir = candidate.namespace === undefined ? root : path.join(root, candidate.namespace);
    try {
      const pid = Number(readFileSync(path.join(dir, 'bgpd.pid'), 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0) {
        process.kill(pid, 0);
        return candidate;
      }
    } catch {
      // no pid file, or no such process: try the next place
    }
  }
  return undefined;
}

/** The name of this process's network namespace (`ip netns identify`), if it has one. */
export async function namespaceName(runner: Runner): Promise<string | undefined> {
  try {
    const result = await runner.run('ip', ['netns', 'identify']);
    const name = result.stdout.trim();
    return result.code === 0 && name !== '' ? name : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The problems in words, each with what to do: bgpd not running, or configured peers whose
 * session is not established. Empty when FRR announces what nlbd asks.
 */
export async function frrProblems(
  runner: Runner,
  netns: string | undefined,
  peers: readonly string[],
  root = frrRunRoot,
): Promise<string[]> {
  const space = bgpdPathSpace(netns, root);
  if (space === undefined) {
    return [
      'bgpd is not running here: nothing announces the cluster IPs to the routers; write its files with `nlb frr-config --config <this config> --dir /etc/frr` and start FRR',
    ];
  }
  const args = [
    ...(space.namespace === undefined ? [] : ['-N', space.namespace, '--config_dir', root]),
    '-c',
    'show bgp summary json',
  ];
  let states: Map<string, string | undefined>;
  try {
    const result = await runner.run('vtysh', args, { timeoutMs: 5_000 });
    states = bgpSessionStates(result.stdout);
  } catch (error) {
    return [`could not ask bgpd for its sessions (vtysh ${args.join(' ')}): ${String(error)}`];
  }
  return peers
    .filter((peer) => states.get(peer) !== 'Established')
    .map(
      (peer) =>
        `the BGP session with ${peer} is ${states.get(peer) ?? 'not configured'}: the routers behind it do not hear the cluster IPs; check that ${peer} is reachable and configured for this host (AS, address), and \`vtysh -c 'show bgp summary'\``,
    );
}
