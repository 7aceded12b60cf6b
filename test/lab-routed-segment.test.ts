// Routed mode with `forward: segment` under load, in one real routed lab built with `segment`
// (src/lab/router.ts): the router namespace running FRR with ECMP (5-tuple hash) and three hosts
// on one bridge with it (198.18.1.1, hosts 198.18.1.11-13), a client behind the router, nlbd in
// routed mode in every host forwarding without encapsulation: a packet whose bucket another host
// owns leaves as a plain frame to that host's macvlan MAC of the hop (nlbf hop 1, nlbs hop 2;
// src/dataplane/routed-segment.ts). Under 100 new connections/s and 45 long-lived HOLD
// connections pinged every 200 ms, opened before each change:
//   1 withdraw / re-announce  h2's marker route deleted, then added back by hand: the router
//                             drops and restores h2's path, rehashing held flows between hosts;
//   2 drainstop / start       h3 drainstops while it holds connections: they reach it by second
//                             chance (hop 2, arriving on its nlbs); then `start`.
// 0 failed, 0 broken each time; forwarded packets counted (rule0_forwarded) and seen arriving on
// the macvlan devices. Needs root and FRR; skipped visibly without root, failing instead when
// NLB_REQUIRE_LAB=1.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LabState, labDown } from '../src/lab/lab.js';
import { acquireLabTestLock } from '../src/lab/lock.js';
import { routedLabUp } from '../src/lab/router.js';
import {
  type ClusterLab,
  command,
  declareLabRequirement,
  expectConverged,
  isRoot,
  labSetupTimeoutMs,
  startLoad,
  waitForHosts,
} from './support/lab-cluster.js';
import {
  expectNoLoss,
  hostNamespaceOf,
  routedClusterLab,
  routerPaths as routerPathsOf,
  runIn,
  tableCounters,
  waitUntil,
} from './support/lab-routed.js';

declareLabRequirement('lab-routed-segment');

/** One phase of load: 100 new connections/s and 45 held ones, the change 1.5 s in. */
const phaseLoad = {
  ratePerSecond: 100,
  countMax: 600,
  durationMs: 6_000,
  holds: 45,
  holdPingIntervalMs: 200,
  // A planned change must not even delay an echo this long.
  holdPingTimeoutMs: 1_000,
  // Longer than one SYN retransmission (1 s): a failure is a real failure, not a slow answer.
  timeoutMs: 3_000,
} as const;
const changeAfterMs = 1_500;
/** The router's FIB followed a marker change in ~125 ms (docs/routed.md); 2 s means broken. */
const pathChangeWaitMs = 2_000;
/** A planned change converges in two one-way delays; 3 s is generous on two busy cores. */
const plannedConvergeMs = 3_000;
const vipText = '198.18.0.100';

/** Polls `probe` every 10 ms until `accept` holds; the ms it took, or -1 after `waitMs`. */
async function waitFor<T>(probe: () => Promise<T>, accept: (v: T) => boolean, waitMs: number) {
  const waited = await waitUntil(probe, accept, waitMs);
  return { ms: waited.ok ? waited.ms : -1, value: waited.value };
}

describe.runIf(isRoot)('lab: routed mode, forward: segment, under load', () => {
  let release: (() => void) | undefined;
  let name = '';
  let state: LabState;
  let lab: ClusterLab;

  const inHost = (hostId: number, argv: readonly string[]): Promise<string> =>
    runIn(hostNamespaceOf(lab, hostId), argv);
  const routerPaths = (): Promise<number[]> => routerPathsOf(lab);
  /** Every host's nlb counters and the packets its macvlan devices received. */
  const counters = async (): Promise<Map<number, Record<string, number>>> => {
    const all = new Map<number, Record<string, number>>();
    for (const host of state.hosts) {
      const values = await tableCounters(lab, host.id);
      for (const device of ['nlbf', 'nlbs']) {
        const [link] = JSON.parse(
          await inHost(host.id, ['ip', '-j', '-s', 'link', 'show', 'dev', device]),
        ) as {
          stats64: { rx: { packets: number } };
        }[];
        values[`${device}_rx`] = link!.stats64.rx.packets;
      }
      all.set(host.id, values);
    }
    return all;
  };
  const delta = (
    before: Map<number, Record<string, number>>,
    after: Map<number, Record<string, number>>,
    key: string,
  ) =>
    state.hosts.reduce(
      (sum, h) => sum + (after.get(h.id)![key] ?? 0) - (before.get(h.id)![key] ?? 0),
      0,
    );
  const marker = (verb: 'del' | 'replace') => [
    'ip',
    'route',
    verb,
    `${vipText}/32`,
    'dev',
    'lo',
    'proto',
    '250',
  ];

  beforeAll(async () => {
    release = await acquireLabTestLock();
    name = `lrs${randomBytes(2).toString('hex')}`;
    state = await routedLabUp({ name, hosts: 3, clients: 1, segment: true });
    lab = await routedClusterLab(state, { name: 'routed-segment-v4', mode: 'routed', family: 4 });
    await expectConverged(lab, [1, 2, 3], 20);
    const paths = await waitFor(routerPaths, (p) => p.length === 3, 5_000);
    expect(paths.value).toEqual([1, 2, 3]);
  }, labSetupTimeoutMs);

  afterAll(async () => {
    try {
      if (name !== '') await labDown(name);
    } finally {
      release?.();
    }
  });

  it('puts every host on one segment with macvlan devices and no VXLAN', async () => {
    expect(state.hosts.map((h) => h.ip)).toEqual(['198.18.1.11', '198.18.1.12', '198.18.1.13']);
    expect(lab.config.cluster.routed?.forward).toBe('segment');
    for (const host of state.hosts) {
      expect(await inHost(host.id, ['ip', '-d', 'link', 'show', 'type', 'vxlan'])).toBe('');
      const macvlans = await inHost(host.id, ['ip', '-br', 'link', 'show', 'type', 'macvlan']);
      const index = host.id - 1;
      expect(macvlans).toMatch(new RegExp(`^nlbf@eth0 +UP +02:4e:4d:01:0${index}:00`, 'm'));
      expect(macvlans).toMatch(new RegExp(`^nlbs@eth0 +UP +02:4e:4d:02:0${index}:00`, 'm'));
    }
  });

  it('withdraw, then re-announce h2 under load: 0 failed, 0 broken, forwarded on the segment', async () => {
    const before = await counters();
    const load = startLoad(lab, phaseLoad);
    await load.started;
    await sleep(changeAfterMs);
    await inHost(2, marker('del'));
    const withdrawn = await waitFor(routerPaths, (p) => p.join() === '1,3', pathChangeWaitMs);
    await sleep(1_500);
    await inHost(2, marker('replace'));
    const back = await waitFor(routerPaths, (p) => p.join() === '1,2,3', pathChangeWaitMs);
    const result = await load.done;
    const after = await counters();
    const forwarded = delta(before, after, 'rule0_forwarded');
    const arrived = delta(before, after, 'overlay_in_forwarded');
    const macvlanIn = delta(before, after, 'nlbf_rx');
    console.log(
      `lab-routed-segment: h2 withdrawn (router paths after ${withdrawn.ms} ms), re-announced (after ${back.ms} ms); ${result.answered} answered, ${result.failed} failed, ${result.holdsBroken} of ${result.holds.length} held broken (latency max ${result.latencyMs?.max} ms); rule0_forwarded +${forwarded}, overlay_in_forwarded +${arrived}, nlbf rx +${macvlanIn}`,
    );
    expect(withdrawn.ms).toBeGreaterThanOrEqual(0);
    expect(back.ms).toBeGreaterThanOrEqual(0);
    expectNoLoss(result, phaseLoad.holds);
    expect(forwarded).toBeGreaterThan(0);
    // Every forwarded packet arrived on a peer's nlbf, and the filter saw it come in there.
    expect(arrived).toBe(forwarded);
    expect(macvlanIn).toBeGreaterThanOrEqual(forwarded);
  });

  it('drainstop h3 under load: its holds reach it by second chance on nlbs; start: back; 0 failed, 0 broken', async () => {
    await expectConverged(lab, [1, 2, 3], 20);
    const before = await counters();
    let load = startLoad(lab, phaseLoad);
    await load.started;
    await sleep(changeAfterMs);
    expect((await command(lab, 3, 'drainstop')).code).toBe('ok');
    const pathGone = await waitFor(routerPaths, (p) => p.join() === '1,2', plannedConvergeMs);
    let result = await load.done;
    const after = await counters();
    const stopped = await waitForHosts(lab, [3], (d) => d.state === 'stopped', 5_000);
    const secondSent = delta(before, after, 'rule0_second_sent');
    const secondIn = after.get(3)!.overlay_in_second! - before.get(3)!.overlay_in_second!;
    const nlbsIn = after.get(3)!.nlbs_rx! - before.get(3)!.nlbs_rx!;
    const holdsOn3 = result.holds.filter((h) => h.host === 3).length;
    console.log(
      `lab-routed-segment: drainstop h3: router path gone after ${pathGone.ms} ms; ${holdsOn3} held on h3, ${result.holdsBroken} of ${result.holds.length} broken; rule0_second_sent +${secondSent}, overlay_in_second h3 +${secondIn}, nlbs rx h3 +${nlbsIn}; ${result.answered} answered, ${result.failed} failed`,
    );
    expect(pathGone.ms).toBeGreaterThanOrEqual(0);
    expectNoLoss(result, phaseLoad.holds);
    expect(holdsOn3).toBeGreaterThan(0);
    expect(secondSent).toBeGreaterThan(0);
    expect(secondIn).toBeGreaterThan(0);
    expect(nlbsIn).toBeGreaterThanOrEqual(secondIn);
    expect(stopped.ok).toBe(true);

    load = startLoad(lab, phaseLoad);
    await load.started;
    await sleep(changeAfterMs);
    expect((await command(lab, 3, 'start')).code).toBe('ok');
    await expectConverged(lab, [1, 2, 3], 20, plannedConvergeMs);
    const pathBack = await waitFor(routerPaths, (p) => p.join() === '1,2,3', pathChangeWaitMs);
    result = await load.done;
    console.log(
      `lab-routed-segment: start h3: router path back after ${pathBack.ms} ms; ${result.answered} answered, ${result.failed} failed, ${result.holdsBroken} of ${result.holds.length} held broken`,
    );
    expect(pathBack.ms).toBeGreaterThanOrEqual(0);
    expectNoLoss(result, phaseLoad.holds);
  });
});
