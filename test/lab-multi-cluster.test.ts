// Issue 12 item 4, several clusters on one host, in a real two-host lab whose unicast cluster
// (VIP 198.18.0.100, the lab's own) runs on eth0 of both hosts:
//   - a second cluster in multicast mode (VIP 198.18.0.150, another heartbeat port) starts on
//     the same interface of both hosts and converges; each cluster has its own table
//     (nlb_<name>), control socket and MAC, and clients reach both cluster IPs, each connection
//     on the host its own cluster's live map names;
//   - a second nlbd of the second cluster on a host is refused, naming the one that runs, and
//     changes nothing;
//   - stopping the second cluster's nlbd removes its table, its cluster IP and its group MAC,
//     and leaves the first cluster converged, with its table, cluster IP and cluster MAC.
// Everything runs inside the namespaces of a lab this file creates and always removes. Needs
// root; skipped visibly otherwise, failing instead when NLB_REQUIRE_LAB=1.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAddress } from '../src/core/address.js';
import { predictOwner } from '../src/core/predict.js';
import { defaultSocketPath } from '../src/control/paths.js';
import { tableNameFor } from '../src/dataplane/dataplane-spec.js';
import { daemonMainPath } from '../src/lab/lab.js';
import { execIn } from '../src/lab/netns.js';
import { type ProcessRef, spawnInNamespace, terminate } from '../src/lab/process.js';
import { loadConfigFile } from '../src/node/config-file.js';
import {
  type ClusterLab,
  LabSession,
  declareLabRequirement,
  expectConverged,
  isRoot,
  labSetupTimeoutMs,
  liveMaps,
  query,
  startLoad,
  waitForHosts,
} from './support/lab-cluster.js';
import { runDaemonIn } from './support/lab-hosts.js';

declareLabRequirement('lab-multi-cluster');

const second = { name: 'second', vip: '198.18.0.150', port: 2600 };

function secondConfig(lab: ClusterLab, hostId: number): string {
  return [
    'cluster:',
    `  name: ${second.name}`,
    `  clusterIps: [${second.vip}]`,
    '  mode: multicast',
    '  interface: eth0',
    `  heartbeat: { port: ${second.port} }`,
    `  keyFile: ${lab.state.keyFile}`,
    '  portRules:',
    `    - { vip: ${second.vip}, ports: 80, protocol: tcp, mode: multiple, affinity: none }`,
    'host:',
    `  id: ${hostId}`,
    `  dedicatedIp: ${lab.state.hosts[hostId - 1]!.ip}/24`,
    '',
  ].join('\n');
}

describe.runIf(isRoot)('two clusters on the same hosts and interface', () => {
  const session = new LabSession();
  let lab: ClusterLab;
  const daemons = new Map<number, ProcessRef>();
  const sockets = new Map<number, string>();
  const configs = new Map<number, string>();
  /** The second cluster as the lab helpers see it: its own sockets and VIP. */
  let secondLab: ClusterLab;

  beforeAll(async () => {
    await session.lock();
    lab = await session.up('lmc', { hosts: 2, clients: 1, clientExtraIps: 10 });
    for (const host of lab.state.hosts) {
      const config = path.join(lab.state.dir, `second-h${host.id}.yaml`);
      writeFileSync(config, secondConfig(lab, host.id));
      configs.set(host.id, config);
      sockets.set(host.id, defaultSocketPath(second.name, host.id));
    }
    const loaded = await loadConfigFile(configs.get(1)!);
    if (!loaded.ok) throw new Error(loaded.message);
    secondLab = { ...lab, config: loaded.config, sockets, vip: parseAddress(second.vip)! };
  }, labSetupTimeoutMs);

  afterAll(async () => {
    try {
      await terminate([...daemons.values()], 3_000);
    } finally {
      await session.close();
    }
  });

  it('runs a multicast cluster beside the unicast one; clients reach both, as each map says', async () => {
    for (const host of lab.state.hosts) {
      daemons.set(
        host.id,
        spawnInNamespace(
          host.namespace,
          [process.execPath, daemonMainPath, '--config', configs.get(host.id)!],
          path.join(lab.state.dir, `second-h${host.id}-nlbd.log`),
          { ...process.env, NLBD_STATE_DIR: path.join(lab.state.dir, 'second-state') },
        ),
      );
    }
    const seen = await waitForHosts(
      secondLab,
      [1, 2],
      (d) => d.converged && d.members.join() === '1,2',
      15_000,
      100,
    );
    expect(seen.ok, JSON.stringify([...seen.answers.values()].map((d) => d?.state))).toBe(true);
    const first = await expectConverged(lab, [1, 2], 30);

    for (const host of lab.state.hosts) {
      const { stdout: tables } = await execIn(host.namespace, ['nft', 'list', 'tables']);
      expect(tables).toContain(`table inet ${tableNameFor(lab.config.cluster.name)}\n`);
      expect(tables).toContain(`table inet ${tableNameFor(second.name)}\n`);
      expect(tables).toContain(`table arp ${tableNameFor(second.name)}\n`);
      const { stdout: mac } = await execIn(host.namespace, ['cat', '/sys/class/net/eth0/address']);
      expect(mac.trim()).toBe('02:bf:c6:12:00:64');
      const { stdout: maddr } = await execIn(host.namespace, [
        'ip',
        'maddr',
        'show',
        'dev',
        'eth0',
      ]);
      expect(maddr).toContain('03:bf:c6:12:00:96');
    }

    // Both cluster IPs serve; each connection lands where its own cluster's map says.
    for (const [target, maps, config] of [
      [lab, liveMaps(first.answers), lab.config],
      [secondLab, liveMaps(seen.answers), secondLab.config],
    ] as const) {
      const load = startLoad(lab, {
        target: target.vip.text,
        ratePerSecond: 200,
        countMax: 200,
        durationMs: 5_000,
        sources: lab.sources.slice(),
      });
      const result = await load.done;
      expect(result.failed).toBe(0);
      expect(result.answered).toBe(200);
      const wrong = result.connections.filter(
        (c) =>
          c.host !==
          predictOwner(
            config.cluster,
            maps,
            { address: parseAddress(c.sourceIp)!, port: c.sourcePort },
            target.vip,
            80,
            'tcp',
          ).host,
      );
      expect(wrong).toEqual([]);
    }
  });

  it('refuses a second nlbd of the same cluster on a host, naming the one that runs', async () => {
    const host = lab.state.hosts[0]!;
    const run = await runDaemonIn(host.namespace, path.join(lab.state.dir, 'third-state'), [
      '--config',
      configs.get(1)!,
      '--socket',
      path.join(lab.state.dir, 'third.sock'),
    ]);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stderr).toContain(
      `nlbd: another nlbd (pid ${daemons.get(1)!.pid}) already answers on @nlbd-cluster-${second.name} in this network namespace: cluster '${second.name}', host 1`,
    );
    expect(run.stderr).toMatch(/hint: one nlbd runs per cluster on a host .*kill \d+/);
    expect(await query(sockets.get(1)!)).toMatchObject({ converged: true, members: [1, 2] });
  });

  it('stopping the second cluster leaves the first as it was', async () => {
    await terminate([daemons.get(1)!], 5_000);
    daemons.delete(1);
    const host = lab.state.hosts[0]!;
    const { stdout: tables } = await execIn(host.namespace, ['nft', 'list', 'tables']);
    expect(tables).not.toContain(tableNameFor(second.name));
    expect(tables).toContain(`table inet ${tableNameFor(lab.config.cluster.name)}\n`);
    const { stdout: addresses } = await execIn(host.namespace, [
      'ip',
      '-br',
      'addr',
      'show',
      'eth0',
    ]);
    expect(addresses).toContain(`${lab.state.vip}/32`);
    expect(addresses).not.toContain(second.vip);
    const { stdout: maddr } = await execIn(host.namespace, ['ip', 'maddr', 'show', 'dev', 'eth0']);
    expect(maddr).not.toContain('03:bf:c6:12:00:96');
    const { stdout: mac } = await execIn(host.namespace, ['cat', '/sys/class/net/eth0/address']);
    expect(mac.trim()).toBe('02:bf:c6:12:00:64');
    await expectConverged(lab, [1, 2], 30);
    // Host 2 of the second cluster carries on alone.
    const alone = await waitForHosts(
      secondLab,
      [2],
      (d) => d.converged && d.members.join() === '2',
      10_000,
      100,
    );
    expect(alone.ok).toBe(true);
  });
});
