// The whole nftables configuration of one host, rendered as deterministic text from a plain
// value (the knftables way): the daemon builds a `DataplaneSpec`, `renderTable` turns it into
// one `nft -f` script that replaces the host's tables atomically, and unit tests compare that
// text exactly. DESIGN.md §4 is the recipe; every construct below was run on kernel 6.18 with
// nft 1.0.6.
//
// Layout of `table inet <name>` (family inet, so IPv6 cluster IPs need nothing extra):
//   prerouting  hook at priority -150 (after conntrack at -200): a verdict map from destination
//               address to one chain per cluster IP; every other packet (dedicated IPs,
//               forwarded traffic) is left alone.
//   vip<i>      one per cluster IP (index in clusterIps): non-TCP/UDP (ICMP, ND) is accepted
//               untouched; then the port rules naming this VIP in config order, then the 'all'
//               rules in config order, first match wins (the precedence of matchPortRule);
//               traffic no rule covers goes to `uncovered`.
//   rule<i>     one per port rule (index in config): first the `drop_all` check (a disabled rule
//               or a stopped host drops everything, established connections too), then
//               established TCP accepted (it stays on its host when its bucket moves), then the
//               `new_flows` check (a host not taking part opens no flow), then the lease, then
//               the bucket hash: only a SYN opens a TCP flow, a non-SYN of an unknown connection
//               is dropped, or reset in an orphan bucket; UDP follows bucket ownership packet by
//               packet.
//   uncovered   VIP traffic no port rule covers: the same checks, and the default host takes it.
//
// The chains depend on the configuration only (cluster IPs, port rules, seed, mode); everything
// the host machine decides (Ownership) lives in set elements: `rule<i>_owned`, `rule<i>_orphan`,
// and two sets keyed by the rule field of the ct mark (the rule index, or 0xff for uncovered
// traffic): `drop_all` and `new_flows`. So every ownership change, a drainstop, a stop or a new
// default host included, is one quick set transaction on the long-lived nft process (~2 ms),
// and a whole-table apply (~17-45 ms) happens only when the configuration changes.
//
// Names the daemon reads back (see nft.ts): sets `lease`, `sync`, `drop_all`, `new_flows`,
// `rule<i>_owned`, `rule<i>_orphan`; counters `rule<i>_accepted`, `rule<i>_dropped`,
// `rule<i>_reset`, `uncovered_accepted`, `uncovered_dropped`, `lease_expired`. Accepted new
// flows get the ct mark of mark.ts.
//
// The packet mark is the filter's scratch register on the VIP packets it examines (the rule
// key, then the lease key, then the bucket), as in the verified recipe; it is not restored.
// nft has no lookup of a constant (`1 @set` is a syntax error on nft 1.0.6), hence the mark.
import { type Address, addressesEqual, maskBytes } from '../core/address.js';
import {
  type ClusterMode,
  type PortRule,
  bucketsMax,
  clusterIpsMax,
  hostsMax,
  portRulesMax,
} from '../core/config.js';
import { networkAffinityPrefix } from '../core/flow.js';
import type { Ownership } from '../core/protocol.js';
import { type MarkRule, ctMarkBase, formatMark, uncoveredRule } from './mark.js';

export interface DataplaneSpec {
  /** The name of both tables (`inet` filter and `netdev` MAC masking); 'nlb' by default. */
  readonly tableName: string;
  readonly hostId: number;
  readonly clusterIps: readonly Address[];
  /** The cluster's port rules, in config order; ownership.rules lines up with them. */
  readonly portRules: readonly PortRule[];
  /** The cluster's jhash seed; always explicit, or the kernel would pick a random one. */
  readonly hashSeed: number;
  readonly ownership: Ownership;
  /** How long the kernel keeps taking new flows without a refresh from the daemon. */
  readonly leaseTimeoutMs: number;
  readonly mode: ClusterMode;
  /** The cluster interface. */
  readonly interface: string;
  /** Unicast mode only: the MAC every host's cluster interface carries, 02:bf:<VIP bytes>. */
  readonly clusterMac?: string;
  /** Unicast mode only: this host's source MAC on the wire, 02:<host id>:<VIP bytes>. */
  readonly maskedMac?: string;
}

/** A spec that cannot be rendered is a bug in the caller (the daemon builds it from a valid config). */
export class DataplaneSpecError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid data plane spec:\n  ${problems.join('\n  ')}`);
    this.name = 'DataplaneSpecError';
  }
}

export const tableNameDefault = 'nlb';
/** The element of the `lease` set; the filter loads it into the packet mark to look it up. */
export const leaseKey = 0xffffffff;
/** Below 10 ms a lease could not survive one scheduling hiccup of the daemon. */
export const leaseTimeoutMsMin = 10;
/** An hour: a longer lease would defeat its purpose (stop taking flows when nlbd is gone). */
export const leaseTimeoutMsMax = 3_600_000;
/** After conntrack (-200), so `ct state` and `ct mark` work; the same as the recipe. */
export const preroutingPriority = -150;

/** Set and counter names, in one place so the renderer and the readers agree. */
export const names = {
  lease: 'lease',
  /** Markers the long-lived nft process adds to see its transactions committed (nft.ts). */
  sync: 'sync',
  /** Rule keys whose traffic is all dropped, established connections included. */
  dropAll: 'drop_all',
  /** Rule keys this host takes new flows for. */
  newFlows: 'new_flows',
  owned: (rule: number) => `rule${rule}_owned`,
  orphan: (rule: number) => `rule${rule}_orphan`,
  accepted: (rule: number) => `rule${rule}_accepted`,
  dropped: (rule: number) => `rule${rule}_dropped`,
  reset: (rule: number) => `rule${rule}_reset`,
  uncoveredAccepted: 'uncovered_accepted',
  uncoveredDropped: 'uncovered_dropped',
  leaseExpired: 'lease_expired',
} as const;

const tableNamePattern = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;
const interfacePattern = /^[A-Za-z0-9_.:@-]{1,15}$/;
const macPattern = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function checkBucketList(
  problems: string[],
  what: string,
  list: readonly number[],
  buckets: number,
): void {
  list.forEach((bucket, i) => {
    if (!Number.isInteger(bucket) || bucket < 0 || bucket >= buckets) {
      problems.push(`${what}[${i}] = ${bucket} is not a bucket 0..${buckets - 1}`);
    } else if (i > 0 && bucket <= (list[i - 1] ?? -1)) {
      problems.push(`${what} is not sorted ascending without duplicates at index ${i}`);
    }
  });
}

/** Every problem with `spec`, or an empty list. */
export function dataplaneSpecProblems(spec: DataplaneSpec): string[] {
  const problems: string[] = [];
  if (!tableNamePattern.test(spec.tableName)) {
    problems.push(`tableName '${spec.tableName}' is not 1-32 letters, digits or '_'`);
  }
  if (!Number.isInteger(spec.hostId) || spec.hostId < 1 || spec.hostId > hostsMax) {
    problems.push(`hostId ${spec.hostId} is not 1..${hostsMax}`);
  }
  if (spec.clusterIps.length < 1 || spec.clusterIps.length > clusterIpsMax) {
    problems.push(`clusterIps has ${spec.clusterIps.length} entries, expected 1..${clusterIpsMax}`);
  }
  spec.clusterIps.forEach((ip, i) => {
    if (spec.clusterIps.findIndex((other) => addressesEqual(other, ip)) !== i) {
      problems.push(`clusterIps[${i}] ${ip.text} is listed twice`);
    }
  });
  if (spec.portRules.length > portRulesMax) {
    problems.push(`portRules has ${spec.portRules.length} entries, at most ${portRulesMax}`);
  }
  spec.portRules.forEach((rule, i) => {
    const vip = rule.vip;
    if (vip !== 'all' && !spec.clusterIps.some((ip) => addressesEqual(ip, vip))) {
      problems.push(`portRules[${i}].vip ${vip.text} is not one of clusterIps`);
    }
    if (
      !Number.isInteger(rule.portStart) ||
      !Number.isInteger(rule.portEnd) ||
      rule.portStart < 0 ||
      rule.portEnd > 65535 ||
      rule.portStart > rule.portEnd
    ) {
      problems.push(`portRules[${i}] ports ${rule.portStart}-${rule.portEnd} are not a range`);
    }
    if (!Number.isInteger(rule.buckets) || rule.buckets < 1 || rule.buckets > bucketsMax) {
      problems.push(`portRules[${i}].buckets ${rule.buckets} is not 1..${bucketsMax}`);
    }
  });
  if (spec.ownership.rules.length !== spec.portRules.length) {
    problems.push(
      `ownership.rules has ${spec.ownership.rules.length} entries but there are ${spec.portRules.length} port rules`,
    );
  }
  spec.ownership.rules.forEach((owner, i) => {
    const buckets = spec.portRules[i]?.buckets ?? 0;
    checkBucketList(problems, `ownership.rules[${i}].owned`, owner.owned, buckets);
    checkBucketList(problems, `ownership.rules[${i}].orphan`, owner.orphan, buckets);
    const notOwned = owner.orphan.filter((b) => !owner.owned.includes(b));
    if (notOwned.length > 0) {
      problems.push(
        `ownership.rules[${i}].orphan has buckets not in owned: ${notOwned.join(', ')}`,
      );
    }
  });
  if (!Number.isInteger(spec.hashSeed) || spec.hashSeed < 0 || spec.hashSeed > 0xffffffff) {
    problems.push(`hashSeed ${spec.hashSeed} is not a u32`);
  }
  if (
    !Number.isInteger(spec.leaseTimeoutMs) ||
    spec.leaseTimeoutMs < leaseTimeoutMsMin ||
    spec.leaseTimeoutMs > leaseTimeoutMsMax
  ) {
    problems.push(
      `leaseTimeoutMs ${spec.leaseTimeoutMs} is not ${leaseTimeoutMsMin}..${leaseTimeoutMsMax}`,
    );
  }
  if (!interfacePattern.test(spec.interface)) {
    problems.push(`interface '${spec.interface}' is not a network interface name`);
  }
  if (spec.mode === 'unicast') {
    for (const key of ['clusterMac', 'maskedMac'] as const) {
      const mac = spec[key];
      if (mac === undefined || !macPattern.test(mac)) {
        problems.push(`${key} '${mac}' is not a lower-case MAC (unicast mode needs it)`);
      }
    }
  } else if (spec.clusterMac !== undefined || spec.maskedMac !== undefined) {
    problems.push(`clusterMac and maskedMac are for unicast mode only (mode is ${spec.mode})`);
  }
  return problems;
}

function assertValid(spec: DataplaneSpec): void {
  const problems = dataplaneSpecProblems(spec);
  if (problems.length > 0) {
    throw new DataplaneSpecError(problems);
  }
}

function hex32(value: number): string {
  return formatMark(value);
}

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
 * The key of a port rule (or of uncovered traffic) in the `drop_all` and `new_flows` sets: the
 * rule field of its ct mark (mark.ts), so the rule index, or 0xff for uncovered traffic.
 */
export function ruleKey(rule: MarkRule): number {
  return rule === 'uncovered' ? uncoveredRule : rule;
}

/**
 * The elements of `drop_all`, ascending: a rule the host disabled, and every rule and the
 * uncovered traffic of a stopped host (not taking part, and cutting established connections).
 */
export function dropAllKeys(ownership: Ownership): number[] {
  const stopped = !ownership.active && ownership.dropEstablished;
  const keys = ownership.rules.flatMap((owner, i) => (stopped || owner.disabled ? [i] : []));
  return stopped ? [...keys, ruleKey('uncovered')] : keys;
}

/**
 * The elements of `new_flows`, ascending: when the host takes part, every rule it has not
 * disabled, and the uncovered traffic if it is the default host. Nothing otherwise.
 */
export function newFlowsKeys(ownership: Ownership): number[] {
  if (!ownership.active) {
    return [];
  }
  const keys = ownership.rules.flatMap((owner, i) => (owner.disabled ? [] : [i]));
  return ownership.isDefault ? [...keys, ruleKey('uncovered')] : keys;
}

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
    `meta mark set ${hex32(key)}`,
    `meta mark @${names.dropAll} ${dropped} drop`,
    // UDP is not kept on its host, so a UDP-only rule has no established connection to keep.
    ...(carriesTcp ? [`${tcpEstablished} ${accepted} accept`] : []),
    `meta mark != @${names.newFlows} ${dropped} drop`,
    `meta mark set ${hex32(leaseKey)}`,
    `meta mark != @${names.lease} counter name ${names.leaseExpired} ${dropped} drop`,
  ];
}

function ruleChain(spec: DataplaneSpec, index: number): string[] {
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
  for (const family of ruleFamilies(rule, spec.clusterIps)) {
    lines.push(
      `meta mark set jhash ${hashKey(rule, family)} mod ${rule.buckets} seed ${hex32(spec.hashSeed)}`,
    );
  }
  if (carriesTcp) {
    lines.push(
      `${notSyn} meta mark @${names.orphan(index)} counter name ${names.reset(index)} reject with tcp reset`,
    );
    lines.push(`${notSyn} ${dropped} drop`);
  }
  lines.push(
    `meta mark @${names.owned(index)} ct mark set meta mark | ${hex32(ctMarkBase(index))} ${accepted} accept`,
  );
  lines.push(`${dropped} drop`);
  return lines;
}

function uncoveredChain(): string[] {
  const accepted = `counter name ${names.uncoveredAccepted}`;
  const dropped = `counter name ${names.uncoveredDropped}`;
  return [
    '# VIP traffic no port rule covers: the default host takes it',
    // Established TCP stays where it is, so connections survive the default host changing.
    ...stateChecks(ruleKey('uncovered'), true, accepted, dropped),
    `${notSyn} ${dropped} drop`,
    `ct mark set ${hex32(ctMarkBase('uncovered'))} ${accepted} accept`,
  ];
}

function vipChain(spec: DataplaneSpec, ipIndex: number): string[] {
  const ip = spec.clusterIps[ipIndex]!;
  const lines = [`# cluster IP ${ip.text}`];
  if (spec.mode !== 'unicast') {
    // Multicast and IGMP modes: the frame came to a group MAC; without this the stack never
    // delivers the (unicast-addressed) packet and TCP silently fails (DESIGN.md §4).
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
  for (const i of [...specific, ...general]) {
    lines.push(`${portMatch(spec.portRules[i]!)} goto rule${i}`);
  }
  lines.push('goto uncovered');
  return lines;
}

function setBlock(name: string, flags: string | undefined, elements: readonly string[]): string[] {
  const lines = [`set ${name} {`, '\ttype mark'];
  if (flags !== undefined) {
    lines.push(`\tflags ${flags}`);
  }
  if (elements.length > 0) {
    lines.push(`\telements = { ${elements.join(', ')} }`);
  }
  lines.push('}');
  return lines;
}

function chainBlock(name: string, body: string[]): string[] {
  return [`chain ${name} {`, ...body.map((line) => `\t${line}`), '}'];
}

function counterNames(spec: DataplaneSpec): string[] {
  const list: string[] = [names.leaseExpired];
  spec.portRules.forEach((_, i) => {
    list.push(names.accepted(i), names.dropped(i), names.reset(i));
  });
  list.push(names.uncoveredAccepted, names.uncoveredDropped);
  return list;
}

function leaseElement(spec: DataplaneSpec, timeoutMs = spec.leaseTimeoutMs): string {
  return `${hex32(leaseKey)} timeout ${timeoutMs}ms`;
}

function inetTable(
  spec: DataplaneSpec,
  withSets: boolean,
  leaseMs = spec.leaseTimeoutMs,
): string[] {
  const stateElements = (keys: (ownership: Ownership) => number[]): string[] =>
    keys(spec.ownership).map(hex32);
  const body: string[] = [];
  for (const name of counterNames(spec)) {
    body.push(`counter ${name} {}`);
  }
  body.push('');
  body.push(
    ...setBlock(
      names.lease,
      'timeout',
      withSets && leaseMs > 0 ? [leaseElement(spec, leaseMs)] : [],
    ),
  );
  body.push(...setBlock(names.sync, 'timeout', []));
  body.push(...setBlock(names.dropAll, undefined, withSets ? stateElements(dropAllKeys) : []));
  body.push(...setBlock(names.newFlows, undefined, withSets ? stateElements(newFlowsKeys) : []));
  spec.ownership.rules.forEach((owner, i) => {
    const owned = withSets ? owner.owned.map(String) : [];
    const orphan = withSets ? owner.orphan.map(String) : [];
    body.push(...setBlock(names.owned(i), undefined, owned));
    body.push(...setBlock(names.orphan(i), undefined, orphan));
  });
  body.push('');
  const dispatch = [`type filter hook prerouting priority ${preroutingPriority}; policy accept;`];
  for (const family of [4, 6] as const) {
    const entries = spec.clusterIps
      .map((ip, i) => ({ ip, i }))
      .filter(({ ip }) => ip.family === family)
      .map(({ ip, i }) => `${ip.text} : goto vip${i}`);
    if (entries.length > 0) {
      dispatch.push(`${family === 4 ? 'ip' : 'ip6'} daddr vmap { ${entries.join(', ')} }`);
    }
  }
  body.push(...chainBlock('prerouting', dispatch));
  spec.clusterIps.forEach((_, i) => body.push(...chainBlock(`vip${i}`, vipChain(spec, i))));
  spec.portRules.forEach((_, i) => body.push(...chainBlock(`rule${i}`, ruleChain(spec, i))));
  body.push(...chainBlock('uncovered', uncoveredChain()));
  const family = `inet ${spec.tableName}`;
  return [
    `add table ${family}`,
    `delete table ${family}`,
    `table ${family} {`,
    ...body.map((line) => (line === '' ? '' : `\t${line}`)),
    '}',
  ];
}

function netdevTable(spec: DataplaneSpec): string[] {
  const family = `netdev ${spec.tableName}`;
  const replace = [`add table ${family}`, `delete table ${family}`];
  if (spec.mode !== 'unicast') {
    // Multicast and IGMP modes keep each host's own MAC, so there is nothing to mask. Their
    // ARP rewrite (arp saddr ether -> the cluster's group MAC) is not rendered yet.
    return [`# ${spec.mode} mode: no source MAC masking`, ...replace];
  }
  // The egress hook (kernel 5.16+, nft 1.0.1+) sees every frame the host sends on the cluster
  // interface, so a learning switch only ever learns the masked MACs and keeps flooding the
  // cluster MAC to every host (DESIGN.md §4).
  const body = [
    `type filter hook egress device "${spec.interface}" priority 0; policy accept;`,
    `ether saddr ${spec.clusterMac!} ether saddr set ${spec.maskedMac!}`,
  ];
  return [
    "# unicast mode: frames leave with this host's masked source MAC",
    ...replace,
    `table ${family} {`,
    ...chainBlock('egress', body).map((line) => `\t${line}`),
    '}',
  ];
}

export interface RenderOptions {
  /**
   * The lease element's timeout instead of the spec's `leaseTimeoutMs`; 0 leaves the lease set
   * empty (run out). A table restored behind nlbd's back gets the lease it had left, so the
   * lease still runs out when it would have: only a heartbeat about to be sent extends it.
   */
  readonly leaseMs?: number;
}

/**
 * The host's whole nftables configuration as one `nft -f` script. Applied in one transaction it
 * replaces both tables atomically (`add table` makes the `delete` safe when the table is absent),
 * refreshes the lease, and resets the counters.
 */
export function renderTable(spec: DataplaneSpec, options: RenderOptions = {}): string {
  assertValid(spec);
  const leaseMs = options.leaseMs ?? spec.leaseTimeoutMs;
  if (
    !Number.isInteger(leaseMs) ||
    (leaseMs !== 0 && (leaseMs < leaseTimeoutMsMin || leaseMs > spec.leaseTimeoutMs))
  ) {
    throw new DataplaneSpecError([
      `leaseMs ${leaseMs} is not 0 or ${leaseTimeoutMsMin}..${spec.leaseTimeoutMs}`,
    ]);
  }
  return [
    `# nlb data plane of host ${spec.hostId}, rendered by nlbd: do not edit, the whole table is replaced on every change.`,
    ...inetTable(spec, true, leaseMs),
    ...netdevTable(spec),
    '',
  ].join('\n');
}

/**
 * The one-line transaction that refreshes the lease. A plain `add element` does not refresh an
 * existing element's timeout on this kernel; add-delete-add does, whether or not it exists.
 */
export function renderLeaseRefresh(spec: DataplaneSpec): string {
  assertValid(spec);
  const set = `inet ${spec.tableName} ${names.lease}`;
  const element = leaseElement(spec);
  return `add element ${set} { ${element} }; delete element ${set} { ${hex32(leaseKey)} }; add element ${set} { ${element} }`;
}

function structure(spec: DataplaneSpec): string {
  return [...inetTable(spec, false), ...netdevTable(spec)].join('\n');
}

/**
 * The one-line transaction turning the sets of `applied` into those of `next`, ending with the
 * lease refresh; undefined when the configuration differs (cluster IPs, port rules, seed, mode,
 * interface, MACs, table name), so only a whole-table apply can get there. Every ownership
 * change is set elements only (the chains do not depend on it), so it always comes here: a few
 * set changes cost ~2 ms on the long-lived nft process against ~17-45 ms for a whole table
 * (DESIGN.md §4). The transaction is atomic, so the order of its commands does not matter.
 */
export function renderOwnershipUpdate(
  applied: DataplaneSpec,
  next: DataplaneSpec,
): string | undefined {
  assertValid(applied);
  assertValid(next);
  if (structure({ ...applied, leaseTimeoutMs: next.leaseTimeoutMs }) !== structure(next)) {
    return undefined;
  }
  const commands: string[] = [];
  const replaceSet = (
    name: string,
    before: readonly number[],
    after: readonly number[],
    format: (key: number) => string,
  ): void => {
    if (before.length === after.length && before.every((b, i) => b === after[i])) {
      return;
    }
    const set = `inet ${next.tableName} ${name}`;
    commands.push(`flush set ${set}`);
    if (after.length > 0) {
      commands.push(`add element ${set} { ${after.map(format).join(', ')} }`);
    }
  };
  replaceSet(names.dropAll, dropAllKeys(applied.ownership), dropAllKeys(next.ownership), hex32);
  replaceSet(names.newFlows, newFlowsKeys(applied.ownership), newFlowsKeys(next.ownership), hex32);
  next.ownership.rules.forEach((owner, i) => {
    const before = applied.ownership.rules[i]!;
    replaceSet(names.owned(i), before.owned, owner.owned, String);
    replaceSet(names.orphan(i), before.orphan, owner.orphan, String);
  });
  commands.push(renderLeaseRefresh(next));
  return commands.join('; ');
}

/**
 * The sets whose elements follow the ownership, with the elements `spec` gives them (sorted):
 * `drop_all`, `new_flows`, `rule<i>_owned`, `rule<i>_orphan`. The kernel must hold exactly
 * these; `lease` and `sync` hold elements with timeouts and are left out.
 */
export function ownershipSets(spec: DataplaneSpec): Map<string, number[]> {
  const sets = new Map<string, number[]>([
    [names.dropAll, dropAllKeys(spec.ownership)],
    [names.newFlows, newFlowsKeys(spec.ownership)],
  ]);
  spec.ownership.rules.forEach((owner, i) => {
    sets.set(names.owned(i), [...owner.owned]);
    sets.set(names.orphan(i), [...owner.orphan]);
  });
  return sets;
}

/** Removes both tables (stop, or cleanup after a crashed predecessor); safe when absent. */
export function renderRemoval(tableName: string): string {
  if (!tableNamePattern.test(tableName)) {
    throw new DataplaneSpecError([`tableName '${tableName}' is not 1-32 letters, digits or '_'`]);
  }
  return [
    `add table inet ${tableName}`,
    `delete table inet ${tableName}`,
    `add table netdev ${tableName}`,
    `delete table netdev ${tableName}`,
    '',
  ].join('\n');
}
