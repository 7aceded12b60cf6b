// How fast a failed service stops costing connections (issue 14 item 8): in one lab, under the
// same load from client c1, host 2's service starts answering 503 (the lab's service file,
// src/lab/service.ts) and is mended a few seconds later, for
//   - the cluster: nlbd's http health check of /health, every 500 ms, fall 2, rise 2
//     (src/lab/host-config.ts labHealthCheck), the VIP as the target;
//   - haproxy (Debian's package, TCP mode, round robin) in c2 in front of the same three
//     backends, with the same check: `option httpchk GET /health`, `check inter 500 fall 2 rise 2`.
// Per trial: the time from the failure to the last failed new connection, and the connections
// failed in between. Target (the cluster): the last failure within fall x interval + 50 ms of
// the service failing, and none after. keepalived's checker drives an IPVS director, which this
// kernel lacks (no CONFIG_IP_VS, see bench/lab/ipvs.ts): that column says so.
// Writes bench/results/health.json and health.md.
//
//   npm run bench:health   (root; NLB_HEALTH_TRIALS=<n>, default 5 per system)
//
// The lab gets a unique name and is taken down in a finally block; all traffic stays inside its
// namespaces (198.18.0.0/15).
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../src/lab/lab.js';
import type { LabState } from '../src/lab/state.js';
import { labHealthCheck } from '../src/lab/host-config.js';
import { runLoadgenInClient } from '../src/lab/loadgen-client.js';
import { serviceDefault, serviceFile, writeServiceState } from '../src/lab/service.js';
import { assertLabSafeAddress } from '../src/lab/naming.js';
import { execNs, spawnNs, waitListening } from './lab/ns-exec.js';
import {
  fmt,
  machineInfo,
  maxOf,
  median,
  nowEpochMs,
  query,
  round,
  waitConverged,
  withLab,
} from './lab/support.js';

const trials = Number(process.env.NLB_HEALTH_TRIALS ?? 5);
const ratePerSecond = 300;
const failAfterMs = 1_500;
const mendAfterMs = 4_500;
const runMs = 6_500;
const { intervalMs, fall } = labHealthCheck;
const targetMs = fall * intervalMs + 50;

type System = 'cluster' | 'haproxy';

interface Trial {
  readonly system: System;
  readonly trial: number;
  readonly started: number;
  readonly failed: number;
  /** Failures that began after the service failed (all of them, normally). */
  readonly failedAfterFault: number;
  /** From the service failing to the start of the last failed connection; null: none failed. */
  readonly lastFailureMs: number | null;
  /** Failures that began more than fall x interval + 50 ms after the service failed. */
  readonly lateFailures: number;
  /** Failures after the service was mended. */
  readonly failedAfterMend: number;
}

function log(line: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 23)}] ${line}\n`);
}

function haproxyConfig(bindIp: string, servers: readonly string[]): string {
  return [
    '# haproxy with health checks in front of the lab backends, written by bench/health-bench.ts',
    'global',
    '  maxconn 4096',
    'defaults',
    '  mode tcp',
    '  timeout connect 3s',
    '  timeout client 10s',
    '  timeout server 10s',
    'frontend health',
    `  bind ${bindIp}:80`,
    '  default_backend hosts',
    'backend hosts',
    '  balance roundrobin',
    '  option httpchk GET /health',
    ...servers.map(
      (ip, i) =>
        `  server h${i + 1} ${ip}:80 check inter ${intervalMs} fall ${fall} rise ${labHealthCheck.rise}`,
    ),
    '',
  ].join('\n');
}

function setService(lab: LabState, hostId: number, mode: 'ok' | '503'): void {
  writeServiceState(serviceFile(lab.dir, hostId), { ...serviceDefault, mode });
}

/** One trial: load on `target`, host 2's service failing at failAfterMs and mended at mendAfterMs. */
async function trial(lab: LabState, system: System, target: string, n: number): Promise<Trial> {
  let offset = Number.POSITIVE_INFINITY;
  let failedAt = 0;
  let mendedAt = 0;
  const loadStart = nowEpochMs();
  const timers = [
    setTimeout(() => {
      failedAt = nowEpochMs();
      setService(lab, 2, '503');
    }, failAfterMs),
    setTimeout(() => {
      mendedAt = nowEpochMs();
      setService(lab, 2, 'ok');
    }, mendAfterMs),
  ];
  try {
    const result = await runLoadgenInClient(
      lab,
      1,
      {
        target,
        ratePerSecond,
        countMax: Math.ceil((ratePerSecond * runMs) / 1000),
        durationMs: runMs,
        timeoutMs: 1_000,
        progressIntervalMs: 100,
      },
      {
        onProgress: (p) => (offset = Math.min(offset, nowEpochMs() - p.atMs)),
        onConnection: (c) => (offset = Math.min(offset, nowEpochMs() - (c.atMs + c.latencyMs))),
      },
    );
    if (!Number.isFinite(offset)) offset = loadStart;
    const failures = result.connections.filter((c) => c.failure !== undefined);
    const at = (c: { atMs: number }): number => offset + c.atMs;
    const afterFault = failures.filter((c) => at(c) >= failedAt);
    const last = maxOf(afterFault.map((c) => at(c) - failedAt));
    return {
      system,
      trial: n,
      started: result.started,
      failed: failures.length,
      failedAfterFault: afterFault.length,
      lastFailureMs: last === null ? null : round(last, 1),
      lateFailures: afterFault.filter((c) => at(c) - failedAt > targetMs).length,
      failedAfterMend: failures.filter((c) => at(c) > mendedAt).length,
    };
  } finally {
    for (const timer of timers) clearTimeout(timer);
    setService(lab, 2, 'ok');
  }
}

/** Until host 2 is healthy and owns its share again (the cluster), or one rise window (haproxy). */
async function recovered(lab: LabState, system: System): Promise<void> {
  if (system === 'haproxy') {
    await sleep((labHealthCheck.rise + 1) * intervalMs + 200);
    return;
  }
  const deadline = nowEpochMs() + 10_000;
  for (;;) {
    const q = await query(lab, 2);
    if (q !== undefined && q.rules[0]!.health.healthy && q.rules[0]!.owned.length === 20) break;
    if (nowEpochMs() > deadline) throw new Error('host 2 did not take its share back in 10 s');
    await sleep(50);
  }
  await waitConverged(lab, [1, 2, 3], 10_000);
}

function report(results: readonly Trial[], haproxyVersion: string): string {
  const rows = results.map(
    (t) =>
      `| ${t.system} | ${t.trial} | ${t.started} | ${t.failedAfterFault} | ${t.lastFailureMs === null ? '-' : fmt(t.lastFailureMs, 0)} | ${t.lateFailures} | ${t.failedAfterMend} |`,
  );
  const summary = (['cluster', 'haproxy'] as const).map((system) => {
    const mine = results.filter((t) => t.system === system);
    const last = mine.map((t) => t.lastFailureMs ?? 0);
    const pass =
      system === 'cluster'
        ? mine.every((t) => (t.lastFailureMs ?? 0) <= targetMs && t.lateFailures === 0)
          ? 'PASS'
          : 'FAIL'
        : '(comparison)';
    return `| ${system} | ${fmt(median(last), 0)} | ${fmt(maxOf(last), 0)} | ${fmt(median(mine.map((t) => t.failedAfterFault)), 0)} | ${mine.reduce((a, t) => a + t.lateFailures, 0)} | ${pass} |`;
  });
  return [
    '# Health checks: a failed service, to its last failed connection',
    '',
    `Written by \`npm run bench:health\` on ${new Date().toISOString()}; machine: ${JSON.stringify(machineInfo())}.`,
    '',
    `Host 2's service answers 503 from ${failAfterMs} ms into a ${runMs} ms load of ${ratePerSecond} new connections/s (client c1), and is mended at ${mendAfterMs} ms. Both systems check \`GET /health\` every ${intervalMs} ms, fall ${fall}, rise ${labHealthCheck.rise}. The cluster: nlbd's http check, the VIP. haproxy: ${haproxyVersion.replace(/ - https.*$/, '')}, TCP mode, round robin, \`option httpchk\`, in c2.`,
    `Target (the cluster): the last failed connection within fall × interval + 50 ms = ${targetMs} ms of the failure, none later, none after the mend.`,
    '',
    '| system | median last failure (ms) | max (ms) | median failed per trial | failures after the target | verdict |',
    '|---|---|---|---|---|---|',
    ...summary,
    '| keepalived + IPVS | - | - | - | - | not measured: this kernel has no IPVS (CONFIG_IP_VS), see bench/results/lab.md |',
    '',
    '| system | trial | connections | failed after the fault | last failure (ms) | after the target | after the mend |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const name = `hb${process.pid.toString(36).slice(-4)}`;
  const results: Trial[] = [];
  let haproxyVersion = 'unknown';
  await withLab(
    { name, hosts: 3, clients: 2 },
    async (lab) => {
      await waitConverged(lab, [1, 2, 3], 30_000);
      const proxy = lab.clients[1]!;
      assertLabSafeAddress(proxy.ip, 'haproxy address');
      haproxyVersion = (await execNs(lab, 'c2', ['haproxy', '-v'], 5_000)).stdout.split('\n')[0]!;
      const file = path.join(lab.dir, 'haproxy-health.cfg');
      writeFileSync(
        file,
        haproxyConfig(
          proxy.ip,
          lab.hosts.map((h) => h.ip),
        ),
      );
      const haproxy = spawnNs(lab, 'c2', ['haproxy', '-db', '-f', file]);
      try {
        await waitListening(lab, 'c2', 80, 5_000);
        await sleep((labHealthCheck.rise + 1) * intervalMs);
        for (let n = 1; n <= trials; n++) {
          // Alternate which system goes first, so a drift in the machine hits both alike.
          const order: [System, string][] = [
            ['cluster', lab.vip],
            ['haproxy', proxy.ip],
          ];
          if (n % 2 === 0) order.reverse();
          for (const [system, target] of order) {
            const t = await trial(lab, system, target, n);
            log(
              `${system} trial ${n}: ${t.failedAfterFault} failed, last ${t.lastFailureMs ?? '-'} ms after the fault, ${t.lateFailures} late, ${t.failedAfterMend} after the mend`,
            );
            results.push(t);
            await recovered(lab, system);
          }
        }
      } finally {
        haproxy.kill('SIGTERM');
      }
    },
    log,
  );
  const dir = path.join(repoRoot, 'bench', 'results');
  writeFileSync(
    path.join(dir, 'health.json'),
    `${JSON.stringify({ machine: machineInfo(), targetMs, results }, null, 2)}\n`,
  );
  writeFileSync(path.join(dir, 'health.md'), report(results, haproxyVersion));
  log(`wrote ${path.join(dir, 'health.md')}`);
}

await main();
