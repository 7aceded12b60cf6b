// The routed lab (src/lab/router.ts) with the FRR files nlb writes (src/routed/): a router
// namespace running FRR with ECMP over three hosts, each host in a subnet of its own running
// FRR, a client behind the router. No nlbd (test/lab-routed.test.ts has it): the test plays its part, adding and deleting the
// marker route `198.18.0.100/32 dev lo proto 250` that FRR redistributes. Checked: every BGP
// session establishes, the router's FIB holds the cluster IP with one nexthop per host and
// spreads TCP connections over all of them, a withdrawn marker takes its nexthop out within a
// second, and a hung host (its bgpd and bfdd stopped) is out within BFD's detection time; each
// host runs the files `nlb frr-config` writes from its config; `lab down` leaves nothing. Needs
// root and FRR; skipped visibly without root, failing instead when NLB_REQUIRE_LAB=1.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { frrDir, frrProcess } from '../src/lab/frr.js';
import { type LabState, labDown } from '../src/lab/lab.js';
import { runLoadgenInClient } from '../src/lab/loadgen-client.js';
import { acquireLabTestLock } from '../src/lab/lock.js';
import { labVip } from '../src/lab/naming.js';
import { execIn, netnsList } from '../src/lab/netns.js';
import { isAlive, type ProcessRef, signalProcess } from '../src/lab/process.js';
import { bgpPeerStates, routedLabUp } from '../src/lab/router.js';
import { runNlbInProcess } from './cli-helpers.js';
import { declareLabRequirement, isRoot, labSetupTimeoutMs } from './support/lab-cluster.js';

declareLabRequirement('lab-routed-frr');

/** BFD 100 ms × 3 detects in 300 ms; a second covers the router's update of its FIB too. */
const withdrawWithinMs = 1_000;

interface RouteJson {
  readonly gateway?: string;
  readonly nexthops?: readonly { readonly gateway?: string }[];
}

/** The gateways of the router's route to the cluster IP: one per host announcing it. */
async function nexthops(lab: LabState): Promise<string[]> {
  const { stdout } = await execIn(lab.switchNamespace, [
    'ip',
    '-j',
    'route',
    'show',
    `${labVip}/32`,
  ]);
  const routes = JSON.parse(stdout === '' ? '[]' : stdout) as RouteJson[];
  return routes
    .flatMap((r) => (r.nexthops ?? [r]).map((n) => n.gateway))
    .filter((g): g is string => g !== undefined)
    .sort();
}

/** Polls the router's FIB every 10 ms until `accept` holds; returns the time it took, or -1. */
async function waitForNexthops(
  lab: LabState,
  accept: (gateways: string[]) => boolean,
  waitMs: number,
): Promise<{ ms: number; gateways: string[] }> {
  const start = Date.now();
  let gateways: string[] = [];
  while (Date.now() - start <= waitMs) {
    gateways = await nexthops(lab);
    if (accept(gateways)) return { ms: Date.now() - start, gateways };
    await sleep(10);
  }
  return { ms: -1, gateways };
}

function marker(action: 'add' | 'del'): string[] {
  return ['ip', 'route', action, `${labVip}/32`, 'dev', 'lo', 'proto', '250'];
}

describe.runIf(isRoot)('lab: routed, FRR with ECMP over the hosts', () => {
  let release: (() => void) | undefined;
  let lab: LabState;
  const stopped: ProcessRef[] = [];

  beforeAll(async () => {
    release = await acquireLabTestLock();
    // No nlbd: this test plays its part with the marker route (lab-routed tests nlbd's).
    lab = await routedLabUp({
      name: `lrf${randomBytes(2).toString('hex')}`,
      hosts: 3,
      clients: 1,
      startDaemons: false,
    });
    for (const host of lab.hosts) {
      // The host accepts the cluster IP's packets by a `local` route, not an address (whose
      // connected route would hide the marker from zebra), then announces it.
      await execIn(host.namespace, ['ip', 'route', 'add', 'local', `${labVip}/32`, 'dev', 'lo']);
      await execIn(host.namespace, marker('add'));
    }
  }, labSetupTimeoutMs);

  afterAll(async () => {
    try {
      for (const ref of stopped) signalProcess(ref, 'SIGCONT');
      if (lab !== undefined) await labDown(lab.name);
    } finally {
      release?.();
    }
  });

  it('establishes every session; the hosts learn no route, the router no other kernel route', async () => {
    const router = await bgpPeerStates(lab.switchNamespace);
    expect(Object.fromEntries(router)).toEqual({
      '198.18.1.2': 'Established',
      '198.18.2.2': 'Established',
      '198.18.3.2': 'Established',
    });
    for (const host of lab.hosts) {
      const states = await bgpPeerStates(host.namespace);
      expect(Object.fromEntries(states)).toEqual({ [`198.18.${host.id}.1`]: 'Established' });
    }
    // A kernel route that is not a cluster IP's stays on its host: the prefix-list holds.
    await execIn(lab.hosts[0]!.namespace, ['ip', 'route', 'add', '198.18.77.7/32', 'dev', 'lo']);
    const { ms, gateways } = await waitForNexthops(lab, (g) => g.length === 3, 5_000);
    expect({ ms: ms >= 0, gateways }).toEqual({
      ms: true,
      gateways: ['198.18.1.2', '198.18.2.2', '198.18.3.2'],
    });
    await sleep(300);
    const routerRoutes = await execIn(lab.switchNamespace, ['ip', 'route', 'show', 'proto', 'bgp']);
    expect(routerRoutes.stdout).not.toContain('198.18.77.7');
    for (const host of lab.hosts) {
      const learnt = await execIn(host.namespace, ['ip', 'route', 'show', 'proto', 'bgp']);
      expect(learnt.stdout).toBe('');
    }
  });

  it('spreads TCP connections from the client over all three hosts', async () => {
    const result = await runLoadgenInClient(lab.name, 1, {
      ratePerSecond: 300,
      countMax: 300,
      durationMs: 3_000,
    });
    const failed = result.connections.filter((c) => c.failure !== undefined);
    expect(failed).toEqual([]);
    const perHost = new Map<number, number>();
    for (const c of result.connections) perHost.set(c.host!, (perHost.get(c.host!) ?? 0) + 1);
    console.log(`lab-routed-frr: connections per host ${JSON.stringify([...perHost].sort())}`);
    expect([...perHost.keys()].sort()).toEqual([1, 2, 3]);
    // 300 flows over three hosts by the 5-tuple hash: each gets far more than a token share.
    for (const count of perHost.values()) expect(count).toBeGreaterThan(50);
  });

  it("takes a host's nexthop out within a second of its marker route going", async () => {
    await execIn(lab.hosts[1]!.namespace, marker('del'));
    const { ms, gateways } = await waitForNexthops(
      lab,
      (g) => !g.includes('198.18.2.2'),
      withdrawWithinMs,
    );
    console.log(`lab-routed-frr: marker deleted on h2, router FIB without it after ${ms} ms`);
    expect(gateways).toEqual(['198.18.1.2', '198.18.3.2']);
    expect(ms).toBeGreaterThanOrEqual(0);
  });

  it("takes a hung host's nexthop out within BFD's detection time", async () => {
    const host = lab.hosts[2]!;
    // Stopped, not killed: a killed bgpd's socket would close and tell the router at once;
    // a hung host tells it nothing, and only BFD (100 ms × 3) notices.
    for (const daemon of ['bfdd', 'bgpd'] as const) {
      const ref = frrProcess(host.namespace, daemon);
      expect(ref).toBeDefined();
      stopped.push(ref!);
      signalProcess(ref!, 'SIGSTOP');
    }
    const { ms, gateways } = await waitForNexthops(
      lab,
      (g) => !g.includes('198.18.3.2'),
      withdrawWithinMs,
    );
    console.log(`lab-routed-frr: h3 hung, router FIB without it after ${ms} ms`);
    expect(gateways).toEqual(['198.18.1.2']);
    expect(ms).toBeGreaterThanOrEqual(0);
  });

  it("runs on each host the files `nlb frr-config` writes from the host's config", async () => {
    for (const host of lab.hosts) {
      const run = await runNlbInProcess(['frr-config', '--config', host.config, '--json']);
      expect(run.code).toBe(0);
      const { files } = JSON.parse(run.stdout) as { files: { name: string; text: string }[] };
      for (const file of files) {
        expect(readFileSync(path.join(frrDir(host.namespace), file.name), 'utf8')).toBe(file.text);
      }
    }
  });

  it('lab down removes every namespace, FRR process and FRR directory', async () => {
    const namespaces = [...lab.namespaces];
    const processes = lab.hosts.flatMap((h) =>
      (['zebra', 'bfdd', 'bgpd'] as const).map((d) => frrProcess(h.namespace, d)!),
    );
    expect(processes.every(isAlive)).toBe(true);
    for (const ref of stopped) signalProcess(ref, 'SIGCONT');
    const result = await labDown(lab.name);
    expect(result.namespacesDeleted.sort()).toEqual(namespaces.sort());
    expect(processes.filter(isAlive)).toEqual([]);
    const present = await netnsList();
    expect(namespaces.filter((ns) => present.includes(ns))).toEqual([]);
    expect(namespaces.filter((ns) => existsSync(frrDir(ns)))).toEqual([]);
  });
});
