// Routed mode's part of `table inet <name>` (docs/routed.md#forwarding): the router spreads
// flows over the hosts by ECMP, so each host forwards what another host serves. Per port rule:
//
//   route<i>   where vip<j> sends the rule's traffic in routed mode, before `rule<i>`:
//                - a packet that came over a second-chance device (nlbs*) is never forwarded
//                  again: `rule<i>` decides locally (so a packet crosses the overlay at most
//                  twice: to the owner, then to the previous owner);
//                - established TCP this host holds stays here (unless the host is stopped);
//                - the bucket hash; a non-SYN TCP packet in a bucket with a second chance goes to
//                  the previous owner (`rule<i>_second`, this host owns the bucket or is about to);
//                - a packet that came over a forward device (nlbf*) goes no further: `rule<i>`;
//                - a bucket another host serves goes to it (`rule<i>_forward`);
//                - everything else: `rule<i>`, the local filter of every mode.
//   route_uncovered  the same for VIP traffic no port rule covers: to the default host.
//
// Forwarding is the packet mark: the maps give the mark `forwardMark(hop, peer index)` and the
// kernel's policy routing (routed-net.ts: one table per mark, one VXLAN device per peer and hop,
// or with `forward: segment` one macvlan device per hop) sends the packet to that peer. The maps' elements follow the ownership, so forwarding changes
// are set updates like every other ownership change. The MSS clamp keeps forwarded segments
// inside the overlay's MTU without relying on ICMP (`mss_clamp`).
import type { PortRule } from '../core/config.js';
import type { BucketHost } from '../core/routed-forward.js';
import type { DataplaneSpec } from './dataplane-spec.js';
import { formatMark } from './mark.js';
import { forwardMark, peerOrder, vxlanDevicePattern } from './routed-marks.js';
import { names, ownershipSets, ruleKey } from './table-names.js';

/** The names routed mode adds to the table. */
export const routedNames = {
  forward: (rule: number) => `rule${rule}_forward`,
  second: (rule: number) => `rule${rule}_second`,
  forwarded: (rule: number) => `rule${rule}_forwarded`,
  secondSent: (rule: number) => `rule${rule}_second_sent`,
  uncoveredForward: 'uncovered_forward',
  uncoveredForwarded: 'uncovered_forwarded',
  /** Packets that arrived over the overlay, by hop. */
  arrivedForwarded: 'overlay_in_forwarded',
  arrivedSecond: 'overlay_in_second',
  /** VXLAN packets from an address that is not a peer's. */
  overlayRefused: 'overlay_refused',
  mssClamp: 'mss_clamp',
  chain: (rule: number) => `route${rule}`,
  uncoveredChain: 'route_uncovered',
} as const;

/** The key of the uncovered map's one element: the mark is 0 when it is looked up. */
const uncoveredKey = 0;

export function routedCounterNames(spec: DataplaneSpec): string[] {
  if (spec.mode !== 'routed') return [];
  return [
    ...spec.portRules.flatMap((_, i) => [routedNames.forwarded(i), routedNames.secondSent(i)]),
    routedNames.uncoveredForwarded,
    routedNames.arrivedForwarded,
    routedNames.arrivedSecond,
    routedNames.overlayRefused,
  ];
}

/** The mark of `host` on `hop`, or undefined when its address is not one of the peers. */
function markOf(spec: DataplaneSpec, hop: 1 | 2, host: number): number | undefined {
  const address = spec.ownership.routed?.addresses.find(([id]) => id === host)?.[1];
  const peers = peerOrder((spec.heartbeat.peers ?? []).map((peer) => peer.text));
  const index = peers.findIndex((peer) => peer === address);
  return index < 0 || address === undefined ? undefined : forwardMark(hop, index);
}

function mapElements(spec: DataplaneSpec, hop: 1 | 2, list: readonly BucketHost[]): number[] {
  const elements: number[] = [];
  for (const [bucket, host] of list) {
    const mark = markOf(spec, hop, host);
    if (mark !== undefined) elements.push(bucket * 2 ** 32 + mark);
  }
  return elements;
}

/**
 * The routed maps with their elements, each `key * 2^32 + value` (how table-image.ts reads a
 * map element back), sorted: what the kernel must hold.
 */
export function routedMaps(spec: DataplaneSpec): Map<string, number[]> {
  const maps = new Map<string, number[]>();
  if (spec.mode !== 'routed') return maps;
  const routed = spec.ownership.routed;
  spec.portRules.forEach((_, i) => {
    const rule = routed?.rules[i];
    maps.set(routedNames.forward(i), mapElements(spec, 1, rule?.forward ?? []));
    maps.set(routedNames.second(i), mapElements(spec, 2, rule?.secondChance ?? []));
  });
  const uncovered = routed?.uncovered;
  maps.set(
    routedNames.uncoveredForward,
    uncovered === undefined ? [] : mapElements(spec, 1, [[uncoveredKey, uncovered]]),
  );
  for (const [name, list] of maps)
    maps.set(
      name,
      list.sort((a, b) => a - b),
    );
  return maps;
}

/** Every set and map whose elements follow the ownership, with what the kernel must hold. */
export function ownershipElements(spec: DataplaneSpec): Map<string, number[]> {
  return new Map([...ownershipSets(spec), ...routedMaps(spec)]);
}

/** `5 : 0x4e4c0102`-style text of an encoded element. */
export function formatMapElement(element: number): string {
  const key = Math.floor(element / 2 ** 32);
  return `${key} : ${formatMark(element % 2 ** 32)}`;
}

export function routedMapBlocks(spec: DataplaneSpec, withElements: boolean): string[] {
  const lines: string[] = [];
  for (const [name, elements] of routedMaps(spec)) {
    lines.push(`map ${name} {`, '\ttype mark : mark');
    if (withElements && elements.length > 0) {
      lines.push(`\telements = { ${elements.map(formatMapElement).join(', ')} }`);
    }
    lines.push('}');
  }
  return lines;
}

const notSyn = 'tcp flags & (syn | ack) != syn';

function arrivals(): string[] {
  return [
    `iifname "${vxlanDevicePattern(2)}" counter name ${routedNames.arrivedSecond}`,
    `iifname "${vxlanDevicePattern(1)}" counter name ${routedNames.arrivedForwarded}`,
  ];
}

/**
 * Routed mode: only the peers may send into the overlay. A VXLAN packet from anyone else would
 * come out of a peer's device as if that peer had forwarded it; it is dropped before the
 * VXLAN socket sees it. With `forward: segment` nothing is encapsulated and nothing is
 * rendered: that mode trusts the segment (docs/routed.md).
 */
export function overlayGuard(spec: DataplaneSpec): string[] {
  if (spec.mode !== 'routed' || spec.routed?.forward !== 'vxlan') return [];
  const peers = (spec.heartbeat.peers ?? []).map((peer) => peer.text);
  return [
    `udp dport ${spec.routed.vxlanPort} ip saddr != { ${peers.join(', ')} } counter name ${routedNames.overlayRefused} drop`,
  ];
}

/** The routed chain of port rule `index`, given the hash statement(s) of its rule chain. */
export function routeChain(rule: PortRule, index: number, hashes: readonly string[]): string[] {
  const local = `goto rule${index}`;
  const lines = [
    `# routed: forward what another host serves, then the local filter (rule${index})`,
    ...arrivals(),
    `iifname "${vxlanDevicePattern(2)}" ${local}`,
    `meta mark set ${formatMark(ruleKey(index))}`,
  ];
  if (rule.protocol !== 'udp') {
    lines.push(
      `meta mark != @${names.dropAll} meta l4proto tcp ct state established,related counter name ${names.accepted(index)} accept`,
    );
  }
  lines.push(...hashes);
  if (rule.protocol !== 'udp') {
    lines.push(
      `${notSyn} meta mark set meta mark map @${routedNames.second(index)} counter name ${routedNames.secondSent(index)} accept`,
    );
  }
  lines.push(
    `iifname "${vxlanDevicePattern(1)}" ${local}`,
    `meta mark set meta mark map @${routedNames.forward(index)} counter name ${routedNames.forwarded(index)} accept`,
    local,
  );
  return lines;
}

export function routeUncoveredChain(): string[] {
  return [
    '# routed: VIP traffic no port rule covers goes to the default host',
    `iifname { "${vxlanDevicePattern(1)}", "${vxlanDevicePattern(2)}" } goto uncovered`,
    `meta mark set ${formatMark(ruleKey('uncovered'))}`,
    `meta mark != @${names.dropAll} meta l4proto tcp ct state established,related counter name ${names.uncoveredAccepted} accept`,
    `meta mark set ${formatMark(uncoveredKey)}`,
    `meta mark set meta mark map @${routedNames.uncoveredForward} counter name ${routedNames.uncoveredForwarded} accept`,
    'goto uncovered',
  ];
}

/**
 * Clamps the MSS of the SYN-ACKs the cluster IPs send, so the segments a client sends fit the
 * overlay when they are forwarded, with ICMP blocked on the path or not.
 */
export function mssClampChain(spec: DataplaneSpec, mss: number): string[] {
  const ips = spec.clusterIps.filter((ip) => ip.family === 4).map((ip) => ip.text);
  const saddr = ips.length === 1 ? ips[0]! : `{ ${ips.join(', ')} }`;
  return [
    'type filter hook output priority 0; policy accept;',
    `ip saddr ${saddr} tcp flags & (syn | ack) == syn | ack tcp option maxseg size > ${mss} tcp option maxseg size set ${mss}`,
  ];
}
