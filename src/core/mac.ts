// The MAC addresses a cluster IP implies, by Windows NLB's formulas. For cluster IP a.b.c.d:
//   unicast mode:    every host's cluster interface carries 02:bf:a:b:c:d;
//   multicast mode:  the cluster IP resolves (ARP) to 03:bf:a:b:c:d;
//   IGMP mode:       the cluster IP resolves to 01:00:5e:7f:c:d, the Ethernet address of the
//                    IPv4 multicast group 239.255.c.d that every host joins;
//   unicast masking: each host sends from 02:<host id>:a:b:c:d so a learning switch never
//                    learns the cluster MAC on one port
//                    (docs/data-plane.md#unicast-mode-and-the-macs).
// NLB only defines these for IPv4. For an IPv6 cluster IP we take its last four bytes as
// a.b.c.d: they are the part operators vary between services, so two IPv6 VIPs in one subnet
// get different MACs, and `nlb ip2mac` says so in a note so nobody mistakes it for NLB's own.
import type { Address } from './address.js';

/** Six bytes, network order. */
export type MacAddress = Uint8Array;

/** The four bytes the formulas use: the IPv4 address itself, or an IPv6 address's last four. */
export function macSourceBytes(clusterIp: Address): Uint8Array {
  return clusterIp.bytes.subarray(clusterIp.bytes.length - 4);
}

function withPrefix(prefix: readonly number[], tail: Uint8Array): MacAddress {
  const mac = new Uint8Array(6);
  mac.set(prefix, 0);
  mac.set(tail, prefix.length);
  return mac;
}

/** Unicast mode: 02:bf:a:b:c:d, shared by every host's cluster interface. */
export function unicastClusterMac(clusterIp: Address): MacAddress {
  return withPrefix([0x02, 0xbf], macSourceBytes(clusterIp));
}

/** Multicast mode: 03:bf:a:b:c:d (the group bit is set, so switches flood it). */
export function multicastClusterMac(clusterIp: Address): MacAddress {
  return withPrefix([0x03, 0xbf], macSourceBytes(clusterIp));
}

/** IGMP mode: 01:00:5e:7f:c:d, the Ethernet address of the group `igmpGroup` returns. */
export function igmpClusterMac(clusterIp: Address): MacAddress {
  return withPrefix([0x01, 0x00, 0x5e, 0x7f], macSourceBytes(clusterIp).subarray(2));
}

/** IGMP mode: the IPv4 multicast group 239.255.c.d every host joins. */
export function igmpGroup(clusterIp: Address): Address {
  const source = macSourceBytes(clusterIp);
  const bytes = Uint8Array.of(239, 255, source[2] ?? 0, source[3] ?? 0);
  return { family: 4, bytes, text: bytes.join('.') };
}

/**
 * Unicast mode's masked source MAC 02:<host id>:a:b:c:d: frames a host sends carry it instead
 * of the cluster MAC, so the switch keeps flooding the cluster MAC to every host.
 */
export function hostSourceMac(hostId: number, clusterIp: Address): MacAddress {
  if (!Number.isInteger(hostId) || hostId < 1 || hostId > 0xff) {
    throw new Error(`hostSourceMac: host id ${hostId} is not 1..255`);
  }
  return withPrefix([0x02, hostId], macSourceBytes(clusterIp));
}

/** Lower-case, colon-separated: 02:bf:c6:12:00:64. */
export function formatMac(mac: MacAddress): string {
  let text = '';
  for (let i = 0; i < mac.length; i++) {
    text += (i === 0 ? '' : ':') + (mac[i] ?? 0).toString(16).padStart(2, '0');
  }
  return text;
}

/** Six two-digit hex octets separated by colons, in either case. */
const macTextPattern = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** The bytes of `02:bf:c6:12:00:64` (either case), or undefined when the text is not a MAC. */
export function parseMac(text: string): MacAddress | undefined {
  if (!macTextPattern.test(text)) {
    return undefined;
  }
  return Uint8Array.from(text.split(':'), (octet) => parseInt(octet, 16));
}

/**
 * True when `text` is a MAC written as `formatMac` writes it (lower case), the form the kernel
 * prints and the data plane compares with.
 */
export function isFormattedMac(text: string): boolean {
  const mac = parseMac(text);
  return mac !== undefined && formatMac(mac) === text;
}

export interface ClusterMacs {
  readonly unicast: MacAddress;
  readonly multicast: MacAddress;
  readonly igmp: MacAddress;
  readonly igmpGroup: Address;
  /** True when the cluster IP is IPv6 and its last four bytes stood in for an IPv4 address. */
  readonly fromIpv6Tail: boolean;
}

/** Every MAC (and the IGMP group) a cluster IP implies. */
export function clusterMacs(clusterIp: Address): ClusterMacs {
  return {
    unicast: unicastClusterMac(clusterIp),
    multicast: multicastClusterMac(clusterIp),
    igmp: igmpClusterMac(clusterIp),
    igmpGroup: igmpGroup(clusterIp),
    fromIpv6Tail: clusterIp.family === 6,
  };
}
