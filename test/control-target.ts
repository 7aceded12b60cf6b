// A control target for tests of the control API and the CLI verbs without a daemon: a real
// HostMachine stepped by hand (so replies and events are the core's own), one peer heard, fake
// counters and connections, an event journal, and a reload that returns what the test sets.
import { HostMachine } from '../src/core/host.js';
import type { Config } from '../src/core/config.js';
import type { Command } from '../src/core/protocol.js';
import type { ReloadReply } from '../src/control/protocol.js';
import type { ControlContext, ControlTarget } from '../src/daemon/control.js';
import { EventJournal } from '../src/daemon/events.js';
import { eventRecord } from '../src/daemon/host-driver.js';
import { createMetrics } from '../src/daemon/metrics.js';
import { hostConfig, testKey } from './support/mini-net.js';

export interface TestTarget {
  readonly context: ControlContext;
  readonly target: ControlTarget;
  readonly commands: Command[];
  readonly machine: HostMachine;
  readonly journal: EventJournal;
  reloadReply: ReloadReply;
}

export const testRules = [
  { vip: '198.18.0.100', ports: 80, protocol: 'tcp', mode: 'multiple', affinity: 'none' },
  { vip: 'all', ports: '80-81', protocol: 'both', mode: 'multiple', affinity: 'single' },
  { vip: '198.18.0.100', ports: 53, protocol: 'udp', mode: 'single', affinity: 'none' },
  { vip: '198.18.0.101', ports: 443, protocol: 'tcp', mode: 'multiple', affinity: 'network' },
];

export function testConfig(id = 2): Config {
  return hostConfig(id, {
    cluster: { clusterIps: ['198.18.0.100', '198.18.0.101'], portRules: testRules },
  });
}

export interface TestTargetOptions {
  /** The config the host runs; testConfig(2) when not given. */
  readonly config?: Config;
  /** How the target answers for its nftables counters; fixed numbers when not given. */
  readonly counters?: ControlTarget['counters'];
}

export function makeTestTarget(options: TestTargetOptions = {}): TestTarget {
  const config = options.config ?? testConfig(2);
  const machine = new HostMachine({ config, key: testKey, incarnation: 5, nowMs: 0 });
  const journal = new EventJournal(() => new Date('2026-01-01T12:00:00.000Z'));
  const commands: Command[] = [];
  let nowMs = 0;
  const state: { reloadReply: ReloadReply } = {
    reloadReply: {
      code: 'ok',
      message: 'config reloaded',
      errors: [],
      changes: ['host.rules[0].loadWeight: 50 -> 20'],
      clusterChanged: false,
    },
  };
  const step = (input: Parameters<HostMachine['step']>[0]) => {
    const ready = machine.step(input);
    for (const event of ready.events) journal.record(eventRecord(event));
    return ready;
  };
  const target: ControlTarget = {
    config,
    identity: () => ({
      cluster: 'test',
      hostId: 2,
      pid: 1234,
      incarnation: 5,
      netns: 'net:[1]',
      socket: '/run/nlb/nlbd-test-2.sock',
      configPath: '/etc/nlb/host2.yaml',
      version: '0.1.0',
    }),
    nowMs: () => nowMs,
    status: () => machine.status(),
    details: () => machine.details(),
    command: (command) => {
      commands.push(command);
      nowMs += 1;
      return Promise.resolve(step({ kind: 'command', nowMs, command }).reply!);
    },
    counters:
      options.counters ??
      (() =>
        Promise.resolve({
          rules: config.cluster.portRules.map((_, i) => ({
            accepted: { packets: 100 + i, bytes: 10_000 + i },
            dropped: { packets: 7, bytes: 700 },
            reset: { packets: 0, bytes: 0 },
          })),
          uncovered: { accepted: { packets: 1, bytes: 60 }, dropped: { packets: 2, bytes: 120 } },
          leaseExpired: { packets: 0, bytes: 0 },
        })),
    driverStats: () => ({
      steps: { ticks: 1, datagrams: 1, commands: 0 },
      program: {
        count: 3,
        lastMs: 2.5,
        maxMs: 20,
        p50Ms: 2,
        p99Ms: 20,
        sets: 2,
        table: 1,
      },
      datagramQueueWait: { count: 1, lastMs: 0, maxMs: 0, p50Ms: 0, p99Ms: 0 },
      queueDepthMax: 1,
      datagramsDropped: 0,
      heartbeatsWithheld: 0,
      leaseRefreshes: 4,
      dataplaneErrors: 0,
      sendErrors: 0,
    }),
    transportStats: () => ({ sent: 0, received: 0, sendErrors: 0, oversize: 0 }),
    connections: () =>
      Promise.resolve([
        { rule: 0, bucket: 3, connections: 2 },
        { rule: 0, bucket: 9, connections: 1 },
        { rule: 3, bucket: 0, connections: 5 },
      ]),
    addresses: () =>
      Promise.resolve({
        interface: 'eth0',
        mac: '02:bf:c6:12:00:64',
        up: true,
        operState: 'UP',
        addresses: ['198.18.0.12/24', '198.18.0.100/32', '198.18.0.101/32'],
      }),
    reload: () => Promise.resolve(state.reloadReply),
    metrics: async () => ({ contentType: metrics.contentType, text: await metrics.text() }),
    events: journal,
  };
  const metrics = createMetrics(target);
  // A peer heard, so the views have one to show; it is stopped, so this host stays alone and
  // converging. Its first heartbeat cannot prove itself (it acks nothing of ours); our first
  // heartbeat echoes it, and its answer acks ours.
  const peer = new HostMachine({
    config: {
      ...config,
      // Host 1 with its own handling priority (a shared one on a single rule is a mismatch).
      host: {
        ...config.host,
        id: 1,
        initialState: 'stopped',
        rules: config.host.rules.map((rule) => ({ ...rule, handlingPriority: 1 })),
      },
    },
    key: testKey,
    incarnation: 9,
    nowMs: -200,
  });
  step({ kind: 'datagram', nowMs: 10, bytes: peer.step({ kind: 'tick', nowMs: 0 }).send[0]! });
  const ours = step({ kind: 'tick', nowMs: 200 }).send[0]!;
  const answer = peer.step({ kind: 'datagram', nowMs: 201, bytes: ours }).send[0]!;
  step({ kind: 'datagram', nowMs: 210, bytes: answer });
  nowMs = 310;
  const result: TestTarget = {
    context: { target, dataplaneInSync: () => true },
    target,
    commands,
    machine,
    journal,
    get reloadReply() {
      return state.reloadReply;
    },
    set reloadReply(reply: ReloadReply) {
      state.reloadReply = reply;
    },
  };
  return result;
}
