// The lab switch in IGMP mode. A Linux bridge that snoops IGMP, with a querier, sends multicast
// frames only to the ports that joined their group, and to multicast router ports. But it finds
// the group of an IPv4 frame by its destination IP, and a cluster's frames carry the cluster IP
// (a unicast address) in the group's MAC 01:00:5e:7f:c:d: the bridge finds no group, and sends
// them to the router ports alone (checked on kernel 6.18: with no router port, nobody gets
// them). A physical switch that snoops by MAC sends them to the ports that joined
// 239.255.c.d. The lab makes its bridge do the same from what snooping learnt: every port that
// joined the cluster's group (`bridge mdb`) becomes a router port. So the frames reach exactly
// the hosts whose nlbd joined, and a port that did not join (the bystander, a client) gets none.
import { setTimeout as sleep } from 'node:timers/promises';
import { parseAddress } from '../core/address.js';
import { igmpGroup } from '../core/mac.js';
import { LabError } from './errors.js';
import { labVip } from './naming.js';
import type { ClusterMode } from '../core/config.js';
import { execIn, ipIn } from './netns.js';
import type { LabState } from './state.js';

/** Creates the switch's bridge in namespace `sw` and brings it up, snooping in IGMP labs. */
export async function buildSwitch(sw: string, bridge: string, mode: ClusterMode): Promise<void> {
  if (mode === 'igmp') {
    // The bridge's MLD querier sends from the bridge's link-local address, and a bridge that
    // tried while the address was still tentative (duplicate address detection, ~1 s) counts
    // as having no IPv6 querier until its next startup query (31 s): meanwhile it floods IPv6
    // multicast. The switch's own addresses skip DAD (this namespace only).
    await execIn(sw, ['sh', '-c', 'echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad']);
  }
  await ipIn(sw, ['link', 'add', bridge, 'type', 'bridge']);
  if (mode === 'igmp') {
    // A switch that does IGMP snooping, with a querier: multicast frames go only where hosts
    // joined (and to multicast router ports, see switch.ts), not to every port. The bridge
    // floods until its querier has waited one response interval (10 s by default) for another
    // querier; 1 s, set before the querier is turned on (the wait starts then), lets a new lab
    // snoop by the time its cluster has converged. A join report the bridge missed (seen: one
    // in a few labs, for the heartbeats' group) is only made good by the next query, every
    // 125 s by default: a query every 5 s (1 s at start-up) bounds that to seconds.
    await ipIn(sw, [
      'link',
      'set',
      bridge,
      'type',
      'bridge',
      'mcast_query_response_interval',
      '100',
      'mcast_startup_query_interval',
      '100',
      'mcast_startup_query_count',
      '3',
      'mcast_query_interval',
      '500',
    ]);
    await ipIn(sw, [
      'link',
      'set',
      bridge,
      'type',
      'bridge',
      'mcast_snooping',
      '1',
      'mcast_querier',
      '1',
    ]);
  }
  await ipIn(sw, ['link', 'set', bridge, 'up']);
}

/** The IGMP group of the lab's cluster (239.255.c.d of the VIP 198.18.0.100). */
export const labIgmpGroup = igmpGroup(parseAddress(labVip)!).text;

interface MdbEntry {
  readonly port?: string;
  readonly grp?: string;
}

/** The switch ports that joined `group`, from the bridge's multicast database. */
export async function portsJoined(state: LabState, group: string): Promise<string[]> {
  const { stdout } = await execIn(state.switchNamespace, [
    'bridge',
    '-j',
    'mdb',
    'show',
    'dev',
    state.bridge,
  ]);
  const parsed = JSON.parse(stdout === '' ? '[]' : stdout) as { mdb?: MdbEntry[] }[];
  return parsed
    .flatMap((item) => item.mdb ?? [])
    .filter((entry) => entry.grp === group && entry.port !== undefined)
    .map((entry) => entry.port!);
}

/** How long the hosts' joins may take to show in the bridge's database. */
const joinWaitMs = 10_000;

/**
 * Makes every host port that joined the cluster's IGMP group `group` a multicast router port
 * (see the header), once all of `hostIds` joined; fails naming the ports that did not.
 */
export async function steerClusterFrames(
  state: LabState,
  group: string,
  hostIds: readonly number[],
): Promise<void> {
  const ports = state.hosts.filter((h) => hostIds.includes(h.id)).map((h) => h.switchPort);
  const deadline = Date.now() + joinWaitMs;
  let joined: string[] = [];
  for (;;) {
    joined = await portsJoined(state, group);
    if (ports.every((port) => joined.includes(port))) break;
    if (Date.now() > deadline) {
      throw new LabError(
        'process-failed',
        `hosts on switch ports ${ports.filter((p) => !joined.includes(p)).join(', ')} did not join the cluster's IGMP group ${group} within ${joinWaitMs} ms`,
        "nlbd joins it at start in igmp mode: see the hosts' nlbd logs in the lab directory",
      );
    }
    await sleep(100);
  }
  for (const port of joined) {
    await execIn(state.switchNamespace, [
      'bridge',
      'link',
      'set',
      'dev',
      port,
      'mcast_router',
      '2',
    ]);
  }
}
