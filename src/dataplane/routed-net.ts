// The kernel side of routed mode (docs/routed.md#forwarding), all but nftables: the filter
// (render-routed.ts) marks a packet whose bucket another host serves `forwardMark(hop, peer
// index)`; the policy routing made here sends it to that peer over VXLAN. Per other peer k, hop h:
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
// One `ip -batch` reads the state (JSON), one changes it, one sysctl: three processes for any
// number of peers. Re-running keeps what is right (`replace`, rules added when missing, devices
// recreated only when they differ): a restarting nlbd never delivers a marked packet here.
import { parseAddress } from '../core/address.js';
import { markerRouteProtocol } from '../core/bgp.js';
import { hostsMax, vxlanPortDefault } from '../core/config.js';
import { CommandError, type CommandResult, type Runner } from './exec.js';
import { formatMark } from './mark.js';
import { type Hop, forwardMark, forwardMarkBase, vxlanDeviceName } from './routed-marks.js';

// The marks and device names are shared with the filter; the announcer is the marker routes'.
export * from './routed-marks.js';
export { RouteAnnouncer, type RouteAnnouncerOptions } from './route-announcer.js';

/** The fwmark rules' pref: before the moved `lookup local` rule. */
export const forwardRulePref = 1100;
/** Where the `lookup local` rule moves to, after the fwmark rules. */
export const localRulePref = 1200;
/** The `proto` of the routes and rules made here (a successor finds them); FRR announces 250. */
export const routedNetProtocol = 251;
/** VXLAN's encapsulation: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const vxlanOverheadBytes = 50;
/** The MSS leaves out IPv4 and TCP headers (40); 536 is the least every host takes (RFC 9293). */
const ipv4TcpHeaderBytes = 40;
const mssMin = 536;
/** The smallest uplink MTU whose overlay still carries a 536-byte MSS. */
export const uplinkMtuMin = mssMin + ipv4TcpHeaderBytes + vxlanOverheadBytes;
/** IFNAMSIZ - 1; and no whitespace or '/', since names go into `ip -batch` lines and /proc paths. */
const interfaceNamePattern = /^[A-Za-z0-9_.:@-]{1,15}$/;
const overlayDeviceNamePattern = /^nlb[fs]\d+$/;

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
}

/** `created`: the devices made now (the others were kept); `mssClamp`: for DataplaneSpec.routed. */
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

function failure(argv: readonly string[], result: CommandResult, what: string, hint: string) {
  const detail = result.stderr.trim() || 'no error output';
  return new CommandError(argv, `failed (exit ${result.code}${what}): ${detail}`, hint);
}

/** The MSS that fits a forwarded segment into the overlay: uplink MTU - 90. */
export function mssClampFor(uplinkMtu: number): number {
  if (!Number.isInteger(uplinkMtu) || uplinkMtu < uplinkMtuMin || uplinkMtu > 65_535) {
    throw new Error(`mssClampFor: uplink MTU ${uplinkMtu} is not ${uplinkMtuMin}..65535`);
  }
  return uplinkMtu - vxlanOverheadBytes - ipv4TcpHeaderBytes;
}

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

/** What `ip -d -j` says of links, rules, routes and neighbours, as far as this module reads it. */
type VxlanJson = Partial<Record<'local' | 'remote' | 'link', string>> &
  Partial<Record<'id' | 'port', number>> & { learning?: boolean };
type LinkJson = Partial<Record<'ifname' | 'address' | 'inet6_addr_gen_mode', string>> & {
  mtu?: number;
  linkinfo?: { info_kind?: string; info_data?: VxlanJson };
};
type EntryJson = Partial<Record<'fwmark' | 'table' | 'type' | 'dst' | 'dev', string>> & {
  priority?: number;
};

/** What routed mode looks at: links, rules, our routes (proto 251, any table), the markers. */
export interface RoutedKernelState {
  readonly links: readonly LinkJson[];
  readonly rules: readonly EntryJson[];
  readonly routes: readonly EntryJson[];
  readonly markers: readonly EntryJson[];
}

/** One `ip -batch` with `-j` prints one JSON document per line, one line per command. */
const stateQuery = [
  'link show',
  'rule show',
  `route show table all proto ${routedNetProtocol}`,
  `route show table main proto ${markerRouteProtocol}`,
];

export async function readRoutedState(runner: Runner): Promise<RoutedKernelState> {
  const argv = ['-d', '-j', '-batch', '-'];
  const result = await runner.run('ip', argv, { input: `${stateQuery.join('\n')}\n` });
  const lines = result.stdout.split('\n').filter((line) => line.trim() !== '');
  if (result.code !== 0 || lines.length !== stateQuery.length) {
    const what = `, ${lines.length} of ${stateQuery.length} answers`;
    throw failure(['ip', ...argv], result, what, 'routed mode needs iproute2 with JSON output');
  }
  const [links, rules, routes, markers] = lines.map((line) => {
    const parsed = JSON.parse(line) as unknown;
    return Array.isArray(parsed) ? (parsed as EntryJson[]) : [];
  }) as [LinkJson[], ...EntryJson[][]];
  return { links, rules: rules!, routes: routes!, markers: markers! };
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

const isOverlayDevice = (name: string | undefined): name is string =>
  name !== undefined && overlayDeviceNamePattern.test(name);

/** The `ip -batch` lines that make routed mode out of a state, in an order that keeps it working. */
export type RoutedPlan = { lines: string[]; sysctls: string[]; report: RoutedNetReport };

/** Devices: those that differ or are not wanted go, missing ones are made, the others kept. */
function planDevices(
  setup: RoutedNetSetup,
  state: RoutedKernelState,
  devices: readonly OverlayDevice[],
  overlayMtu: number,
) {
  const plan = { remove: [] as string[], make: [] as string[], created: [] as string[] };
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

/** The rules: fwmark rules added when missing, `lookup local` moved behind them. */
function planRules(state: RoutedKernelState, devices: readonly OverlayDevice[]) {
  const present = forwardRuleKeys(state.rules);
  const wanted = devices.map((device) => `fwmark ${formatMark(device.mark)} lookup ${device.mark}`);
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

/** Routes and neighbours: each wanted one replaced, every other route of ours deleted. */
function planRoutes(
  setup: RoutedNetSetup,
  state: RoutedKernelState,
  devices: readonly OverlayDevice[],
  removedDevices: readonly string[],
) {
  const proto = `proto ${routedNetProtocol}`;
  const tables = devices.flatMap((device) =>
    setup.clusterIps.flatMap((vip) => [
      `route replace ${vip}/32 dev ${device.name} table ${device.mark} ${proto}`,
      `neigh replace ${vip} lladdr ${device.peerMac} dev ${device.name} nud permanent`,
    ]),
  );
  const local = setup.clusterIps.map(
    (vip) => `route replace local ${vip}/32 dev lo table local ${proto}`,
  );
  const wanted = new Set([
    ...devices.flatMap((device) => setup.clusterIps.map((vip) => `${vip}/32 table ${device.mark}`)),
    ...setup.clusterIps.map((vip) => `local ${vip}/32 table local`),
  ]);
  // A device's routes and neighbours go with it; the neighbours of a cluster IP no longer
  // served stay on a kept device, unused (no route leads to them), until it goes.
  const remove = state.routes
    .filter((route) => !wanted.has(routeKey(route)) && !removedDevices.includes(route.dev ?? ''))
    .map((route) => `route del ${routeKey(route)} ${proto}`);
  return { tables, local, remove };
}

function sysctlsFor(setup: RoutedNetSetup, devices: readonly OverlayDevice[]): string[] {
  const conf = (name: string) => `net/ipv4/conf/${name}/rp_filter=0`;
  return [
    'net/ipv4/ip_forward=1',
    'net/ipv4/tcp_early_demux=0',
    'net/ipv4/udp_early_demux=0',
    conf('all'),
    conf('default'),
    conf(setup.interface),
    ...devices.map((device) => conf(device.name)),
  ];
}

/** What setUpRouted does to `state`, worked out without touching the kernel. */
export function planSetUp(setup: RoutedNetSetup, state: RoutedKernelState): RoutedPlan {
  const localIndex = checkSetup(setup);
  const uplink = state.links.find((link) => link.ifname === setup.interface);
  if (uplink?.mtu === undefined) {
    throw new RoutedNetError(
      `the uplink ${setup.interface} does not exist in this network namespace`,
      'cluster.interface must name the interface that holds the dedicated IP',
    );
  }
  if (uplink.mtu < uplinkMtuMin) {
    throw new RoutedNetError(
      `the uplink ${setup.interface} has MTU ${uplink.mtu}, too small for the VXLAN overlay`,
      `routed mode needs an MTU of at least ${uplinkMtuMin} (the overlay takes ${vxlanOverheadBytes} bytes)`,
    );
  }
  const overlayMtu = uplink.mtu - vxlanOverheadBytes;
  const devices = overlayDevices(setup, localIndex);
  const devicePlan = planDevices(setup, state, devices, overlayMtu);
  const rules = planRules(state, devices);
  const routes = planRoutes(setup, state, devices, devicePlan.remove);
  const lines = [
    ...devicePlan.remove.map((name) => `link del dev ${name}`),
    ...devicePlan.make,
    ...routes.tables,
    ...rules.add,
    ...routes.local,
    ...rules.move,
    ...routes.remove,
    ...rules.remove,
  ];
  return {
    lines,
    sysctls: sysctlsFor(setup, devices),
    report: {
      localIndex,
      devices: devices.map((device) => device.name),
      created: devicePlan.created,
      uplinkMtu: uplink.mtu,
      overlayMtu,
      mssClamp: mssClampFor(uplink.mtu),
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
  const devices = state.links.map((link) => link.ifname).filter(isOverlayDevice);
  const routes = state.routes.filter((route) => !devices.includes(route.dev ?? ''));
  const markers = state.markers.filter((route) => route.dev === 'lo' && isIpv4(route.dst));
  return [
    ...rules,
    ...routes.map((route) => `route del ${routeKey(route)} proto ${routedNetProtocol}`),
    ...markers.map((route) => `route del ${routeKey(route)} dev lo proto ${markerRouteProtocol}`),
    ...devices.sort().map((name) => `link del dev ${name}`),
  ];
}

/** One `ip -force -batch -`: every line is tried; any failure is reported with its line. */
async function runBatch(runner: Runner, lines: readonly string[], hint: string): Promise<void> {
  if (lines.length === 0) return;
  const argv = ['-force', '-batch', '-'];
  const result = await runner.run('ip', argv, { input: `${lines.join('\n')}\n` });
  if (result.code !== 0) {
    // ip names a failed line `-:N`; quoting it spares the reader counting.
    const stderr = result.stderr.replace(/Command failed -:(\d+)/g, (text, n: string) => {
      const line = lines[Number(n) - 1];
      return line === undefined ? text : `${text} (${line})`;
    });
    throw failure(['ip', ...argv], { ...result, stderr }, '', hint);
  }
}

/**
 * Sets up routed mode's devices, routes, rules and sysctls in the process's network namespace,
 * keeping what is already right (see the top of this file). Throws RoutedNetError when the host
 * cannot take it and CommandError when a command fails.
 */
export async function setUpRouted(runner: Runner, setup: RoutedNetSetup): Promise<RoutedNetReport> {
  const plan = planSetUp(setup, await readRoutedState(runner));
  await runBatch(runner, plan.lines, 'see `ip -d link show type vxlan` and `ip rule`');
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
  await runBatch(runner, lines, 'see `ip -d link show type vxlan` and `ip rule`');
}
