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
import { LabError } from './errors.js';
import { execIn } from './netns.js';
import type { LabState } from './state.js';

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
