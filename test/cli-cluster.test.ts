// `nlb query --cluster` and the cluster-wide verbs against control sockets served in this
// process (real HostMachines behind fake targets, see control-target.ts, answered by the
// daemon's handleControl over a plain one-request server: the daemon's ControlServer sets the
// process umask, which a worker thread may not): hosts 2 and 3 answer,
// host 4's socket does not exist, host 6 has no known way to reach it. The table, the JSON, the
// exit codes (0 all ok, 3 all already, 1 any failure or unreachable), a host that answers as
// another, and the bad option combinations (exit 2 with a hint). The real daemons are in
// lab-cluster-verbs.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterLinks } from '../src/cli/cluster.js';
import {
  type ClusterQueryHost,
  clusterQueryData,
  queryCluster,
  renderClusterQuery,
} from '../src/cli/commands/cluster-query.js';
import { runOnCluster } from '../src/cli/commands/cluster-verbs.js';
import { drainstopOn, stateOn } from '../src/cli/commands/host-state.js';
import { ruleOn } from '../src/cli/commands/port-rules.js';
import { renderHuman } from '../src/cli/render.js';
import { type QueryData, parseRequestLine } from '../src/control/protocol.js';
import { handleControl } from '../src/daemon/control.js';
import { runNlbInProcess } from './cli-helpers.js';
import { type TestTarget, makeTestTarget, testConfig } from './control-target.js';

/** Serves the control protocol on `socket` for `t`: one request line, one response line. */
async function serve(socket: string, t: TestTarget): Promise<net.Server> {
  const server = net.createServer((connection) => {
    let text = '';
    connection.setEncoding('utf8');
    connection.on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf('\n');
      if (end < 0) return;
      void handleControl(parseRequestLine(text.slice(0, end)), t.context).then((response) =>
        connection.end(`${JSON.stringify(response)}\n`),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return server;
}

describe('nlb --cluster against control sockets', () => {
  let dir: string;
  const servers: net.Server[] = [];
  const targets = new Map<number, TestTarget>();
  const sockets = new Map<number, string>();

  const local = (hostId: number, socket = sockets.get(hostId)!) => ({
    hostId,
    link: { endpoint: socket, token: undefined, where: socket },
    unreachable: null,
  });
  /** Hosts 2 and 3 answer, 4 has no socket, 6 cannot be reached at all. */
  const links = (): ClusterLinks => ({
    cluster: 'test',
    hosts: [
      local(2),
      local(3),
      local(4, path.join(dir, 'nlbd-test-4.sock')),
      { hostId: 6, link: null, unreachable: 'remote control of 198.18.0.16 needs --token-file' },
    ],
  });
  const answering = (): ClusterLinks => ({ cluster: 'test', hosts: [local(2), local(3)] });

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'nlb-cluster-'));
    for (const id of [2, 3]) {
      const t = makeTestTarget({ config: testConfig(id) });
      const socket = path.join(dir, `nlbd-test-${id}.sock`);
      servers.push(await serve(socket, t));
      targets.set(id, t);
      sockets.set(id, socket);
    }
  });

  afterAll(async () => {
    for (const server of servers) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('query: one row per host, unreachable ones with the reason, exit 1; the JSON shape', async () => {
    const output = await queryCluster(links());
    expect(output.exitCode).toBe(1);
    const lines = renderHuman(output.human).split('\n');
    expect(lines[0]).toMatch(
      /^HOST\s+WHERE\s+STATE\s+WEIGHT\s+OWNED\s+CONNS\s+MEMBERS\s+MAP\s+CONVERGED\s+REASON$/,
    );
    // Four rules: weights 50 (multiple) and p2 (the single-host rule's priority = host id).
    expect(lines[1]).toMatch(
      /^ {3}2 .*nlbd-test-2\.sock\s+converging\s+50, 50, p2, 50\s+\d+\/60, \d+\/60, \d+\/60, \d+\/60\s+8\s+2\s+[0-9a-f]{8}\s+no\s*$/,
    );
    expect(lines[2]).toMatch(/^ {3}3 .*nlbd-test-3\.sock\s+converging\s+/);
    expect(lines[3]).toMatch(
      /^ {3}4 .*nlbd-test-4\.sock\s+unreachable\s+no nlbd answers on .*no such socket/,
    );
    expect(lines[4]).toMatch(
      /^ {3}6\s+-\s+unreachable\s+remote control of 198\.18\.0\.16 needs --token-file$/,
    );
    const text = renderHuman(output.human);
    expect(text).toContain('weight and owned are per port rule');
    expect(text).toContain('note: the hosts disagree: host 2 sees members 2, map');
    expect(text).toContain('hint: is nlbd running');
    expect(text).toContain('cluster test: 2 of 4 hosts answered\n');

    const data = output.data;
    expect(data).toMatchObject({ cluster: 'test', answered: 2, agree: false, converged: false });
    expect(data.hosts.map((h) => [h.hostId, h.ok])).toEqual([
      [2, true],
      [3, true],
      [4, false],
      [6, false],
    ]);
    expect(data.hosts[0]).toMatchObject({
      where: sockets.get(2),
      query: { hostId: 2, cluster: 'test', members: [2] },
      connections: { total: 8, rules: [3, 0, 0, 5], error: null },
    });
    expect(data.hosts[2]).toMatchObject({
      where: path.join(dir, 'nlbd-test-4.sock'),
      unreachable: true,
      error: { message: expect.stringContaining('no such socket') as unknown },
    });
    expect(data.hosts[3]).toMatchObject({ where: null, unreachable: true });
  });

  it('query: a host answering as another is a failed row, not that host', async () => {
    const output = await queryCluster({ cluster: 'test', hosts: [local(5, sockets.get(2))] });
    expect(output.exitCode).toBe(1);
    expect(output.data.hosts[0]).toMatchObject({
      hostId: 5,
      ok: false,
      unreachable: false,
      error: { message: 'host 2 of cluster test answers there, not host 5' },
    });
    expect(renderHuman(output.human)).toMatch(/^ {3}5 .*\s+failed\s+.*host 2 of cluster test/m);
  });

  it('query: hosts that agree and converged: no note, exit 0; stopped hosts are not compared', () => {
    const view = (hostId: number, over: Partial<QueryData> = {}): ClusterQueryHost => ({
      hostId,
      where: `/run/nlb/nlbd-web-${hostId}.sock`,
      ok: true,
      query: {
        cluster: 'web',
        hostId,
        incarnation: 1,
        state: 'converged',
        converged: true,
        members: [1, 2],
        defaultHost: 1,
        mapDigest: '0123456789abcdef',
        keptOut: null,
        dataplaneInSync: true,
        rules: [
          {
            rule: 0,
            vip: '198.18.0.100',
            ports: '80',
            protocol: 'tcp',
            mode: 'multiple',
            affinity: 'none',
            buckets: 60,
            state: 'enabled',
            owned: hostId > 2 ? [] : Array.from({ length: 30 }, (_, b) => b + (hostId - 1) * 30),
            orphan: [],
            loadWeight: 50,
            handlingPriority: hostId,
            health: {
              check: null,
              healthy: true,
              successes: 0,
              failures: 0,
              last: null,
              agent: null,
              failingOpen: false,
              reportedWeight: null,
            },
          },
        ],
        peers: [],
        ...over,
      },
      connections: { total: null, rules: [null], error: 'conntrack: permission denied' },
    });
    const stopped = view(3, { state: 'stopped', converged: false, members: [], mapDigest: 'ff' });
    const output = renderClusterQuery(clusterQueryData('web', [view(1), view(2), stopped]));
    expect(output.exitCode).toBe(0);
    expect(output.data).toMatchObject({ agree: true, disagreement: null, converged: true });
    expect(renderHuman(output.human)).toBe(
      [
        'HOST  WHERE                     STATE      WEIGHT  OWNED  CONNS  MEMBERS  MAP       CONVERGED',
        '   1  /run/nlb/nlbd-web-1.sock  converged  50      30/60      -  1,2      01234567  yes',
        '   2  /run/nlb/nlbd-web-2.sock  converged  50      30/60      -  1,2      01234567  yes',
        '   3  /run/nlb/nlbd-web-3.sock  stopped    50      0/60       -  -        ff        no',
        '',
        'cluster web: 3 of 3 hosts answered, converged',
        '',
      ].join('\n'),
    );
  });

  it('state verbs: a line per host, unreachable ones say so; exit 1, 3 when all already, 0', async () => {
    const stop = await runOnCluster(links(), 'stop', (ask) => stateOn(ask, 'stop'));
    expect(stop.exitCode).toBe(1);
    const lines = renderHuman(stop.human).split('\n');
    expect(lines.slice(0, 4)).toEqual([
      `host 2 (${sockets.get(2)}): stop: stopped: existing connections were dropped`,
      `host 3 (${sockets.get(3)}): stop: stopped: existing connections were dropped`,
      `host 4: unreachable: no nlbd answers on ${path.join(dir, 'nlbd-test-4.sock')} (no such socket)`,
      'host 6: unreachable: remote control of 198.18.0.16 needs --token-file',
    ]);
    expect(lines[4]).toMatch(/^hint: is nlbd running/);
    expect(lines.slice(5)).toEqual([
      'stop on cluster test: 4 hosts, 2 done, 0 already, 0 failed, 2 unreachable',
      '',
    ]);
    expect(stop.data.counts).toEqual({ ok: 2, already: 0, failed: 0, unreachable: 2 });
    expect(stop.data.hosts[0]).toEqual({
      hostId: 2,
      where: sockets.get(2),
      ok: true,
      code: 'ok',
      result: { verb: 'stop', code: 'ok', message: 'stopped: existing connections were dropped' },
    });
    expect(stop.data.hosts[2]).toMatchObject({
      hostId: 4,
      ok: false,
      unreachable: true,
      error: { code: 'failed', exitCode: 1 },
    });
    const again = await runOnCluster(answering(), 'stop', (ask) => stateOn(ask, 'stop'));
    expect(again.exitCode).toBe(3);
    const start = await runOnCluster(answering(), 'start', (ask) => stateOn(ask, 'start'));
    expect(start.exitCode).toBe(0);
  });

  it('a host that refuses is failed (with the hint), not unreachable; the others still act', async () => {
    await targets.get(3)!.target.command({ verb: 'suspend' });
    try {
      const start = await runOnCluster(answering(), 'start', (ask) => stateOn(ask, 'start'));
      expect(start.exitCode).toBe(1);
      const text = renderHuman(start.human);
      expect(text).toContain(`host 2 (${sockets.get(2)}): start: already started`);
      expect(text).toContain(`host 3 (${sockets.get(3)}): failed: start: the host is suspended`);
      expect(text).toContain('hint: run `nlb resume` first');
      expect(start.data.counts).toEqual({ ok: 0, already: 1, failed: 1, unreachable: 0 });
    } finally {
      await targets.get(3)!.target.command({ verb: 'resume' });
      await targets.get(3)!.target.command({ verb: 'start' });
    }
  });

  it('rule verbs: every host resolves the spec; no rule anywhere is a failure per host', async () => {
    const drain = await runOnCluster(answering(), 'drain 198.18.0.100:80', (ask) =>
      ruleOn(ask, 'drain', '198.18.0.100:80'),
    );
    expect(drain.exitCode).toBe(0);
    expect(renderHuman(drain.human)).toContain(
      `host 3 (${sockets.get(3)}): drain 198.18.0.100:80 (rules 0, 1): rule(s) 0, 1 draining`,
    );
    const enable = await runOnCluster(answering(), 'enable all:all', (ask) =>
      ruleOn(ask, 'enable', 'all:all'),
    );
    expect(enable.exitCode).toBe(0);
    expect(enable.data.hosts.every((h) => h.ok && h.result.rules.length === 4)).toBe(true);
    const none = await runOnCluster(answering(), 'disable all:8080', (ask) =>
      ruleOn(ask, 'disable', 'all:8080'),
    );
    expect(none.exitCode).toBe(1);
    expect(none.data.hosts.map((h) => !h.ok && h.error.code)).toEqual([
      'port-in-no-rule',
      'port-in-no-rule',
    ]);
  });

  it('drainstop --timeout: the hosts drain in parallel, each forced after the timeout', async () => {
    const started = performance.now();
    const drained = await runOnCluster(answering(), 'drainstop', (ask) => drainstopOn(ask, '0.4'));
    const elapsedMs = performance.now() - started;
    expect(drained.exitCode).toBe(0);
    expect(drained.data.hosts.map((h) => h.ok && h.result.outcome)).toEqual(['forced', 'forced']);
    // Both waited 0.4 s at once: well under the 0.8 s one after the other would take.
    expect(elapsedMs).toBeLessThan(750);
    for (const t of targets.values()) await t.target.command({ verb: 'start' });
  });

  it('through the CLI: seeded by one socket, a peer with no known address is unreachable', async () => {
    const run = await runNlbInProcess([
      'query',
      '--cluster',
      '--socket',
      sockets.get(2)!,
      '--json',
    ]);
    expect(run.code).toBe(1);
    const data = JSON.parse(run.stdout) as { hosts: { hostId: number; ok: boolean }[] };
    expect(data.hosts).toContainEqual(expect.objectContaining({ hostId: 2, ok: true }));
    expect(data.hosts).toContainEqual(
      expect.objectContaining({
        hostId: 1,
        ok: false,
        unreachable: true,
        error: { message: 'its address is not known (no heartbeat accepted from it)', hint: '' },
      }),
    );
    const stop = await runNlbInProcess(['stop', '--cluster', '--socket', sockets.get(2)!]);
    expect(stop.code).toBe(1);
    expect(stop.stdout).toContain(`host 2 (${sockets.get(2)}): stop: stopped`);
    expect(stop.stdout).toContain('host 1: unreachable: its address is not known');
    await targets.get(2)!.target.command({ verb: 'start' });
  });

  it('bad combinations: exit 2 with a hint naming the fix, before any host is asked', async () => {
    const lab = await runNlbInProcess(['stop', '--cluster', '--lab', 'demo', '--host', '2']);
    expect(lab.code).toBe(2);
    expect(lab.stderr).toContain('nlb: --cluster: acts on every host, and --host 2 names one host');
    expect(lab.stderr).toContain(
      'hint: drop --host 2 for the whole lab (nlb stop --cluster --lab demo)',
    );
    const remote = await runNlbInProcess(['query', '--cluster', '--host', '10.0.0.12']);
    expect(remote.code).toBe(2);
    expect(remote.stderr).toContain("--host: '10.0.0.12' is a remote nlbd");
    expect(remote.stderr).toContain('--token-file /etc/nlb/control.token');
    const token = await runNlbInProcess([
      'drain',
      'all:80',
      '--cluster',
      '--lab',
      'demo',
      '--token-file',
      '/x',
    ]);
    expect(token.code).toBe(2);
    expect(token.stderr).toContain('hint: drop --token-file: nlb drain --cluster --lab demo');
    const timeout = await runNlbInProcess(['drainstop', '--cluster', '--timeout', 'soon']);
    expect(timeout.code).toBe(2);
    expect(timeout.stderr).toContain("--timeout: 'soon' is not a number of seconds");
  });

  it('help shows --cluster and examples on every cluster-wide verb', async () => {
    for (const verb of [
      'query',
      'start',
      'stop',
      'drainstop',
      'suspend',
      'resume',
      'enable',
      'disable',
      'drain',
    ]) {
      const help = await runNlbInProcess([verb, '--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('--cluster');
      expect(help.stdout).toContain(`nlb ${verb} `);
      expect(help.stdout).toMatch(new RegExp(`nlb ${verb} .*--cluster --lab demo`));
    }
  });
});
