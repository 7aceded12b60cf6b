// Multicast and IGMP modes' baseline for the filter's overhead (filter-modes.ts says why): the
// client sends host 1's own address in frames to the cluster's group MAC, flooded to every host
// as the VIP's are, and host 1 takes them by the one rule the filter also begins with.
import type { LabState } from '../../src/lab/state.js';
import { execNs, execNsChecked } from './ns-exec.js';

/** The lab's nft table that lets host 1 take group-MAC frames for its own address. */
const floodTable = 'nlb_bench_flood';

/** Host 1 takes frames to the group MAC for `hostTarget` (its own address), hashing nothing. */
export async function floodOwnAddress(
  lab: LabState,
  hostTarget: string,
  family: 4 | 6,
): Promise<void> {
  const ip = family === 6 ? 'ip6' : 'ip';
  const script = [
    `table ${ip} ${floodTable} {`,
    '  chain prerouting {',
    '    type filter hook prerouting priority mangle; policy accept;',
    `    ${ip} daddr ${hostTarget} meta pkttype multicast meta pkttype set host`,
    '  }',
    '}',
    '',
  ].join('\n');
  await execNsChecked(lab, 'h1', ['nft', '-f', '-'], 5_000, script);
}

/**
 * The client sends to `hostTarget` in frames to `mac` (a permanent neighbour entry), or with
 * `mac` undefined to its own MAC again (the entry deleted, so it is resolved anew).
 */
export async function sendOwnAddressTo(
  lab: LabState,
  hostTarget: string,
  family: 4 | 6,
  mac: string | undefined,
): Promise<void> {
  const neigh = family === 6 ? ['ip', '-6', 'neigh'] : ['ip', 'neigh'];
  if (mac === undefined) {
    // Absent already (the first round) is as good as deleted.
    await execNs(lab, 'c1', [...neigh, 'del', hostTarget, 'dev', 'eth0'], 5_000);
    return;
  }
  await execNsChecked(
    lab,
    'c1',
    [...neigh, 'replace', hostTarget, 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent'],
    5_000,
  );
}
