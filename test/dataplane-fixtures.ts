// Data plane specs shared by the render unit tests and the real-kernel tests, so the exact text
// the unit tests pin down is also the text the kernel is shown to accept.
import { type Address, parseAddress } from '../src/core/address.js';
import type { PortRule } from '../src/core/config.js';
import type { RuleOwnership } from '../src/core/protocol.js';
import type { DataplaneSpec } from '../src/dataplane/dataplane-spec.js';

export function address(text: string): Address {
  const parsed = parseAddress(text);
  if (parsed === undefined) {
    throw new Error(`fixture address '${text}' does not parse`);
  }
  return parsed;
}

export const vip = address('198.18.0.100');
export const vip6 = address('2001:db8::100');

export function owner(
  owned: readonly number[],
  orphan: readonly number[] = [],
  disabled = false,
): RuleOwnership {
  return { owned, orphan, disabled };
}

export function rule(fields: Partial<PortRule>): PortRule {
  return {
    vip: 'all',
    portStart: 0,
    portEnd: 65535,
    protocol: 'both',
    mode: 'multiple',
    affinity: 'single',
    buckets: 60,
    ...fields,
  };
}

/** What the lab runs: one VIP, one TCP port 80 rule, unicast mode. */
export const labSpec: DataplaneSpec = {
  tableName: 'nlb',
  hostId: 2,
  clusterIps: [vip],
  portRules: [rule({ vip, portStart: 80, portEnd: 80, protocol: 'tcp', affinity: 'none' })],
  hashSeed: 0x4e4c4221,
  ownership: {
    rules: [owner([0, 3, 6], [3])],
    isDefault: true,
    active: true,
    dropEstablished: false,
  },
  leaseTimeoutMs: 800,
  heartbeat: { group: address('239.255.78.76'), port: 2505 },
  mode: 'unicast',
  interface: 'eth0',
  clusterMac: '02:bf:c6:12:00:64',
  maskedMac: '02:02:c6:12:00:64',
};

/** Two families, rule precedence, every affinity, multicast mode, not the default host. */
export const mixedSpec: DataplaneSpec = {
  tableName: 'nlb',
  hostId: 3,
  clusterIps: [vip, vip6],
  portRules: [
    rule({ affinity: 'network' }),
    rule({
      vip: vip6,
      portStart: 1000,
      portEnd: 2000,
      mode: 'single',
      affinity: 'none',
      buckets: 8,
    }),
    rule({ vip, portStart: 53, portEnd: 53, protocol: 'udp', buckets: 16 }),
  ],
  hashSeed: 7,
  ownership: {
    rules: [owner([1, 2]), owner([]), owner([15])],
    isDefault: false,
    active: true,
    dropEstablished: false,
  },
  leaseTimeoutMs: 1000,
  heartbeat: { group: address('239.1.2.3'), port: 4000 },
  mode: 'multicast',
  interface: 'ens3',
  groupMac: '03:bf:c6:12:00:64',
  ownMac: '52:54:00:12:34:56',
};

export const mixedInactiveSpec: DataplaneSpec = {
  ...mixedSpec,
  ownership: { ...mixedSpec.ownership, active: false },
};

export const mixedStoppedSpec: DataplaneSpec = {
  ...mixedSpec,
  ownership: {
    rules: [owner([1, 2]), owner([], [], true), owner([15])],
    isDefault: false,
    active: false,
    dropEstablished: true,
  },
};

/**
 * Routed mode: host 2 of three (dedicated IPs 198.18.1.2, .2.2, .3.2), a TCP rule and a UDP rule;
 * host 1 serves some buckets (forwarded), host 3 released two that host 2 now owns (second
 * chance), and host 3 is the default host.
 */
export const routedSpec: DataplaneSpec = {
  tableName: 'nlb',
  hostId: 2,
  clusterIps: [vip],
  portRules: [
    rule({ vip, portStart: 80, portEnd: 80, protocol: 'tcp', affinity: 'none', buckets: 12 }),
    rule({ vip, portStart: 53, portEnd: 53, protocol: 'udp', affinity: 'none', buckets: 12 }),
  ],
  hashSeed: 0x4e4c4221,
  ownership: {
    rules: [owner([0, 1, 2, 3]), owner([4, 5, 6, 7])],
    isDefault: false,
    active: true,
    dropEstablished: false,
    routed: {
      rules: [
        {
          forward: [
            [4, 1],
            [5, 1],
            [8, 3],
            [9, 3],
          ],
          secondChance: [
            [2, 3],
            [3, 3],
          ],
        },
        { forward: [[0, 1]], secondChance: [] },
      ],
      uncovered: 3,
      addresses: [
        [1, '198.18.1.2'],
        [3, '198.18.3.2'],
      ],
    },
  },
  leaseTimeoutMs: 800,
  heartbeat: {
    group: address('239.255.78.76'),
    port: 2505,
    peers: [address('198.18.1.2'), address('198.18.2.2'), address('198.18.3.2')],
  },
  mode: 'routed',
  interface: 'eth0',
  routed: { mssClamp: 1410, forward: 'vxlan', vxlanPort: 4789 },
};
