// `nlb enable|disable|drain|queryport` name port rules the way nlb.exe does, by the traffic they
// carry: `<vip>:<port>`, `<vip>:all`, `all:<port>` or `all:all` (IPv6 as `[addr]:port`). This
// module parses such a spec and resolves it to rule indexes against the running config. It is
// pure, so the CLI checks the syntax before it asks a daemon (bad syntax: exit 2) and the
// daemon resolves the rules against the config it actually runs (no rule: exit 4).
import { type Address, addressesEqual, parseAddress } from '../core/address.js';
import type { ClusterConfig, PortRule } from '../core/config.js';
import { matchPortRule } from '../core/flow.js';

export interface RuleSpec {
  readonly vip: Address | 'all';
  readonly port: number | 'all';
}

export const ruleSpecExamples =
  '198.18.0.100:80, 198.18.0.100:all, all:443, all:all, [2001:db8::1]:80';

/** Parses `vip:port`; the error names the part that is wrong. */
export function parseRuleSpec(text: string): RuleSpec | { readonly error: string } {
  const trimmed = text.trim();
  let vipText: string;
  let portText: string;
  if (trimmed.startsWith('[')) {
    const close = trimmed.indexOf(']');
    if (close < 0 || trimmed[close + 1] !== ':') {
      return { error: `'${text}' is not [ipv6]:port` };
    }
    vipText = trimmed.slice(1, close);
    portText = trimmed.slice(close + 2);
  } else {
    const colon = trimmed.lastIndexOf(':');
    if (colon < 0 || trimmed.indexOf(':') !== colon) {
      return { error: `'${text}' is not vip:port (write an IPv6 cluster IP as [addr]:port)` };
    }
    vipText = trimmed.slice(0, colon);
    portText = trimmed.slice(colon + 1);
  }
  let vip: Address | 'all';
  if (vipText.toLowerCase() === 'all') {
    vip = 'all';
  } else {
    const address = parseAddress(vipText);
    if (address === undefined) {
      return { error: `'${vipText}' in '${text}' is neither a cluster IP nor 'all'` };
    }
    vip = address;
  }
  let port: number | 'all';
  if (portText.toLowerCase() === 'all') {
    port = 'all';
  } else if (/^\d{1,5}$/.test(portText) && Number(portText) <= 65535) {
    port = Number(portText);
  } else {
    return {
      error: `port '${portText}' in '${text}' is neither a number from 0 to 65535 nor 'all'`,
    };
  }
  return { vip, port };
}

export function formatRuleSpec(spec: RuleSpec): string {
  const vip =
    spec.vip === 'all' ? 'all' : spec.vip.family === 6 ? `[${spec.vip.text}]` : spec.vip.text;
  return `${vip}:${spec.port}`;
}

function covers(rule: PortRule, port: number): boolean {
  return port >= rule.portStart && port <= rule.portEnd;
}

export type RuleResolution =
  | { readonly ok: true; readonly rules: readonly number[] }
  | { readonly ok: false; readonly message: string };

/**
 * The port rules a spec names, sorted:
 *   `vip:port`  the rule that takes TCP traffic to that port of that cluster IP, and the one that
 *               takes its UDP traffic (usually the same rule; `matchPortRule`, as the filter does);
 *   `all:port`  every rule whose port range covers the port, whatever its cluster IP;
 *   `vip:all`   the rules of that cluster IP; when it has none of its own, the rules of `all`,
 *               which are the ones carrying its traffic (they carry other cluster IPs' too);
 *   `all:all`   every rule.
 */
export function resolveRuleSpec(cluster: ClusterConfig, spec: RuleSpec): RuleResolution {
  const all = cluster.portRules.map((_, i) => i);
  const what = formatRuleSpec(spec);
  if (spec.vip !== 'all') {
    const vip = spec.vip;
    if (!cluster.clusterIps.some((ip) => addressesEqual(ip, vip))) {
      return {
        ok: false,
        message: `${vip.text} is not a cluster IP of cluster '${cluster.name}' (cluster IPs: ${cluster.clusterIps.map((ip) => ip.text).join(', ')})`,
      };
    }
  }
  let rules: number[];
  if (spec.vip === 'all' && spec.port === 'all') {
    rules = all;
  } else if (spec.vip === 'all') {
    const port = spec.port as number;
    rules = all.filter((i) => covers(cluster.portRules[i]!, port));
  } else if (spec.port === 'all') {
    const vip = spec.vip;
    const own = all.filter((i) => {
      const ruleVip = cluster.portRules[i]!.vip;
      return ruleVip !== 'all' && addressesEqual(ruleVip, vip);
    });
    rules = own.length > 0 ? own : all.filter((i) => cluster.portRules[i]!.vip === 'all');
  } else {
    const found = new Set<number>();
    for (const protocol of ['tcp', 'udp'] as const) {
      const rule = matchPortRule(cluster, spec.vip, spec.port, protocol);
      if (rule !== undefined) found.add(rule);
    }
    rules = [...found].sort((a, b) => a - b);
  }
  if (rules.length === 0) {
    return {
      ok: false,
      message: `no port rule covers ${what}: that traffic goes to the default host`,
    };
  }
  return { ok: true, rules };
}
