// Builders for the unit tests of the host machine's parts (test/host-<part>.test.ts): a
// MachineState as HostMachine's constructor leaves it, and peers put straight into its table,
// so one part can be driven without the others.
import type { Heartbeat } from '../../src/core/heartbeat.js';
import { MachineState, type PeerRecord } from '../../src/core/host-state.js';
import type { Config } from '../../src/core/config.js';
import { hostConfig, testKey } from './mini-net.js';

export { hostConfig, testKey };

export function machineState(
  id = 1,
  options: { config?: Config; nowMs?: number; incarnation?: number } = {},
): MachineState {
  return new MachineState({
    config: options.config ?? hostConfig(id),
    key: testKey,
    incarnation: options.incarnation ?? 100,
    nowMs: options.nowMs ?? 0,
  });
}

/** A heartbeat of host `id` whose config matches `s`'s (so it is compatible), overridable. */
export function heartbeatFor(
  s: MachineState,
  id: number,
  fields: Partial<Heartbeat> = {},
): Heartbeat {
  const cluster = s.config.cluster;
  return {
    hostId: id,
    state: 'started',
    settled: false,
    keptOut: false,
    clusterId: s.clusterId,
    incarnation: 1,
    sequence: 1,
    generation: 1,
    configDigest: s.configDigest,
    periodMs: cluster.heartbeat.periodMs,
    tolerance: cluster.heartbeat.tolerance,
    mode: cluster.mode,
    hashSeed: cluster.hashSeed,
    heard: [],
    members: [],
    mapDigest: new Uint8Array(8),
    acks: [],
    rules: cluster.portRules.map((rule, r) => ({
      buckets: rule.buckets,
      ruleDigest: s.ruleDigests[r]!,
      loadWeight: 50,
      handlingPriority: id,
      state: 'enabled',
      healthy: true,
      owned: [],
    })),
    ...fields,
  };
}

/** Puts a heard peer (proven, as `receivePeer` leaves it) into `s`'s table. */
export function addPeer(s: MachineState, hb: Heartbeat, nowMs: number): PeerRecord {
  const peer: PeerRecord = {
    id: hb.hostId,
    incarnation: hb.incarnation,
    lastSequence: hb.sequence,
    lastHeardMs: nowMs,
    heartbeat: hb,
    heard: true,
    declaredDeadAtMs: undefined,
    mismatch: undefined,
    mismatchReportedAtMs: -Infinity,
    reportKey: '',
    address: undefined,
    incarnations: new Map([
      [
        hb.incarnation,
        { firstHeardMs: nowMs, lastHeardMs: nowMs, lastSequence: hb.sequence, heartbeat: hb },
      ],
    ]),
  };
  s.peers.set(hb.hostId, peer);
  return peer;
}

/** The names of the events `s` collected, in order. */
export function eventNames(s: MachineState): string[] {
  return s.events.map((e) => e.event);
}
