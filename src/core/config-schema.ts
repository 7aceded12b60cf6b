// The configuration's schema (zod): the shape of the document, its defaults and its limits,
// the single source of truth for both. `checkSchema` turns what zod finds wrong into config
// errors that name the path, the value found and what is expected; the checks that span
// several fields come after it (config-checks.ts).
import { z } from 'zod';
import { type Address, addressSyntaxProblem, parseAddress } from './address.js';
import { bfdTimersDefault, bgpPeersMax, bgpTimersDefault } from './bgp.js';
import {
  type ConfigError,
  agentHoldMsDefault,
  agentHysteresisDefault,
  agentIntervalMsDefault,
  bucketsDefault,
  healthFallDefault,
  healthIntervalMsDefault,
  healthRiseDefault,
  bucketsMax,
  clusterIpsMax,
  hashSeedDefault,
  heartbeatGroupDefault,
  heartbeatPeriodMsDefault,
  heartbeatPortDefault,
  heartbeatToleranceDefault,
  secondChanceMsDefault,
  vxlanPortDefault,
  hostsMax,
  portRulesMax,
} from './config-model.js';

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

/** What the health and agent checks share (config-health.ts checks the combinations). */
const probeFields = {
  address: z
    .string()
    .refine((s) => parseAddress(s) !== undefined, 'expected an address, e.g. 127.0.0.1')
    .default('127.0.0.1'),
  port: z.number().int().min(1).max(65535).optional(),
  path: z
    .string()
    .regex(/^\/[\x21-\x7e]*$/, "expected an absolute path without spaces, e.g. '/health'")
    .max(1024)
    .optional(),
  command: z.array(z.string().min(1).max(4096)).min(1).max(64).optional(),
  timeoutMs: z.number().int().min(10).max(60_000).optional(),
};

const healthSchema = z
  .object({
    type: z.enum(['tcp', 'http', 'exec']).default('http'),
    ...probeFields,
    status: z
      .string()
      .regex(/^[1-5]\d\d(-[1-5]\d\d)?$/, "expected a status or a range, e.g. '200-399'")
      .optional(),
    body: z.string().min(1).max(1024).optional(),
    intervalMs: z.number().int().min(50).max(600_000).default(healthIntervalMsDefault),
    fall: z.number().int().min(1).max(100).default(healthFallDefault),
    rise: z.number().int().min(1).max(100).default(healthRiseDefault),
  })
  .strict();

const agentSchema = z
  .object({
    type: z.enum(['http', 'exec']).default('http'),
    ...probeFields,
    intervalMs: z.number().int().min(50).max(600_000).default(agentIntervalMsDefault),
    hysteresis: z.number().int().min(0).max(100).default(agentHysteresisDefault),
    holdMs: z.number().int().min(0).max(3_600_000).default(agentHoldMsDefault),
  })
  .strict();

export type RawHealth = z.output<typeof healthSchema>;
export type RawAgent = z.output<typeof agentSchema>;

const portRuleSchema = z
  .object({
    vip: z.union([z.literal('all'), address]).default('all'),
    ports: portRange.prefault('all'),
    protocol: z.enum(['tcp', 'udp', 'both']).default('both'),
    mode: z.enum(['multiple', 'single', 'disabled']).default('multiple'),
    affinity: z.enum(['none', 'single', 'network']).default('single'),
    buckets: z.number().int().min(1).max(bucketsMax).optional(),
    health: healthSchema.optional(),
    agent: agentSchema.optional(),
  })
  .strict();

/** The ranges of these are checked with the fix in config-routed.ts (and src/routed/ shares them). */
const clusterRoutedSchema = z
  .object({
    as: z.number(),
    timers: z
      .object({
        keepaliveS: z.number().default(bgpTimersDefault.keepaliveS),
        holdS: z.number().default(bgpTimersDefault.holdS),
      })
      .strict()
      .prefault({}),
    bfd: z
      .object({
        intervalMs: z.number().default(bfdTimersDefault.intervalMs),
        multiplier: z.number().default(bfdTimersDefault.multiplier),
      })
      .strict()
      .prefault({}),
    forward: z.enum(['vxlan', 'segment']).default('vxlan'),
    vxlanPort: z.number().int().min(1).max(65535).default(vxlanPortDefault),
    secondChanceMs: z.number().int().min(0).max(3_600_000).default(secondChanceMsDefault),
  })
  .strict();

const hostRoutedSchema = z
  .object({
    peers: z.array(z.object({ address: z.string(), as: z.number() }).strict()).max(bgpPeersMax),
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
        mode: z.enum(['unicast', 'multicast', 'igmp', 'routed']).default('unicast'),
        interface: z
          .string()
          .regex(/^[A-Za-z0-9_.:@-]{1,15}$/, 'expected a network interface name'),
        heartbeat: z
          .object({
            periodMs: z.number().int().min(20).max(10000).default(heartbeatPeriodMsDefault),
            tolerance: z.number().int().min(2).max(100).default(heartbeatToleranceDefault),
            port: z.number().int().min(1).max(65535).default(heartbeatPortDefault),
            group: address.default(parseAddress(heartbeatGroupDefault) as Address),
            peers: z.array(address).min(1).max(hostsMax).optional(),
          })
          .strict()
          .prefault({}),
        buckets: z.number().int().min(1).max(bucketsMax).default(bucketsDefault),
        hashSeed: u32.default(hashSeedDefault),
        keyFile: z.string().min(1),
        portRules: z.array(portRuleSchema).max(portRulesMax).optional(),
        routed: clusterRoutedSchema.optional(),
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
        routed: hostRoutedSchema.optional(),
      })
      .strict(),
  })
  .strict();

/** The document as the schema accepted it, defaults filled in, before the cross-field checks. */
export type RawConfig = z.output<typeof schema>;

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

/** The document as the schema accepts it, or every problem the schema found in it. */
export function checkSchema(
  document: unknown,
): { ok: true; raw: RawConfig } | { ok: false; errors: ConfigError[] } {
  const result = schema.safeParse(document);
  if (result.success) {
    return { ok: true, raw: result.data };
  }
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
