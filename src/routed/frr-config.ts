// The FRR configuration nlb writes for routed mode: pure text from plain settings
// (frr-settings.ts), one file per daemon, because bgpd given one combined file rejected the
// `bfd` block and everything after it (docs/routed.md#frr-configuration).
//
// A host announces a cluster IP by redistributing a kernel route: nlbd adds `VIP/32 dev lo
// proto <nlb>` while the host should get the cluster IP's traffic, and deletes it when not, over
// netlink, without ever calling vtysh. `redistribute kernel` takes only routes that pass a
// prefix-list of the cluster IPs, so no other kernel route of the host leaks to the router.
// A host learns nothing from its router: it announces and never routes by BGP, so an inbound
// route-map denies every route (the router would otherwise send each host the others' paths).
//
// The router (the lab's, or a model for a real one) peers with every host, with BFD, and
// installs up to `maximumPaths` equal paths. Every session uses `frr defaults datacenter`,
// keepalive 1 s / hold 3 s, `advertisement-interval 0` (withdrawals go out at once) and BFD
// (100 ms × 3 by default): a host that hangs is out of the router's FIB in ~300 ms.
//
// The text is deterministic: peers and cluster IPs in address order, so two hosts' files differ
// only where their settings do, and the unit tests compare exact text.
import { parseAddress } from '../core/address.js';
import type { ConfigError } from '../core/config-model.js';
import {
  type BgpPeer,
  type BgpSpeaker,
  type HostFrrSettings,
  type RouterFrrSettings,
  hostSettingsProblems,
  routerSettingsProblems,
} from './frr-settings.js';

export * from './frr-settings.js';

/** The FRR daemons routed mode runs, each with a file of its own. */
export const frrDaemons = ['zebra', 'bfdd', 'bgpd'] as const;
export type FrrDaemon = (typeof frrDaemons)[number];

/** The file each daemon reads (`-f`), by daemon. */
export type FrrFiles = Readonly<Record<FrrDaemon, string>>;

export type FrrResult =
  | { readonly ok: true; readonly files: FrrFiles }
  | { readonly ok: false; readonly errors: readonly ConfigError[] };

/** The file name a daemon's configuration is written to: `zebra.conf`, `bfdd.conf`, `bgpd.conf`. */
export function frrFileName(daemon: FrrDaemon): string {
  return `${daemon}.conf`;
}

/** Names used in the rendered text (a reader of `show running-config` finds them here). */
const names = {
  clusterIps: 'nlb-cluster-ips',
  announce: 'nlb-announce',
  learnNone: 'nlb-learn-none',
  bfdProfile: 'nlb',
} as const;

function header(daemon: FrrDaemon, role: string, hostname: string): string[] {
  return [
    `! ${frrFileName(daemon)} of ${hostname} (${role}), written by nlb: do not edit by hand;`,
    '! change the nlb settings and write the files again.',
  ];
}

function canonical(ip: string): string {
  const address = parseAddress(ip);
  if (address === undefined) {
    throw new Error(`frr-config: '${ip}' passed the checks but does not parse`);
  }
  return address.text;
}

/** Numeric address order (198.18.1.10 after 198.18.1.9), so the text does not follow input order. */
function byAddress(a: string, b: string): number {
  const x = parseAddress(a)!.bytes;
  const y = parseAddress(b)!.bytes;
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i]) return x[i]! - y[i]!;
  }
  return 0;
}

function sortedPeers(peers: readonly BgpPeer[]): BgpPeer[] {
  return peers
    .map((peer) => ({ address: canonical(peer.address), as: peer.as }))
    .sort((a, b) => byAddress(a.address, b.address));
}

function zebraConf(speaker: BgpSpeaker, role: string): string {
  return lines([...header('zebra', role, speaker.hostname), `hostname ${speaker.hostname}`]);
}

/** One BFD profile with the cluster's timers; every BGP session refers to it. */
function bfddConf(speaker: BgpSpeaker, role: string): string {
  const { intervalMs, multiplier } = speaker.bfd;
  return lines([
    ...header('bfdd', role, speaker.hostname),
    `hostname ${speaker.hostname}`,
    '!',
    'bfd',
    ` profile ${names.bfdProfile}`,
    `  detect-multiplier ${multiplier}`,
    `  receive-interval ${intervalMs}`,
    `  transmit-interval ${intervalMs}`,
    ' exit',
    'exit',
  ]);
}

/** The `neighbor` lines every session gets, host or router. */
function neighborLines(speaker: BgpSpeaker): string[] {
  const { keepaliveS, holdS } = speaker.timers;
  return sortedPeers(speaker.peers).flatMap((peer) => [
    ` neighbor ${peer.address} remote-as ${peer.as}`,
    ` neighbor ${peer.address} timers ${keepaliveS} ${holdS}`,
    ` neighbor ${peer.address} advertisement-interval 0`,
    ` neighbor ${peer.address} bfd profile ${names.bfdProfile}`,
  ]);
}

function routerBgpHead(speaker: BgpSpeaker, role: string): string[] {
  return [
    ...header('bgpd', role, speaker.hostname),
    'frr defaults datacenter',
    `hostname ${speaker.hostname}`,
  ];
}

function hostBgpdConf(settings: HostFrrSettings): string {
  const ips = settings.clusterIps.map(canonical).sort(byAddress);
  const peers = sortedPeers(settings.peers);
  return lines([
    ...routerBgpHead(settings, 'cluster host'),
    '!',
    '! The cluster IPs: FRR announces one while nlbd holds its marker route (VIP/32 dev lo).',
    ...ips.map((ip, i) => `ip prefix-list ${names.clusterIps} seq ${(i + 1) * 10} permit ${ip}/32`),
    '!',
    `route-map ${names.announce} permit 10`,
    ` match ip address prefix-list ${names.clusterIps}`,
    'exit',
    '!',
    '! A host announces and never routes by BGP: it takes no route from its peers.',
    `route-map ${names.learnNone} deny 10`,
    'exit',
    '!',
    `router bgp ${settings.localAs}`,
    ` bgp router-id ${canonical(settings.routerId)}`,
    ...neighborLines(settings),
    ' !',
    ' address-family ipv4 unicast',
    `  redistribute kernel route-map ${names.announce}`,
    ...peers.map((peer) => `  neighbor ${peer.address} route-map ${names.learnNone} in`),
    ' exit-address-family',
    'exit',
  ]);
}

function routerBgpdConf(settings: RouterFrrSettings): string {
  return lines([
    ...routerBgpHead(settings, 'router'),
    '!',
    `router bgp ${settings.localAs}`,
    ` bgp router-id ${canonical(settings.routerId)}`,
    // The hosts of one cluster share an AS, so their paths are equal as they are; this keeps
    // ECMP when each host has an AS of its own (RFC 7938's layout) too.
    ' bgp bestpath as-path multipath-relax',
    ...neighborLines(settings),
    ' !',
    ' address-family ipv4 unicast',
    `  maximum-paths ${settings.maximumPaths}`,
    ' exit-address-family',
    'exit',
  ]);
}

function lines(text: readonly string[]): string {
  return `${text.join('\n')}\n`;
}

/** A cluster host's FRR files, or every problem of its settings. */
export function renderHostFrr(settings: HostFrrSettings): FrrResult {
  const errors = hostSettingsProblems(settings);
  if (errors.length > 0) return { ok: false, errors };
  const role = 'cluster host';
  return {
    ok: true,
    files: {
      zebra: zebraConf(settings, role),
      bfdd: bfddConf(settings, role),
      bgpd: hostBgpdConf(settings),
    },
  };
}

/** A router's FRR files (ECMP over every host), or every problem of its settings. */
export function renderRouterFrr(settings: RouterFrrSettings): FrrResult {
  const errors = routerSettingsProblems(settings);
  if (errors.length > 0) return { ok: false, errors };
  const role = 'router';
  return {
    ok: true,
    files: {
      zebra: zebraConf(settings, role),
      bfdd: bfddConf(settings, role),
      bgpd: routerBgpdConf(settings),
    },
  };
}

/** One line per problem: `peers[1].address: 224.0.0.1: a multicast address …`. */
export function describeFrrErrors(errors: readonly ConfigError[]): string {
  return errors.map((e) => `${e.path}: ${String(e.value)}: ${e.message}`).join('\n');
}
