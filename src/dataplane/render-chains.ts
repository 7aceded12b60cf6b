// The chains of `table inet <name>` (see render.ts for the layout): one per cluster IP that
// dispatches to the port rules, one per port rule that checks the state sets and the lease and
// hashes the flow into its bucket, and one for the traffic no port rule covers.
import { type Address, addressesEqual, maskBytes } from '../core/address.js';
import type { PortRule } from '../core/config.js';
import { parseMac } from '../core/mac.js';
import { networkAffinityPrefix } from '../core/flow.js';
import type { DataplaneSpec } from './dataplane-spec.js';
import { ctMarkBase, formatMark } from './mark.js';
import { leaseKey, names, ruleKey } from './table-names.js';

function portMatch(rule: PortRule): string {
  const all = rule.portStart === 0 && rule.portEnd === 65535;
  const ports =
    rule.portStart === rule.portEnd ? `${rule.portStart}` : `${rule.portStart}-${rule.portEnd}`;
  if (rule.protocol === 'both') {
    return all ? 'meta l4proto { tcp, udp }' : `meta l4proto { tcp, udp } th dport ${ports}`;
  }
  return all ? `meta l4proto ${rule.protocol}` : `${rule.protocol} dport ${ports}`;
}

function describeRule(rule: PortRule, index: number): string {
  const vip = rule.vip === 'all' ? 'all cluster IPs' : rule.vip.text;
  const ports =
    rule.portStart === 0 && rule.portEnd === 65535
      ? 'all ports'
      : rule.portStart === rule.portEnd
        ? `port ${rule.portStart}`
        : `ports ${rule.portStart}-${rule.portEnd}`;
  return `port rule ${index}: ${vip} ${rule.protocol} ${ports}, ${rule.mode}, affinity ${rule.affinity}, ${rule.buckets} buckets`;
}

/** The mask text nft needs for `network` affinity, e.g. 255.255.255.0 or ffff:ffff:ffff:ffff::. */
function networkMask(family: 4 | 6): string {
  const bytes = maskBytes(
    new Uint8Array(family === 4 ? 4 : 16).fill(0xff),
    networkAffinityPrefix[family],
  );
  if (family === 4) {
    return Array.from(bytes).join('.');
  }
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) {
    groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  }
  // Compress the trailing run of zero groups, which is where a prefix mask has them.
  const firstZero = groups.findIndex(
    (g, i) => g === '0' && groups.slice(i).every((z) => z === '0'),
  );
  return firstZero < 0 ? groups.join(':') : `${groups.slice(0, firstZero).join(':')}::`;
}

/**
 * The jhash key for one family, field for field what src/core/flow.ts `flowKey` hashes:
 * affinity none = saddr . sport (the protocol's sport, or `th sport` for 'both'),
 * single = saddr, network = saddr masked to /24 (IPv4) or /64 (IPv6).
 */
function hashKey(rule: PortRule, family: 4 | 6): string {
  const saddr = family === 4 ? 'ip saddr' : 'ip6 saddr';
  switch (rule.affinity) {
    case 'none': {
      const sport = rule.protocol === 'both' ? 'th sport' : `${rule.protocol} sport`;
      return `${saddr} . ${sport}`;
    }
    case 'single':
      return saddr;
    case 'network':
      return `${saddr} & ${networkMask(family)}`;
  }
}

/** The address families a rule's traffic can arrive in. */
function ruleFamilies(rule: PortRule, clusterIps: readonly Address[]): (4 | 6)[] {
  const vip = rule.vip;
  const ips = vip === 'all' ? clusterIps : clusterIps.filter((ip) => addressesEqual(ip, vip));
  return ([4, 6] as const).filter((family) => ips.some((ip) => ip.family === family));
}

const tcpEstablished = 'meta l4proto tcp ct state established,related';
const notSyn = 'tcp flags & (syn | ack) != syn';

/**
 * The checks every chain starts with, for the rule key `key`: drop all (established too) when
 * `drop_all` has the key, keep established TCP, and open no new flow unless `new_flows` has it,
 * nor once the lease has run out. Only set elements decide, so the chains never change with
 * the ownership.
 */
function stateChecks(
  key: number,
  carriesTcp: boolean,
  accepted: string,
  dropped: string,
): string[] {
  return [
    `meta mark set ${formatMark(key)}`,
    `meta mark @${names.dropAll} ${dropped} drop`,
    // UDP is not kept on its host, so a UDP-only rule has no established connection to keep.
    ...(carriesTcp ? [`${tcpEstablished} ${accepted} accept`] : []),
    `meta mark != @${names.newFlows} ${dropped} drop`,
    `meta mark set ${formatMark(leaseKey)}`,
    `meta mark != @${names.lease} counter name ${names.leaseExpired} ${dropped} drop`,
  ];
}

/** The statements that load the bucket of port rule `index` into the packet mark. */
export function hashStatements(spec: DataplaneSpec, index: number): string[] {
  const rule = spec.portRules[index]!;
  return ruleFamilies(rule, spec.clusterIps).map(
    (family) =>
      `meta mark set jhash ${hashKey(rule, family)} mod ${rule.buckets} seed ${formatMark(spec.hashSeed)}`,
  );
}

export function ruleChain(spec: DataplaneSpec, index: number): string[] {
  const rule = spec.portRules[index]!;
  const accepted = `counter name ${names.accepted(index)}`;
  const dropped = `counter name ${names.dropped(index)}`;
  const lines = [`# ${describeRule(rule, index)}`];
  const carriesTcp = rule.protocol !== 'udp';
  if (rule.mode === 'disabled') {
    lines.push('# disabled: everything the rule covers is dropped, established connections too');
    lines.push(`${dropped} drop`);
    return lines;
  }
  lines.push(...stateChecks(ruleKey(index), carriesTcp, accepted, dropped));
  lines.push(...hashStatements(spec, index));
  if (carriesTcp) {
    lines.push(
      `${notSyn} meta mark @${names.orphan(index)} counter name ${names.reset(index)} reject with tcp reset`,
    );
    lines.push(`${notSyn} ${dropped} drop`);
  }
  lines.push(
    `meta mark @${names.owned(index)} ct mark set meta mark | ${formatMark(ctMarkBase(index))} ${accepted} accept`,
  );
  lines.push(`${dropped} drop`);
  return lines;
}

export function uncoveredChain(): string[] {
  const accepted = `counter name ${names.uncoveredAccepted}`;
  const dropped = `counter name ${names.uncoveredDropped}`;
  return [
    '# VIP traffic no port rule covers: the default host takes it',
    // Established TCP stays where it is, so connections survive the default host changing.
    ...stateChecks(ruleKey('uncovered'), true, accepted, dropped),
    `${notSyn} ${dropped} drop`,
    `ct mark set ${formatMark(ctMarkBase('uncovered'))} ${accepted} accept`,
  ];
}

export function vipChain(spec: DataplaneSpec, ipIndex: number): string[] {
  const ip = spec.clusterIps[ipIndex]!;
  const lines = [`# cluster IP ${ip.text}`];
  if (spec.mode === 'multicast' || spec.mode === 'igmp') {
    // Multicast and IGMP modes: the frame came to a group MAC; without this the stack never
    // delivers the (unicast-addressed) packet and TCP silently fails
    // (docs/data-plane.md#multicast-and-igmp-modes).
    lines.push('meta pkttype multicast meta pkttype set host');
  }
  lines.push('meta l4proto != { tcp, udp } accept');
  const specific: number[] = [];
  const general: number[] = [];
  spec.portRules.forEach((rule, i) => {
    if (rule.vip === 'all') {
      general.push(i);
    } else if (addressesEqual(rule.vip, ip)) {
      specific.push(i);
    }
  });
  // Routed mode: each rule's traffic passes its forwarding chain first (render-routed.ts).
  const routed = spec.mode === 'routed';
  for (const i of [...specific, ...general]) {
    lines.push(`${portMatch(spec.portRules[i]!)} goto ${routed ? 'route' : 'rule'}${i}`);
  }
  lines.push(routed ? 'goto route_uncovered' : 'goto uncovered');
  return lines;
}

/**
 * The lease refresh, in the kernel: each heartbeat nlbd sends (to the cluster's group and port,
 * or to each peer's dedicated IP with cluster.heartbeat.peers) sets the lease element's timeout
 * again as it passes the output hook, so a steady heartbeat costs no nft call, and the lease runs out exactly when heartbeats stop leaving (nlbd hung,
 * killed, or its sends failing before the output hook). The packet mark is the register for the
 * constant key, as on the way in; heartbeats carry no mark of their own, so it goes back to 0.
 */
export function leaseRefreshChain(spec: DataplaneSpec): string[] {
  const key = formatMark(leaseKey);
  // Unicast heartbeats (cluster.heartbeat.peers) go to the peers' dedicated IPs, one each.
  const peers = spec.heartbeat.peers;
  const daddr =
    peers === undefined ? spec.heartbeat.group.text : `{ ${peers.map((p) => p.text).join(', ')} }`;
  return [
    `type filter hook output priority ${leaseRefreshPriority}; policy accept;`,
    `ip daddr ${daddr} udp dport ${spec.heartbeat.port} meta mark set ${key} ` +
      `update @${names.lease} { meta mark timeout ${spec.leaseTimeoutMs}ms } meta mark set 0x00000000`,
  ];
}

/** The output hook's filter priority. */
export const leaseRefreshPriority = 0;

/**
 * The one's-complement sum of the 16-bit words of `bytes` (an even number of them), folded.
 */
function wordSum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += ((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * The value for the NA's 16 reserved bits (bytes 6-7, sent as 0, ignored by receivers) that
 * keeps the ICMPv6 checksum right when the target link-layer address changes from `from` to
 * `to`: the checksum is the complement of the one's-complement sum of the message, so adding
 * C = sum(from) - sum(to) elsewhere leaves the sum, and the checksum, as they were. nft 1.0.6
 * does not fix the ICMPv6 checksum of a raw payload write (checked on kernel 6.18: the client
 * drops the NA), and this kernel has no act_csum to do it in tc.
 */
export function naChecksumCompensation(from: Uint8Array, to: Uint8Array): number {
  const difference = wordSum(from) + (~wordSum(to) & 0xffff);
  let folded = difference;
  while (folded > 0xffff) folded = (folded & 0xffff) + (folded >>> 16);
  return folded;
}

function hex(bytes: Uint8Array): string {
  return `0x${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/**
 * Multicast and IGMP modes with IPv6 cluster IPs: the host keeps its own MAC, so the neighbour
 * discovery messages the kernel sends for a cluster IP would name it, and a client would send
 * the cluster's frames to this host alone:
 *   - an NA whose target is a cluster IP (solicited, and unsolicited ones on an announce)
 *     names it in its target link-layer address option;
 *   - an NS the host sends from a cluster IP (to find a client it answers) names it in its
 *     source link-layer address option, and the client takes that as the cluster IP's MAC.
 * On output, such a message whose option (bytes 24-31: type 2 or 1, length 1, the MAC) names
 * this host's MAC gets the group MAC instead, and the reserved bits (bytes 6-7 of both) the
 * value that keeps the checksum right. The match on the reserved bits being 0 makes the
 * rewrite apply once. An NA without the option (the answer to a unicast probe) needs none: the
 * prober already has the group MAC.
 */
export function ndRewriteChain(spec: DataplaneSpec): string[] {
  // Both checked by dataplaneSpecProblems before any rendering.
  const own = parseMac(spec.ownMac!)!;
  const group = parseMac(spec.groupMac!)!;
  const compensation = `0x${naChecksumCompensation(own, group).toString(16).padStart(4, '0')}`;
  const rewrite = `@th,208,48 ${hex(own)} @th,48,16 0x0000 @th,208,48 set ${hex(group)} @th,48,16 set ${compensation}`;
  const lines = [`type filter hook output priority ${ndRewritePriority}; policy accept;`];
  for (const ip of spec.clusterIps.filter((a) => a.family === 6)) {
    lines.push(
      `icmpv6 type nd-neighbor-advert @th,64,128 ${hex(ip.bytes)} @th,192,16 0x0201 ${rewrite}`,
      `icmpv6 type nd-neighbor-solicit ip6 saddr ${ip.text} @th,192,16 0x0101 ${rewrite}`,
    );
  }
  return lines;
}

/** The output hook's priority of the NA rewrite. */
export const ndRewritePriority = 0;
