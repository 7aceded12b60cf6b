// BGP settings as routed mode needs them (docs/routed.md#frr-configuration): peers, the BGP and
// BFD timers, their limits and defaults, and the checks that refuse a value FRR would reject or
// misread. Shared by the config's checks (the `routed` sections) and by src/routed/, which
// writes FRR's files from them. Every check returns every problem it finds, each naming the
// setting under the path it is given (`host.routed.peers[1].address`) and the fix.
import { parseAddress, unicastProblem } from './address.js';
import type { ConfigError } from './config-model.js';

/**
 * The `proto` of a host's marker routes (`VIP/32 dev lo proto 250`): FRR announces a cluster IP
 * while its host holds one. Not one of iproute2's named protocols (bgp is 186, ospf 188, …), so
 * a marker is told apart from every other route at a glance.
 */
export const markerRouteProtocol = 250;

/** BGP's 4-octet AS numbers (RFC 6793): 1..4294967295; 0 is reserved (RFC 7607). */
export const asNumberMax = 4_294_967_295;
/**
 * AS_TRANS (RFC 6793) stands in for a 4-octet AS towards old speakers; a speaker configured with
 * it would be misread by every peer.
 */
export const asTrans = 23_456;
/**
 * A host peers with its router(s), a router with every host of a cluster: NLB allows 32 hosts,
 * and 64 leaves room for two clusters behind one router or hosts with a few routers each.
 */
export const bgpPeersMax = 64;
/** bfdd's limits for its transmit and receive intervals (ms) and its detect multiplier. */
export const bfdIntervalMsMin = 10;
export const bfdIntervalMsMax = 60_000;
export const bfdMultiplierMin = 2;
export const bfdMultiplierMax = 255;
/** BGP's hold time is 0 (no keepalives) or at least 3 s (RFC 4271 4.2); FRR takes up to 65535. */
export const holdSMin = 3;
export const holdSMax = 65_535;

export interface BgpPeer {
  /** The peer's IPv4 address on the shared link: a host's router, or a router's host. */
  readonly address: string;
  /** The peer's AS number. */
  readonly as: number;
}

export interface BgpTimers {
  /** Seconds between keepalives; at most a third of the hold time. */
  readonly keepaliveS: number;
  /** Seconds without a message before the session is declared down. */
  readonly holdS: number;
}

export interface BfdTimers {
  /** Transmit and receive interval, in milliseconds. */
  readonly intervalMs: number;
  /** Missed packets before the peer is declared down: detection in intervalMs × multiplier. */
  readonly multiplier: number;
}

/**
 * nlb's timers for routed mode: BFD takes a hung host out of the router's FIB in ~300 ms; the
 * hold time is the backstop when BFD is not running.
 */
export const bgpTimersDefault: BgpTimers = { keepaliveS: 1, holdS: 3 };
export const bfdTimersDefault: BfdTimers = { intervalMs: 100, multiplier: 3 };

function problem(path: string, value: unknown, message: string): ConfigError {
  return { path, value, message };
}

function integerIn(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max;
}

/** Why `value` is not an AS number a speaker may use, or undefined. */
export function asNumberProblem(value: number): string | undefined {
  if (!integerIn(value, 1, asNumberMax)) {
    return `an AS number is an integer from 1 to ${asNumberMax} (0 is reserved); private ASes are 64512-65534 and 4200000000-4294967294`;
  }
  if (value === asTrans) {
    return `${asTrans} is AS_TRANS (RFC 6793), which stands in for 4-octet ASes: pick another, e.g. a private AS from 64512-65534`;
  }
  return undefined;
}

/** Why `text` is not an IPv4 unicast address (a peer, a router-id, a cluster IP), or undefined. */
export function ipv4UnicastProblem(text: unknown): string | undefined {
  if (typeof text !== 'string') {
    return 'expected an IPv4 address as text, e.g. 198.18.1.1';
  }
  const address = parseAddress(text);
  if (address === undefined || address.family !== 4) {
    return 'expected an IPv4 unicast address, e.g. 198.18.1.1 (routed mode peers and announces over IPv4)';
  }
  return unicastProblem(address);
}

export function sameIpv4(a: string, b: string): boolean {
  return parseAddress(a)?.text === parseAddress(b)?.text;
}

/** The problems of a peer list at `at` (e.g. `host.routed.peers`). */
export function bgpPeerProblems(peers: readonly BgpPeer[], at: string): ConfigError[] {
  if (peers.length === 0 || peers.length > bgpPeersMax) {
    return [problem(at, peers.length, `expected 1 to ${bgpPeersMax} BGP peers`)];
  }
  const errors: ConfigError[] = [];
  peers.forEach((peer, i) => {
    const addressProblem = ipv4UnicastProblem(peer.address);
    if (addressProblem !== undefined) {
      errors.push(problem(`${at}[${i}].address`, peer.address, addressProblem));
    } else if (peers.findIndex((p) => sameIpv4(p.address, peer.address)) < i) {
      errors.push(
        problem(`${at}[${i}].address`, peer.address, 'listed twice: list each peer once'),
      );
    }
    const asProblem = asNumberProblem(peer.as);
    if (asProblem !== undefined) errors.push(problem(`${at}[${i}].as`, peer.as, asProblem));
  });
  return errors;
}

/** The problems of BGP timers at `at` (e.g. `cluster.routed.timers`). */
export function bgpTimerProblems(timers: BgpTimers, at: string): ConfigError[] {
  if (!integerIn(timers.holdS, holdSMin, holdSMax)) {
    return [
      problem(
        `${at}.holdS`,
        timers.holdS,
        `expected whole seconds from ${holdSMin} to ${holdSMax}`,
      ),
    ];
  }
  if (!integerIn(timers.keepaliveS, 1, Math.floor(timers.holdS / 3))) {
    return [
      problem(
        `${at}.keepaliveS`,
        timers.keepaliveS,
        `expected whole seconds from 1 to a third of the hold time (${Math.floor(timers.holdS / 3)}), so that one lost keepalive does not drop the session`,
      ),
    ];
  }
  return [];
}

/** The problems of BFD timers at `at` (e.g. `cluster.routed.bfd`). */
export function bfdTimerProblems(bfd: BfdTimers, at: string): ConfigError[] {
  const errors: ConfigError[] = [];
  if (!integerIn(bfd.intervalMs, bfdIntervalMsMin, bfdIntervalMsMax)) {
    errors.push(
      problem(
        `${at}.intervalMs`,
        bfd.intervalMs,
        `expected whole milliseconds from ${bfdIntervalMsMin} to ${bfdIntervalMsMax} (bfdd's range), e.g. 100`,
      ),
    );
  }
  if (!integerIn(bfd.multiplier, bfdMultiplierMin, bfdMultiplierMax)) {
    errors.push(
      problem(
        `${at}.multiplier`,
        bfd.multiplier,
        `expected an integer from ${bfdMultiplierMin} to ${bfdMultiplierMax}, e.g. 3`,
      ),
    );
  }
  return errors;
}

/** Where Debian's FRR keeps its daemons. */
export const frrBinDir = '/usr/lib/frr';
/** Where FRR keeps its run files; FRR's path space per namespace (`-N <ns>`) adds a directory. */
export const frrRunRoot = '/run/frr';

interface BgpSummary {
  readonly ipv4Unicast?: { readonly peers?: Record<string, { readonly state?: string }> };
}

/**
 * The session state of each BGP neighbor (`Established`, `Active`, …; undefined when bgpd
 * names none), by address, from `vtysh -c 'show bgp summary json'`; empty output is no peers.
 */
export function bgpSessionStates(json: string): Map<string, string | undefined> {
  const summary = JSON.parse(json === '' ? '{}' : json) as BgpSummary;
  return new Map(Object.entries(summary.ipv4Unicast?.peers ?? {}).map(([p, v]) => [p, v.state]));
}
