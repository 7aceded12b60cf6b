// The configuration model: one YAML document per host with a `cluster` part (identical on every
// host) and a `host` part. The schema is the single source of truth for defaults and limits;
// `parseConfig` turns untrusted text into a validated, normalised `Config` or a list of errors,
// each naming the path, the value found and what is expected. Nothing is half-accepted.
import { createHash } from 'node:crypto';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import {
  type Address,
  type Prefix,
  addressSyntaxProblem,
  addressesEqual,
  maskBytes,
  parseAddress,
  parsePrefix,
  unicastProblem,
} from './address.js';
import { datagramBytesMax, heartbeatBytes, heartbeatRuleHeaderBytes } from './heartbeat-size.js';

/** NLB allows 32 hosts; host ids double as host priorities, 1 is the best. */
export const hostsMax = 32;
/** NLB allows 32 port rules per cluster. */
export const portRulesMax = 32;
/** Enough for several virtual clusters; each costs one set lookup in the filter. */
export const clusterIpsMax = 16;
/** NLB uses 60 buckets; 1024 bounds the heartbeat bitmaps (128 B per rule). */
export const bucketsMax = 1024;
export const bucketsDefault = 60;
/** 200 ms × 5 detects a failure in 1 s, five times faster than NLB's 1000 ms × 5 default. */
export const heartbeatPeriodMsDefault = 200;
export const heartbeatToleranceDefault = 5;
/** A fixed, documented default so that flows hash the same on every host from the first start. */
export const hashSeedDefault = 0x4e4c4221; // "NLB!"
export const heartbeatPortDefault = 2505;
/** Administratively scoped (RFC 2365); heartbeats never leave the cluster segment (TTL 1). */
export const heartbeatGroupDefault = '239.255.78.76';
/** The load weight "equal" stands for; NLB's default weight is 50 too. */
export const equalLoadWeight = 50;
/**
 * The shortest prefix a dedicated IP may have. The cluster segment is one broadcast domain: a
 * /8 is already larger than any real one, and /0../7 are typos (a /0 would make every address
 * on-link). The dedicated IP is IPv4 (heartbeats are IPv4 multicast), so there is no IPv6 rule.
 */
export const dedicatedPrefixLengthMin = 8;

export type ClusterMode = 'unicast' | 'multicast' | 'igmp';
export type Protocol = 'tcp' | 'udp' | 'both';
export type FilteringMode = 'multiple' | 'single' | 'disabled';
export type Affinity = 'none' | 'single' | 'network';
export type HostState = 'started' | 'stopped' | 'suspended';

export interface PortRule {
  /** The cluster IP the rule covers, or 'all' for every cluster IP. */
  readonly vip: Address | 'all';
  readonly portStart: number;
  readonly portEnd: number;
  readonly protocol: Protocol;
  readonly mode: FilteringMode;
  readonly affinity: Affinity;
  readonly buckets: number;
}

export interface ClusterConfig {
  readonly name: string;
  readonly clusterIps: readonly Address[];
  readonly mode: ClusterMode;
  readonly interface: string;
  readonly heartbeat: {
    readonly periodMs: number;
    readonly tolerance: number;
    readonly port: number;
    readonly group: Address;
  };
  readonly buckets: number;
  readonly hashSeed: number;
  readonly keyFile: string;
  readonly portRules: readonly PortRule[];
}

export interface HostRuleSettings {
  /** 0..100; 'equal' is normalised to `equalLoadWeight`. 0 takes no new flows. */
  readonly loadWeight: number;
  /** 1..32, lowest wins; used by `single` rules. */
  readonly handlingPriority: number;
}

export interface HostConfig {
  readonly id: number;
  readonly dedicatedIp: Prefix;
  readonly initialState: HostState;
  /** One entry per cluster port rule, in the same order. */
  readonly rules: readonly HostRuleSettings[];
}

export interface Config {
  readonly cluster: ClusterConfig;
  readonly host: HostConfig;
}

export interface ConfigError {
  /** Where in the document, e.g. `cluster.portRules[1].ports`. */
  readonly path: string;
  /** The offending value as found, or undefined when it was missing. */
  readonly value: unknown;
  readonly message: string;
}

export type ConfigResult = { ok: true; config: Config } | { ok: false; errors: ConfigError[] };

const u32 = z.union([
  z.number().int().min(0).max(0xffffffff),
  z
    .string()
    .regex(/^(0x[0-9a-fA-F]{1,8}|\d{1,10})$/, 'expected a u32 as a number or 0x-prefixed hex')
    .transform((s) => Number(s))
    .refine((n) => n <= 0xffffffff, 'expected a u32 (at most 0xffffffff)'),
]);

const address = z.string().transform((s, ctx) => {
  const parsed = parseAddress(s);
  if (parsed === undefined) {
    ctx.addIssue({ code: 'custom', message: addressSyntaxProblem(s) ?? 'expected an address' });
    return z.NEVER;
  }
  return parsed;
});

/** What a cluster IP or a dedicated IP must be, after saying what it is not. */
const unicastExpected = "expected a unicast address clients can reach on the cluster's LAN";

/**
 * The local network control block (RFC 5771): 224.0.0.1 is every host of the segment, the rest
 * belong to routing protocols (OSPF, VRRP...). Heartbeats there would reach hosts and routers
 * that have nothing to do with the cluster.
 */
const localControlBlock = parseAddress('224.0.0.0')!;

/** True when the first `length` bits of `a` and `b` are equal. */
function sameBits(a: Uint8Array, b: Uint8Array, length: number): boolean {
  const ma = maskBytes(a, length);
  const mb = maskBytes(b, length);
  return ma.length === mb.length && ma.every((byte, i) => byte === mb[i]);
}

const portRange = z
  .union([z.number().int(), z.string()])
  .transform((value, ctx): { portStart: number; portEnd: number } => {
    const text = String(value).trim();
    if (text === 'all' || text === '*') {
      return { portStart: 0, portEnd: 65535 };
    }
    const match = /^(\d{1,5})(?:\s*-\s*(\d{1,5}))?$/.exec(text);
    const portStart = match ? Number(match[1]) : NaN;
    const portEnd = match ? Number(match[2] ?? match[1]) : NaN;
    if (!(portStart <= 65535 && portEnd <= 65535 && portStart <= portEnd)) {
      ctx.addIssue({
        code: 'custom',
        message: "expected a port (0-65535), a range 'low-high' with low <= high, or 'all'",
      });
      return z.NEVER;
    }
    return { portStart, portEnd };
  });

const portRuleSchema = z
  .object({
    vip: z.union([z.literal('all'), address]).default('all'),
    ports: portRange.prefault('all'),
    protocol: z.enum(['tcp', 'udp', 'both']).default('both'),
    mode: z.enum(['multiple', 'single', 'disabled']).default('multiple'),
    affinity: z.enum(['none', 'single', 'network']).default('single'),
    buckets: z.number().int().min(1).max(bucketsMax).optional(),
  })
  .strict();

const loadWeight = z.union([z.literal('equal'), z.number().int().min(0).max(100)]);
const handlingPriority = z.number().int().min(1).max(hostsMax);

const schema = z
  .object({
    cluster: z
      .object({
        name: z
          .string()
          .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'expected 1-63 letters, digits, _ . -'),
        clusterIps: z.array(address).min(1).max(clusterIpsMax),
        mode: z.enum(['unicast', 'multicast', 'igmp']).default('unicast'),
        interface: z
          .string()
          .regex(/^[A-Za-z0-9_.:@-]{1,15}$/, 'expected a network interface name'),
        heartbeat: z
          .object({
            periodMs: z.number().int().min(20).max(10000).default(heartbeatPeriodMsDefault),
            tolerance: z.number().int().min(2).max(100).default(heartbeatToleranceDefault),
            port: z.number().int().min(1).max(65535).default(heartbeatPortDefault),
            group: address.default(parseAddress(heartbeatGroupDefault) as Address),
          })
          .strict()
          .prefault({}),
        buckets: z.number().int().min(1).max(bucketsMax).default(bucketsDefault),
        hashSeed: u32.default(hashSeedDefault),
        keyFile: z.string().min(1),
        portRules: z.array(portRuleSchema).max(portRulesMax).optional(),
      })
      .strict(),
    host: z
      .object({
        id: z.number().int().min(1).max(hostsMax),
        dedicatedIp: z.string(),
        initialState: z.enum(['started', 'stopped', 'suspended']).default('started'),
        loadWeight: loadWeight.default('equal'),
        handlingPriority: handlingPriority.optional(),
        rules: z
          .array(
            z
              .object({
                loadWeight: loadWeight.optional(),
                handlingPriority: handlingPriority.optional(),
              })
              .strict(),
          )
          .max(portRulesMax)
          .default([]),
      })
      .strict(),
  })
  .strict();

type RawConfig = z.output<typeof schema>;

/** NLB's rule when none is configured: every port, both protocols, balanced, client-IP affinity. */
function defaultPortRule(buckets: number): PortRule {
  return {
    vip: 'all',
    portStart: 0,
    portEnd: 65535,
    protocol: 'both',
    mode: 'multiple',
    affinity: 'single',
    buckets,
  };
}

function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((part, i) =>
      typeof part === 'number' ? `[${part}]` : i === 0 ? String(part) : `.${String(part)}`,
    )
    .join('');
}

function valueAt(document: unknown, path: readonly PropertyKey[]): unknown {
  let node: unknown = document;
  for (const part of path) {
    if (node === null || typeof node !== 'object') {
      return undefined;
    }
    node = (node as Record<PropertyKey, unknown>)[part];
  }
  return node;
}

function protocolsOverlap(a: Protocol, b: Protocol): boolean {
  return a === 'both' || b === 'both' || a === b;
}

/**
 * What is wrong with the dedicated IP, or undefined: it must parse, be a LAN unicast address,
 * be IPv4 (heartbeats are IPv4 multicast sent from it), have a sane prefix, be neither the
 * network nor the broadcast address of that prefix, and not be a cluster IP.
 */
function dedicatedIpProblem(
  text: string,
  prefix: Prefix | undefined,
  clusterIps: readonly Address[],
): string | undefined {
  const example = 'e.g. 198.18.0.11/24';
  if (prefix === undefined) {
    const slash = text.indexOf('/');
    const addressText = slash < 0 ? text : text.slice(0, slash);
    const syntax = addressSyntaxProblem(addressText);
    return syntax !== undefined
      ? `'${addressText}': ${syntax}; expected the host's IPv4 address with an optional /prefix, ${example}`
      : `'${text.slice(slash + 1)}' is not a prefix length; expected the host's IPv4 address with an optional /prefix (8..32), ${example}`;
  }
  const { address, length } = prefix;
  const problem = unicastProblem(address);
  if (problem !== undefined) {
    return `${address.text} is ${problem}; expected this host's own unicast address on the cluster's LAN, ${example}`;
  }
  if (address.family !== 4) {
    return `heartbeats travel over IPv4 multicast: expected an IPv4 dedicated IP (cluster IPs may be IPv6), ${example}`;
  }
  if (length < dedicatedPrefixLengthMin) {
    return `a /${length} prefix is no LAN; expected the prefix of the cluster segment, /${dedicatedPrefixLengthMin}../32, ${example}`;
  }
  // /31 (RFC 3021) and /32 have no network or broadcast address: every address is a host's.
  if (length < 31) {
    const network = maskBytes(address.bytes, length);
    const mask = maskBytes(Uint8Array.from([255, 255, 255, 255]), length);
    const broadcast = network.map((byte, i) => byte | (~mask[i]! & 0xff));
    const subnet = `${[...network].join('.')}/${length}`;
    for (const [what, bytes] of [
      ['network', network],
      ['broadcast', broadcast],
    ] as const) {
      if (sameBits(address.bytes, bytes, 32)) {
        return `${address.text} is the ${what} address of ${subnet}, not a host's; expected a host address inside it, ${example}`;
      }
    }
  }
  if (clusterIps.some((ip) => addressesEqual(ip, address))) {
    return "the dedicated IP must differ from every cluster IP: it is the host's own address, never filtered";
  }
  return undefined;
}

function normalise(raw: RawConfig, errors: ConfigError[]): Config | undefined {
  const c = raw.cluster;
  const buckets = c.buckets;
  const portRules: PortRule[] = (c.portRules ?? []).map((r) => ({
    vip: r.vip,
    portStart: r.ports.portStart,
    portEnd: r.ports.portEnd,
    protocol: r.protocol,
    mode: r.mode,
    affinity: r.affinity,
    buckets: r.buckets ?? buckets,
  }));
  if (portRules.length === 0) {
    portRules.push(defaultPortRule(buckets));
  }

  c.clusterIps.forEach((ip, i) => {
    const problem = unicastProblem(ip);
    if (problem !== undefined) {
      errors.push({
        path: `cluster.clusterIps[${i}]`,
        value: ip.text,
        message: `${ip.text} is ${problem}; ${unicastExpected}, e.g. 198.18.0.100`,
      });
      return;
    }
    const first = c.clusterIps.findIndex((other) => addressesEqual(other, ip));
    if (first !== i) {
      errors.push({
        path: `cluster.clusterIps[${i}]`,
        value: ip.text,
        message: `duplicate of cluster.clusterIps[${first}]; list each cluster IP once`,
      });
    }
  });
  if (
    c.heartbeat.group.family !== 4 ||
    (c.heartbeat.group.bytes[0] ?? 0) < 224 ||
    (c.heartbeat.group.bytes[0] ?? 0) > 239
  ) {
    errors.push({
      path: 'cluster.heartbeat.group',
      value: c.heartbeat.group.text,
      message: 'expected an IPv4 multicast group (224.0.0.0-239.255.255.255), e.g. 239.255.78.76',
    });
  } else if (sameBits(c.heartbeat.group.bytes, localControlBlock.bytes, 24)) {
    errors.push({
      path: 'cluster.heartbeat.group',
      value: c.heartbeat.group.text,
      message:
        'is in 224.0.0.0/24, the local network control block that every host (224.0.0.1) or router on the segment listens to; expected a group of the cluster alone, e.g. 239.255.78.76 (administratively scoped, 239.0.0.0/8)',
    });
  }
  portRules.forEach((rule, i) => {
    if (rule.vip !== 'all') {
      const vip = rule.vip;
      if (!c.clusterIps.some((ip) => addressesEqual(ip, vip))) {
        errors.push({
          path: `cluster.portRules[${i}].vip`,
          value: vip.text,
          message:
            "expected one of cluster.clusterIps or 'all'; add the address to clusterIps first",
        });
      }
    }
    for (let j = 0; j < i; j++) {
      const other = portRules[j]!;
      const sameVip =
        (rule.vip === 'all' && other.vip === 'all') ||
        (rule.vip !== 'all' && other.vip !== 'all' && addressesEqual(rule.vip, other.vip));
      if (
        sameVip &&
        protocolsOverlap(rule.protocol, other.protocol) &&
        rule.portStart <= other.portEnd &&
        other.portStart <= rule.portEnd
      ) {
        errors.push({
          path: `cluster.portRules[${i}].ports`,
          value: `${rule.portStart}-${rule.portEnd}`,
          message: `overlaps cluster.portRules[${j}] (${other.portStart}-${other.portEnd}) for the same cluster IP and protocol; port rules must not overlap`,
        });
      }
    }
  });

  const h = raw.host;
  const dedicatedIp = parsePrefix(h.dedicatedIp, { 4: 24, 6: 64 });
  const dedicatedProblem = dedicatedIpProblem(h.dedicatedIp, dedicatedIp, c.clusterIps);
  if (dedicatedProblem !== undefined) {
    errors.push({ path: 'host.dedicatedIp', value: h.dedicatedIp, message: dedicatedProblem });
  }
  if (h.rules.length > portRules.length) {
    errors.push({
      path: 'host.rules',
      value: h.rules.length,
      message: `has ${h.rules.length} entries but the cluster has ${portRules.length} port rule(s); give at most one per rule, in the same order`,
    });
  }
  const weightOf = (w: number | 'equal'): number => (w === 'equal' ? equalLoadWeight : w);
  const rules: HostRuleSettings[] = portRules.map((_, i) => ({
    loadWeight: weightOf(h.rules[i]?.loadWeight ?? h.loadWeight),
    handlingPriority: h.rules[i]?.handlingPriority ?? h.handlingPriority ?? h.id,
  }));
  if (errors.length > 0 || dedicatedIp === undefined) {
    return undefined;
  }
  return {
    cluster: {
      name: c.name,
      clusterIps: c.clusterIps,
      mode: c.mode,
      interface: c.interface,
      heartbeat: c.heartbeat,
      buckets,
      hashSeed: c.hashSeed,
      keyFile: c.keyFile,
      portRules,
    },
    host: { id: h.id, dedicatedIp, initialState: h.initialState, rules },
  };
}

/** Validates an already-parsed document (e.g. from YAML or JSON). */
export function validateConfig(document: unknown): ConfigResult {
  const result = schema.safeParse(document);
  if (!result.success) {
    const errors = result.error.issues.map((issue) => {
      const value = valueAt(document, issue.path);
      let message = issue.message;
      if (issue.code === 'unrecognized_keys') {
        message = `unknown key(s) ${issue.keys.map((k) => `'${k}'`).join(', ')}; check the spelling against examples/`;
      } else if (value === undefined && issue.code === 'invalid_type') {
        message = `missing; ${message.replace(/, received undefined$/, '')}`;
      }
      return { path: formatPath(issue.path) || '(document)', value, message };
    });
    return { ok: false, errors };
  }
  const errors: ConfigError[] = [];
  const config = normalise(result.data, errors);
  if (config === undefined) {
    return { ok: false, errors };
  }
  const heartbeatSize = heartbeatBytes(config.cluster.portRules.map((r) => r.buckets));
  if (heartbeatSize > datagramBytesMax) {
    return {
      ok: false,
      errors: [
        {
          path: 'cluster.portRules',
          value: `${config.cluster.portRules.length} rule(s)`,
          message: `the heartbeat would be ${heartbeatSize} bytes, over the ${datagramBytesMax}-byte datagram limit (each rule costs ${heartbeatRuleHeaderBytes} bytes plus one bit per bucket); use fewer buckets or fewer port rules`,
        },
      ],
    };
  }
  return { ok: true, config };
}

/** Parses YAML text and validates it; YAML syntax errors come back as errors too. */
export function parseConfig(text: string): ConfigResult {
  let document: unknown;
  try {
    document = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (error) {
    const message = error instanceof YAMLParseError ? error.message : String(error);
    return { ok: false, errors: [{ path: '(yaml)', value: undefined, message }] };
  }
  return validateConfig(document);
}

export function formatConfigErrors(errors: readonly ConfigError[]): string {
  return errors
    .map((e) => {
      const shown = e.value === undefined ? '' : ` (found ${JSON.stringify(e.value)})`;
      return `${e.path}${shown}: ${e.message}`;
    })
    .join('\n');
}

/**
 * What two hosts must agree on to form one cluster. The interface name and the key file path
 * are left out on purpose: they are local facts that may differ between machines; a different
 * key shows up as heartbeats that fail authentication.
 */
export function clusterIdentity(cluster: ClusterConfig): unknown {
  return {
    name: cluster.name,
    clusterIps: cluster.clusterIps.map((ip) => ip.text),
    mode: cluster.mode,
    heartbeat: {
      periodMs: cluster.heartbeat.periodMs,
      tolerance: cluster.heartbeat.tolerance,
      port: cluster.heartbeat.port,
      group: cluster.heartbeat.group.text,
    },
    hashSeed: cluster.hashSeed,
    portRules: cluster.portRules.map((r) => ({
      vip: r.vip === 'all' ? 'all' : r.vip.text,
      ports: [r.portStart, r.portEnd],
      protocol: r.protocol,
      mode: r.mode,
      affinity: r.affinity,
      buckets: r.buckets,
    })),
  };
}

/** SHA-256 of the canonical JSON of `clusterIdentity`: equal digests mean the same cluster. */
export function clusterDigest(cluster: ClusterConfig): Uint8Array {
  const canonical = JSON.stringify(clusterIdentity(cluster));
  return new Uint8Array(createHash('sha256').update(canonical).digest());
}

export function clusterDigestHex(cluster: ClusterConfig): string {
  return Buffer.from(clusterDigest(cluster)).toString('hex');
}
