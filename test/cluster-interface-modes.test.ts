// The cluster interface in multicast and IGMP modes, with fakes (no kernel): what attach does in
// which order (the group MAC, the IGMP membership, the cluster IPs, then the announcements), that
// a repair of what someone took away announces again, and that detach undoes all of it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAddress } from '../src/core/address.js';
import { ClusterInterface } from '../src/daemon/cluster-interface.js';
import { FakeRunner } from '../src/dataplane/exec.js';
import { IpRoute } from '../src/dataplane/iproute.js';
import type { GroupMembership } from '../src/dataplane/igmp.js';

const dir = mkdtempSync(path.join(tmpdir(), 'nlb-iface-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An interface name no test machine has: what `missing` reads of it is "nothing". */
const ifname = 'nlbfake0';
const link = JSON.stringify([
  { ifname, flags: ['BROADCAST', 'MULTICAST', 'UP'], address: '52:54:00:12:34:56', addr_info: [] },
]);

function fixture(mode: 'multicast' | 'igmp') {
  const steps: string[] = [];
  const runner = new FakeRunner((argv) => {
    steps.push(argv.join(' '));
    return argv.includes('-j') ? { stdout: link } : {};
  });
  const iface = new ClusterInterface(
    new IpRoute(runner),
    {
      interface: ifname,
      clusterIps: [parseAddress('198.18.0.100')!, parseAddress('2001:db8:18::100')!],
      mode,
      ...(mode === 'multicast'
        ? { groupMac: '03:bf:c6:12:00:64' }
        : { igmp: { group: '239.255.0.100', interfaceAddress: '198.18.0.11' } }),
      joinGroup: (group): Promise<GroupMembership> => {
        steps.push(`join ${group}`);
        return Promise.resolve({
          group,
          leave: () => {
            steps.push(`leave ${group}`);
            return Promise.resolve();
          },
        });
      },
      announcer: {
        announce: (name) => {
          steps.push(`announce ${name}`);
          return Promise.resolve();
        },
      },
    },
    path.join(dir, `${mode}.run`),
    undefined,
  );
  return { iface, steps };
}

describe('the cluster interface in multicast and IGMP modes', () => {
  it('multicast: group MAC, cluster IPs, announce; a repair announces again; detach undoes it', async () => {
    const { iface, steps } = fixture('multicast');
    await iface.attach();
    expect(steps.filter((s) => !s.includes('-j'))).toEqual([
      `ip maddr add 03:bf:c6:12:00:64 dev ${ifname}`,
      `ip addr add 198.18.0.100/32 dev ${ifname}`,
      `ip addr add 2001:db8:18::100/128 dev ${ifname} nodad`,
      `announce ${ifname}`,
    ]);
    // The interface does not exist here, so everything counts as taken away.
    expect(iface.missing()).toMatchObject({ groupMac: true });
    steps.length = 0;
    expect(await iface.repair()).toEqual([
      'group MAC 03:bf:c6:12:00:64',
      'cluster IP 198.18.0.100',
      'cluster IP 2001:db8:18::100',
    ]);
    expect(steps.at(-1)).toBe(`announce ${ifname}`);
    steps.length = 0;
    await iface.detach();
    expect(steps.filter((s) => !s.includes('-j'))).toEqual([
      `ip addr del 198.18.0.100/32 dev ${ifname}`,
      `ip addr del 2001:db8:18::100/128 dev ${ifname}`,
      `ip maddr del 03:bf:c6:12:00:64 dev ${ifname}`,
    ]);
  });

  it('igmp: joins before the cluster IPs come, leaves once they are gone, and takes no static MAC', async () => {
    const { iface, steps } = fixture('igmp');
    await iface.attach();
    expect(steps.filter((s) => !s.includes('-j'))).toEqual([
      'join 239.255.0.100',
      `ip addr add 198.18.0.100/32 dev ${ifname}`,
      `ip addr add 2001:db8:18::100/128 dev ${ifname} nodad`,
      `announce ${ifname}`,
    ]);
    steps.length = 0;
    await iface.detach();
    expect(steps.filter((s) => !s.includes('-j'))).toEqual([
      `ip addr del 198.18.0.100/32 dev ${ifname}`,
      `ip addr del 2001:db8:18::100/128 dev ${ifname}`,
      'leave 239.255.0.100',
    ]);
  });
});
