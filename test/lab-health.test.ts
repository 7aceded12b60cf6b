// Issue 14 in a real three-host lab (every host's rule has the lab's http health check of its
// backend, /health every 500 ms, fall 2, rise 2, and an agent check of /weight):
//   - under load, host 2's service starts answering 503: it is declared unhealthy after
//     fall x interval, its buckets go to hosts 1 and 3, and from then on no new connection
//     fails; every failed one was in a bucket of host 2; no held connection breaks (host 2's
//     own included: established connections are left alone). Mended, host 2 takes its share
//     back after rise x interval, and no connection fails either;
//   - every host unhealthy: the rule fails open (20 buckets each again, the event says so);
//   - the agent's weight 100 -> 50 -> 0 moves exactly the buckets assign gives, and 0 drains;
//   - query shows the check, its last probe and the reported weight.
// Needs root; skipped visibly otherwise, failing instead when NLB_REQUIRE_LAB=1.
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventsData, QueryData } from '../src/control/protocol.js';
import { controlRequest } from '../src/control/client.js';
import { labHealthCheck } from '../src/lab/host-config.js';
import { runNlbInProcess } from './cli-helpers.js';
import {
  type ServiceState,
  serviceDefault,
  serviceFile,
  writeServiceState,
} from '../src/lab/service.js';
import {
  type ClusterLab,
  LabSession,
  bucketOf,
  declareLabRequirement,
  expectConverged,
  isRoot,
  labSetupTimeoutMs,
  ownersOf,
  queryHosts,
  startLoad,
  waitForHosts,
} from './support/lab-cluster.js';

declareLabRequirement('lab-health');

/** Detection: fall probes, one interval apart, plus one interval for where in it the failure fell. */
const detectionMs = (labHealthCheck.fall + 1) * labHealthCheck.intervalMs;
/** Room for a probe's own time, the heartbeat carrying the verdict and the kernel update. */
const slackMs = 400;

function setService(lab: ClusterLab, hostId: number, state: Partial<ServiceState>): void {
  writeServiceState(serviceFile(lab.state.dir, hostId), { ...serviceDefault, ...state });
}

async function ownedCounts(lab: ClusterLab): Promise<number[]> {
  const answers = await queryHosts(lab, [1, 2, 3]);
  return [1, 2, 3].map((id) => answers.get(id)?.rules[0]?.owned.length ?? -1);
}

/** Waits until the hosts own `counts` buckets and have converged. */
async function expectCounts(lab: ClusterLab, counts: number[], waitMs = 8_000): Promise<void> {
  const result = await waitForHosts(
    lab,
    [1, 2, 3],
    (d, id) => d.converged && d.rules[0]!.owned.length === counts[id - 1],
    waitMs,
  );
  if (!result.ok) expect(await ownedCounts(lab)).toEqual(counts);
}

describe.runIf(isRoot)('lab: application health', () => {
  const session = new LabSession();
  let lab: ClusterLab;

  beforeAll(async () => {
    await session.lock();
    lab = await session.up('lhc', { hosts: 3, clients: 1, clientExtraIps: 10 });
  }, labSetupTimeoutMs);
  afterAll(() => session.close());

  it('a service answering 503 takes its host out of the rule; its failures end within the detection time', async () => {
    const before = await expectConverged(lab, [1, 2, 3], 20);
    const owners = ownersOf(before.answers);
    const health = before.answers.get(2)!.rules[0]!.health;
    expect(health).toMatchObject({ healthy: true, failingOpen: false, reportedWeight: null });
    expect(health.check).toMatch(/^http 127\.0\.0\.1:80\/health every 500 ms/);
    expect(health.last).toMatchObject({ ok: true, detail: '200 OK' });

    const load = startLoad(lab, {
      ratePerSecond: 200,
      countMax: 2_000,
      durationMs: 9_000,
      holds: 18,
      holdPingIntervalMs: 200,
      holdPingTimeoutMs: 1_500,
      timeoutMs: 1_500,
      sources: lab.sources,
    });
    await load.started;
    await sleep(1_000);
    const failedAt = Date.now();
    setService(lab, 2, { mode: '503' });
    await expectCounts(lab, [30, 0, 30]);
    const out = await queryHosts(lab, [2]);
    expect(out.get(2)!.rules[0]!.health).toMatchObject({
      healthy: false,
      last: { ok: false, detail: '503 Service Unavailable (expected 200-399)' },
    });
    const shown = await runNlbInProcess(['query', '--lab', lab.state.name, '--host', '2']);
    expect(shown.stdout).toMatch(
      /^\s+0\s+198\.18\.0\.100\s+80\s+tcp\s+multiple\s+enabled\s+50\s+UNHEALTHY\s+0\/60/m,
    );
    expect(shown.stdout).toContain('last FAILED: 503 Service Unavailable (expected 200-399)');
    const port = await runNlbInProcess([
      'queryport',
      '198.18.0.100:80',
      '--lab',
      lab.state.name,
      '--host',
      '2',
    ]);
    expect(port.stdout).toMatch(
      /^health\s+UNHEALTHY; http 127\.0\.0\.1:80\/health every 500 ms.*; last: 503 Service Unavailable/m,
    );
    const params = await runNlbInProcess(['params', '--lab', lab.state.name, '--host', '2']);
    expect(params.stdout).toMatch(
      /^\s+0\s+198\.18\.0\.100\s+80\s+tcp\s+multiple\s+none\s+enabled\s+50\s+UNHEALTHY/m,
    );
    expect(params.stdout).toMatch(
      /^rule 0 health: http 127\.0\.0\.1:80\/health .*; last FAILED: 503/m,
    );
    await sleep(2_500);
    const mendedAt = Date.now();
    setService(lab, 2, { mode: 'ok' });
    await expectCounts(lab, [20, 20, 20]);
    const result = await load.done;

    const failures = result.connections.filter((c) => c.failure !== undefined);
    const late = failures.filter((c) => load.wallMs(c.atMs) > failedAt + detectionMs + slackMs);
    console.log(
      `lab-health: ${result.started} connections, ${failures.length} failed (${JSON.stringify(result.failures)}), ${late.length} after ${detectionMs + slackMs} ms; last failure ${failures.length === 0 ? '-' : Math.round(Math.max(...failures.map((c) => load.wallMs(c.atMs))) - failedAt)} ms after the service failed`,
    );
    expect(late.map((c) => `${c.sourceIp}:${c.sourcePort} ${c.failure}`)).toEqual([]);
    // Every failure was a connection host 2 answered while its service was down.
    for (const c of failures) {
      expect(c.failure).toBe('bad-reply');
      expect(owners[bucketOf(lab, c.sourceIp, c.sourcePort)]).toBe(2);
    }
    // Nothing failed once it was mended, and no held connection broke, host 2's included.
    expect(failures.filter((c) => load.wallMs(c.atMs) > mendedAt)).toEqual([]);
    expect(result.holdsBroken).toBe(0);
    expect(result.holds.some((h) => h.host === 2)).toBe(true);
  }, 60_000);

  it('every host unhealthy: the rule fails open and says so; one healthy host takes it all', async () => {
    await expectCounts(lab, [20, 20, 20]);
    for (const id of [1, 2, 3]) setService(lab, id, { mode: 'refuse' });
    // As their checks fail the hosts go out of the rule; with all three out, it fails open.
    const failingOpen = await waitForHosts(
      lab,
      [1, 2, 3],
      (d) => d.converged && d.rules[0]!.health.failingOpen,
      10_000,
    );
    expect(failingOpen.ok).toBe(true);
    await expectCounts(lab, [20, 20, 20]);
    const states = await queryHosts(lab, [1, 2, 3]);
    for (const id of [1, 2, 3]) {
      expect(states.get(id)!.rules[0]!.health).toMatchObject({ healthy: false, failingOpen: true });
    }
    const answer = await controlRequest(lab.sockets.get(1)!, { verb: 'events', limit: 200 }, 5_000);
    const events = answer.ok ? (answer.data as EventsData).events.map((e) => e.event) : [];
    expect(events).toContain('all hosts unhealthy: failing open');
    setService(lab, 3, { mode: 'ok' });
    await expectCounts(lab, [0, 0, 60]);
    setService(lab, 1, { mode: 'ok' });
    setService(lab, 2, { mode: 'ok' });
    await expectCounts(lab, [20, 20, 20]);
  }, 60_000);

  it('a reported weight moves the buckets assign gives and no more; 0 drains the host', async () => {
    await expectCounts(lab, [20, 20, 20]);
    const start = ownersOf(await queryHosts(lab, [1, 2, 3]));
    setService(lab, 2, { weight: 100 });
    // 100 against 50 and 50: half of the 60 buckets.
    await expectCounts(lab, [15, 30, 15]);
    const at100 = ownersOf(await queryHosts(lab, [1, 2, 3]));
    expect(at100.filter((o, b) => o !== start[b])).toHaveLength(10);
    const q = (await queryHosts(lab, [2])).get(2) as QueryData;
    expect(q.rules[0]!.health.reportedWeight).toBe(100);
    expect(q.rules[0]!.loadWeight).toBe(100);
    setService(lab, 2, { weight: 50 });
    await expectCounts(lab, [20, 20, 20]);
    const at50 = ownersOf(await queryHosts(lab, [1, 2, 3]));
    expect(at50.filter((o, b) => o !== at100[b])).toHaveLength(10);
    setService(lab, 2, { weight: 0 });
    await expectCounts(lab, [30, 0, 30]);
    setService(lab, 2, { weight: null });
    // No weight any more: the agent reads nothing, and the weight in force stays 0 until the
    // service reports one again (a silent agent must not undo a drain it asked for).
    await sleep(1_500);
    expect(await ownedCounts(lab)).toEqual([30, 0, 30]);
    setService(lab, 2, { weight: 50 });
    await expectCounts(lab, [20, 20, 20]);
  }, 60_000);

  it('a reload that removes the checks takes them away at once, keeping the map', async () => {
    await expectCounts(lab, [20, 20, 20]);
    const file = lab.state.hosts[1]!.config;
    const doc = parse(readFileSync(file, 'utf8')) as {
      cluster: { portRules: Record<string, unknown>[] };
    };
    const original = stringify(doc);
    delete doc.cluster.portRules[0]!['health'];
    delete doc.cluster.portRules[0]!['agent'];
    writeFileSync(file, stringify(doc));
    try {
      const reload = await runNlbInProcess(['reload', '--lab', lab.state.name, '--host', '2']);
      expect(reload.code).toBe(0);
      expect(reload.stdout).toContain('cluster.portRules[0].health');
      const q = (await queryHosts(lab, [2])).get(2)!;
      expect(q.rules[0]!.health).toMatchObject({ check: null, agent: null, healthy: true });
      // Host 2's service may fail now: nothing checks it, so it keeps its share.
      setService(lab, 2, { mode: '503' });
      await sleep(1_500);
      expect(await ownedCounts(lab)).toEqual([20, 20, 20]);
    } finally {
      setService(lab, 2, { mode: 'ok' });
      writeFileSync(file, original);
    }
  }, 60_000);
});
