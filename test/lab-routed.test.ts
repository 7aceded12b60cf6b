// Routed mode under load, in one real routed lab (src/lab/router.ts): a router namespace running
// FRR with ECMP (5-tuple hash) over three hosts in different /24s, a client behind the router,
// nlbd in routed mode in every host (marker route `198.18.0.100/32 dev lo proto 250` announced
// through FRR while it owns buckets; forwarding over VXLAN to a bucket's owner, hop 1, and a
// second chance at its previous owner, hop 2). Each load phase runs new connections at 100/s and
// 60 long-lived HOLD connections pinged every 200 ms, opened before the change:
//   1 withdraw / re-announce  h2's marker route deleted and added back by hand: the router
//                             rehashes flows between hosts; 0 failed, 0 held broken, each time;
//   2 drainstop / rejoin      h3 drainstops holding connections: its marker goes once its buckets
//                             moved, its held connections reach it by second chance; `start`;
//  2b restart                 a new nlbd on h3: the releases to it happen before it hears its
//                             peers, whose held lists give it the second chances; 0 / 0; once
//                             the held connections end, so do the second chances;
//   3 live map                `nlb map --lab` names the answering host of every connection;
//   4 bulk transfer           5 MiB each way through a forwarded path, ICMP frag-needed dropped
//                             in the router: the SYN-ACK's MSS is clamped to 1410, no ICMP needed;
//   5 inconsistent maps       h1 and h2 made to disagree by hand (on hop 1 and on hop 2): the
//                             counters show no packet crosses the overlay more than twice;
//   6 hang                    a host's nlbd SIGSTOPped: its marker goes with the announcer's guard,
//                             the others serve its buckets, only its own holds break; SIGCONT: it
//                             takes buckets back, whose held connections go on by second chance;
//   7 nlbd killed             h2's nlbd SIGKILLed: its marker goes within 1 s (the guard
//                             pipeline's end of input), the router's path within 1.5 s.
// Each phase prints its figures. Needs root and FRR: skipped visibly, failing with NLB_REQUIRE_LAB=1.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MapOutput } from '../src/cli/commands/map.js';
import {
  killHostDaemon,
  labDown,
  loadLab,
  startHostDaemon,
  stopHostDaemon,
} from '../src/lab/lab.js';
import { acquireLabTestLock } from '../src/lab/lock.js';
import { type ProcessRef, signalProcess } from '../src/lab/process.js';
import { routedLabUp } from '../src/lab/router.js';
import { runNlbInProcess } from './cli-helpers.js';
import {
  type ClusterLab,
  bucketOf,
  command,
  convergedOn,
  declareLabRequirement,
  expectConverged,
  isRoot,
  labSetupTimeoutMs,
  ownersOf,
  query,
  startLoad,
  waitForHosts,
} from './support/lab-cluster.js';
import {
  counterDelta,
  expectNoLoss,
  failedText,
  firstHops,
  hangMaps,
  hostNamespaceOf,
  kernelMap,
  markerRoutes,
  routedClusterLab,
  runIn,
  tableCounters,
  waitForMarkers,
  waitForPaths,
  waitUntil,
} from './support/lab-routed.js';
import { bulkThroughForwarder, disagreeingMaps } from './support/lab-routed-probes.js';

declareLabRequirement('lab-routed');

/** One phase of load: 5 s at 100/s, the change 1.5 s in, so it has load on both sides. */
const phaseLoad = {
  ratePerSecond: 100,
  countMax: 500,
  durationMs: 5_000,
  holds: 60,
  holdPingIntervalMs: 200,
  // A planned change must not even delay an echo this long.
  holdPingTimeoutMs: 1_000,
  // Longer than one SYN retransmission (1 s): a failure is a real failure, not a slow answer.
  timeoutMs: 3_000,
} as const;
const changeAfterMs = 1_500;
/** A planned change converges in two one-way delays; 3 s is generous on two busy cores. */
const plannedConvergeMs = 3_000;
/** A SIGKILLed nlbd's marker goes when the guard pipeline reads end of input... */
const killedMarkerGoneMs = 1_000;
/** ... and the router drops the path ~125 ms later (docs/routed.md). */
const killedPathGoneMs = 1_500;
/** Phase 4: the bulk transfer's size each way. */
const bulkBytes = 5 * 1024 * 1024;
/** VXLAN costs 50 bytes of the 1500-byte uplink, and MSS = MTU - 40 (routed-net.ts). */
const overlayMtu = 1450;
const mssClamp = 1410;
/** Phase 5: source ports per first hop and bucket, from outside the client's ephemeral range. */
const probePortsPerHop = 5;
const probePorts = Array.from({ length: 10_000 }, (_, i) => 20_000 + i);
const vipText = '198.18.0.100';

const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0);

describe.runIf(isRoot)('lab: routed mode under load (FRR, ECMP, forwarding over VXLAN)', () => {
  let release: (() => void) | undefined;
  let lab: ClusterLab;
  let name = '';
  let clientIp = '';
  let clientNs = '';
  /** nlbd processes this file stopped: continued in afterAll whatever failed. */
  const stopped = new Set<ProcessRef>();

  beforeAll(async () => {
    const lockAt = Date.now();
    release = await acquireLabTestLock();
    const upAt = Date.now();
    name = `lrt${randomBytes(2).toString('hex')}`;
    const state = await routedLabUp({ name, hosts: 3, clients: 1 });
    lab = await routedClusterLab(state);
    clientIp = state.clients[0]!.ip;
    clientNs = state.clients[0]!.namespace;
    await expectConverged(lab, [1, 2, 3], 20);
    // Every host's path: its nlbd announced once it owned buckets, FRR takes ~100 ms more.
    expect((await waitForPaths(lab, [1, 2, 3], Date.now(), 5_000)).value).toEqual([1, 2, 3]);
    console.log(
      `lab-routed: lab up, converged and announced by all in ${Date.now() - upAt} ms (after ${upAt - lockAt} ms waiting for the lab test lock)`,
    );
  }, labSetupTimeoutMs);

  afterAll(async () => {
    try {
      for (const ref of stopped) signalProcess(ref, 'SIGCONT');
      if (name !== '') await labDown(name);
    } finally {
      release?.();
    }
  });

  const daemonOf = (hostId: number): ProcessRef =>
    loadLab(name).hosts.find((h) => h.id === hostId)!.daemon!;
  const allCounters = async () =>
    new Map(
      await Promise.all([1, 2, 3].map(async (id) => [id, await tableCounters(lab, id)] as const)),
    );
  const flowsOf = (ports: readonly number[]) => ports.map((port) => ({ ip: clientIp, port }));
  /** Source ports of the client's established connections to the cluster IP. */
  const clientPorts = async (): Promise<number[]> =>
    (await runIn(clientNs, ['ss', '-Htn', 'state', 'established', 'dst', vipText]))
      .split('\n')
      .map((line) => /:(\d+)\s+\S+:80\s*$/.exec(line.trim())?.[1])
      .filter((p): p is string => p !== undefined)
      .map(Number);
  const nlbMap = async (clients: readonly string[], file: string): Promise<MapOutput> => {
    writeFileSync(path.join(lab.state.dir, file), clients.join('\n'));
    const args = ['map', '--json', '--lab', name, '--clients-file', path.join(lab.state.dir, file)];
    const run = await runNlbInProcess(args);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    return JSON.parse(run.stdout) as MapOutput;
  };

  it('withdraw, then re-announce: h2 marker route by hand under load: 0 failed, 0 broken', async () => {
    for (const step of ['withdraw', 're-announce'] as const) {
      const wanted = step === 'withdraw' ? [1, 3] : [1, 2, 3];
      const before = await allCounters();
      const load = startLoad(lab, phaseLoad);
      await load.started;
      await sleep(changeAfterMs);
      const ports = await clientPorts();
      const hopsBefore = await firstHops(lab, flowsOf(ports));
      const changedAt = Date.now();
      const verb = step === 'withdraw' ? 'del' : 'replace';
      await runIn(hostNamespaceOf(lab, 2), [
        ...['ip', 'route', verb, `${vipText}/32`, 'dev', 'lo', 'proto', '250'],
      ]);
      const paths = await waitForPaths(lab, wanted, changedAt);
      const hopsAfter = await firstHops(lab, flowsOf(ports));
      const result = await load.done;
      const delta = counterDelta(before.get(2)!, (await allCounters()).get(2)!);
      // How many held connections ECMP now sends to another host than before.
      const holdPorts = new Set(result.holds.map((h) => h.sourcePort));
      const moved = ports.filter((p, i) => holdPorts.has(p) && hopsBefore[i] !== hopsAfter[i]);
      const lateOn2 = result.connections.filter(
        (c) => c.host === 2 && load.wallMs(c.atMs) > changedAt + paths.ms + 100,
      ).length;
      console.log(
        `lab-routed: ${step} on h2: router paths ${paths.value.join(',')} after ${paths.ms} ms; ${moved.length} of ${result.holds.length} held connections rehashed to another first hop, ${result.holdsBroken} broken; ${result.answered} answered, ${failedText(result.connections)} (latency max ${result.latencyMs?.max} ms); h2 answered ${lateOn2} connections started after the change, overlay_in_forwarded on h2 +${delta.overlay_in_forwarded}`,
      );
      expect(paths.ok).toBe(true);
      expectNoLoss(result, phaseLoad.holds);
      // ECMP moved some held flows to another host, which forwarded them to their owner.
      expect(moved.length).toBeGreaterThan(0);
      if (step === 'withdraw') {
        // Withdrawn, h2 still serves its buckets: what reaches h1 and h3 is forwarded to it.
        expect(lateOn2).toBeGreaterThan(0);
        expect(delta.overlay_in_forwarded).toBeGreaterThan(0);
      }
      expect(await markerRoutes(lab, 2)).toEqual(step === 'withdraw' ? [] : [vipText]);
    }
  });

  it('drainstop h3 under load: marker and path go once its buckets moved, holds reach it by second chance; start: back; 0 failed, 0 broken', async () => {
    await expectConverged(lab, [1, 2, 3], 20);
    const before = await allCounters();
    let load = startLoad(lab, phaseLoad);
    await load.started;
    await sleep(changeAfterMs);
    const drainAt = Date.now();
    expect((await command(lab, 3, 'drainstop')).code).toBe('ok');
    const released = await waitForHosts(
      lab,
      [3],
      (d) => d.rules[0]!.owned.length === 0 && d.dataplaneInSync,
      plannedConvergeMs,
      5,
    );
    const markerGone = await waitForMarkers(lab, 3, 0, drainAt);
    const pathGone = await waitForPaths(lab, [1, 2], drainAt);
    const during = await query(lab.sockets.get(3)!);
    let result = await load.done;
    const after = await allCounters();
    const stoppedAt = await waitForHosts(lab, [3], (d) => d.state === 'stopped', 5_000);
    const d = new Map([1, 2, 3].map((id) => [id, counterDelta(before.get(id)!, after.get(id)!)]));
    const holdsOn3 = result.holds.filter((h) => h.host === 3);
    console.log(
      `lab-routed: drainstop h3: buckets released ${released.atMs - drainAt} ms after the command, marker gone after ${markerGone.ms} ms, router path after ${pathGone.ms} ms; ${holdsOn3.length} held connections on h3 kept echoing (${result.holdsBroken} broken); second chance: rule0_second_sent h1 +${d.get(1)!.rule0_second_sent} h2 +${d.get(2)!.rule0_second_sent}, overlay_in_second h3 +${d.get(3)!.overlay_in_second}; ${result.answered} answered, ${failedText(result.connections)}`,
    );
    expect(released.ok).toBe(true);
    // The marker goes after the buckets: h3 attracts traffic as long as it serves some.
    expect(markerGone.ok).toBe(true);
    expect(markerGone.ms).toBeGreaterThanOrEqual(released.atMs - drainAt - 50);
    expect(pathGone.ok).toBe(true);
    expect(during?.state).toBe('draining');
    expectNoLoss(result, phaseLoad.holds);
    expect(holdsOn3.length).toBeGreaterThan(0);
    expect(d.get(1)!.rule0_second_sent! + d.get(2)!.rule0_second_sent!).toBeGreaterThan(0);
    expect(d.get(3)!.overlay_in_second).toBeGreaterThan(0);
    expect(stoppedAt.ok).toBe(true);

    load = startLoad(lab, phaseLoad);
    await load.started;
    await sleep(changeAfterMs);
    const startAt = Date.now();
    expect((await command(lab, 3, 'start')).code).toBe('ok');
    const joined = await expectConverged(lab, [1, 2, 3], 20, plannedConvergeMs);
    const markerBack = await waitForMarkers(lab, 3, 1, startAt);
    const pathBack = await waitForPaths(lab, [1, 2, 3], startAt);
    result = await load.done;
    const later = result.connections.filter(
      (c) => c.host === 3 && load.wallMs(c.atMs) > joined.atMs + 100,
    );
    console.log(
      `lab-routed: start h3: converged after ${joined.atMs - startAt} ms, marker back after ${markerBack.ms} ms, router path after ${pathBack.ms} ms; ${result.answered} answered, ${failedText(result.connections)}, ${result.holdsBroken} of ${result.holds.length} held broken; h3 answered ${later.length} connections after`,
    );
    expect(markerBack.ok).toBe(true);
    expect(pathBack.ok).toBe(true);
    expectNoLoss(result, phaseLoad.holds);
    expect(later.length).toBeGreaterThan(0);
  });

  it('restart h3 as a new nlbd under load: it takes buckets its peers held, their holds reach it by second chance; once they end, so do the second chances, long before the timeout; 0 failed, 0 broken', async () => {
    await expectConverged(lab, [1, 2, 3], 20);
    // Out of the way first: drained (no connection of its own left), its nlbd ended.
    expect((await command(lab, 3, 'drainstop')).code).toBe('ok');
    expect((await waitForHosts(lab, [3], (d) => d.state === 'stopped', 10_000)).ok).toBe(true);
    expect(await stopHostDaemon(name, 3)).toBe(true);
    expect((await waitForPaths(lab, [1, 2], Date.now(), 5_000)).ok).toBe(true);
    await expectConverged(lab, [1, 2], 30, 5_000);
    const load = startLoad(lab, phaseLoad);
    await load.started;
    await sleep(changeAfterMs);
    // A new process: the releases to it happen in the first heartbeats it accepts from its
    // peers, so only their held lists tell it whose connections are in the buckets it takes.
    const restartAt = Date.now();
    await startHostDaemon(name, 3);
    const joined = await expectConverged(lab, [1, 2, 3], 20, 10_000);
    const pathBack = await waitForPaths(lab, [1, 2, 3], restartAt, 5_000);
    const second = () => kernelMap(lab, 3, 'rule0_second');
    const secondDuring = await second();
    const result = await load.done;
    const endedAt = Date.now();
    const owners = ownersOf(joined.answers);
    const holdsTaken = result.holds.filter(
      (h) => owners[bucketOf(lab, h.sourceIp, h.sourcePort)] === 3,
    );
    const sent = (await tableCounters(lab, 3)).rule0_second_sent ?? 0;
    // The held connections have ended: each previous owner counts none left in the buckets it
    // gave h3, says so in its heartbeat, and h3 ends those second chances.
    const emptied = await waitUntil(second, (map) => map.size === 0, 10_000, 100, endedAt);
    const serving = await waitForHosts(lab, [1, 2, 3], convergedOn([1, 2, 3], 20), 1_000);
    console.log(
      `lab-routed: restart h3 (new nlbd) under load: converged after ${joined.atMs - restartAt} ms, router path after ${pathBack.ms} ms; ${secondDuring.size} second chances on h3, ${holdsTaken.length} held connections in buckets it took, rule0_second_sent ${sent}; ${result.holdsBroken} of ${result.holds.length} held broken; ${result.answered} answered, ${failedText(result.connections)}; second chances ended ${emptied.ms} ms after the held connections closed (timeout 120 s)`,
    );
    expect(pathBack.ok).toBe(true);
    expectNoLoss(result, phaseLoad.holds);
    expect(secondDuring.size).toBeGreaterThan(0);
    expect(holdsTaken.length).toBeGreaterThan(0);
    expect(sent).toBeGreaterThan(0);
    expect(emptied.ok).toBe(true);
    expect(serving.ok).toBe(true);
  });

  it('live map: nlb map --lab names the answering host of every connection, whichever host ECMP sent it to', async () => {
    const converged = await expectConverged(lab, [1, 2, 3], 20);
    const digest = converged.answers.get(1)!.mapDigest;
    const load = { ratePerSecond: 100, countMax: 300, durationMs: 3_000, timeoutMs: 3_000 };
    const result = await startLoad(lab, load).done;
    expect(failedText(result.connections)).toBe('none failed');
    expect(result.connections).toHaveLength(300);
    const clients = result.connections.map((c) => `${c.sourceIp}:${c.sourcePort}`);
    const output = await nlbMap(clients, 'map-clients.txt');
    expect(output.source).toBe('live');
    expect(output.mapDigest).toBe(digest);
    const hops = await firstHops(
      lab,
      result.connections.map((c) => ({ ip: c.sourceIp, port: c.sourcePort })),
    );
    const wrong = result.connections.flatMap((c, i) => {
      const row = output.clients[i]!;
      return row.client === clients[i] && row.host === c.host
        ? []
        : [`${row.client} bucket ${row.bucket}: nlb map says ${row.host}, answered by ${c.host}`];
    });
    const forwarded = result.connections.filter((c, i) => hops[i] !== c.host).length;
    const hopCount = [1, 2, 3].map((id) => hops.filter((h) => h === id).length);
    console.log(
      `lab-routed: live map: nlb map named the answering host of ${clients.length - wrong.length} of ${clients.length} connections; ECMP's first hop was another host than the owner for ${forwarded} (first hops per host ${hopCount.join('/')}, answered per host ${JSON.stringify(result.perHost)})`,
    );
    expect(wrong).toEqual([]);
    // ECMP and the buckets are independent: about two thirds of the flows are forwarded.
    expect(forwarded).toBeGreaterThan(result.connections.length / 3);
    expect((await query(lab.sockets.get(1)!))?.mapDigest).toBe(digest);
  });

  it('bulk transfer forwarded with ICMP frag-needed dropped: MSS clamped to 1410, 5 MiB each way', async () => {
    await expectConverged(lab, [1, 2, 3], 20);
    // A source port whose first hop is not its bucket's owner, by nlb map and the router's FIB.
    const candidates = probePorts.slice(0, 64);
    const rows = (
      await nlbMap(
        candidates.map((p) => `${clientIp}:${p}`),
        'bulk-clients.txt',
      )
    ).clients;
    const bulk = await bulkThroughForwarder(lab, candidates, rows, bulkBytes, mssClamp, 30_000);
    const { answer, router, client, hop, owner } = bulk;
    const toHop = router[`to_h${hop}`]!;
    const mbits = answer.ms === undefined ? 0 : (bulkBytes * 8) / 1000 / answer.ms;
    console.log(
      `lab-routed: bulk: port ${bulk.port}, first hop h${hop}, owner h${owner}: ${answer.error ?? 'done'}, ${answer.sent} bytes sent and ${answer.echoed} echoed in ${answer.ms} ms (${mbits.toFixed(0)} Mbit/s each way); router: client packets to h1/h2/h3 ${router.to_h1}/${router.to_h2}/${router.to_h3}, ICMP frag-needed ${router.frag_needed}; h${hop} rule0_forwarded +${bulk.forwarded}, h${owner} overlay_in_forwarded +${bulk.arrived}; SYN-ACKs ${client.synack}, with MSS ${mssClamp} ${client.synack_clamped} (overlay MTU ${bulk.overlayMtu})`,
    );
    expect(bulk.overlayMtu).toBe(overlayMtu);
    expect(answer.error).toBeUndefined();
    expect(answer.host).toBe(owner);
    expect([answer.sent, answer.echoed]).toEqual([bulkBytes, bulkBytes]);
    // `ip route get` named the real first hop: the router sent every packet of it there...
    expect(toHop).toBeGreaterThan(bulkBytes / 65_536);
    expect(sum([1, 2, 3].map((id) => router[`to_h${id}`]!))).toBe(toHop);
    // ... which forwarded every one to the owner, where it arrived over the overlay.
    expect([bulk.forwarded, bulk.arrived]).toEqual([toHop, toHop]);
    // Full-size segments passed the overlay without a single ICMP: the SYN-ACK was clamped.
    expect(router.frag_needed).toBe(0);
    expect([client.synack, client.synack_clamped]).toEqual([1, 1]);
  });

  it('inconsistent maps on h1 and h2: a packet that arrived over the overlay is never forwarded again, so none crosses it more than twice', async () => {
    const owners = ownersOf((await expectConverged(lab, [1, 2, 3], 20)).answers);
    const track = (stop: boolean, ref: ProcessRef) =>
      void (stop ? stopped.add(ref) : stopped.delete(ref));
    const r = await disagreeingMaps(
      lab,
      owners,
      probePorts,
      probePortsPerHop,
      [daemonOf(1), daemonOf(2)],
      track,
    );
    const { syn: S, ack: A, delta: d, client } = r;
    const sends = sum(
      [1, 2, 3].map((id) => d.get(id)!.rule0_forwarded! + d.get(id)!.rule0_second_sent!),
    );
    const packets = client.syn_sent! + client.ack_sent!;
    const view = (id: number) =>
      `h${id} forwarded +${d.get(id)!.rule0_forwarded} second_sent +${d.get(id)!.rule0_second_sent} in_forwarded +${d.get(id)!.overlay_in_forwarded} in_second +${d.get(id)!.overlay_in_second}`;
    console.log(
      `lab-routed: inconsistent maps (bucket ${r.b}: h1->h2 and h2->h1 on hop 1; bucket ${r.c}: h1->h2 and h2->h1 on hop 2; nlbd of h1 and h2 stopped ${r.windowMs} ms): client sent ${client.syn_sent} SYNs (first hop h1/h2/h3 ${S.slice(1).join('/')}) and ${client.ack_sent} bare ACKs (${A.slice(1).join('/')}); ${view(1)}; ${view(2)}; ${view(3)}; overlay sends in all ${sends} for ${packets} packets; ${r.connected.length} connected`,
    );
    // Every packet the client sent went through the router, to first hops of every host.
    expect([client.syn_sent, client.ack_sent]).toEqual([15, 15]);
    expect([S.slice(1), A.slice(1)]).toEqual([
      [5, 5, 5],
      [5, 5, 5],
    ]);
    // Hop 1, bucket b: h1 forwarded exactly the SYNs ECMP gave it (S1, to h2), h2 exactly its
    // own (S2, to h1): the S1 that reached h2 and the S2 that reached h1 over the overlay went
    // no further, though each receiver's map said to forward them. Only h3's were answered.
    // Hop 2, bucket c: h1 sent its A1 to h2 by second chance; h2 sent its own A2 and the A3
    // that h3 forwarded to it (hop 1, then hop 2) to h1; what arrived on hop 2 went no further.
    const [S1, S2, A1, A2, A3] = [S[1]!, S[2]!, A[1]!, A[2]!, A[3]!];
    const expected = (fwd: number, sec: number, inFwd: number, inSec: number) => ({
      rule0_forwarded: fwd,
      rule0_second_sent: sec,
      overlay_in_forwarded: inFwd,
      overlay_in_second: inSec,
    });
    expect(d.get(1)).toMatchObject(expected(S1, A1, S2, A2 + A3));
    expect(d.get(2)).toMatchObject(expected(S2, A2 + A3, S1 + A3, A1));
    expect(d.get(3)).toMatchObject(expected(A3, 0, 0, 0));
    // No loop: at most two overlay sends per packet (two exactly for A3).
    expect(sends).toBe(S1 + S2 + A1 + A2 + 2 * A3);
    expect(sends).toBeLessThanOrEqual(2 * packets);
    expect(r.connected).toEqual(r.synPorts.slice(2 * probePortsPerHop).sort((x, y) => x - y));
    // nlbd runs on with the maps it programmed.
    await sleep(300);
    for (const id of [1, 2]) expect(await r.readMaps(id)).toEqual(r.mapsBefore.get(id));
    await expectConverged(lab, [1, 2, 3], 20);
  });

  it('hang: a host nlbd stopped under load: its marker and path go, the others serve its buckets, only its holds break; SIGCONT: it rejoins, second chance for the buckets it takes back', async () => {
    const converged = await expectConverged(lab, [1, 2, 3], 20);
    const owners = ownersOf(converged.answers);
    // h1, unless its return would give it back only buckets it had: then the first host whose
    // return takes buckets its peers held all along (the case that needs the second chance).
    const takes = (id: number) => {
      const { during, after } = hangMaps(owners, id, [1, 2, 3]);
      return after.flatMap((o, bucket) =>
        o === id && owners[bucket] !== id && during[bucket] === owners[bucket] ? [bucket] : [],
      );
    };
    const hung = [1, 2, 3].find((id) => takes(id).length > 0) ?? 1;
    const others = [1, 2, 3].filter((id) => id !== hung);
    const { during, after } = hangMaps(owners, hung, [1, 2, 3]);
    const load = startLoad(lab, {
      ...phaseLoad,
      countMax: 900,
      durationMs: 9_000,
      timeoutMs: 4_000,
    });
    await load.started;
    await sleep(changeAfterMs);
    const ref = daemonOf(hung);
    const hungAt = Date.now();
    stopped.add(ref);
    expect(signalProcess(ref, 'SIGSTOP')).toBe(true);
    const markerGone = await waitForMarkers(lab, hung, 0, hungAt);
    const pathGone = await waitForPaths(lab, others, hungAt);
    const takeover = await waitForHosts(lab, others, convergedOn(others, 30), 5_000);
    await sleep(Math.max(0, hungAt + 3_500 - Date.now()));
    const contAt = Date.now();
    signalProcess(ref, 'SIGCONT');
    stopped.delete(ref);
    const rejoined = await waitForHosts(lab, [1, 2, 3], convergedOn([1, 2, 3], 20), 10_000);
    const markerBack = await waitForMarkers(lab, hung, 1, contAt, 5_000);
    const pathBack = await waitForPaths(lab, [1, 2, 3], contAt, 5_000);
    const result = await load.done;
    const broken = (mine: boolean) =>
      result.holds.filter((h) => h.broken !== undefined && (h.host === hung) === mine);
    const taken = new Set(takes(hung));
    const holdsTaken = result.holds.filter((h) =>
      taken.has(bucketOf(lab, h.sourceIp, h.sourcePort)),
    );
    console.log(
      `lab-routed: hang h${hung} (SIGSTOP nlbd): marker gone after ${markerGone.ms} ms, router path after ${pathGone.ms} ms, h${others.join('+h')} own all buckets after ${takeover.atMs - hungAt} ms; SIGCONT after ${contAt - hungAt} ms: converged again after ${rejoined.atMs - contAt} ms, marker back after ${markerBack.ms} ms, path after ${pathBack.ms} ms, taking back ${taken.size} buckets its peers held all along (${holdsTaken.length} held connections in them); held connections broken: ${broken(true).length} of ${result.holds.filter((h) => h.host === hung).length} on h${hung}, ${broken(false).length} of ${result.holds.filter((h) => h.host !== hung).length} elsewhere; new connections ${result.answered} answered, ${failedText(result.connections)} (latency max ${result.latencyMs?.max} ms)`,
    );
    expect(markerGone.ok).toBe(true);
    expect(pathGone.ok).toBe(true);
    expect(takeover.ok).toBe(true);
    expect(ownersOf(takeover.answers)).toEqual(during);
    expect(rejoined.ok).toBe(true);
    expect(ownersOf(rejoined.answers)).toEqual(after);
    expect(markerBack.ok).toBe(true);
    expect(pathBack.ok).toBe(true);
    expect(result.holds).toHaveLength(phaseLoad.holds);
    expect(broken(false)).toEqual([]);
  });

  it('nlbd killed: h2 SIGKILLed: its marker goes within 1 s, the router path within 1.5 s; restarted, it rejoins', async () => {
    await expectConverged(lab, [1, 2, 3], 20);
    expect(await markerRoutes(lab, 2)).toEqual([vipText]);
    const killedAt = Date.now();
    expect(await killHostDaemon(name, 2)).toBe(true);
    const markerGone = await waitForMarkers(lab, 2, 0, killedAt);
    const pathGone = await waitForPaths(lab, [1, 3], killedAt);
    const restartAt = Date.now();
    await startHostDaemon(name, 2);
    const rejoined = await expectConverged(lab, [1, 2, 3], 20, 15_000);
    const pathBack = await waitForPaths(lab, [1, 2, 3], restartAt, 5_000);
    console.log(
      `lab-routed: kill h2 (SIGKILL nlbd): marker gone after ${markerGone.ms} ms, router path after ${pathGone.ms} ms; restarted: converged after ${rejoined.atMs - restartAt} ms, router path back after ${pathBack.ms} ms`,
    );
    expect(markerGone.ok).toBe(true);
    expect(markerGone.ms).toBeLessThanOrEqual(killedMarkerGoneMs);
    expect(pathGone.ok).toBe(true);
    expect(pathGone.ms).toBeLessThanOrEqual(killedPathGoneMs);
    expect(pathBack.ok).toBe(true);
  });
});
