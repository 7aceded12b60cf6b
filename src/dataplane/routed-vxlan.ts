// Routed mode's `forward: vxlan` (docs/routed.md#forwarding): per other peer k and hop h, a VXLAN
// device nlbf<k> / nlbs<k> to peers[k] over the uplink, and the routing table forwardMark(h, k)
// sending the cluster IPs into it (routed-net.ts has the whole picture and carries it out).
import { vxlanPortDefault } from '../core/config.js';
import type { RoutedNetSetup } from './routed-net.js';
import { type Hop, forwardMark, vxlanDeviceName } from './routed-marks.js';
import {
  type DevicePlan,
  type LinkJson,
  type RoutedKernelState,
  routedNetProtocol,
} from './routed-state.js';

const overlayDeviceNamePattern = /^nlb[fs]\d+$/;

function assertIndices(what: string, ...indices: number[]): void {
  for (const index of indices) {
    if (!Number.isInteger(index) || index < 0 || index > 0xff) {
      throw new Error(`${what}: peer index ${index} is not 0..255`);
    }
  }
}

/** The VNI of the pair {a, b} on `hop`: the same at both ends, distinct per pair and hop. */
export function vxlanVni(hop: Hop, a: number, b: number): number {
  assertIndices('vxlanVni', a, b);
  if (a === b) throw new Error(`vxlanVni: a host has no device to itself (${a})`);
  return (hop << 16) | (Math.min(a, b) << 8) | Math.max(a, b);
}

/**
 * The MAC of host `receiver`'s device for packets from host `sender` on `hop`: the sender sets
 * it as the neighbour of every cluster IP on its device towards the receiver. Locally
 * administered (02:), 'NL' (4e:4c), so both ends compute it and nothing has to be exchanged.
 */
export function vxlanMac(hop: Hop, receiver: number, sender: number): string {
  assertIndices('vxlanMac', receiver, sender);
  return [2, 0x4e, 0x4c, hop, receiver, sender]
    .map((byte) => byte.toString(16).padStart(2, '0'))
    .join(':');
}

/** One overlay device of this host; `peerMac` is the peer's end's, the cluster IPs' neighbour. */
export interface OverlayDevice {
  readonly name: string;
  readonly hop: Hop;
  readonly peerIndex: number;
  readonly remote: string;
  readonly vni: number;
  readonly mac: string;
  readonly peerMac: string;
  readonly mark: number;
}

/** The devices of host `localIndex`: two per other peer, sorted by name. */
export function overlayDevices(setup: RoutedNetSetup, localIndex: number): OverlayDevice[] {
  const devices: OverlayDevice[] = [];
  setup.peers.forEach((remote, k) => {
    if (k === localIndex) return;
    for (const hop of [1, 2] as const) {
      devices.push({
        name: vxlanDeviceName(hop, k),
        hop,
        peerIndex: k,
        remote,
        vni: vxlanVni(hop, localIndex, k),
        mac: vxlanMac(hop, localIndex, k),
        peerMac: vxlanMac(hop, k, localIndex),
        mark: forwardMark(hop, k),
      });
    }
  });
  return devices.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The `link add` line that makes `device`; a link whose own line is the same one is kept. */
function linkAddLine(device: OverlayDevice, setup: RoutedNetSetup): string {
  const port = setup.vxlanPort ?? vxlanPortDefault;
  return (
    `link add ${device.name} address ${device.mac} type vxlan id ${device.vni} local ` +
    `${setup.localAddress} remote ${device.remote} dstport ${port} nolearning dev ${setup.interface}`
  );
}

/** The line that would have made `link` (any MTU); addrgenmode must be none too. */
function existingLinkLine(link: LinkJson): string | undefined {
  const data = link.linkinfo?.info_data;
  if (link.linkinfo?.info_kind !== 'vxlan' || data === undefined) return undefined;
  if (data.learning !== false || link.inet6_addr_gen_mode !== 'none') return undefined;
  return (
    `link add ${link.ifname} address ${link.address} type vxlan id ${data.id} local ` +
    `${data.local} remote ${data.remote} dstport ${data.port} nolearning dev ${data.link}`
  );
}

export const isOverlayDevice = (name: string | undefined): name is string =>
  name !== undefined && overlayDeviceNamePattern.test(name);

/** Devices: those that differ or are not wanted go, missing ones are made, the others kept. */
export function planDevices(
  setup: RoutedNetSetup,
  state: RoutedKernelState,
  devices: readonly OverlayDevice[],
  overlayMtu: number,
) {
  const plan: DevicePlan = { remove: [], make: [], created: [] };
  const links = new Map(state.links.map((link) => [link.ifname, link]));
  const wanted = new Set(devices.map((device) => device.name));
  for (const name of [...links.keys()].filter(isOverlayDevice).sort()) {
    if (!wanted.has(name)) plan.remove.push(name);
  }
  for (const device of devices) {
    const link = links.get(device.name);
    const line = linkAddLine(device, setup);
    if (link !== undefined && existingLinkLine(link) === line) {
      plan.make.push(`link set dev ${device.name} mtu ${overlayMtu} up`);
      continue;
    }
    if (link !== undefined) plan.remove.push(device.name);
    plan.created.push(device.name);
    // No IPv6 link-local address, so nothing of the device's own (router solicitations, DAD)
    // goes through the tunnel. `ip link add` does not take addrgenmode: set before `up`.
    plan.make.push(
      line,
      `link set dev ${device.name} mtu ${overlayMtu} addrgenmode none`,
      `link set dev ${device.name} up`,
    );
  }
  return plan;
}

/** VXLAN's routes and neighbours: each cluster IP by the device, its neighbour the peer's MAC. */
export function vxlanTableLines(
  setup: RoutedNetSetup,
  devices: readonly OverlayDevice[],
): string[] {
  return devices.flatMap((device) =>
    setup.clusterIps.flatMap((vip) => [
      `route replace ${vip}/32 dev ${device.name} table ${device.mark} proto ${routedNetProtocol}`,
      `neigh replace ${vip} lladdr ${device.peerMac} dev ${device.name} nud permanent`,
    ]),
  );
}
