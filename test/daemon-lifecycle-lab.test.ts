// nlbd's life cycle in a real two-host lab (issue 9):
//   - a second nlbd in a host's network namespace, of another unicast cluster on the same
//     interface (another heartbeat port), is refused before it changes anything, naming the first (cluster, host, pid); the first
//     keeps filtering: its table is there and it still reports converged;
//   - a suspended host stays suspended across an nlbd restart, by SIGTERM and by SIGKILL, with
//     a larger incarnation each time; after `resume` and a restart, host.initialState (started)
//     applies again;
//   - `nlb lab down` removes what the lab's daemons retained.
// Everything runs inside the namespaces of a lab this file creates (198.18.0.0/24, the second
// cluster's IP 198.18.0.150 included) and always removes. Needs root; skipped visibly
// otherwise, failing instead when NLB_REQUIRE_LAB=1.
import { existsSync, mkdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retainedStatePath, stateDirDefault } from '../src/daemon/paths.js';
import { readRetainedState } from '../src/daemon/retained-state.js';
import { execIn } from '../src/lab/netns.js';
import { labClusterName } from '../src/lab/host-config.js';
import {
  killHostDaemon,
  labStateDir,
  loadLab,
  startHostDaemon,
  stopHostDaemon,
} from '../src/lab/lab.js';
import {
  type ClusterLab,
  LabSession,
  command,
  declareLabRequirement,
  expectConverged,
  isRoot,
  labSetupTimeoutMs,
  query,
  waitForHosts,
} from './support/lab-cluster.js';
import { runDaemonIn } from './support/lab-hosts.js';

declareLabRequirement('daemon-lifecycle-lab');

/** More than the detection window (5 × 200 ms): a host that would join has done so by then. */
const settleMs = 1_500;

describe.runIf(isRoot)('nlbd life cycle in a two-host lab', () => {
  const session = new LabSession();
  let lab: ClusterLab;
  let name: string;
  const strayFiles: string[] = [];
  // The machine's default state directory is only borrowed by the last test: left as found.
  const stateDirExisted = existsSync(stateDirDefault);

  beforeAll(async () => {
    await session.lock();
    lab = await session.up('dlc', { hosts: 2, clients: 0, startBackends: false });
    name = lab.state.name;
    await expectConverged(lab, [1, 2], 30);
  }, labSetupTimeoutMs);

  afterAll(async () => {
    try {
      await session.close();
    } finally {
      for (const file of strayFiles) rmSync(file, { force: true });
      try {
        if (!stateDirExisted) rmdirSync(stateDirDefault);
      } catch {
        // Not there, or someone else's files arrived meanwhile: then it stays.
      }
    }
  });

  const retainedFile = (hostId: number): string =>
    retainedStatePath(labClusterName(name), hostId, labStateDir(name));

  it('refuses a second unicast cluster on the same interface; the first keeps filtering', async () => {
    const host = lab.state.hosts[0]!;
    const first = loadLab(name).hosts[0]!.daemon!;
    const config = path.join(lab.state.dir, 'second.yaml');
    writeFileSync(
      config,
      [
        'cluster:',
        '  name: second',
        '  clusterIps: [198.18.0.150]',
        '  interface: eth0',
        '  heartbeat: { port: 2600 }',
        `  keyFile: ${lab.state.keyFile}`,
        '  portRules:',
        '    - { vip: 198.18.0.150, ports: 8080, protocol: tcp, mode: multiple, affinity: none }',
        'host:',
        '  id: 1',
        `  dedicatedIp: ${host.ip}/24`,
        '',
      ].join('\n'),
    );
    const stateDir = path.join(lab.state.dir, 'second-state');
    const second = await runDaemonIn(
      host.namespace,
      stateDir,
      ['--config', config, '--socket', path.join(lab.state.dir, 'second.sock')],
      8_000,
    );
    expect(second.code, second.stderr + second.stdout).toBe(1);
    expect(second.stderr).toContain(
      `nlbd: another nlbd (pid ${first.pid}) already answers on @nlbd-unicast-eth0 in this network namespace: cluster '${labClusterName(name)}', host 1`,
    );
    expect(second.stderr).toMatch(
      /hint: unicast mode gives eth0 its cluster's MAC, and an interface has one MAC: stop it first .*kill \d+.*, put this cluster on another interface, or use mode: multicast or igmp/,
    );
    // Refused before it changed anything: not even its retained state was written.
    expect(existsSync(stateDir)).toBe(false);

    // The first still filters, now and a detection window later.
    for (const pause of [0, settleMs]) {
      await sleep(pause);
      const { stdout: tables } = await execIn(host.namespace, ['nft', 'list', 'tables']);
      expect(tables).toContain(`table inet ${lab.tableName}\n`);
      expect(tables).not.toContain('nlb_second');
      const { stdout: addresses } = await execIn(host.namespace, [
        'ip',
        '-br',
        'addr',
        'show',
        'eth0',
      ]);
      expect(addresses).toContain('198.18.0.100/32');
      expect(addresses).not.toContain('198.18.0.150');
      const { stdout: mac } = await execIn(host.namespace, ['cat', '/sys/class/net/eth0/address']);
      expect(mac.trim()).toBe('02:bf:c6:12:00:64');
      const data = await query(lab.sockets.get(1)!);
      expect(data).toMatchObject({ converged: true, dataplaneInSync: true, members: [1, 2] });
      expect(data!.rules[0]!.owned).toHaveLength(30);
    }
  });

  /** Waits until host 2 reports suspended, then checks it still does a detection window later. */
  async function expectSuspended(): Promise<number> {
    const seen = await waitForHosts(lab, [2], (d) => d.state === 'suspended', 10_000);
    expect(seen.ok, `host 2: ${JSON.stringify(seen.answers.get(2)?.state)}`).toBe(true);
    await sleep(settleMs);
    const data = await query(lab.sockets.get(2)!);
    expect(data).toMatchObject({ state: 'suspended', dataplaneInSync: true });
    expect(data!.rules[0]!.owned).toEqual([]);
    await expectConverged(lab, [1], 60);
    return data!.incarnation;
  }

  it('keeps a suspended host suspended across SIGTERM and SIGKILL restarts, until resume', async () => {
    const before = (await query(lab.sockets.get(2)!))!.incarnation;
    expect((await command(lab, 2, 'suspend')).code).toBe('ok');

    expect(await stopHostDaemon(name, 2)).toBe(true);
    await startHostDaemon(name, 2);
    const afterStop = await expectSuspended();

    expect(await killHostDaemon(name, 2)).toBe(true);
    await startHostDaemon(name, 2);
    const afterKill = await expectSuspended();

    // Each start took a larger incarnation, and wrote it down before its first heartbeat.
    expect(afterStop).toBeGreaterThan(before);
    expect(afterKill).toBeGreaterThan(afterStop);
    expect(readRetainedState(retainedFile(2))).toEqual({
      ok: true,
      state: { incarnation: afterKill, suspended: true },
    });

    // resume leaves the host stopped (NLB) and forgets the suspension...
    expect((await command(lab, 2, 'resume')).code).toBe('ok');
    expect((await query(lab.sockets.get(2)!))!.state).toBe('stopped');
    expect(readRetainedState(retainedFile(2))).toMatchObject({ state: { suspended: false } });
    // ...so the next start is as host.initialState says (started by default).
    expect(await stopHostDaemon(name, 2)).toBe(true);
    await startHostDaemon(name, 2);
    await expectConverged(lab, [1, 2], 30);
  });

  it('nlb lab down removes what the lab daemons retained', async () => {
    expect(existsSync(retainedFile(1))).toBe(true);
    expect(existsSync(retainedFile(2))).toBe(true);
    // A host's daemon started by hand with the default state directory leaves its file there.
    const stray = retainedStatePath(labClusterName(name), 1, stateDirDefault);
    mkdirSync(stateDirDefault, { recursive: true, mode: 0o700 });
    writeFileSync(stray, '{}\n', { mode: 0o600 });
    strayFiles.push(stray);
    await session.down(lab);
    expect(existsSync(labStateDir(name))).toBe(false);
    expect(existsSync(stray)).toBe(false);
  });
});
