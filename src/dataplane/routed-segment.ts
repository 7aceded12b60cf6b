// Routed mode's `forward: segment` (docs/routed.md#forwarding): hosts on one L2 segment forward a
// packet to a bucket's owner without encapsulation, as an ordinary frame to a MAC of the owner's
// that names the hop. routed-net.ts carries the plan out beside the rules and local routes both
// kinds share. Per host and hop h:
//   device     nlbf (hop 1) / nlbs (hop 2): a macvlan (mode bridge) on the uplink with the MAC
//              segmentMac(h, this host's index); no address, arp off, addrgenmode none. A frame
//              to that MAC arrives on it, so the filter tells the hop by the input device with
//              the same `nlbf*` / `nlbs*` patterns as for VXLAN's nlbf<k> / nlbs<k>.
//   table      forwardMark(h, k) per other peer k: `<vip>/32 via 169.254.h.(k+1) dev <this host's
//              hop-h device> onlink`. The nexthop is only the key of a permanent neighbour entry
//              holding peer k's hop-h MAC: no packet is addressed to it and no ARP asks for it.
// Frames leave by this host's own device of the hop, not the uplink, so their source MAC is that
// device's: the segment's switches learn each hop MAC from its host's own forwarding (every host
// forwards on hop 1 under ECMP); a MAC not learned yet (a host that never sent on that hop, or
// aged out) is flooded within the segment as any unknown unicast is, and the other hosts drop
// the copies. The uplink MTU is the path MTU: no overhead.
import { type Hop, forwardMark, segmentDeviceName } from './routed-marks.js';
import type { DevicePlan, LinkJson, RoutedKernelState } from './routed-state.js';

/** 'NM' after the locally administered 02: clear of VXLAN's 02:4e:4c ('NL'). */
const segmentMacPrefix = [0x02, 0x4e, 0x4d];

/** The MAC of host `index`'s device of `hop`: 02:4e:4d:<hop>:<index>:00, both ends compute it. */
export function segmentMac(hop: Hop, index: number): string {
  if (!Number.isInteger(index) || index < 0 || index > 0xff) {
    throw new Error(`segmentMac: peer index ${index} is not 0..255`);
  }
  return [...segmentMacPrefix, hop, index, 0]
    .map((byte) => byte.toString(16).padStart(2, '0'))
    .join(':');
}

/** The neighbour key of peer `peerIndex` on `hop`: 169.254.<hop>.<index + 1>, never on the wire. */
export function segmentNexthop(hop: Hop, peerIndex: number): string {
  if (!Number.isInteger(peerIndex) || peerIndex < 0 || peerIndex > 0xfe) {
    throw new Error(`segmentNexthop: peer index ${peerIndex} is not 0..254`);
  }
  return `169.254.${hop}.${peerIndex + 1}`;
}

const segmentDevicePattern = /^nlb[fs]$/;
export const isSegmentDevice = (name: string | undefined): name is string =>
  name !== undefined && segmentDevicePattern.test(name);

/** Where this host sends peer `peerIndex`'s packets of `hop`: out of `device`, to `peerMac`. */
export interface SegmentPath {
  readonly device: string;
  readonly hop: Hop;
  readonly peerIndex: number;
  readonly mark: number;
  readonly nexthop: string;
  readonly peerMac: string;
}

/** This host's paths to every other peer, by hop, then peer. */
export function segmentPaths(peerCount: number, localIndex: number): SegmentPath[] {
  const paths: SegmentPath[] = [];
  for (const hop of [1, 2] as const) {
    for (let k = 0; k < peerCount; k++) {
      if (k === localIndex) continue;
      paths.push({
        device: segmentDeviceName(hop),
        hop,
        peerIndex: k,
        mark: forwardMark(hop, k),
        nexthop: segmentNexthop(hop, k),
        peerMac: segmentMac(hop, k),
      });
    }
  }
  return paths;
}

function linkAddLine(hop: Hop, uplink: string, localIndex: number): string {
  const name = segmentDeviceName(hop);
  return `link add ${name} link ${uplink} address ${segmentMac(hop, localIndex)} type macvlan mode bridge`;
}

/** The line that would have made `link`; addrgenmode must be none too. */
function existingLinkLine(link: LinkJson): string | undefined {
  const data = link.linkinfo?.info_data;
  if (link.linkinfo?.info_kind !== 'macvlan' || data === undefined) return undefined;
  if (link.inet6_addr_gen_mode !== 'none' || link.link === undefined) return undefined;
  return `link add ${link.ifname} link ${link.link} address ${link.address} type macvlan mode ${data.mode}`;
}

/**
 * The two devices: one that differs goes and is made again, a missing one is made, a right one
 * kept (its MTU, arp and state set again). Never a packet delivered meanwhile on a kept one.
 */
export function planSegmentDevices(
  uplink: string,
  uplinkMtu: number,
  state: RoutedKernelState,
  localIndex: number,
): DevicePlan {
  const plan: DevicePlan = { remove: [], make: [], created: [] };
  for (const hop of [1, 2] as const) {
    const name = segmentDeviceName(hop);
    const link = state.links.find((l) => l.ifname === name);
    const line = linkAddLine(hop, uplink, localIndex);
    if (link !== undefined && existingLinkLine(link) === line) {
      plan.make.push(`link set dev ${name} mtu ${uplinkMtu} arp off up`);
      continue;
    }
    if (link !== undefined) plan.remove.push(name);
    plan.created.push(name);
    // No addresses of its own, IPv4 or IPv6 (addrgenmode before `up`), no ARP: the device only
    // takes frames to its MAC and sends what the routes give it.
    plan.make.push(
      line,
      `link set dev ${name} mtu ${uplinkMtu} addrgenmode none arp off`,
      `link set dev ${name} up`,
    );
  }
  return plan;
}

/**
 * Each path's neighbour entry, then its route per cluster IP (`proto`: routed-net's). The entry
 * first: on a device with arp off, a route used before it would make the kernel a NOARP entry
 * holding the device's own MAC, and deliver the packet here.
 */
export function segmentTableLines(
  paths: readonly SegmentPath[],
  clusterIps: readonly string[],
  proto: number,
): string[] {
  return paths.flatMap((path) => [
    `neigh replace ${path.nexthop} lladdr ${path.peerMac} dev ${path.device} nud permanent`,
    ...clusterIps.map(
      (vip) =>
        `route replace ${vip}/32 via ${path.nexthop} dev ${path.device} onlink table ${path.mark} proto ${proto}`,
    ),
  ]);
}
