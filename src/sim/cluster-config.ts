// Host configurations for simulated clusters, built through the real config validation so the
// simulator runs exactly what an operator could write. Every address is in 198.18.0.0/24, the
// range set aside for benchmarking (RFC 2544).
import { type Config, formatConfigErrors, validateConfig } from '../core/config.js';
import type { Prng } from './prng.js';

export const simClusterIp = '198.18.0.100';

/** The cluster key every simulated host shares: fixed, so runs replay byte for byte. */
export const simKey: Uint8Array = Uint8Array.from({ length: 32 }, (_, i) => (i * 37 + 11) & 0xff);

/** A different key, for hosts that must fail authentication. */
export const foreignKey: Uint8Array = Uint8Array.from(
  { length: 32 },
  (_, i) => (i * 53 + 7) & 0xff,
);

/**
 * `basic`: one tcp port rule (multiple, affinity none, 60 buckets), as the issue describes.
 * `extended`: adds a `single` rule, a small udp rule with its own bucket count and a
 * `disabled` rule, so assignment across modes is exercised too.
 */
export type RuleSet = 'basic' | 'extended';

export interface ClusterShape {
  readonly periodMs: number;
  readonly tolerance: number;
  readonly ruleSet: RuleSet;
}

/** Per host and per rule: load weight and handling priority. */
export interface HostSettings {
  readonly id: number;
  readonly rules: readonly { readonly loadWeight: number; readonly handlingPriority: number }[];
}

function portRules(ruleSet: RuleSet): unknown[] {
  const web = {
    vip: simClusterIp,
    ports: 80,
    protocol: 'tcp',
    mode: 'multiple',
    affinity: 'none',
    buckets: 60,
  };
  if (ruleSet === 'basic') {
    return [web];
  }
  return [
    web,
    { vip: simClusterIp, ports: 443, protocol: 'tcp', mode: 'single', affinity: 'single' },
    {
      vip: 'all',
      ports: '5000-5099',
      protocol: 'udp',
      mode: 'multiple',
      affinity: 'network',
      buckets: 16,
    },
    { vip: simClusterIp, ports: 22, protocol: 'tcp', mode: 'disabled', affinity: 'none' },
  ];
}

export function ruleCount(ruleSet: RuleSet): number {
  return portRules(ruleSet).length;
}

/** The config document (before validation) of one host. */
export function configDocument(shape: ClusterShape, host: HostSettings): unknown {
  return {
    cluster: {
      name: 'sim',
      clusterIps: [simClusterIp],
      mode: 'unicast',
      interface: 'sim0',
      heartbeat: { periodMs: shape.periodMs, tolerance: shape.tolerance },
      keyFile: '/nonexistent/sim.key',
      portRules: portRules(shape.ruleSet),
    },
    host: {
      id: host.id,
      dedicatedIp: `198.18.0.${host.id}/24`,
      rules: host.rules.map((r) => ({
        loadWeight: r.loadWeight,
        handlingPriority: r.handlingPriority,
      })),
    },
  };
}

/** Validates a document the simulator built; a failure here is a bug in the simulator. */
export function buildConfig(document: unknown): Config {
  const result = validateConfig(document);
  if (!result.ok) {
    throw new Error(`simulator built an invalid config:\n${formatConfigErrors(result.errors)}`);
  }
  return result.config;
}

/** Equal weights, handling priority = host id: NLB's defaults. */
export function defaultHostSettings(id: number, ruleSet: RuleSet): HostSettings {
  return {
    id,
    rules: Array.from({ length: ruleCount(ruleSet) }, () => ({
      loadWeight: 50,
      handlingPriority: id,
    })),
  };
}

/**
 * Seeded variety: weights from 0..100 (a few hosts 0 on a rule), handling priorities a
 * permutation of 1..hosts per rule, as an operator must keep them unique.
 */
export function randomHostSettings(hosts: number, ruleSet: RuleSet, prng: Prng): HostSettings[] {
  const rules = ruleCount(ruleSet);
  const priorities = Array.from({ length: rules }, () =>
    prng.shuffle(Array.from({ length: hosts }, (_, i) => i + 1)),
  );
  return Array.from({ length: hosts }, (_, i) => ({
    id: i + 1,
    rules: Array.from({ length: rules }, (_, r) => ({
      loadWeight: prng.chance(0.1) ? 0 : prng.int(1, 100),
      handlingPriority: priorities[r]![i]!,
    })),
  }));
}
