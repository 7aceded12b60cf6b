// Parts of test/lab-routed.test.ts: a routed lab (src/lab/router.ts) seen as the lab-cluster
// helpers see a switch lab (a `ClusterLab`, so `startLoad`, `query` and `command` work on it),
// and the views a routed test needs from outside the hosts:
//   - the router's paths to the cluster IP (`ip -j route show`), one nexthop per announcing host;
//   - a host's marker routes (`ip route show proto 250`), which FRR announces;
//   - the first hop ECMP gives a flow: `ip route get <vip> from <client> iif br0 ipproto tcp
//     sport P dport 80` in the router, which hashes the same 5-tuple as a forwarded packet
//     (the test checks this against the router's own per-port counters);
//   - every counter of a host's nlb table at once, and an nftables map as the kernel holds it;
//   - programs in the client namespace (`node -e`) that take orders on stdin and answer one
//     JSON line each, so a test can start them before a timed window and act inside it.
// Network safety: every command runs inside a namespace of the lab (assertLabNamespace), and
// every address it names is in 198.18.0.0/15.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseAddress } from '../../src/core/address.js';
import { assign } from '../../src/core/assign.js';
import { tableNameFor } from '../../src/dataplane/dataplane-spec.js';
import { netnsRunner } from '../../src/dataplane/exec.js';
import { labClusterName } from '../../src/lab/host-config.js';
import type { LabState } from '../../src/lab/lab.js';
import { expect } from 'vitest';
import type { ConnectionRecord, LoadgenSummary } from '../../src/lab/loadgen.js';
import { labHttpPort } from '../../src/lab/naming.js';
import { assertLabNamespace } from '../../src/lab/netns.js';
import { type ClusterLab, labConfigAndSockets } from './lab-cluster.js';
import type { LabVariant } from './lab-variants.js';

export const routedV4: LabVariant = { name: 'routed-v4', mode: 'routed', family: 4 };

/** The routed lab as the lab-cluster helpers take it. */
export async function routedClusterLab(
  state: LabState,
  variant: LabVariant = routedV4,
): Promise<ClusterLab> {
  const { config, sockets } = await labConfigAndSockets(state);
  return {
    state,
    config,
    sockets,
    vip: parseAddress(state.vip)!,
    hostIds: state.hosts.map((h) => h.id),
    variant,
    sources: state.clients.map((c) => c.ip),
    tableName: tableNameFor(labClusterName(state.name)),
  };
}

/** Runs `argv` in a lab namespace with `input` on stdin; its stdout, or throws with its stderr. */
export async function runIn(namespace: string, argv: readonly string[], input?: string) {
  assertLabNamespace(namespace);
  const [file, ...args] = argv;
  const result = await netnsRunner(namespace).run(file!, args, { input });
  if (result.code !== 0) {
    throw new Error(`'${argv.join(' ')}' in ${namespace} exited ${result.code}: ${result.stderr}`);
  }
  return result.stdout;
}

export function hostNamespaceOf(lab: ClusterLab, hostId: number): string {
  return lab.state.hosts.find((h) => h.id === hostId)!.namespace;
}

/** The host whose dedicated IP a router's gateway is. */
function hostOfGateway(lab: ClusterLab, gateway: string | undefined): number | undefined {
  return lab.state.hosts.find((h) => h.ip === gateway)?.id;
}

interface RouteJson {
  readonly gateway?: string;
  readonly dev?: string;
  readonly nexthops?: readonly { readonly gateway?: string }[];
}

/** The hosts the router's route to the cluster IP goes to (one nexthop per announcing host). */
export async function routerPaths(lab: ClusterLab): Promise<number[]> {
  const out = await runIn(lab.state.switchNamespace, [
    'ip',
    '-j',
    'route',
    'show',
    `${lab.vip.text}/32`,
  ]);
  const routes = JSON.parse(out.trim() === '' ? '[]' : out) as RouteJson[];
  return routes
    .flatMap((r) => (r.nexthops ?? [r]).map((n) => hostOfGateway(lab, n.gateway)))
    .filter((id): id is number => id !== undefined)
    .sort((a, b) => a - b);
}

/** The destinations of host `hostId`'s marker routes (`proto 250` in its main table). */
export async function markerRoutes(lab: ClusterLab, hostId: number): Promise<string[]> {
  const out = await runIn(hostNamespaceOf(lab, hostId), [
    'ip',
    '-j',
    'route',
    'show',
    'table',
    'main',
    'proto',
    '250',
  ]);
  const routes = JSON.parse(out.trim() === '' ? '[]' : out) as { dst?: string }[];
  return routes.map((r) => r.dst ?? '?').sort();
}

export interface Waited<T> {
  readonly ok: boolean;
  /** From the call to the first poll that accepted (or to giving up). */
  readonly ms: number;
  readonly value: T;
}

/** Polls `probe` every `pollMs` until `accept` holds or `waitMs` passes. */
export async function waitUntil<T>(
  probe: () => Promise<T>,
  accept: (value: T) => boolean,
  waitMs: number,
  pollMs = 10,
  startMs = Date.now(),
): Promise<Waited<T>> {
  for (;;) {
    const value = await probe();
    const now = Date.now();
    if (accept(value)) return { ok: true, ms: now - startMs, value };
    if (now - startMs > waitMs) return { ok: false, ms: now - startMs, value };
    await sleep(pollMs);
  }
}

export interface Endpoint {
  readonly ip: string;
  readonly port: number;
}

/**
 * The host ECMP sends each client flow to first, as the router's FIB hashes its 5-tuple now:
 * one `ip -batch` of `route get` lines in the router namespace.
 */
export async function firstHops(lab: ClusterLab, flows: readonly Endpoint[]): Promise<number[]> {
  if (flows.length === 0) return [];
  const lines = flows.map(
    (f) =>
      `route get ${lab.vip.text} from ${f.ip} iif ${lab.state.bridge} ipproto tcp sport ${f.port} dport ${labHttpPort}`,
  );
  const out = await runIn(
    lab.state.switchNamespace,
    ['ip', '-j', '-batch', '-'],
    `${lines.join('\n')}\n`,
  );
  const answers = out.split('\n').filter((l) => l.trim() !== '');
  if (answers.length !== flows.length) {
    throw new Error(`route get: ${answers.length} answers for ${flows.length} flows`);
  }
  return answers.map((line, i) => {
    const route = (JSON.parse(line) as RouteJson[])[0];
    const id = hostOfGateway(lab, route?.gateway);
    if (id === undefined) throw new Error(`route get for ${lines[i]}: ${line}`);
    return id;
  });
}

/** Every counter of host `hostId`'s nlb table, by name: packets. */
export async function tableCounters(
  lab: ClusterLab,
  hostId: number,
): Promise<Record<string, number>> {
  return namedCounters(hostNamespaceOf(lab, hostId), lab.tableName);
}

/** Every named counter of `table inet <table>` in `namespace`: packets. */
export async function namedCounters(
  namespace: string,
  table: string,
): Promise<Record<string, number>> {
  const out = await runIn(namespace, ['nft', '-j', 'list', 'counters', 'table', 'inet', table]);
  const items = (JSON.parse(out) as { nftables: { counter?: { name: string; packets: number } }[] })
    .nftables;
  const counters: Record<string, number> = {};
  for (const item of items) {
    if (item.counter !== undefined) counters[item.counter.name] = item.counter.packets;
  }
  return counters;
}

/** `after - before` of every counter in `after`. */
export function counterDelta(
  before: Record<string, number>,
  after: Record<string, number>,
): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]));
}

/** A `type mark : mark` map of host `hostId`'s nlb table as the kernel holds it: key → value. */
export async function kernelMap(
  lab: ClusterLab,
  hostId: number,
  name: string,
): Promise<Map<number, number>> {
  const out = await runIn(hostNamespaceOf(lab, hostId), [
    'nft',
    '-j',
    'list',
    'map',
    'inet',
    lab.tableName,
    name,
  ]);
  const items = (JSON.parse(out) as { nftables: { map?: { elem?: [number, number][] } }[] })
    .nftables;
  const elements = items.find((i) => i.map !== undefined)?.map?.elem ?? [];
  return new Map(elements.map(([key, value]) => [key, value]));
}

/**
 * A program in the client namespace (`node -e <source>`): each line written to it is an order,
 * each JSON line it prints an answer. Started before a timed window, so the window does not
 * pay for node's start-up.
 */
export class ClientProgram {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly answers: unknown[] = [];
  private waiting: ((answer: unknown) => void) | undefined;
  private stderr = '';
  private exited = false;

  constructor(lab: ClusterLab, source: string, args: readonly string[] = []) {
    const namespace = lab.state.clients[0]!.namespace;
    assertLabNamespace(namespace);
    this.child = spawn('ip', ['netns', 'exec', namespace, process.execPath, '-e', source, ...args]);
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (text: string) => {
      this.stderr = (this.stderr + text).slice(-4096);
    });
    this.child.stdin.on('error', () => {});
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      let answer: unknown;
      try {
        answer = JSON.parse(line);
      } catch {
        answer = { error: `not JSON: ${line}` };
      }
      const waiting = this.waiting;
      this.waiting = undefined;
      if (waiting === undefined) this.answers.push(answer);
      else waiting(answer);
    });
    this.child.on('close', (code) => {
      this.exited = true;
      this.waiting?.({ error: `exited ${code}: ${this.stderr.trim()}` });
      this.waiting = undefined;
    });
  }

  send(line: string): void {
    this.child.stdin.write(`${line}\n`);
  }

  /** The next answer; rejects after `waitMs`. */
  next<T>(waitMs: number): Promise<T> {
    const queued = this.answers.shift();
    if (queued !== undefined) return Promise.resolve(queued as T);
    if (this.exited) return Promise.reject(new Error(`client program ended: ${this.stderr}`));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`no answer from the client program within ${waitMs} ms: ${this.stderr}`));
      }, waitMs);
      this.waiting = (answer) => {
        clearTimeout(timer);
        resolve(answer as T);
      };
    });
  }

  close(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

/**
 * Client program: on each line `<json array of source ports>`, opens a TCP connection to the
 * cluster IP from each port at once, keeps them `holdMs` (less than the SYN retransmission
 * time, so each unanswered connection sends exactly one SYN), destroys them and answers
 * `{ connected: [ports answered] }`. Prints `{ ready: true }` first.
 */
export const connectBurstSource = `
const net = require('node:net');
const [vip, port, holdMs] = process.argv.slice(1);
const lines = require('node:readline').createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const ports = JSON.parse(line);
  const connected = [];
  const sockets = ports.map((localPort) => {
    const socket = net.connect({ host: vip, port: Number(port), localPort });
    socket.on('connect', () => connected.push(localPort));
    socket.on('error', () => {});
    return socket;
  });
  setTimeout(() => {
    for (const socket of sockets) socket.destroy();
    console.log(JSON.stringify({ connected: connected.sort((a, b) => a - b) }));
  }, Number(holdMs));
});
console.log(JSON.stringify({ ready: true }));
`;

/**
 * Client program: on the line `go`, connects to the cluster IP from source port `localPort`,
 * sends HOLD, then `bytes` bytes in lines of 1 KiB, reads the backend's echo of all of them,
 * and answers `{ host, sent, echoed, ms }` (or `{ error }`, also after `timeoutMs`).
 */
export const bulkEchoSource = `
const net = require('node:net');
const [vip, port, localPort, bytes, timeoutMs] = process.argv.slice(1).map((a, i) => (i === 0 ? a : Number(a)));
const line = Buffer.alloc(1024, 0x78);
line[1023] = 0x0a;
const lines = Math.ceil(bytes / 1024);
const finish = (answer) => {
  console.log(JSON.stringify(answer));
  process.exit(0);
};
require('node:readline').createInterface({ input: process.stdin }).once('line', () => {
  const started = Date.now();
  const socket = net.connect({ host: vip, port, localPort });
  let host;
  let head = '';
  let echoed = 0;
  let sent = 0;
  setTimeout(() => finish({ error: 'timeout', host, sent, echoed, ms: Date.now() - started }), timeoutMs);
  socket.on('error', (e) => finish({ error: e.message, host, sent, echoed }));
  socket.on('connect', () => {
    socket.write('HOLD\\n');
    const pump = () => {
      while (sent < lines * 1024) {
        sent += 1024;
        if (!socket.write(line)) return socket.once('drain', pump);
      }
    };
    pump();
  });
  socket.on('data', (chunk) => {
    if (host === undefined) {
      head += chunk.toString('latin1');
      const newline = head.indexOf('\\n');
      if (newline < 0) return;
      host = Number(/^host (\\d+)/.exec(head)?.[1]);
      echoed += head.length - newline - 1;
    } else {
      echoed += chunk.length;
    }
    if (echoed >= lines * 1024) {
      socket.destroy();
      finish({ host, sent, echoed, ms: Date.now() - started });
    }
  });
});
console.log(JSON.stringify({ ready: true }));
`;

/**
 * Replaces `table inet <name>` in a lab namespace with one of the test's own: named counters
 * and one base chain on `hook` holding `rules`. Outside nlbd's table, so nlbd leaves it be.
 */
export async function installCounterTable(
  namespace: string,
  name: string,
  hook: 'prerouting priority -300' | 'forward priority 0' | 'output priority -350',
  counters: readonly string[],
  rules: readonly string[],
): Promise<void> {
  const script = [
    `table inet ${name} {}`,
    `delete table inet ${name}`,
    `table inet ${name} {`,
    ...counters.map((c) => `  counter ${c} {}`),
    '  chain probe {',
    `    type filter hook ${hook}; policy accept;`,
    ...rules.map((r) => `    ${r}`),
    '  }',
    '}',
    '',
  ].join('\n');
  await runIn(namespace, ['nft', '-f', '-'], script);
}

export async function removeTable(namespace: string, name: string): Promise<void> {
  await runIn(namespace, ['nft', 'delete', 'table', 'inet', name]);
}

/** The marker routes of host `hostId` once there are `count` of them (or the wait gave up). */
export function waitForMarkers(
  lab: ClusterLab,
  hostId: number,
  count: number,
  startMs: number,
  waitMs = 3_000,
): Promise<Waited<string[]>> {
  return waitUntil(
    () => markerRoutes(lab, hostId),
    (r) => r.length === count,
    waitMs,
    5,
    startMs,
  );
}

/** The router's paths once they go to exactly `hosts` (or the wait gave up). */
export function waitForPaths(
  lab: ClusterLab,
  hosts: readonly number[],
  startMs: number,
  waitMs = 3_000,
): Promise<Waited<number[]>> {
  return waitUntil(
    () => routerPaths(lab),
    (p) => p.join() === hosts.join(),
    waitMs,
    10,
    startMs,
  );
}

/**
 * The maps the cluster goes through when host `hung` hangs and comes back, as every host
 * computes them (src/core/assign.ts, equal weights): its peers take its buckets, then it takes
 * its share back from them, the highest-indexed buckets of each.
 */
export function hangMaps(
  owners: readonly (number | null)[],
  hung: number,
  hostIds: readonly number[],
): { during: (number | null)[]; after: (number | null)[] } {
  const members = (ids: readonly number[]) =>
    ids.map((id) => ({ id, loadWeight: 1, handlingPriority: id, draining: false }));
  const input = { mode: 'multiple' as const, buckets: owners.length };
  const during = assign({
    ...input,
    owners: owners.map((o) => (o === hung ? null : o)),
    members: members(hostIds.filter((id) => id !== hung)),
  });
  const after = assign({ ...input, owners: during, members: members(hostIds) });
  return { during, after };
}

/** Up to `max` failed connections of a load run, for a failure message or a figures line. */
/**
 * A load phase lost nothing: every new connection answered, none skipped, and each of the `holds`
 * long-lived connections reached a host and kept echoing to the end.
 */
export function expectNoLoss(
  result: LoadgenSummary & { connections: readonly ConnectionRecord[] },
  holds: number,
): void {
  expect(failedText(result.connections)).toBe('none failed');
  expect(result.failed).toBe(0);
  expect(result.skippedAtConcurrencyMax).toBe(0);
  expect(result.holds).toHaveLength(holds);
  expect(result.holds.filter((h) => h.host === undefined || h.broken !== undefined)).toEqual([]);
  expect(result.holdsBroken).toBe(0);
}

export function failedText(connections: readonly ConnectionRecord[], max = 5): string {
  const failed = connections.filter((c) => c.failure !== undefined);
  const shown = failed
    .slice(0, max)
    .map((c) => `${c.sourcePort}@${Math.round(c.atMs)}ms:${c.failure}`)
    .join(' ');
  return failed.length === 0 ? 'none failed' : `${failed.length} failed (${shown})`;
}
