// Every control verb against real nlbd in a three-host lab (one lab for the whole file), as an
// operator types them: `nlb <verb> --lab L --host N` over the unix sockets (in-process through
// runCli, test/cli-helpers.ts: the same code as the binary without a node start per call), and
// remote control with the built binary from inside the client namespace (`ip netns exec`) against
// each host's --control-listen with a valid, a wrong and no token. Under a running load generator with held connections: a valid
// reload (weights), an invalid one (rejected, exit 2, the old config stays) and a rule drain
// and enable, with 0 failed and 0 broken connections; drainstop --timeout both drained and
// forced. Needs root (skipped visibly otherwise, failing with NLB_REQUIRE_LAB=1).
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { loadLab, startHostDaemon } from '../src/lab/lab.js';
import { remoteControlCommand } from './support/lab-hosts.js';
import { hostIp } from '../src/lab/naming.js';
import { type NlbRun, nlbMain, runNlbIn, runNlbInProcess } from './cli-helpers.js';
import {
  type ClusterLab,
  LabSession,
  declareLabRequirement,
  expectConverged,
  isRoot,
  labSetupTimeoutMs,
  queryHosts,
  startLoad,
  waitForHosts,
} from './support/lab-cluster.js';

declareLabRequirement('cli-verbs-lab');

const token = 'c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00';
const remotePort = 2504;
const metricsPort = 9505;

/** Load while the cluster is changed: held connections must all survive, no request may fail. */
const load = {
  ratePerSecond: 60,
  holds: 18,
  holdPingIntervalMs: 200,
  holdPingTimeoutMs: 1_500,
  timeoutMs: 3_000,
} as const;

/** Runs a small node script inside a lab namespace and returns what it printed. */
async function nodeIn(namespace: string, script: string): Promise<string> {
  const run = await new Promise<NlbRun>((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', namespace, process.execPath, '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 15_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, elapsedMs: 0 }));
  });
  if (run.code !== 0) throw new Error(`node in ${namespace} failed: ${run.stderr}`);
  return run.stdout;
}

/** One raw control request over TCP from inside `namespace`: the response line, parsed. */
async function rawRemote(namespace: string, host: string, request: unknown): Promise<unknown> {
  const script =
    `const s = require('net').connect(${remotePort}, ${JSON.stringify(host)});` +
    `let t = ''; s.setEncoding('utf8'); s.on('data', (c) => (t += c));` +
    `s.on('close', () => process.stdout.write(t));` +
    `s.write(${JSON.stringify(JSON.stringify(request))} + '\\n');`;
  return JSON.parse((await nodeIn(namespace, script)).trim()) as unknown;
}

/** Writes `file` as the YAML `original` with `edit` applied: each edit starts from the original. */
function editConfig(
  file: string,
  original: string,
  edit: (doc: Record<string, Record<string, unknown>>) => void,
): void {
  const doc = parse(original) as Record<string, Record<string, unknown>>;
  edit(doc);
  writeFileSync(file, stringify(doc));
}

describe.runIf(isRoot)('nlb control verbs against a three-host lab', () => {
  const session = new LabSession();
  let lab: ClusterLab;
  let labName: string;
  let client: string;
  let tokenFile: string;
  let wrongTokenFile: string;
  const configText = new Map<number, string>();
  const nlb = (hostId: number, ...args: string[]) =>
    runNlbInProcess([...args, '--lab', labName, '--host', String(hostId)]);

  beforeAll(async () => {
    await session.lock();
    lab = await session.up('cv', { hosts: 3, clients: 1, startDaemons: false });
    labName = lab.state.name;
    client = lab.state.clients[0]!.namespace;
    tokenFile = path.join(lab.state.dir, 'control.token');
    wrongTokenFile = path.join(lab.state.dir, 'wrong.token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    writeFileSync(wrongTokenFile, `${'9'.repeat(64)}\n`, { mode: 0o600 });
    for (const host of lab.state.hosts) {
      configText.set(host.id, readFileSync(host.config, 'utf8'));
      await startHostDaemon(labName, host.id, {
        command: remoteControlCommand(host.id, tokenFile, [
          '--metrics-listen',
          `${hostIp(host.id)}:${metricsPort}`,
        ]),
      });
    }
    await expectConverged(lab, [1, 2, 3], 20);
  }, labSetupTimeoutMs);

  afterAll(() => session.close());

  it('query, queryport, params, display and metrics show the converged cluster', async () => {
    const query = await nlb(2, 'query', '--json');
    expect(JSON.parse(query.stdout)).toMatchObject({
      hostId: 2,
      converged: true,
      members: [1, 2, 3],
    });
    const port = await nlb(2, 'queryport', '198.18.0.100:80', '--json');
    expect(port.code).toBe(0);
    const rule = JSON.parse(port.stdout).rules[0];
    expect(rule).toMatchObject({
      rule: 0,
      state: 'enabled',
      owners: { 1: 20, 2: 20, 3: 20 },
      ownedHere: 20,
    });
    expect((await nlb(2, 'queryport', '198.18.0.100:81')).code).toBe(4);
    const params = await nlb(1, 'params');
    expect(params.stdout).toMatch(/heartbeats\s+sent \d+, received \d+/);
    expect(params.stdout).toMatch(/RULE\s+CLUSTER IP/);
    const display = await nlb(3, 'display');
    expect(display.stdout).toMatch(/addresses\s+.*198\.18\.0\.13\/24.*198\.18\.0\.100\/32/);
    expect(display.stdout).toContain('converged');
    const metrics = await nlb(1, 'metrics');
    expect(metrics.stdout).toMatch(
      /^nlb_buckets_owned\{rule="0",vip="198.18.0.100",ports="80",protocol="tcp",cluster="nlb-cv[0-9a-f]+",host="1"\} 20$/m,
    );
    expect(metrics.stdout).toMatch(/^nlb_members\{.*\} 3$/m);
    // The same text over HTTP, from the client namespace (nlbd --metrics-listen).
    const scraped = await nodeIn(
      client,
      `fetch('http://${hostIp(1)}:${metricsPort}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`,
    );
    expect(scraped).toMatch(/^nlb_converged\{.*host="1"\} 1$/m);
  });

  it('remote control from the client namespace: valid token works, wrong or no token is refused and not executed', async () => {
    const where = `${hostIp(2)}:${remotePort}`;
    const query = await runNlbIn(client, [
      'query',
      '--json',
      '--host',
      where,
      '--token-file',
      tokenFile,
    ]);
    expect(query.code).toBe(0);
    expect(JSON.parse(query.stdout)).toMatchObject({ hostId: 2, converged: true, socket: where });
    const wrong = await runNlbIn(client, ['stop', '--host', where, '--token-file', wrongTokenFile]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('remote control refused: wrong token');
    expect(await rawRemote(client, hostIp(2), { verb: 'stop' })).toMatchObject({
      ok: false,
      error: { code: 'unauthorized' },
    });
    expect(
      await rawRemote(client, hostIp(2), { verb: 'stop', token: 'x'.repeat(64) }),
    ).toMatchObject({
      ok: false,
      error: { code: 'unauthorized' },
    });
    // Host 2 still takes part: nothing was executed.
    const after = await queryHosts(lab, [2]);
    expect(after.get(2)).toMatchObject({ converged: true, members: [1, 2, 3] });
    const noToken = await runNlbIn(client, ['query', '--host', where]);
    expect(noToken.code).toBe(2);
    // A remote command with the token is executed and logged with who sent it.
    const drain = await runNlbIn(client, [
      'drain',
      'all:80',
      '--host',
      where,
      '--token-file',
      tokenFile,
    ]);
    expect(drain.code).toBe(0);
    const enable = await runNlbIn(client, [
      'enable',
      'all:80',
      '--host',
      where,
      '--token-file',
      tokenFile,
    ]);
    expect(enable.code).toBe(0);
    const events = JSON.parse((await nlb(2, 'events', '--json')).stdout) as {
      events: { event: string; peer?: string }[];
    };
    const names = events.events.map((e) => e.event);
    expect(names).toContain('remote control refused');
    expect(events.events.find((e) => e.event === 'remote command')?.peer).toMatch(
      /^198\.18\.0\.\d+:\d+$/,
    );
    expect(names).toEqual(expect.arrayContaining(['rule drained', 'rule enabled']));
    await expectConverged(lab, [1, 2, 3], 20);
  });

  it('under load: reload valid (weights) and invalid (rejected, exit 2), drain and enable a rule: 0 failed, 0 broken', async () => {
    const running = startLoad(lab, { ...load, countMax: 900, durationMs: 12_000 });
    try {
      await reloadsAndRulesUnderLoad();
    } finally {
      // Back to the original config whatever failed, for the next tests.
      writeFileSync(lab.state.hosts[0]!.config, configText.get(1)!);
      running.stop();
    }
    const result = await running.done;
    expect(result.failures).toEqual({});
    expect(result.failed).toBe(0);
    expect(result.holds).toHaveLength(load.holds);
    expect(result.holds.filter((h) => h.host === undefined || h.broken !== undefined)).toEqual([]);
    expect(result.holdsBroken).toBe(0);
    expect(Object.keys(result.perHost).sort()).toEqual(['1', '2', '3']);
    // The original config back through SIGHUP, the systemd unit's ExecReload.
    process.kill(loadLab(labName).hosts[0]!.daemon!.pid, 'SIGHUP');
    await expectConverged(lab, [1, 2, 3], 20);
    const events = JSON.parse((await nlb(1, 'events', '--json', '--limit', '30')).stdout) as {
      events: { event: string; code?: string }[];
    };
    expect(events.events.find((e) => e.event === 'reload on SIGHUP')).toMatchObject({ code: 'ok' });
  });

  async function reloadsAndRulesUnderLoad(): Promise<void> {
    await sleep(1_000);

    // Invalid: a weight out of range. Rejected with the reason; host 1 keeps its config.
    editConfig(lab.state.hosts[0]!.config, configText.get(1)!, (doc) => {
      doc.host!.loadWeight = 500;
    });
    const invalid = await nlb(1, 'reload');
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain('reload rejected');
    expect(invalid.stderr).toContain('host.loadWeight');
    // Only a restart may change the interface: rejected too, naming it.
    editConfig(lab.state.hosts[0]!.config, configText.get(1)!, (doc) => {
      doc.host!.loadWeight = 20;
      doc.cluster!.interface = 'eth9';
    });
    const restartOnly = await nlb(1, 'reload');
    expect(restartOnly.code).toBe(2);
    expect(restartOnly.stderr).toContain('cluster.interface changed');
    const events = JSON.parse((await nlb(1, 'events', '--json')).stdout) as {
      events: { event: string }[];
    };
    expect(events.events.filter((e) => e.event === 'config rejected')).toHaveLength(2);
    expect(
      JSON.parse((await nlb(1, 'queryport', 'all:80', '--json')).stdout).rules[0].ownedHere,
    ).toBe(20);

    // Valid: host 1's weight 50 -> 20; its share goes from 20 to 60 × 20/120 = 10 buckets.
    editConfig(lab.state.hosts[0]!.config, configText.get(1)!, (doc) => {
      doc.host!.loadWeight = 20;
    });
    const valid = await nlb(1, 'reload', '--json');
    expect(valid.code).toBe(0);
    expect(JSON.parse(valid.stdout)).toMatchObject({
      code: 'ok',
      changes: ['host.rules[0].loadWeight: 50 -> 20'],
      clusterChanged: false,
    });
    expect((await nlb(1, 'reload')).code).toBe(3);
    const moved = await waitForHosts(
      lab,
      [1, 2, 3],
      (d, id) => d.converged && d.rules[0]!.owned.length === (id === 1 ? 10 : 25),
      5_000,
    );
    expect(moved.ok).toBe(true);

    // A rule drained on host 3, then enabled again, still under load.
    expect((await nlb(3, 'drain', '198.18.0.100:80')).code).toBe(0);
    const drained = await waitForHosts(
      lab,
      [1, 2, 3],
      (d, id) => d.converged && (id !== 3 || d.rules[0]!.owned.length === 0),
      5_000,
    );
    expect(drained.ok).toBe(true);
    expect((await nlb(3, 'enable', '198.18.0.100:80')).code).toBe(0);
    // Keep the load running a little after the last change.
    await sleep(1_500);
  }

  it('under load: a cluster-part reload (a new port rule) on every host keeps every held connection', async () => {
    const running = startLoad(lab, { ...load, countMax: 600, durationMs: 10_000 });
    let reloads: NlbRun[];
    let restored: NlbRun[];
    try {
      await running.started;
      await sleep(1_000);
      for (const host of lab.state.hosts) {
        editConfig(host.config, configText.get(host.id)!, (doc) => {
          (doc.cluster!.portRules as unknown[]).push({
            vip: '198.18.0.100',
            ports: 8080,
            protocol: 'tcp',
            mode: 'multiple',
            affinity: 'none',
          });
        });
      }
      reloads = await Promise.all([1, 2, 3].map((id) => nlb(id, 'reload', '--json')));
      const converged = await waitForHosts(
        lab,
        [1, 2, 3],
        (d) => d.converged && d.rules.length === 2 && d.rules[1]!.owned.length === 20,
        8_000,
      );
      expect(converged.ok).toBe(true);
      const port = JSON.parse((await nlb(2, 'queryport', '198.18.0.100:8080', '--json')).stdout);
      expect(port.rules[0]).toMatchObject({
        rule: 1,
        ports: '8080',
        owners: { 1: 20, 2: 20, 3: 20 },
      });
      await sleep(1_000);
    } finally {
      for (const host of lab.state.hosts) writeFileSync(host.config, configText.get(host.id)!);
      restored = await Promise.all([1, 2, 3].map((id) => nlb(id, 'reload')));
      running.stop();
    }
    for (const run of reloads) {
      expect(JSON.parse(run.stdout)).toMatchObject({ code: 'ok', clusterChanged: true });
    }
    expect(restored.map((r) => r.code)).toEqual([0, 0, 0]);
    await expectConverged(lab, [1, 2, 3], 20);
    const result = await running.done;
    expect(result.holds.filter((h) => h.host === undefined || h.broken !== undefined)).toEqual([]);
    expect(result.holdsBroken).toBe(0);
    // New connections may fail while the hosts' cluster parts differ: the core then treats a
    // peer with another config as gone (partition detected) and both sides take its buckets
    // for a few ms (a protocol issue reported with this change, not a control surface one).
    console.info(
      `cli-verbs-lab: cluster-part reload under load: ${result.started} connections, ${result.failed} failed ${JSON.stringify(result.failures)}, ${result.holdsBroken} held broken`,
    );
  });

  it('start/stop/suspend/resume exit codes, and events --follow watching them', async () => {
    const follow = spawn(process.execPath, [
      nlbMain,
      'events',
      '--follow',
      '--json',
      '--limit',
      '1',
      '--lab',
      labName,
      '--host',
      '1',
    ]);
    const lines: string[] = [];
    let rest = '';
    follow.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n');
      rest = parts.pop()!;
      lines.push(...parts);
    });
    const closed = new Promise<number | null>((resolve) => follow.once('close', resolve));
    for (let i = 0; i < 100 && lines.length === 0; i++) await sleep(50);

    expect((await nlb(3, 'stop')).code).toBe(0);
    expect((await nlb(3, 'stop')).code).toBe(3);
    expect((await nlb(3, 'start')).code).toBe(0);
    expect((await nlb(3, 'start')).code).toBe(3);
    expect((await nlb(3, 'suspend')).code).toBe(0);
    const refused = await nlb(3, 'start');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('suspended');
    expect((await nlb(3, 'resume')).code).toBe(0);
    expect((await nlb(3, 'start')).code).toBe(0);
    await expectConverged(lab, [1, 2, 3], 20);
    // Host 1 saw host 3 leave and come back, in order, as they happened.
    for (let i = 0; i < 60; i++) {
      if (lines.some((l) => l.includes('"converged"') && l.includes('[1,2,3]'))) break;
      await sleep(50);
    }
    follow.kill('SIGINT');
    expect(await closed).toBe(0);
    const seen = lines.map((l) => JSON.parse(l) as { event: string; seq: number });
    const names = seen.slice(1).map((e) => e.event);
    expect(names).toContain('converged');
    expect(names.some((n) => n === 'host left' || n === 'converging')).toBe(true);
    expect(seen.slice(1).every((e, i) => e.seq === seen[i]!.seq + 1)).toBe(true);
  });

  it('drainstop --timeout: forced when connections outlast it, drained when they end', async () => {
    const running = startLoad(lab, {
      ...load,
      ratePerSecond: 20,
      countMax: 100,
      durationMs: 4_000,
    });
    await running.started;
    await sleep(500);
    // Host 3 holds some of the held connections (18 flows over 3 hosts): they outlast 1 s.
    const forced = await nlb(3, 'drainstop', '--timeout', '1', '--json');
    expect(forced.code).toBe(0);
    expect(JSON.parse(forced.stdout)).toMatchObject({ outcome: 'forced' });
    const result = await running.done;
    // Only host 3's held connections were cut, by the forced stop.
    expect(result.holds.filter((h) => h.broken !== undefined && h.host !== 3)).toEqual([]);
    expect((await nlb(3, 'start')).code).toBe(0);
    await expectConverged(lab, [1, 2, 3], 20);
    // With no load left, a drainstop ends as soon as nlbd sees no connection.
    const drained = await nlb(3, 'drainstop', '--timeout', '10', '--json');
    expect(drained.code).toBe(0);
    expect(JSON.parse(drained.stdout)).toMatchObject({ outcome: 'drained' });
    expect((await nlb(3, 'start')).code).toBe(0);
    await expectConverged(lab, [1, 2, 3], 20);
  });
});
