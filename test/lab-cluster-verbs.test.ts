// The whole-cluster view and the cluster-wide verbs against real nlbd in a three-host lab (one
// lab for the file): `nlb query --cluster --lab L` (in-process through runCli), the same view
// from inside host 1's namespace (its own nlbd, the others' local sockets) and from the client
// namespace by remote control (a seed address and a token; the peers at their heartbeat
// addresses); drainstop, start, suspend, resume, disable and enable with --cluster; and one
// host's nlbd killed: the view shows it unreachable beside the two others and exits 1, and a
// verb acts on the two. Needs root (skipped visibly otherwise, failing with NLB_REQUIRE_LAB=1).
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterQueryData } from '../src/cli/commands/cluster-query.js';
import type { ClusterVerbData } from '../src/cli/commands/cluster-verbs.js';
import { killHostDaemon, startHostDaemon } from '../src/lab/lab.js';
import { remoteControlCommand } from './support/lab-hosts.js';
import { hostIp } from '../src/lab/naming.js';
import { type NlbRun, nlbMain, runNlbInProcess } from './cli-helpers.js';
import {
  type ClusterLab,
  LabSession,
  declareLabRequirement,
  expectConverged,
  isRoot,
  labSetupTimeoutMs,
  waitForHosts,
} from './support/lab-cluster.js';

declareLabRequirement('lab-cluster-verbs');

const token = 'feed0000feed0000feed0000feed0000feed0000feed0000feed0000feed0000';
const remotePort = 2504;

/** Runs the built `nlb` inside a lab namespace. */
function runNlbIn(namespace: string, args: readonly string[]): Promise<NlbRun> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', namespace, process.execPath, nlbMain, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 30_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({ code, stdout, stderr, elapsedMs: performance.now() - started }),
    );
  });
}

function parsed<T>(run: NlbRun): T {
  try {
    return JSON.parse(run.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${run.code}): ${run.stdout}\n${run.stderr}`);
  }
}

/** Every host answered, converged on 1,2,3, each owning 20 of rule 0's 60 buckets. */
function expectWholeCluster(data: ClusterQueryData): void {
  expect(data).toMatchObject({ answered: 3, agree: true, converged: true, disagreement: null });
  const owned = data.hosts.map((h) => (h.ok ? h.query.rules[0]!.owned.length : -1));
  expect(owned).toEqual([20, 20, 20]);
  const first = data.hosts[0]!;
  expect(first.ok && owned.reduce((a, b) => a + b, 0) === first.query.rules[0]!.buckets).toBe(true);
  for (const host of data.hosts) {
    expect(host).toMatchObject({ ok: true, query: { members: [1, 2, 3], converged: true } });
  }
}

describe.runIf(isRoot)('nlb --cluster against a three-host lab', () => {
  const session = new LabSession();
  let lab: ClusterLab;
  let labName: string;
  let tokenFile: string;
  const cluster = (...args: string[]) => runNlbInProcess([...args, '--cluster', '--lab', labName]);

  beforeAll(async () => {
    await session.lock();
    lab = await session.up('lcv', { hosts: 3, clients: 1, startDaemons: false });
    labName = lab.state.name;
    tokenFile = path.join(lab.state.dir, 'control.token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    for (const host of lab.state.hosts) {
      await startHostDaemon(labName, host.id, {
        command: remoteControlCommand(host.id, tokenFile),
      });
    }
    await expectConverged(lab, [1, 2, 3], 20);
  }, labSetupTimeoutMs);

  afterAll(() => session.close());

  it('query --cluster: all three converged, owned buckets summing to the rule, by lab, locally and remotely', async () => {
    const run = await cluster('query');
    expect(run.code).toBe(0);
    const lines = run.stdout.split('\n');
    expect(lines[0]).toMatch(/^HOST\s+WHERE\s+STATE\s+WEIGHT\s+OWNED\s+CONNS\s+MEMBERS\s+MAP/);
    for (const id of [1, 2, 3]) {
      expect(lines[id]).toMatch(
        new RegExp(
          `^ {3}${id} .*nlbd-.*-${id}\\.sock\\s+converged.*\\s+50\\s+20/60\\s+0\\s+1,2,3\\s+[0-9a-f]{8}\\s+yes$`,
        ),
      );
    }
    expect(run.stdout).toContain('3 of 3 hosts answered, converged');
    expectWholeCluster(parsed<ClusterQueryData>(await cluster('query', '--json')));

    // From host 1's namespace: its own nlbd, and the other hosts' sockets in /run/nlb.
    const fromHost = await runNlbIn(lab.state.hosts[0]!.namespace, [
      'query',
      '--cluster',
      '--json',
    ]);
    expect(fromHost.code).toBe(0);
    expectWholeCluster(parsed<ClusterQueryData>(fromHost));

    // From the client by remote control: host 2 as the seed, hosts 1 and 3 at their addresses.
    const remote = await runNlbIn(lab.state.clients[0]!.namespace, [
      'query',
      '--cluster',
      '--json',
      '--host',
      hostIp(2),
      '--token-file',
      tokenFile,
    ]);
    expect(remote.code).toBe(0);
    const data = parsed<ClusterQueryData>(remote);
    expectWholeCluster(data);
    expect(data.hosts.map((h) => h.where)).toEqual(
      [1, 2, 3].map((id) => `${hostIp(id)}:${remotePort}`),
    );
  });

  it('drainstop --cluster drains every host at once; again is 3; start --cluster brings them back', async () => {
    const drained = await cluster('drainstop', '--timeout', '10', '--json');
    expect(drained.code).toBe(0);
    const data = parsed<ClusterVerbData<{ outcome: string }>>(drained);
    expect(data.counts).toEqual({ ok: 3, already: 0, failed: 0, unreachable: 0 });
    expect(data.hosts.map((h) => h.ok && h.result.outcome)).toEqual([
      'drained',
      'drained',
      'drained',
    ]);
    const view = parsed<ClusterQueryData>(await cluster('query', '--json'));
    expect(view.hosts.map((h) => h.ok && h.query.state)).toEqual(['stopped', 'stopped', 'stopped']);
    const again = await cluster('drainstop');
    expect(again.code).toBe(3);
    expect(again.stdout).toMatch(/^host 1 \(.*\): drainstop: already stopped$/m);
    const start = await cluster('start');
    expect(start.code).toBe(0);
    expect(start.stdout).toMatch(/^host 3 \(.*\): start: started$/m);
    await expectConverged(lab, [1, 2, 3], 20);
  });

  it('suspend --cluster: start then fails on every host (1) until resume --cluster', async () => {
    expect((await cluster('suspend')).code).toBe(0);
    const refused = await cluster('start');
    expect(refused.code).toBe(1);
    expect(refused.stdout).toMatch(/^host 2 \(.*\): failed: start: the host is suspended/m);
    expect(refused.stdout).toContain('hint: run `nlb resume` first');
    expect(refused.stdout).toContain('0 done, 0 already, 3 failed, 0 unreachable');
    expect((await cluster('resume')).code).toBe(0);
    expect((await cluster('start')).code).toBe(0);
    await expectConverged(lab, [1, 2, 3], 20);
  });

  it('disable and enable a rule --cluster', async () => {
    const disable = await cluster('disable', '198.18.0.100:80');
    expect(disable.code).toBe(0);
    expect(disable.stdout).toMatch(/^host 1 \(.*\): disable 198\.18\.0\.100:80 \(rule 0\): /m);
    const off = await waitForHosts(
      lab,
      [1, 2, 3],
      (d) => d.rules[0]!.state === 'disabled' && d.rules[0]!.owned.length === 0,
      5_000,
    );
    expect(off.ok).toBe(true);
    expect((await cluster('query')).stdout).toMatch(/0\/60 disabled/);
    expect((await cluster('disable', '198.18.0.100:80')).code).toBe(3);
    expect((await cluster('enable', '198.18.0.100:80')).code).toBe(0);
    await expectConverged(lab, [1, 2, 3], 20);
  });

  it("one host's nlbd killed: the view shows it unreachable beside the other two, exit 1", async () => {
    expect(await killHostDaemon(labName, 3)).toBe(true);
    const run = await cluster('query');
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^ {3}3 .*nlbd-.*-3\.sock\s+unreachable\s+.*no nlbd answers on/m);
    expect(run.stdout).toMatch(/^ {3}1 .*\s+(converged|converging)/m);
    expect(run.stdout).toMatch(/^ {3}2 .*\s+(converged|converging)/m);
    expect(run.stdout).toContain('2 of 3 hosts answered');
    const data = parsed<ClusterQueryData>(await cluster('query', '--json'));
    expect(data.hosts.map((h) => [h.hostId, h.ok])).toEqual([
      [1, true],
      [2, true],
      [3, false],
    ]);
    expect(data.hosts[2]).toMatchObject({ unreachable: true });
    // A verb still acts on the two that answer.
    const drain = parsed<ClusterVerbData<unknown>>(await cluster('drain', 'all:80', '--json'));
    expect(drain.counts).toEqual({ ok: 2, already: 0, failed: 0, unreachable: 1 });
    const enable = await cluster('enable', 'all:80');
    expect(enable.code).toBe(1);
    expect(enable.stdout).toMatch(/^host 3: unreachable: no nlbd answers on /m);
  });
});
