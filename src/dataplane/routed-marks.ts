// Routed mode's packet marks and device names, shared by the filter (render-routed.ts) and the
// kernel's policy routing (routed-net.ts): the filter marks a packet for peer k on hop h, and
// the routing table of that mark sends it over the VXLAN device to peer k for hop h. Hop 1
// carries packets to a bucket's owner, hop 2 the second chance to its previous owner; the
// receiving host tells them apart by the device they arrive on (with `forward: segment`, the
// macvlan device of routed-segment.ts instead of VXLAN).

/** 'NL' in the top half: clear of the rule keys, buckets and lease key the filter uses. */
export const forwardMarkBase = 0x4e4c_0000;

/**
 * The peers (cluster.heartbeat.peers, dedicated IPs as text) in the order every host numbers
 * them: sorted, as the cluster's identity has them, so hosts whose lists differ only in order
 * still agree on every index (and so on every mark, device and VXLAN id).
 */
export function peerOrder(peers: readonly string[]): string[] {
  return [...peers].sort();
}

/** The hops a forwarded packet can take. */
export type Hop = 1 | 2;

/**
 * The fwmark (and routing-table id) for sending to `peers[peerIndex]` on `hop`:
 * forwardMarkBase | hop << 8 | peerIndex.
 */
export function forwardMark(hop: Hop, peerIndex: number): number {
  if (!Number.isInteger(peerIndex) || peerIndex < 0 || peerIndex > 0xff) {
    throw new Error(`forwardMark: peer index ${peerIndex} is not 0..255`);
  }
  return (forwardMarkBase | (hop << 8) | peerIndex) >>> 0;
}

/** The VXLAN device to and from `peers[peerIndex]` on `hop`: nlbf3 (hop 1), nlbs3 (hop 2). */
export function vxlanDeviceName(hop: Hop, peerIndex: number): string {
  return `${hop === 1 ? 'nlbf' : 'nlbs'}${peerIndex}`;
}

/**
 * The device of `hop` with `forward: segment` (routed-segment.ts): one per hop, to and from
 * every peer. `nlbf`/`nlbs` match the same patterns as the VXLAN devices, never their names.
 */
export function segmentDeviceName(hop: Hop): string {
  return hop === 1 ? 'nlbf' : 'nlbs';
}

/** The nft interface-name pattern of every device of `hop`, VXLAN or segment. */
export function vxlanDevicePattern(hop: Hop): string {
  return hop === 1 ? 'nlbf*' : 'nlbs*';
}
