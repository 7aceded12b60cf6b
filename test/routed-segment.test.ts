// Routed mode's `forward: segment` without a kernel (src/dataplane/routed-segment.ts, carried out
// by routed-net.ts): the MACs and neighbour keys both ends agree on, the exact `ip -batch` lines
// for a fresh host, what a re-run keeps, the switch from a VXLAN set-up and back, the teardown,
// and the MSS clamp. routed-segment-netns.test.ts runs the real thing.
import { describe, expect, it } from 'vitest';
import {
  type RoutedKernelState,
  type RoutedNetSetup,
  forwardMark,
  mssClampFor,
  overlayDevices,
  planSetUp,
  planTeardown,
  segmentDeviceName,
  segmentMac,
  segmentNexthop,
  segmentPaths,
  setUpRouted,
  vxlanDevicePattern,
} from '../src/dataplane/routed-net.js';
import { defaultRules, fresh, runnerFor, uplink } from './support/routed-kernel.js';

const peers = ['198.18.1.11', '198.18.1.12', '198.18.1.13'];
const vip = '198.18.0.100';
const setupOf = (index: number, forward: 'vxlan' | 'segment' = 'segment'): RoutedNetSetup => ({
  interface: 'eth0',
  localAddress: peers[index]!,
  peers,
  clusterIps: [vip],
  forward,
});

/** The state a segment set-up of host `index` leaves, as `ip -d -j` shows it. */
function segmentStateAfter(index: number): RoutedKernelState {
  const paths = segmentPaths(peers.length, index);
  return {
    links: [
      uplink,
      ...([1, 2] as const).map((hop) => ({
        ifname: segmentDeviceName(hop),
        link: 'eth0',
        mtu: 1500,
        address: segmentMac(hop, index),
        inet6_addr_gen_mode: 'none',
        linkinfo: { info_kind: 'macvlan', info_data: { mode: 'bridge' } },
      })),
    ],
    rules: [
      ...paths.map((p) => ({
        priority: 1100,
        fwmark: `0x${p.mark.toString(16)}`,
        table: `${p.mark}`,
      })),
      { priority: 1200, table: 'local' },
      ...defaultRules.slice(1),
    ],
    routes: [
      ...paths.map((p) => ({ dst: vip, dev: p.device, table: String(p.mark) })),
      { type: 'local', dst: vip, dev: 'lo', table: 'local' },
    ],
    markers: [],
  };
}

describe('forward: segment, the names and addresses both ends agree on', () => {
  it('names one device per hop, matching the filter patterns but no VXLAN name', () => {
    expect(segmentDeviceName(1)).toBe('nlbf');
    expect(segmentDeviceName(2)).toBe('nlbs');
    expect(vxlanDevicePattern(1)).toBe('nlbf*');
    expect(vxlanDevicePattern(2)).toBe('nlbs*');
    expect(overlayDevices(setupOf(0), 0).map((d) => d.name)).not.toContain('nlbf');
  });

  it('gives each host a MAC per hop (02:4e:4d, clear of VXLAN 02:4e:4c) and each peer a neighbour key per hop', () => {
    expect(segmentMac(1, 0)).toBe('02:4e:4d:01:00:00');
    expect(segmentMac(2, 31)).toBe('02:4e:4d:02:1f:00');
    expect(segmentNexthop(1, 0)).toBe('169.254.1.1');
    expect(segmentNexthop(2, 31)).toBe('169.254.2.32');
    expect(() => segmentMac(1, 256)).toThrow(/0\.\.255/);
    // Host 1 sends hop-2 packets for host 2 to the MAC host 2 gave its own hop-2 device.
    const path = segmentPaths(3, 1).find((p) => p.hop === 2 && p.peerIndex === 2)!;
    expect(path).toEqual({
      device: 'nlbs',
      hop: 2,
      peerIndex: 2,
      mark: forwardMark(2, 2),
      nexthop: '169.254.2.3',
      peerMac: segmentMac(2, 2),
    });
  });

  it('clamps the MSS to the uplink MTU less IPv4 and TCP only', () => {
    expect(mssClampFor(1500, 'segment')).toBe(1460);
    expect(mssClampFor(9000, 'segment')).toBe(8960);
    expect(mssClampFor(1500)).toBe(1410);
    expect(mssClampFor(600, 'segment')).toBe(560);
    expect(() => mssClampFor(500, 'segment')).toThrow(/576/);
  });
});

describe('setUpRouted with forward: segment and a fake runner', () => {
  it('sets up a fresh host with one listing, one batch and one sysctl', async () => {
    const runner = runnerFor(fresh);
    const report = await setUpRouted(runner, setupOf(1));
    expect(report).toEqual({
      localIndex: 1,
      devices: ['nlbf', 'nlbs'],
      created: ['nlbf', 'nlbs'],
      uplinkMtu: 1500,
      overlayMtu: 1500,
      mssClamp: 1460,
    });
    expect(runner.commands.map((c) => c.argv.join(' '))).toEqual([
      'ip -d -j -batch -',
      'ip -force -batch -',
      expect.stringMatching(/^sysctl -q -w /),
    ]);
    expect(runner.commands[1]!.input!.trim().split('\n')).toEqual([
      'link add nlbf link eth0 address 02:4e:4d:01:01:00 type macvlan mode bridge',
      'link set dev nlbf mtu 1500 addrgenmode none arp off',
      'link set dev nlbf up',
      'link add nlbs link eth0 address 02:4e:4d:02:01:00 type macvlan mode bridge',
      'link set dev nlbs mtu 1500 addrgenmode none arp off',
      'link set dev nlbs up',
      'neigh replace 169.254.1.1 lladdr 02:4e:4d:01:00:00 dev nlbf nud permanent',
      `route replace ${vip}/32 via 169.254.1.1 dev nlbf onlink table 1313603840 proto 251`,
      'neigh replace 169.254.1.3 lladdr 02:4e:4d:01:02:00 dev nlbf nud permanent',
      `route replace ${vip}/32 via 169.254.1.3 dev nlbf onlink table 1313603842 proto 251`,
      'neigh replace 169.254.2.1 lladdr 02:4e:4d:02:00:00 dev nlbs nud permanent',
      `route replace ${vip}/32 via 169.254.2.1 dev nlbs onlink table 1313604096 proto 251`,
      'neigh replace 169.254.2.3 lladdr 02:4e:4d:02:02:00 dev nlbs nud permanent',
      `route replace ${vip}/32 via 169.254.2.3 dev nlbs onlink table 1313604098 proto 251`,
      'rule add pref 1100 fwmark 0x4e4c0100 lookup 1313603840 protocol 251',
      'rule add pref 1100 fwmark 0x4e4c0102 lookup 1313603842 protocol 251',
      'rule add pref 1100 fwmark 0x4e4c0200 lookup 1313604096 protocol 251',
      'rule add pref 1100 fwmark 0x4e4c0202 lookup 1313604098 protocol 251',
      `route replace local ${vip}/32 dev lo table local proto 251`,
      'rule add pref 1200 lookup local protocol 251',
      'rule del pref 0 lookup local',
    ]);
    expect(runner.commands[2]!.argv.slice(3)).toEqual([
      'net/ipv4/ip_forward=1',
      'net/ipv4/tcp_early_demux=0',
      'net/ipv4/udp_early_demux=0',
      'net/ipv4/conf/all/rp_filter=0',
      'net/ipv4/conf/default/rp_filter=0',
      'net/ipv4/conf/eth0/rp_filter=0',
      'net/ipv4/conf/nlbf/rp_filter=0',
      'net/ipv4/conf/nlbs/rp_filter=0',
    ]);
  });

  it('keeps an identical earlier set-up: no device made, no rule added or moved', () => {
    const plan = planSetUp(setupOf(1), segmentStateAfter(1));
    expect(plan.report.created).toEqual([]);
    expect(plan.lines.filter((l) => !/^(route|neigh) replace /.test(l))).toEqual([
      'link set dev nlbf mtu 1500 arp off up',
      'link set dev nlbs mtu 1500 arp off up',
    ]);
  });

  it("remakes a device with another host's MAC, or of another kind", () => {
    const left = segmentStateAfter(0);
    const links = left.links.map((l) =>
      l.ifname === 'nlbs' ? { ...l, linkinfo: { info_kind: 'vxlan', info_data: {} } } : l,
    );
    const lines = planSetUp(setupOf(1), { ...left, links }).lines;
    expect(lines.filter((l) => /^link (add|del)/.test(l))).toEqual([
      'link del dev nlbf',
      'link del dev nlbs',
      'link add nlbf link eth0 address 02:4e:4d:01:01:00 type macvlan mode bridge',
      'link add nlbs link eth0 address 02:4e:4d:02:01:00 type macvlan mode bridge',
    ]);
    // Host 0's tables that host 1 does not use go (those of the removed devices went with them).
    expect(lines.filter((l) => /^(route|rule) del/.test(l))).toEqual([
      'rule del pref 1100 fwmark 0x4e4c0101 lookup 1313603841',
      'rule del pref 1100 fwmark 0x4e4c0201 lookup 1313604097',
    ]);
  });

  it('replaces a VXLAN set-up by a segment one and back: the other kind of devices goes', () => {
    const vxlanDevices = overlayDevices(setupOf(0, 'vxlan'), 0).map((d) => ({
      ifname: d.name,
      mtu: 1450,
      linkinfo: { info_kind: 'vxlan' },
    }));
    const vxlanLeft = { ...fresh, links: [uplink, ...vxlanDevices] };
    const toSegment = planSetUp(setupOf(0), vxlanLeft).lines;
    expect(toSegment.filter((l) => l.startsWith('link del'))).toEqual([
      'link del dev nlbf1',
      'link del dev nlbf2',
      'link del dev nlbs1',
      'link del dev nlbs2',
    ]);
    const toVxlan = planSetUp(setupOf(0, 'vxlan'), segmentStateAfter(0)).lines;
    expect(toVxlan.filter((l) => l.startsWith('link del'))).toEqual([
      'link del dev nlbf',
      'link del dev nlbs',
    ]);
    expect(toVxlan.filter((l) => l.startsWith('link add'))).toHaveLength(4);
  });

  it('tears down the segment devices with the rest, and refuses an uplink too small', () => {
    expect(planTeardown(segmentStateAfter(2))).toEqual([
      'rule del pref 1100 fwmark 0x4e4c0100 lookup 1313603840',
      'rule del pref 1100 fwmark 0x4e4c0101 lookup 1313603841',
      'rule del pref 1100 fwmark 0x4e4c0200 lookup 1313604096',
      'rule del pref 1100 fwmark 0x4e4c0201 lookup 1313604097',
      'rule add pref 0 lookup local',
      'rule del pref 1200 lookup local',
      `route del local ${vip}/32 table local proto 251`,
      'link del dev nlbf',
      'link del dev nlbs',
    ]);
    const small = { ...fresh, links: [{ ...uplink, mtu: 560 }] };
    expect(() => planSetUp(setupOf(0), small)).toThrow(/MTU 560.*at least 576/s);
    // 600 carries a 560-byte MSS unencapsulated, not over VXLAN.
    const mtu600 = { ...fresh, links: [{ ...uplink, mtu: 600 }] };
    expect(planSetUp(setupOf(0), mtu600).report.mssClamp).toBe(560);
    expect(() => planSetUp(setupOf(0, 'vxlan'), mtu600)).toThrow(/626/);
  });
});
