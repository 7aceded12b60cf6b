// The lab itself, before any daemon: namespaces, the learning switch, the backends answering on
// the dedicated IPs, the load generator, and tear-down that leaves nothing behind. Needs root
// (network namespaces); skipped visibly otherwise, and failing instead when NLB_REQUIRE_LAB=1.
// dist/ is built once by test/global-setup.ts: the backends and the loadgen run from there.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/core/config.js';
import { startBackend } from '../src/lab/backend.js';
import { netnsList } from '../src/lab/netns.js';
import {
  cutLink,
  killHostDaemon,
  type LabState,
  LabError,
  labDown,
  labRun,
  labStatus,
  labUp,
  restoreLink,
  startHostDaemon,
  stopHostDaemon,
} from '../src/lab/lab.js';
import { runLoadgenInClient } from '../src/lab/loadgen-client.js';
import { runLoadgen } from '../src/lab/loadgen.js';
import { acquireLabTestLock } from '../src/lab/lock.js';
import { isAlive } from '../src/lab/process.js';
import { namespacePrefix } from '../src/lab/naming.js';
import { labDir } from '../src/lab/state.js';
import { declareRootRequirement, isRoot } from './support/root.js';

declareRootRequirement('lab-infra', 'the lab tests need root for network namespaces');

/** A client-side probe run inside the client namespace: one line out, lines back. */
const probeScript = `
const net = require('node:net');
const [host, request, pings] = process.argv.slice(1);
const socket = net.connect({ host, port: 80 });
let text = '';
let sent = 0;
const timer = setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', text })); process.exit(1); }, 3000);
socket.setEncoding('utf8');
socket.on('connect', () => socket.write(request + '\\n'));
socket.on('data', (chunk) => {
  text += chunk;
  const lines = text.split('\\n').filter((l) => l !== '');
  if (request === 'HOLD' && lines.length === 1 + sent && sent < Number(pings)) {
    sent++;
    socket.write('ping ' + sent + '\\n');
  } else if (request === 'HOLD' && lines.length === 1 + Number(pings)) {
    clearTimeout(timer);
    console.log(JSON.stringify({ lines }));
    socket.destroy();
  }
});
socket.on('end', () => { clearTimeout(timer); console.log(JSON.stringify({ lines: text.split('\\n').filter((l) => l !== '') })); });
socket.on('error', (e) => { clearTimeout(timer); console.log(JSON.stringify({ error: e.code })); process.exit(1); });
`;

async function probe(lab: LabState, host: string, request: string, pings = 0): Promise<string[]> {
  const { stdout } = await labRun(lab, 'c1', [
    process.execPath,
    '-e',
    probeScript,
    host,
    request,
    String(pings),
  ]);
  const result = JSON.parse(stdout) as { lines?: string[]; error?: string };
  expect(result.error).toBeUndefined();
  return result.lines ?? [];
}

async function labNamespaces(name: string): Promise<string[]> {
  return (await netnsList()).filter((ns) => ns.startsWith(namespacePrefix(name)));
}

describe.runIf(isRoot)('lab infrastructure (network namespaces)', () => {
  const name = `t${randomBytes(3).toString('hex')}`;
  const created: string[] = [];
  let lab: LabState;
  let releaseLock: (() => void) | undefined;

  beforeAll(async () => {
    releaseLock = await acquireLabTestLock();
    created.push(name);
    lab = await labUp({ name, hosts: 2, clients: 1, startDaemons: false });
  });

  afterAll(async () => {
    try {
      for (const labName of created) {
        await labDown(labName);
      }
    } finally {
      releaseLock?.();
    }
  });

  it('creates the switch, host and client namespaces and records them', async () => {
    expect(lab.name).toBe(name);
    expect(lab.vip).toBe('198.18.0.100');
    expect((await labNamespaces(name)).sort()).toEqual(
      [`nlb-${name}-sw`, `nlb-${name}-h1`, `nlb-${name}-h2`, `nlb-${name}-c1`].sort(),
    );
    expect(lab.hosts.map((h) => [h.id, h.ip])).toEqual([
      [1, '198.18.0.11'],
      [2, '198.18.0.12'],
    ]);
    expect(lab.clients.map((c) => c.ip)).toEqual(['198.18.0.201']);
    const [status] = (await labStatus()).filter((s) => s.name === name);
    expect(status?.healthy).toBe(true);
    expect(status?.hosts.every((h) => h.backendRunning && !h.daemonRunning)).toBe(true);
  });

  it('writes a 32-byte key (0600) and a valid config per host', () => {
    const key = statSync(lab.keyFile);
    expect(key.size).toBe(32);
    expect(key.mode & 0o777).toBe(0o600);
    for (const host of lab.hosts) {
      const result = parseConfig(readFileSync(host.config, 'utf8'));
      expect(result.ok).toBe(true);
      if (!result.ok) continue;
      expect(result.config.host.id).toBe(host.id);
      expect(result.config.host.dedicatedIp.address.text).toBe(host.ip);
      expect(result.config.cluster.interface).toBe('eth0');
      expect(result.config.cluster.mode).toBe('unicast');
      expect(result.config.cluster.keyFile).toBe(lab.keyFile);
      expect(result.config.cluster.clusterIps.map((ip) => ip.text)).toEqual(['198.18.0.100']);
      const [rule] = result.config.cluster.portRules;
      expect([rule?.portStart, rule?.portEnd, rule?.protocol, rule?.mode, rule?.affinity]).toEqual([
        80,
        80,
        'tcp',
        'multiple',
        'none',
      ]);
    }
  });

  it('adds no lab address or route to the root namespace', () => {
    const addresses = execFileSync('ip', ['-j', 'address', 'show'], { encoding: 'utf8' });
    const routes = execFileSync('ip', ['-j', 'route', 'show', 'table', 'all'], {
      encoding: 'utf8',
    });
    expect(addresses).not.toContain('198.18.');
    expect(routes).not.toContain('198.18.');
  });

  it('answers on each dedicated IP with that host id (line and HTTP)', async () => {
    expect(await probe(lab, '198.18.0.11', 'GET')).toEqual(['host 1']);
    expect(await probe(lab, '198.18.0.12', 'GET')).toEqual(['host 2']);
    const http = await labRun(lab, 'c1', [
      process.execPath,
      '-e',
      "require('node:http').get('http://198.18.0.12/', (r) => { let b = ''; r.on('data', (d) => b += d); r.on('end', () => console.log(r.headers['x-nlb-host'] + ' ' + b.trim())); })",
    ]);
    expect(http.stdout.trim()).toBe('2 host 2');
  });

  it('keeps a HOLD connection open and echoes every line', async () => {
    expect(await probe(lab, '198.18.0.12', 'HOLD', 3)).toEqual([
      'host 2',
      'ping 1',
      'ping 2',
      'ping 3',
    ]);
  });

  it('runs the bridge as a learning switch: it learns each host MAC on its port', async () => {
    const fdb = JSON.parse(
      (await labRun(lab, 'sw', ['bridge', '-j', 'fdb', 'show', 'br', 'br0'])).stdout,
    ) as Array<{ mac: string; ifname: string; state?: string; flags?: string[] }>;
    for (const target of ['h1', 'h2', 'c1']) {
      const link = JSON.parse(
        (await labRun(lab, target, ['ip', '-j', 'link', 'show', 'eth0'])).stdout,
      ) as Array<{
        address: string;
      }>;
      const learned = fdb.find((e) => e.mac === link[0]?.address);
      expect(learned?.ifname, `MAC of ${target} learned on its port`).toBe(target);
      expect(learned?.state ?? '').not.toBe('permanent');
    }
  });

  it('runs the load generator for ~1 s against one dedicated IP and summarises', async () => {
    const progress: unknown[] = [];
    const summary = await runLoadgenInClient(
      lab,
      'c1',
      {
        target: '198.18.0.11',
        ratePerSecond: 100,
        countMax: 100,
        durationMs: 1_000,
        holds: 2,
        holdPingIntervalMs: 100,
        progressIntervalMs: 250,
      },
      { onProgress: (p) => progress.push(p) },
    );
    expect(summary.started).toBe(100);
    expect(summary.answered).toBe(100);
    expect(summary.failed).toBe(0);
    expect(summary.perHost).toEqual({ '1': 100 });
    expect(summary.latencyMs?.p50).toBeGreaterThan(0);
    expect(summary.connections).toHaveLength(100);
    const sources = new Set(summary.connections.map((c) => `${c.sourceIp}:${c.sourcePort}`));
    expect(sources.size).toBe(100);
    expect(
      summary.connections.every((c) => c.sourceIp === '198.18.0.201' && c.sourcePort > 0),
    ).toBe(true);
    expect(summary.holds.map((h) => [h.host, h.broken, h.pingsOk > 0])).toEqual([
      [1, undefined, true],
      [1, undefined, true],
    ]);
    expect(progress.length).toBeGreaterThanOrEqual(2);
  });

  it('cuts and restores a host link on the switch', async () => {
    await cutLink(lab, 2);
    expect((await labStatus()).find((s) => s.name === name)?.hosts[1]?.link).toBe('down');
    await restoreLink(lab, 2);
    expect((await labStatus()).find((s) => s.name === name)?.hosts[1]?.link).toBe('up');
  });

  it('starts, stops and kills a host daemon through the daemon hook (a stand-in command)', async () => {
    // The real nlbd does not exist yet; `sleep` stands in for it to exercise the bookkeeping.
    const standIn = { command: ['sleep', '30'], settleMs: 50 };
    const daemonOf = async (id: number): Promise<boolean | undefined> =>
      (await labStatus()).find((s) => s.name === name)?.hosts[id - 1]?.daemonRunning;
    const [first, second] = await Promise.all([
      startHostDaemon(lab, 1, standIn),
      startHostDaemon(lab, 2, standIn),
    ]);
    expect(isAlive(first!) && isAlive(second!)).toBe(true);
    expect([await daemonOf(1), await daemonOf(2)]).toEqual([true, true]);
    await expect(startHostDaemon(lab, 1, standIn)).rejects.toThrow(/already running/);
    expect(await killHostDaemon(lab, 1)).toBe(true);
    expect(await stopHostDaemon(lab, 2)).toBe(true);
    expect(isAlive(first!) || isAlive(second!)).toBe(false);
    expect([await daemonOf(1), await daemonOf(2)]).toEqual([false, false]);
    expect(await stopHostDaemon(lab, 2)).toBe(false);
  });

  it('refuses a name in use and leaves the existing lab and the machine as they were', async () => {
    const before = (await netnsList()).sort();
    await expect(labUp({ name, hosts: 1, clients: 0 })).rejects.toMatchObject({
      code: 'name-in-use',
    });
    expect((await netnsList()).sort()).toEqual(before);
    expect((await labStatus()).find((s) => s.name === name)?.healthy).toBe(true);
  });

  it('cleans up after an up that fails half-way (a daemon that exits at once)', async () => {
    const failing = `${name}f`;
    created.push(failing);
    const error = await labUp({
      name: failing,
      hosts: 2,
      clients: 1,
      startDaemons: true,
      daemonCommand: ['false'],
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LabError);
    expect((error as LabError).code).toBe('process-failed');
    expect(await labNamespaces(failing)).toEqual([]);
    expect(existsSync(labDir(failing))).toBe(false);
  });

  it("fails with the daemon's own words when nlbd refuses after start-up, and cleans up", async () => {
    // Exits after the 300 ms a daemon gets to fail at once: what nlbd does when it refuses at
    // its checks (a mode the interface cannot do, a cluster IP in use).
    const failing = `${name}r`;
    created.push(failing);
    const error = await labUp({
      name: failing,
      hosts: 2,
      clients: 0,
      startBackends: false,
      startDaemons: true,
      daemonCommand: [
        'sh',
        '-c',
        'sleep 0.6; echo "nlbd: multicast mode needs an interface that takes multicast"; echo "hint: turn multicast on"; exit 1',
      ],
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LabError);
    expect((error as LabError).code).toBe('process-failed');
    expect((error as LabError).message).toMatch(/nlbd of host [12] is not running; its log says:/);
    expect((error as LabError).message).toContain(
      'nlbd: multicast mode needs an interface that takes multicast',
    );
    expect(await labNamespaces(failing)).toEqual([]);
    expect(existsSync(labDir(failing))).toBe(false);
  });

  it('tears down everything, and a second down is a no-op', async () => {
    const result = await labDown(name);
    expect(result.existed).toBe(true);
    expect(result.namespacesDeleted).toHaveLength(4);
    expect(await labNamespaces(name)).toEqual([]);
    expect(existsSync(labDir(name))).toBe(false);
    for (const host of lab.hosts) {
      expect(host.backend !== undefined && isAlive(host.backend)).toBe(false);
    }
    expect((await labDown(name)).existed).toBe(false);
  });
});

describe('lab backend on loopback', () => {
  it('speaks the line protocol and HTTP/1.1 keep-alive', async () => {
    const backend = await startBackend({ hostId: 7, port: 0, bindAddress: '127.0.0.1' });
    try {
      const response = await fetch(`http://127.0.0.1:${backend.port}/`);
      expect(response.headers.get('x-nlb-host')).toBe('7');
      expect(await response.text()).toBe('host 7\n');
      expect(backend.counters.http).toBe(1);
    } finally {
      await backend.close();
    }
  });
});

describe('load generator safety', () => {
  it('refuses any target outside 198.18.0.0/15', async () => {
    for (const target of ['127.0.0.1', '10.0.0.1', '198.20.0.1', '::1']) {
      await expect(
        runLoadgen({ target, ratePerSecond: 1, countMax: 1, durationMs: 10 }),
      ).rejects.toThrow(/198\.18\.0\.0\/15/);
    }
  });
});
