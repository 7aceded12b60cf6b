// The whole nftables configuration of one host, rendered as deterministic text from a plain value
// (the knftables way): the daemon builds a `DataplaneSpec`, `renderTable` turns it into one `nft
// -f` script that replaces the host's tables atomically, and unit tests compare that text exactly.
// docs/data-plane.md#the-tables explains the layout; every construct below was run on kernel 6.18
// with nft 1.0.6.
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
//   route<i>, route_uncovered, mss_clamp
//               routed mode only (render-routed.ts): the vip chains go to route<i> first, which
//               forwards what another host serves over the overlay and hands the rest to rule<i>;
//               the prerouting chain also drops VXLAN packets that no peer sent.
//
// The chains depend on the configuration only (cluster IPs, port rules, seed, mode); everything
// the host machine decides (Ownership) lives in set elements: `rule<i>_owned`, `rule<i>_orphan`,
// and two sets keyed by the rule field of the ct mark (the rule index, or 0xff for uncovered
// traffic): `drop_all` and `new_flows`. So every ownership change, a drainstop, a stop or a new
// default host included, is one quick set transaction on the long-lived nft process (~2 ms),
// and a whole-table apply (~17-45 ms) happens only when the configuration changes.
//
// Names the daemon reads back (table-names.ts): sets `lease`, `sync`, `drop_all`, `new_flows`,
// `rule<i>_owned`, `rule<i>_orphan`; counters `rule<i>_accepted`, `rule<i>_dropped`,
// `rule<i>_reset`, `uncovered_accepted`, `uncovered_dropped`, `lease_expired`. Accepted new
// flows get the ct mark of mark.ts.
//
// The packet mark is the filter's scratch register on the VIP packets it examines (the rule
// key, then the lease key, then the bucket), as in the verified recipe; it is not restored.
// nft has no lookup of a constant (`1 @set` is a syntax error on nft 1.0.6), hence the mark.
//
// The parts: the spec and its checks (dataplane-spec.ts), the names and the state sets' keys
// (table-names.ts), the chains (render-chains.ts); this module assembles the tables and the
// one-line transactions.
import {
  type DataplaneSpec,
  DataplaneSpecError,
  assertValidSpec,
  leaseTimeoutMsMin,
  tableNameProblem,
} from './dataplane-spec.js';
import { formatMark } from './mark.js';
import {
  formatMapElement,
  mssClampChain,
  overlayGuard,
  routeChain,
  routeUncoveredChain,
  routedCounterNames,
  routedMapBlocks,
  routedMaps,
  routedNames,
} from './render-routed.js';
import {
  hashStatements,
  leaseRefreshChain,
  ndRewriteChain,
  ruleChain,
  uncoveredChain,
  vipChain,
} from './render-chains.js';
import { dropAllKeys, leaseKey, names, newFlowsKeys } from './table-names.js';
import type { Ownership } from '../core/protocol.js';

// The daemon, the CLI and the other adapters import the spec and the names from here.
export * from './dataplane-spec.js';
export * from './table-names.js';

/** After conntrack (-200), so `ct state` and `ct mark` work; the same as the recipe. */
export const preroutingPriority = -150;

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
  list.push(names.uncoveredAccepted, names.uncoveredDropped, ...routedCounterNames(spec));
  return list;
}

function leaseElement(spec: DataplaneSpec, timeoutMs = spec.leaseTimeoutMs): string {
  return `${formatMark(leaseKey)} timeout ${timeoutMs}ms`;
}

function inetTable(
  spec: DataplaneSpec,
  withSets: boolean,
  leaseMs = spec.leaseTimeoutMs,
): string[] {
  const stateElements = (keys: (ownership: Ownership) => number[]): string[] =>
    keys(spec.ownership).map(formatMark);
  const body: string[] = [];
  for (const name of counterNames(spec)) {
    body.push(`counter ${name} {}`);
  }
  body.push('');
  body.push(
    ...setBlock(
      names.lease,
      // nft marks a set that the packet path updates as dynamic; so does the listing.
      'dynamic,timeout',
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
  body.push(...routedMapBlocks(spec, withSets));
  body.push('');
  const dispatch = [
    `type filter hook prerouting priority ${preroutingPriority}; policy accept;`,
    ...overlayGuard(spec),
  ];
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
  if (spec.mode === 'routed') {
    spec.portRules.forEach((rule, i) =>
      body.push(...chainBlock(routedNames.chain(i), routeChain(rule, i, hashStatements(spec, i)))),
    );
    body.push(...chainBlock(routedNames.uncoveredChain, routeUncoveredChain()));
    body.push(...chainBlock(routedNames.mssClamp, mssClampChain(spec, spec.routed!.mssClamp)));
  }
  body.push(...chainBlock(names.leaseRefresh, leaseRefreshChain(spec)));
  if (
    (spec.mode === 'multicast' || spec.mode === 'igmp') &&
    spec.clusterIps.some((ip) => ip.family === 6)
  ) {
    body.push(...chainBlock(names.ndRewrite, ndRewriteChain(spec)));
  }
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
  // cluster MAC to every host (docs/data-plane.md#unicast-mode-and-the-macs).
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

/**
 * Multicast and IGMP modes: the host keeps its own MAC, so the ARP replies (and gratuitous ARPs)
 * it sends for a cluster IP would name that MAC, and a client would send the cluster's frames
 * to this host alone. The `arp` output hook rewrites the sender MAC inside every ARP whose
 * sender IP is an IPv4 cluster IP to the cluster's group MAC; the frame itself still leaves
 * from the host's own MAC (a group MAC is never a valid source). Unicast mode, and a cluster
 * with IPv6 cluster IPs only, have no such table (its replacement removes a left-over one).
 */
function arpTable(spec: DataplaneSpec): string[] {
  const family = `arp ${spec.tableName}`;
  const replace = [`add table ${family}`, `delete table ${family}`];
  const ips = spec.clusterIps.filter((ip) => ip.family === 4).map((ip) => ip.text);
  if ((spec.mode !== 'multicast' && spec.mode !== 'igmp') || ips.length === 0) {
    return replace;
  }
  const senders = ips.length === 1 ? ips[0]! : `{ ${ips.join(', ')} }`;
  const body = [
    `type filter hook output priority 0; policy accept;`,
    `arp saddr ip ${senders} arp saddr ether set ${spec.groupMac!}`,
  ];
  return [
    `# ${spec.mode} mode: ARP for the cluster IPs names the group MAC`,
    ...replace,
    `table ${family} {`,
    ...chainBlock('output', body).map((line) => `\t${line}`),
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
  assertValidSpec(spec);
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
    ...arpTable(spec),
    '',
  ].join('\n');
}

/**
 * The one-line transaction that refreshes the lease. The heartbeats refresh it in the kernel
 * (`leaseRefreshChain`), so nlbd itself does not send it; the tests use it. A plain `add element`
 * does not refresh an existing element's timeout on every kernel; add-delete-add does, whether
 * or not it exists.
 */
export function renderLeaseRefresh(spec: DataplaneSpec): string {
  assertValidSpec(spec);
  const set = `inet ${spec.tableName} ${names.lease}`;
  const element = leaseElement(spec);
  return `add element ${set} { ${element} }; delete element ${set} { ${formatMark(leaseKey)} }; add element ${set} { ${element} }`;
}

function structure(spec: DataplaneSpec): string {
  return [...inetTable(spec, false), ...netdevTable(spec), ...arpTable(spec)].join('\n');
}

/**
 * The one-line transaction turning the sets of `applied` into those of `next` ('' when they are
 * the same); undefined when the configuration differs (cluster IPs, port rules, seed, mode,
 * interface, MACs, table name, the heartbeats' group, port or lease length: the lease refresh
 * chain names them), so only a whole-table apply can get there. Every ownership
 * change is set elements only (the chains do not depend on it), so it always comes here: a few
 * set changes cost ~2 ms on the long-lived nft process against ~17-45 ms for a whole table
 * (docs/data-plane.md#programming-ownership). The transaction is atomic, so the order of its
 * commands does not matter. It leaves the lease alone: the heartbeat that announces the change
 * refreshes it as it leaves, and every command less is CPU the nft process does not spend
 * between the decision and the kernel (the lease's add-delete-add was ~0.3 ms of ~1 ms here).
 */
export function renderOwnershipUpdate(
  applied: DataplaneSpec,
  next: DataplaneSpec,
): string | undefined {
  assertValidSpec(applied);
  assertValidSpec(next);
  if (structure(applied) !== structure(next)) {
    return undefined;
  }
  const commands: string[] = [];
  const replaceSet = (
    name: string,
    before: readonly number[],
    after: readonly number[],
    format: (key: number) => string,
    kind: 'set' | 'map' = 'set',
  ): void => {
    if (before.length === after.length && before.every((b, i) => b === after[i])) {
      return;
    }
    const set = `inet ${next.tableName} ${name}`;
    commands.push(`flush ${kind} ${set}`);
    if (after.length > 0) {
      commands.push(`add element ${set} { ${after.map(format).join(', ')} }`);
    }
  };
  replaceSet(
    names.dropAll,
    dropAllKeys(applied.ownership),
    dropAllKeys(next.ownership),
    formatMark,
  );
  replaceSet(
    names.newFlows,
    newFlowsKeys(applied.ownership),
    newFlowsKeys(next.ownership),
    formatMark,
  );
  next.ownership.rules.forEach((owner, i) => {
    const before = applied.ownership.rules[i]!;
    replaceSet(names.owned(i), before.owned, owner.owned, String);
    replaceSet(names.orphan(i), before.orphan, owner.orphan, String);
  });
  const beforeMaps = routedMaps(applied);
  for (const [name, after] of routedMaps(next)) {
    replaceSet(name, beforeMaps.get(name) ?? [], after, formatMapElement, 'map');
  }
  return commands.join('; ');
}

/** Removes every table (stop, or cleanup after a crashed predecessor); safe when absent. */
export function renderRemoval(tableName: string): string {
  const problem = tableNameProblem(tableName);
  if (problem !== undefined) {
    throw new DataplaneSpecError([problem]);
  }
  return [
    `add table inet ${tableName}`,
    `delete table inet ${tableName}`,
    `add table netdev ${tableName}`,
    `delete table netdev ${tableName}`,
    `add table arp ${tableName}`,
    `delete table arp ${tableName}`,
    '',
  ].join('\n');
}
