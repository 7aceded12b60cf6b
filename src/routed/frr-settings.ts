// What nlb asks of FRR in routed mode (docs/routed.md#frr-configuration), as plain values,
// and the checks that refuse a value FRR would reject or misread. The checks return every
// problem found, each naming the setting (`peers[1].address`) and the fix, like the config's
// own (config-checks.ts): the settings come from an operator's config, so a bad one is an
// operating error, never a crash.
import { parseAddress, unicastProblem } from '../core/address.js';
import type { ConfigError } from '../core/config-model.js';

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
export const peersMax = 64;
/** The config allows 16 cluster IPs per cluster (config-model.ts clusterIpsMax); room for more. */
export const clusterIpsMax = 64;
/** Debian's FRR is built with `--enable-multipath=256`: the most ECMP paths zebra installs. */
export const maximumPathsMax = 256;
/** bfdd's limits for its transmit and receive intervals (ms) and its detect multiplier. */
export const bfdIntervalMsMin = 10;
export const bfdIntervalMsMax = 60_000;
export const bfdMultiplierMin = 2;
export const bfdMultiplierMax = 255;
/** BGP's hold time is 0 (no keepalives) or at least 3 s (RFC 4271 4.2); FRR takes up to 65535. */
export const holdSMin = 3;
export const holdSMax = 65_535;
/** FRR's hostname (and the prompt of vtysh) is one DNS label. */
const hostnamePattern = /^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$/;

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

/** What a host and a router share: one BGP speaker with its peers and timers. */
export interface BgpSpeaker {
  /** FRR's hostname (shown by vtysh and sent to peers); one DNS label. */
  readonly hostname: string;
  readonly localAs: number;
  /** The BGP router-id: this speaker's IPv4 address (a host's dedicated IP). */
  readonly routerId: string;
  readonly peers: readonly BgpPeer[];
  readonly timers: BgpTimers;
  readonly bfd: BfdTimers;
}

/** A cluster host: announces each cluster IP while nlbd holds its marker route. */
export interface HostFrrSettings extends BgpSpeaker {
  /** The cluster IPs (IPv4) whose /32 marker routes FRR may announce. */
  readonly clusterIps: readonly string[];
}

/** The router in front of the hosts: learns the cluster IPs from every host, spreads by ECMP. */
export interface RouterFrrSettings extends BgpSpeaker {
  /** The most equal-cost paths installed for one prefix: at least the number of hosts. */
  readonly maximumPaths: number;
}

/**
 * nlb's timers for routed mode (docs/routed.md#frr-configuration): BFD takes a hung host out of
 * the router's FIB in ~300 ms; the hold time is the backstop when BFD is not running.
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

function speakerProblems(speaker: BgpSpeaker): ConfigError[] {
  const errors: ConfigError[] = [];
  if (!hostnamePattern.test(speaker.hostname)) {
    errors.push(
      problem('hostname', speaker.hostname, 'expected one DNS label: 1-63 letters, digits, - or _'),
    );
  }
  const asProblem = asNumberProblem(speaker.localAs);
  if (asProblem !== undefined) errors.push(problem('localAs', speaker.localAs, asProblem));
  const idProblem = ipv4UnicastProblem(speaker.routerId);
  if (idProblem !== undefined) errors.push(problem('routerId', speaker.routerId, idProblem));
  errors.push(...peerProblems(speaker.peers), ...timerProblems(speaker.timers, speaker.bfd));
  return errors;
}

function peerProblems(peers: readonly BgpPeer[]): ConfigError[] {
  if (peers.length === 0 || peers.length > peersMax) {
    return [problem('peers', peers.length, `expected 1 to ${peersMax} BGP peers`)];
  }
  const errors: ConfigError[] = [];
  peers.forEach((peer, i) => {
    const addressProblem = ipv4UnicastProblem(peer.address);
    if (addressProblem !== undefined) {
      errors.push(problem(`peers[${i}].address`, peer.address, addressProblem));
    } else if (peers.findIndex((p) => sameIpv4(p.address, peer.address)) < i) {
      errors.push(
        problem(`peers[${i}].address`, peer.address, 'listed twice: list each peer once'),
      );
    }
    const asProblem = asNumberProblem(peer.as);
    if (asProblem !== undefined) errors.push(problem(`peers[${i}].as`, peer.as, asProblem));
  });
  return errors;
}

function timerProblems(timers: BgpTimers, bfd: BfdTimers): ConfigError[] {
  const errors: ConfigError[] = [];
  if (!integerIn(timers.holdS, holdSMin, holdSMax)) {
    errors.push(
      problem(
        'timers.holdS',
        timers.holdS,
        `expected whole seconds from ${holdSMin} to ${holdSMax}`,
      ),
    );
  } else if (!integerIn(timers.keepaliveS, 1, Math.floor(timers.holdS / 3))) {
    errors.push(
      problem(
        'timers.keepaliveS',
        timers.keepaliveS,
        `expected whole seconds from 1 to a third of the hold time (${Math.floor(timers.holdS / 3)}), so that one lost keepalive does not drop the session`,
      ),
    );
  }
  if (!integerIn(bfd.intervalMs, bfdIntervalMsMin, bfdIntervalMsMax)) {
    errors.push(
      problem(
        'bfd.intervalMs',
        bfd.intervalMs,
        `expected whole milliseconds from ${bfdIntervalMsMin} to ${bfdIntervalMsMax} (bfdd's range), e.g. 100`,
      ),
    );
  }
  if (!integerIn(bfd.multiplier, bfdMultiplierMin, bfdMultiplierMax)) {
    errors.push(
      problem(
        'bfd.multiplier',
        bfd.multiplier,
        `expected an integer from ${bfdMultiplierMin} to ${bfdMultiplierMax}, e.g. 3`,
      ),
    );
  }
  return errors;
}

function sameIpv4(a: string, b: string): boolean {
  return parseAddress(a)?.text === parseAddress(b)?.text;
}

/** Every problem of a host's settings; empty when FRR may be configured from them. */
export function hostSettingsProblems(settings: HostFrrSettings): ConfigError[] {
  const errors = speakerProblems(settings);
  const ips = settings.clusterIps;
  if (ips.length === 0 || ips.length > clusterIpsMax) {
    errors.push(problem('clusterIps', ips.length, `expected 1 to ${clusterIpsMax} cluster IPs`));
    return errors;
  }
  ips.forEach((ip, i) => {
    const ipProblem = ipv4UnicastProblem(ip);
    if (ipProblem !== undefined) {
      errors.push(problem(`clusterIps[${i}]`, ip, ipProblem));
    } else if (ips.findIndex((other) => sameIpv4(other, ip)) < i) {
      errors.push(problem(`clusterIps[${i}]`, ip, 'listed twice: list each cluster IP once'));
    }
  });
  return errors;
}

/** Every problem of a router's settings; empty when FRR may be configured from them. */
export function routerSettingsProblems(settings: RouterFrrSettings): ConfigError[] {
  const errors = speakerProblems(settings);
  if (!integerIn(settings.maximumPaths, 1, maximumPathsMax)) {
    errors.push(
      problem(
        'maximumPaths',
        settings.maximumPaths,
        `expected an integer from 1 to ${maximumPathsMax}: at least the number of hosts, for ECMP over all of them`,
      ),
    );
  }
  return errors;
}
