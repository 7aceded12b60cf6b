// The health and agent checks of the port rules (issue 14), after the schema accepted each
// field alone: which fields each probe type takes, the port a tcp or http probe checks (the
// rule's own when it serves one port or a range, and one some rule serves in any case), a
// timeout no longer than the interval, and an http status range. Whether an exec command can
// run is a fact of the machine, checked where the file is loaded (src/node/config-file.ts).
import {
  type AgentCheck,
  type ConfigError,
  type HealthCheck,
  type PortRule,
  type Probe,
  healthTimeoutMsDefault,
} from './config-model.js';
import type { RawAgent, RawHealth } from './config-schema.js';

/** The fields each probe type takes; any other given is an error naming the type. */
const fieldsOf: Record<Probe['type'], readonly string[]> = {
  tcp: ['address', 'port'],
  http: ['address', 'port', 'path', 'status', 'body'],
  exec: ['command'],
};
const probeFields = ['address', 'port', 'path', 'status', 'body', 'command'] as const;

/** The port a tcp/http probe checks when none is given: the rule's first, unless it is 'all'. */
function defaultPort(rule: PortRule): number | undefined {
  return rule.portStart === 0 && rule.portEnd === 65535 ? undefined : Math.max(1, rule.portStart);
}

function probeOf(
  raw: RawHealth | RawAgent,
  rule: PortRule,
  portRules: readonly PortRule[],
  path: string,
  errors: ConfigError[],
): Probe | undefined {
  const given = raw as Record<string, unknown>;
  const allowed = fieldsOf[raw.type];
  for (const field of probeFields) {
    // `address` has a default: only a value other than it counts as given.
    const isGiven =
      given[field] !== undefined && !(field === 'address' && given[field] === '127.0.0.1');
    if (isGiven && !allowed.includes(field)) {
      errors.push({
        path: `${path}.${field}`,
        value: given[field],
        message: `a ${raw.type} check takes no ${field} (it takes ${allowed.join(', ')}); remove it or change type`,
      });
    }
  }
  if (raw.type === 'exec') {
    if (raw.command === undefined) {
      errors.push({
        path: `${path}.command`,
        value: undefined,
        message:
          "missing; an exec check runs a command, e.g. command: ['/usr/local/bin/check-web']",
      });
      return undefined;
    }
    return { type: 'exec', command: raw.command };
  }
  const port = raw.port ?? defaultPort(rule);
  if (port === undefined) {
    errors.push({
      path: `${path}.port`,
      value: undefined,
      message: 'missing; the rule covers every port, so say which port the service listens on',
    });
    return undefined;
  }
  if (!portRules.some((r) => r.portStart <= port && port <= r.portEnd)) {
    errors.push({
      path: `${path}.port`,
      value: port,
      message: `no port rule serves port ${port}; check the port of the service the rule balances`,
    });
    return undefined;
  }
  if (raw.type === 'tcp') return { type: 'tcp', address: raw.address, port };
  const status = ('status' in raw ? raw.status : undefined) ?? '200-399';
  const [low, high = low] = status.split('-').map(Number) as [number, number?];
  if (low > high) {
    errors.push({
      path: `${path}.status`,
      value: status,
      message: 'the range is backwards; write low-high, e.g. 200-399',
    });
  }
  return {
    type: 'http',
    address: raw.address,
    port,
    path: raw.path ?? '/',
    statusMin: low,
    statusMax: high,
    body: 'body' in raw ? raw.body : undefined,
  };
}

function timeoutOf(
  raw: RawHealth | RawAgent,
  path: string,
  errors: ConfigError[],
): number | undefined {
  const timeoutMs = raw.timeoutMs ?? Math.min(healthTimeoutMsDefault, raw.intervalMs);
  if (timeoutMs > raw.intervalMs) {
    errors.push({
      path: `${path}.timeoutMs`,
      value: timeoutMs,
      message: `is longer than intervalMs (${raw.intervalMs}); one probe runs at a time, so lower timeoutMs or raise intervalMs`,
    });
    return undefined;
  }
  return timeoutMs;
}

/** The rule with its checks normalised; problems go to `errors`. */
export function withChecks(
  rule: PortRule,
  raw: { readonly health?: RawHealth; readonly agent?: RawAgent },
  index: number,
  portRules: readonly PortRule[],
  errors: ConfigError[],
): PortRule {
  let health: HealthCheck | undefined;
  let agent: AgentCheck | undefined;
  if (raw.health !== undefined) {
    const path = `cluster.portRules[${index}].health`;
    const probe = probeOf(raw.health, rule, portRules, path, errors);
    const timeoutMs = timeoutOf(raw.health, path, errors);
    if (probe !== undefined && timeoutMs !== undefined) {
      const { intervalMs, fall, rise } = raw.health;
      health = { probe, intervalMs, timeoutMs, fall, rise };
    }
  }
  if (raw.agent !== undefined) {
    const path = `cluster.portRules[${index}].agent`;
    const probe = probeOf(raw.agent, rule, portRules, path, errors);
    const timeoutMs = timeoutOf(raw.agent, path, errors);
    if (probe !== undefined && probe.type !== 'tcp' && timeoutMs !== undefined) {
      const { intervalMs, hysteresis, holdMs } = raw.agent;
      agent = { probe, intervalMs, timeoutMs, hysteresis, holdMs };
    }
  }
  return {
    ...rule,
    ...(health === undefined ? {} : { health }),
    ...(agent === undefined ? {} : { agent }),
  };
}
