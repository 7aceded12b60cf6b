// The kernel side of routed mode (docs/routed.md#forwarding), all but nftables: the filter
// (render-routed.ts) marks a packet whose bucket another host serves `forwardMark(hop, peer
// index)`; the policy routing made here sends it to that peer over VXLAN (routed-vxlan.ts), or
// with `forward: segment` as a plain frame on the hosts' one L2 segment (routed-segment.ts: two
// macvlan devices, a nexthop per peer and hop; the rest below is the same). VXLAN, per other
// peer k and hop h:
//   device     nlbf<k> / nlbs<k>: VXLAN to peers[k] over the uplink, `nolearning`. The VNI is
//              the same at both ends of a pair and differs per pair and hop, so the receiver
//              knows a packet's hop by the device it arrives on (a hop-2 packet goes no further).
//   table      forwardMark(h, k): `<vip>/32 dev <device>` per cluster IP, nothing else. The outer
//              VXLAN packet keeps the mark (an output counter on udp 4789 saw it), so a default
//              route here would loop it into the tunnel; without one it falls through to main.
//   neighbour  `<vip> lladdr <the peer's device MAC>`, permanent: the peer's device takes only
//              frames to its own MAC, and nothing answers ARP in the tunnel.
//   rule       `pref 1100 fwmark <mark> lookup <mark>`.
// Local delivery: a cluster IP is a `local <vip>/32 dev lo` route, not an address (zebra's
// connected route would hide FRR's marker route, route-announcer.ts), and in table local itself:
// a reply's source must be an address or a local route of table local (`__ip_dev_find`); with
// the local routes in a table of their own the SYN reached the listener and the SYN-ACK found no
// route (IpOutNoRoutes, ListenDrops; kernel 6.18). The `lookup local` rule (pref 0) would then
// deliver every cluster IP packet before the fwmark rules forward it: it moves to pref 1200
// (added there before the pref 0 one goes, so local delivery has no gap).
// Sysctls: ip_forward=1; rp_filter=0 for all, default, the uplink and each device (the kernel
// takes the higher of `all` and the device's): a forwarded packet comes in on a device while
// its source routes via the uplink, and strict rp_filter dropped it (TcpExtIPReversePathFilter).
// tcp/udp_early_demux=0: early demux gives a packet its 4-tuple's local socket (a TIME_WAIT one
// of a port this host served) before routing, and ip_forward silently drops a packet with a
// socket: once the bucket moved, that port's SYNs died here instead of going to the new owner.
// One `ip -batch` reads the state (JSON, routed-state.ts), one changes it, one sysctl: three
// processes for any number of peers. Re-running keeps what is right (`replace`, rules added when
// missing, devices recreated only when they differ): a restarting nlbd never delivers a marked
// packet here. A set-up with the other `forward` is replaced: its devices go, with their routes.
import { parseAddress } from '../core/address.js';
import { markerRouteProtocol } from '../core/bgp.js';
import { hostsMax, vxlanPortDefault } from '../core/config.js';
import type { Runner } from './exec.js';
import { formatMark } from './mark.js';
import { forwardMarkBase, segmentDeviceName } from './routed-marks.js';
import { isOverlayDevice, overlayDevices, planDevices, vxlanTableLines } from './routed-vxlan.js';
import {
  isSegmentDevice,
  planSegmentDevices,
  segmentPaths,
  segmentTableLines,
} from './routed-segment.js';
import {
  type DevicePlan,
  type EntryJson,
  type RoutedKernelState,
  failure,
  readRoutedState,
  routedNetProtocol,
  runBatch,
} from './routed-state.js';

// The marks and device names are shared with the filter; the announcer is the marker routes'.
export * from './routed-marks.js';
export { RouteAnnouncer, type RouteAnnouncerOptions } from './route-announcer.js';
export { type RoutedKernelState, readRoutedState, routedNetProtocol } from './routed-state.js';
export { segmentMac, segmentNexthop, segmentPaths } from './routed-segment.js';
export { type OverlayDevice, overlayDevices, vxlanMac, vxlanVni } from './routed-vxlan.js';

/** The fwmark rules' pref: before the moved `lookup local` rule. */
export const forwardRulePref = 1100;
/** Where the `lookup local` rule moves to, after the fwmark rules. */
export const localRulePref = 1200;
/** VXLAN's encapsulation: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const vxlanOverheadBytes = 50;
/** The MSS leaves out IPv4 and TCP headers (40); 536 is the least every host takes (RFC 9293). */
const ipv4TcpHeaderBytes = 40;
const mssMin = 536;
/** The smallest uplink MTU whose overlay still carries a 536-byte MSS (segment: no overlay). */
export const uplinkMtuMin = mssMin + ipv4TcpHeaderBytes + vxlanOverheadBytes;
const segmentUplinkMtuMin = mssMin + ipv4TcpHeaderBytes;
/** IFNAMSIZ - 1; and no whitespace or '/', since names go into `ip -batch` lines and /proc paths. */
const interfaceNamePattern = /^[A-Za-z0-9_.:@-]{1,15}$/;

export interface RoutedNetSetup {
  /** The uplink, where the dedicated IP lives. */
  readonly interface: string;
  /** This host's dedicated IPv4; one of `peers`. */
  readonly localAddress: string;
  /** Every host's dedicated IPv4, this host's included, in the same order on every host. */
  readonly peers: readonly string[];
  /** The IPv4 cluster IPs. */
  readonly clusterIps: readonly string[];
  /** The overlay's UDP port; default 4789. */
  readonly vxlanPort?: number;
  /** VXLAN between any hosts, or frames on one L2 segment (routed-segment.ts); default vxlan. */
  readonly forward?: 'vxlan' | 'segment';
}

/**
 * `created`: the devices made now (the others were kept); `overlayMtu`: what a forwarded packet
 * may take (the uplink's MTU with `forward: segment`); `mssClamp`: for DataplaneSpec.routed.
 */
export interface RoutedNetReport {
  readonly localIndex: number;
  readonly devices: readonly string[];
  readonly created: readonly string[];
  readonly uplinkMtu: number;
  readonly overlayMtu: number;
  readonly mssClamp: number;
}

/** The kernel cannot take routed mode as it is (not a failed command: CommandError is that). */
export class RoutedNetError extends Error {
  constructor(
    readonly problem: string,
    readonly hint: string,
  ) {
    super(`${problem}; ${hint}`);
    this.name = 'RoutedNetError';
  }
}

/** The MSS that fits a forwarded segment into the path: uplink MTU - 90 (VXLAN), - 40 (segment). */
export function mssClampFor(
  uplinkMtu: number,
  forward: RoutedNetSetup['forward'] = 'vxlan',
): number {
  const [min, overhead] =
    forward === 'segment' ? [segmentUplinkMtuMin, 0] : [uplinkMtuMin, vxlanOverheadBytes];
  if (!Number.isInteger(uplinkMtu) || uplinkMtu < min || uplinkMtu > 65_535) {
    throw new Error(`mssClampFor: uplink MTU ${uplinkMtu} is not ${min}..65535`);
  }
  return uplinkMtu - overhead - ipv4TcpHeaderBytes;
}

const isIpv4 = (text: string | undefined): boolean =>
  text !== undefined && parseAddress(text)?.family === 4 && parseAddress(text)?.text === text;

function assertAddresses(what: string, list: readonly string[]): void {
  const wrong = list.find((text) => !isIpv4(text));
  if (wrong !== undefined) throw new Error(`routed-net: ${what} '${wrong}' is not IPv4`);
  if (new Set(list).size !== list.length) throw new Error(`routed-net: ${what} has duplicates`);
}

/**
 * This host's index in `peers`, after checking the setup: a malformed one is a bug in the
 * caller (the config's checks come first); the host missing from its own list is a config
 * problem the checks may not know about, so it is an operating error with the fix.
 */
export function checkSetup(setup: RoutedNetSetup): number {
  if (!interfaceNamePattern.test(setup.interface)) {
    throw new Error(`routed-net: '${setup.interface}' is not an interface name`);
  }
  if (setup.peers.length < 1 || setup.peers.length > hostsMax) {
    throw new Error(`routed-net: ${setup.peers.length} peers is not 1..${hostsMax}`);
  }
  assertAddresses('peer', setup.peers);
  assertAddresses('cluster IP', setup.clusterIps);
  if (setup.forward !== undefined && !['vxlan', 'segment'].includes(setup.forward)) {
    throw new Error(`routed-net: forward '${String(setup.forward)}' is not vxlan or segment`);
  }
  const port = setup.vxlanPort ?? vxlanPortDefault;
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new Error(`routed-net: VXLAN port ${port} is not 1..65535`);
  }
  const index = setup.peers.indexOf(setup.localAddress);
  if (index < 0) {
    throw new RoutedNetError(
      `this host's dedicated IP ${setup.localAddress} is not one of the peers (${setup.peers.join(', ')})`,
      "list every host's dedicated IP in cluster.heartbeat.peers, this host's too, in the same order on every host",
    );
  }
  return index;
}

/** `fwmark 0x4e4c0101 lookup 1313603841` of each fwmark rule of ours. */
function forwardRuleKeys(rules: readonly EntryJson[]): string[] {
  return rules
    .filter((rule) => {
      const mark = Number(rule.fwmark);
      return rule.priority === forwardRulePref && (mark & 0xffff_0000) >>> 0 === forwardMarkBase;
    })
    .map((rule) => `fwmark ${formatMark(Number(rule.fwmark))} lookup ${rule.table}`);
}

function routeKey(route: EntryJson): string {
  const type = route.type === 'local' ? 'local ' : '';
  const dst = route.dst?.includes('/') === true ? route.dst : `${route.dst}/32`;
  return `${type}${dst} table ${route.table ?? 'main'}`;
}

/** The `ip -batch` lines that make routed mode out of a state, in an order that keeps it working. */
export type RoutedPlan = { lines: string[]; sysctls: string[]; report: RoutedNetReport };

/** The rules: fwmark rules added when missing, `lookup local` moved behind them. */
function planRules(state: RoutedKernelState, marks: readonly number[]) {
  const present = forwardRuleKeys(state.rules);
  const wanted = marks.map((mark) => `fwmark ${formatMark(mark)} lookup ${mark}`);
  const pref = `pref ${forwardRulePref}`;
  const add = wanted
    .filter((key) => !present.includes(key))
    .map((key) => `rule add ${pref} ${key} protocol ${routedNetProtocol}`);
  const remove = present
    .filter((key) => !wanted.includes(key))
    .map((key) => `rule del ${pref} ${key}`);
  const local = state.rules.filter((rule) => rule.table === 'local').map((rule) => rule.priority);
  const early = local.filter((priority) => priority !== 0 && priority! < forwardRulePref);
  if (early.length > 0) {
    throw new RoutedNetError(
      `a rule at pref ${early.join(', ')} looks up table local before the forwarding rules (${forwardRulePref})`,
      `another program moved the local rule; routed mode needs it after pref ${forwardRulePref}`,
    );
  }
  const move = local.includes(localRulePref)
    ? []
    : [`rule add pref ${localRulePref} lookup local protocol ${routedNetProtocol}`];
  if (local.includes(0)) move.push('rule del pref 0 lookup local');
  return { add, move, remove };
}

/** The local routes replaced, every other route of ours deleted (`marks`: the tables wanted). */
function planRoutes(
  setup: RoutedNetSetup,
  state: RoutedKernelState,
  marks: readonly number[],
  removedDevices: readonly string[],
) {
  const proto = `proto ${routedNetProtocol}`;
  const local = setup.clusterIps.map(
    (vip) => `route replace local ${vip}/32 dev lo table local ${proto}`,
  );
  const wanted = new Set([
    ...marks.flatMap((mark) => setup.clusterIps.map((vip) => `${vip}/32 table ${mark}`)),
    ...setup.clusterIps.map((vip) => `local ${vip}/32 table local`),
  ]);
  // A device's routes and neighbours go with it; the neighbours of a cluster IP no longer
  // served stay on a kept device, unused (no route leads to them), until it goes.
  const remove = state.routes
    .filter((route) => !wanted.has(routeKey(route)) && !removedDevices.includes(route.dev ?? ''))
    .map((route) => `route del ${routeKey(route)} ${proto}`);
  return { local, remove };
}

function sysctlsFor(setup: RoutedNetSetup, devices: readonly string[]): string[] {
  const conf = (name: string) => `net/ipv4/conf/${name}/rp_filter=0`;
  return [
    'net/ipv4/ip_forward=1',
    'net/ipv4/tcp_early_demux=0',
    'net/ipv4/udp_early_demux=0',
    conf('all'),
    conf('default'),
    conf(setup.interface),
    ...devices.map(conf),
  ];
}

/** One kind of forwarding's devices and tables, for planSetUp. */
interface Forwarding {
  readonly devices: DevicePlan;
  /** This host's devices of the kind, sorted. */
  readonly names: readonly string[];
  /** The fwmarks (and tables) of its paths to the other peers. */
  readonly marks: readonly number[];
  readonly tables: readonly string[];
  /** What a forwarded packet may take: the overlay's MTU, or the uplink's on a segment. */
  readonly pathMtu: number;
}

function vxlanForwarding(
  setup: RoutedNetSetup,
  state: RoutedKernelState,
  localIndex: number,
  uplinkMtu: number,
): Forwarding {
  const overlayMtu = uplinkMtu - vxlanOverheadBytes;
  const devices = overlayDevices(setup, localIndex);
  return {
    devices: planDevices(setup, state, devices, overlayMtu),
    names: devices.map((device) => device.name),
    marks: devices.map((device) => device.mark),
    tables: vxlanTableLines(setup, devices),
    pathMtu: overlayMtu,
  };
}

function segmentForwarding(
  setup: RoutedNetSetup,
  state: RoutedKernelState,
  localIndex: number,
  uplinkMtu: number,
): Forwarding {
  const paths = segmentPaths(setup.peers.length, localIndex);
  return {
    devices: planSegmentDevices(setup.interface, uplinkMtu, state, localIndex),
    names: [segmentDeviceName(1), segmentDeviceName(2)],
    marks: paths.map((path) => path.mark),
    tables: segmentTableLines(paths, setup.clusterIps, routedNetProtocol),
    pathMtu: uplinkMtu,
  };
}

/** The uplink's MTU, after checking it exists and carries a 536-byte MSS forwarded. */
function uplinkMtuOf(setup: RoutedNetSetup, state: RoutedKernelState): number {
  const uplink = state.links.find((link) => link.ifname === setup.interface);
  if (uplink?.mtu === undefined) {
    throw new RoutedNetError(
      `the uplink ${setup.interface} does not exist in this network namespace`,
      'cluster.interface must name the interface that holds the dedicated IP',
    );
  }
  const segment = setup.forward === 'segment';
  const min = segment ? segmentUplinkMtuMin : uplinkMtuMin;
  if (uplink.mtu < min) {
    throw new RoutedNetError(
      `the uplink ${setup.interface} has MTU ${uplink.mtu}, too small for ${segment ? 'routed mode' : 'the VXLAN overlay'}`,
      `routed mode needs an MTU of at least ${min}${segment ? '' : ` (the overlay takes ${vxlanOverheadBytes} bytes)`}`,
    );
  }
  return uplink.mtu;
}

/** What setUpRouted does to `state`, worked out without touching the kernel. */
export function planSetUp(setup: RoutedNetSetup, state: RoutedKernelState): RoutedPlan {
  const localIndex = checkSetup(setup);
  const uplinkMtu = uplinkMtuOf(setup, state);
  const segment = setup.forward === 'segment';
  const forwarding = (segment ? segmentForwarding : vxlanForwarding)(
    setup,
    state,
    localIndex,
    uplinkMtu,
  );
  // The other kind's devices, left by a set-up with the other `forward`, go too.
  const leftovers = state.links
    .map((link) => link.ifname)
    .filter(segment ? isOverlayDevice : isSegmentDevice)
    .sort();
  const removed = [...leftovers, ...forwarding.devices.remove];
  const rules = planRules(state, forwarding.marks);
  const routes = planRoutes(setup, state, forwarding.marks, removed);
  const lines = [
    ...removed.map((name) => `link del dev ${name}`),
    ...forwarding.devices.make,
    ...forwarding.tables,
    ...rules.add,
    ...routes.local,
    ...rules.move,
    ...routes.remove,
    ...rules.remove,
  ];
  return {
    lines,
    sysctls: sysctlsFor(setup, forwarding.names),
    report: {
      localIndex,
      devices: [...forwarding.names],
      created: forwarding.devices.created,
      uplinkMtu,
      overlayMtu: forwarding.pathMtu,
      mssClamp: mssClampFor(uplinkMtu, setup.forward),
    },
  };
}

/**
 * What tearDownRouted does to `state`: every rule, route, device and marker of routed mode
 * goes, whatever cluster IPs and peers made them, and `lookup local` returns to pref 0 before
 * its moved copy goes. The sysctls stay: ip_forward and rp_filter may be what the host had
 * before, and nothing records that; with the routes gone they forward nothing of nlb's.
 */
export function planTeardown(state: RoutedKernelState): string[] {
  const rules = forwardRuleKeys(state.rules).map(
    (key) => `rule del pref ${forwardRulePref} ${key}`,
  );
  const local = state.rules.filter((rule) => rule.table === 'local').map((rule) => rule.priority);
  if (local.includes(localRulePref)) {
    if (local.every((pref) => pref === localRulePref)) rules.push('rule add pref 0 lookup local');
    rules.push(`rule del pref ${localRulePref} lookup local`);
  }
  const devices = state.links
    .map((link) => link.ifname)
    .filter((name) => isOverlayDevice(name) || isSegmentDevice(name));
  const routes = state.routes.filter((route) => !devices.includes(route.dev ?? ''));
  const markers = state.markers.filter((route) => route.dev === 'lo' && isIpv4(route.dst));
  return [
    ...rules,
    ...routes.map((route) => `route del ${routeKey(route)} proto ${routedNetProtocol}`),
    ...markers.map((route) => `route del ${routeKey(route)} dev lo proto ${markerRouteProtocol}`),
    ...devices.sort().map((name) => `link del dev ${name}`),
  ];
}

/**
 * Sets up routed mode's devices, routes, rules and sysctls in the process's network namespace,
 * keeping what is already right (see the top of this file). Throws RoutedNetError when the host
 * cannot take it and CommandError when a command fails.
 */
export async function setUpRouted(runner: Runner, setup: RoutedNetSetup): Promise<RoutedNetReport> {
  const plan = planSetUp(setup, await readRoutedState(runner));
  await runBatch(runner, plan.lines, 'see `ip -d link show dev nlbf`, `ip rule` and `ip neigh`');
  const argv = ['-q', '-w', ...plan.sysctls];
  const sysctl = await runner.run('sysctl', argv);
  if (sysctl.code !== 0) {
    throw failure(
      ['sysctl', ...argv],
      sysctl,
      '',
      'routed mode sets ip_forward, early demux and rp_filter',
    );
  }
  return plan.report;
}

/**
 * Removes routed mode from the process's network namespace: everything setUpRouted made, and
 * whatever a predecessor that crashed left, its marker routes too. Idempotent.
 */
export async function tearDownRouted(runner: Runner, _setup?: RoutedNetSetup): Promise<void> {
  const lines = planTeardown(await readRoutedState(runner));
  await runBatch(runner, lines, 'see `ip -d link show`, `ip rule` and `ip route show table all`');
}
