// What nlb asks of FRR in routed mode (docs/routed.md#frr-configuration): one BGP speaker, a
// cluster host or the router in front of the hosts, as a plain value, and the checks that refuse
// a value FRR would reject or misread. The BGP vocabulary (peers, timers, their limits) is
// src/core/bgp.ts, which the config's checks share. The checks return every problem found, each
// naming the setting (`peers[1].address`) and the fix: the settings come from an operator's
// config, so a bad one is an operating error, never a crash.
import {
  type BfdTimers,
  type BgpPeer,
  type BgpTimers,
  asNumberProblem,
  bfdTimerProblems,
  bgpPeerProblems,
  bgpTimerProblems,
  ipv4UnicastProblem,
  sameIpv4,
} from '../core/bgp.js';
import type { ConfigError } from '../core/config-model.js';

export * from '../core/bgp.js';

/** The config allows 16 cluster IPs per cluster (config-model.ts clusterIpsMax); room for more. */
export const announcedIpsMax = 64;
/** Debian's FRR is built with `--enable-multipath=256`: the most ECMP paths zebra installs. */
export const maximumPathsMax = 256;
/** FRR's hostname (and the prompt of vtysh) is one DNS label. */
const hostnamePattern = /^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$/;

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

function problem(path: string, value: unknown, message: string): ConfigError {
  return { path, value, message };
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
  errors.push(
    ...bgpPeerProblems(speaker.peers, 'peers'),
    ...bgpTimerProblems(speaker.timers, 'timers'),
    ...bfdTimerProblems(speaker.bfd, 'bfd'),
  );
  return errors;
}

/** Every problem of a host's settings; empty when FRR may be configured from them. */
export function hostSettingsProblems(settings: HostFrrSettings): ConfigError[] {
  const errors = speakerProblems(settings);
  const ips = settings.clusterIps;
  if (ips.length === 0 || ips.length > announcedIpsMax) {
    errors.push(problem('clusterIps', ips.length, `expected 1 to ${announcedIpsMax} cluster IPs`));
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
  if (
    !Number.isInteger(settings.maximumPaths) ||
    settings.maximumPaths < 1 ||
    settings.maximumPaths > maximumPathsMax
  ) {
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
