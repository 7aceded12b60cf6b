// The lab's addressing plan and names, in one place so the lab, its tests, the demo and the
// benchmarks agree. Everything lives on 198.18.0.0/24, inside the 198.18.0.0/15 range RFC 2544
// sets aside for benchmarking, so lab traffic can never be mistaken for, or routed to, a real
// network (docs/lab.md#network-safety).
import ipaddr from 'ipaddr.js';
import { markerRouteProtocol } from '../core/bgp.js';

export const labSubnet = '198.18.0.0/24';
export const labPrefixLength = 24;
/** The only range lab traffic may ever be addressed to (RFC 2544 benchmarking). */
export const labSafeRange = '198.18.0.0/15';
export const labVip = '198.18.0.100';
/**
 * IPv6 labs (`--ipv6`) add a second cluster IP and an address per host and client in
 * 2001:db8:18::/64, inside the range RFC 3849 reserves for documentation: 2001:db8::/32 is the
 * only IPv6 range lab traffic may be addressed to.
 */
export const labSafeRange6 = '2001:db8::/32';
export const labSubnet6 = '2001:db8:18::/64';
export const labPrefixLength6 = 64;
export const labVip6 = '2001:db8:18::100';
/** The switch port, namespace suffix and address of the bystander (IGMP labs): on the switch, in no cluster. */
export const bystanderSwitchPort = 'b1';
export const bystanderIp = '198.18.0.250';
/** NLB allows 32 hosts; host i gets 198.18.0.(10 + i), so .11 to .42. */
export const labHostsMax = 32;
/** Clients get 198.18.0.201 upwards; 16 leaves room and is far more than 2 cores can drive. */
export const labClientsMax = 16;
/** Extra client source addresses come from .101 to .199, between the VIP and the clients. */
export const labExtraAddressFirst = 101;
export const labExtraAddressLast = 199;
export const labHttpPort = 80;
/** The interface name every host and client sees inside its own namespace. */
export const labInterface = 'eth0';
export const labBridge = 'br0';

/**
 * A lab name is part of every namespace name (`nlb-<name>-h1`). No '-' is allowed so that the
 * prefix `nlb-<name>-` belongs to exactly one lab, and 24 characters keep names readable.
 */
export const labNamePattern = /^[A-Za-z0-9][A-Za-z0-9_]{0,23}$/;

export function labNameProblem(name: string): string | undefined {
  return labNamePattern.test(name)
    ? undefined
    : `invalid lab name '${name}': use 1-24 letters, digits or '_' (no '-'), starting with a letter or digit`;
}

export function namespacePrefix(labName: string): string {
  return `nlb-${labName}-`;
}

export function switchNamespace(labName: string): string {
  return `${namespacePrefix(labName)}sw`;
}

export function hostNamespace(labName: string, hostId: number): string {
  return `${namespacePrefix(labName)}h${hostId}`;
}

export function clientNamespace(labName: string, clientIndex: number): string {
  return `${namespacePrefix(labName)}c${clientIndex}`;
}

/** The switch-side end of a host's veth, named after its target so `bridge fdb` reads well. */
export function hostSwitchPort(hostId: number): string {
  return `h${hostId}`;
}

export function clientSwitchPort(clientIndex: number): string {
  return `c${clientIndex}`;
}

export function hostIp(hostId: number): string {
  return `198.18.0.${10 + hostId}`;
}

export function clientIp(clientIndex: number): string {
  return `198.18.0.${200 + clientIndex}`;
}

/** Host i's IPv6 address in an IPv6 lab: 2001:db8:18::(10 + i), written like its IPv4 one. */
export function hostIp6(hostId: number): string {
  return `2001:db8:18::${10 + hostId}`;
}

export function clientIp6(clientIndex: number): string {
  return `2001:db8:18::${200 + clientIndex}`;
}

export function bystanderNamespace(labName: string): string {
  return `${namespacePrefix(labName)}${bystanderSwitchPort}`;
}

/**
 * True when `address` is inside 198.18.0.0/15 or 2001:db8::/32, the only ranges the lab uses.
 */
export function isLabSafeAddress(address: string): boolean {
  if (ipaddr.IPv4.isValidFourPartDecimal(address)) {
    const [range, bits] = ipaddr.IPv4.parseCIDR(labSafeRange);
    return ipaddr.IPv4.parse(address).match(range, bits);
  }
  if (ipaddr.IPv6.isValid(address) && !address.includes('%')) {
    const parsed = ipaddr.IPv6.parse(address);
    const [range, bits] = ipaddr.IPv6.parseCIDR(labSafeRange6);
    return parsed.match(range, bits);
  }
  return false;
}

/**
 * Network safety: throws unless `address` is inside 198.18.0.0/15 or 2001:db8::/32
 * (docs/lab.md#network-safety).
 */
export function assertLabSafeAddress(address: string, what: string): void {
  if (!isLabSafeAddress(address)) {
    throw new Error(
      `refusing ${what} ${address}: the lab only ever talks to 198.18.0.0/15 and 2001:db8::/32 addresses inside its own namespaces`,
    );
  }
}

// The routed lab (`routedLabUp`, router.ts): a router namespace instead of the switch, each
// host on a link of its own, the clients on a segment behind the router. Every link is a /24 of
// 198.18.0.0/15 (host i's is 198.18.i.0/24: the router .1, the host .2), and the cluster IP
// 198.18.0.100 lies on none of them: the router learns it from the hosts by BGP.
export const routedHostLinkPrefixLength = 24;
/** The clients' segment behind the router: the router is .1 on it, client j is .(200 + j). */
export const routedClientSubnet = '198.18.100.0/24';
export const routedRouterClientIp = '198.18.100.1';
/** Private ASes (RFC 6996): the router's, and the one every host of the lab's cluster shares. */
export const routedRouterAs = 65000;
export const routedHostAs = 65001;
/** The protocol number of the lab's marker routes (`ip route … proto 250`), as nlbd's will be. */
export const routedMarkerProtocol = markerRouteProtocol;

export function routerNamespace(labName: string): string {
  return `${namespacePrefix(labName)}rt`;
}

/** The router's end of host i's link. */
export function routedRouterIp(hostId: number): string {
  return `198.18.${hostId}.1`;
}

/** Host i's address in a routed lab (its dedicated IP), on its own link to the router. */
export function routedHostIp(hostId: number): string {
  return `198.18.${hostId}.2`;
}

/**
 * A segment lab (`routedLabUp({ segment: true })`): every host and the router on one /24, the
 * bridge `seg0` in the router's namespace (the router .1 there), host i at .(10 + i); the hosts
 * forward on it without encapsulation (`forward: segment`). Still 198.18.0.0/15.
 */
export const routedSegmentBridge = 'seg0';
export const routedSegmentRouterIp = '198.18.1.1';
export function routedSegmentHostIp(hostId: number): string {
  return `198.18.1.${10 + hostId}`;
}

export function routedClientIp(clientIndex: number): string {
  return `198.18.100.${200 + clientIndex}`;
}
