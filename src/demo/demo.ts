// The demo of the README's quick start: a real 3-host lab cluster under load, host 1's service
// failing and mended (service-phase.ts), host 2 crashing (daemon killed, link cut) and
// rejoining, host 3 draining, with live per-host counters and a
// closing summary per phase. Without root it tells so and runs the simulator's version.
//
// The load generator runs in the lab's client namespace for the whole story (bounded in count
// and time) and reports each connection; the demo cuts the story into phases by wall-clock time
// and attributes every connection to the phase it started in.
import type { ClusterMode } from '../core/config.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { flowBucket } from '../core/flow.js';
import { parseAddress } from '../core/address.js';
import { controlRequest } from '../control/client.js';
import { defaultSocketPath } from '../daemon/paths.js';
import {
  type LabState,
  cutLink,
  killHostDaemon,
  labDown,
  labUp,
  restoreLink,
  startHostDaemon,
} from '../lab/lab.js';
import { labClusterName as clusterNameFor } from '../lab/host-config.js';
import { loadConfigFile } from '../node/config-file.js';
import { runLoadgenInClient } from '../lab/loadgen-client.js';
import { routedLabUp } from '../lab/router.js';
import type { ConnectionRecord, HoldRecord, ProgressRecord } from '../lab/loadgen.js';
import { runSimulation } from '../sim/index.js';
import { servicePhase } from './service-phase.js';
import {
  convergeTimeoutMs,
  convergedOn,
  hostIds,
  ownedBy,
  query,
  vip,
  waitFor,
} from './demo-lab.js';

export interface DemoOptions {
  /** Seconds of each phase; the whole story lasts about 5 × this. */
  readonly phaseSeconds: number;
  /** New connections per second (bounded by the load generator's own limits). */
  readonly ratePerSecond: number;
  /** Long-lived connections held open through the whole story. */
  readonly holds: number;
  /** The lab cluster's operation mode; default unicast. */
  readonly mode?: ClusterMode;
  /** Clients connect to the lab's IPv6 cluster IP (2001:db8:18::100) instead of the IPv4 one. */
  readonly ipv6?: boolean;
  readonly log: (line: string) => void;
  readonly signal?: AbortSignal;
  /**
   * Started once the lab is up, before its hosts converge (so it sees them do so), and stopped
   * before the lab is torn down: `nlb demo --dashboard` serves the dashboard of the lab with it.
   */
  readonly onLabUp?: (lab: LabState) => Promise<() => Promise<void>>;
}

export interface DemoPhase {
  readonly name: string;
  readonly description: string;
  readonly startedAtMs: number;
  readonly durationMs: number;
  readonly requestsSent: number;
  readonly requestsFailed: number;
  readonly failuresByKind: Record<string, number>;
  readonly answeredPerHost: Record<string, number>;
  /** Long-lived connections that broke during the phase, and on which host they were. */
  readonly connectionsBroken: number;
  readonly connectionsBrokenOnHost: Record<string, number>;
  /** crash only: from the crash until the survivors owned (and served) every dead bucket. */
  readonly takeoverMs: number | null;
  /** crash only: from the crash until a request in a dead host's bucket was answered. */
  readonly firstAnsweredInDeadBucketMs: number | null;
}

export interface DemoResult {
  readonly mode: 'lab' | 'simulator';
  readonly lab: string | null;
  readonly phases: readonly DemoPhase[];
  readonly totals: { requestsSent: number; requestsFailed: number; connectionsBroken: number };
  readonly notes: readonly string[];
}

/** Runs the lab demo; the caller checks for root first. Always tears the lab down. */
export async function runLabDemo(options: DemoOptions): Promise<DemoResult> {
  const { log, signal } = options;
  const phaseMs = options.phaseSeconds * 1000;
  const mode = options.mode ?? 'unicast';
  const ipv6 = options.ipv6 ?? false;
  if (mode === 'routed' && ipv6) {
    throw new Error('the routed lab serves IPv4 only: leave out --ipv6 with --mode routed');
  }
  log(
    mode === 'routed'
      ? 'building a 3-host routed lab cluster in network namespaces: an FRR router spreading flows over the hosts by ECMP, each host in a subnet of its own (198.18.1-3.0/24), the client behind the router (198.18.100.0/24), VIP 198.18.0.100...'
      : `building a 3-host lab cluster in ${mode} mode in network namespaces (198.18.0.0/24, VIP 198.18.0.100${ipv6 ? ', and 2001:db8:18::/64 with VIP 2001:db8:18::100' : ''})...`,
  );
  // The routed lab (src/lab/router.ts) waits for its BGP sessions and for the cluster.
  const lab =
    mode === 'routed'
      ? await routedLabUp({ hosts: 3, clients: 1 })
      : await labUp({
          hosts: 3,
          clients: 1,
          clientExtraIps: 6,
          startDaemons: true,
          clusterMode: mode,
          ipv6,
        });
  const notes: string[] = [];
  let stopCompanion: (() => Promise<void>) | undefined;
  try {
    stopCompanion = await options.onLabUp?.(lab);
    const convergedIn = await waitFor(
      'hosts 1, 2, 3 to converge',
      () => convergedOn(lab, hostIds),
      convergeTimeoutMs,
      signal,
    );
    log(`lab ${lab.name}: hosts 1, 2, 3 converged (${convergedIn} ms after the daemons started)`);
    const seed = await hashSeedOf(lab);
    const load = startLoad(lab, options, phaseMs * 5 + 2_000);
    const marks: Mark[] = [];
    const mark = (name: string, description: string): void => {
      marks.push({ name, description, atMs: Date.now() });
      log(`-- ${description}`);
    };

    mark('steady', 'phase 1: all three hosts serve');
    await sleep(phaseMs, undefined, { signal });
    await servicePhase(lab, options, mark, notes);
    const crash = await crashPhase(lab, options, mark, notes);
    await rejoinPhase(lab, options, mark, notes);
    await drainstopPhase(lab, options, mark, notes);
    marks.push({ name: 'end', description: 'end', atMs: Date.now() });
    load.abort();
    const summary = await load.done;
    log('load finished; long-lived connections closed');
    const after = await query(lab, 3);
    if (after?.state === 'stopped')
      notes.push('host 3 stopped by itself once its last connection ended (drainstop done)');

    const phases = marks
      .slice(0, -1)
      .map((m, i) => summarisePhase(m, marks[i + 1]!.atMs, marks[0]!.atMs, load, crash, seed));
    notes.push(
      `load generator: ${summary.started} connections, ${summary.failed} failed, ${summary.holdsBroken} of ${options.holds} long-lived connections broken`,
    );
    return {
      mode: 'lab',
      lab: lab.name,
      phases,
      totals: {
        requestsSent: phases.reduce((n, p) => n + p.requestsSent, 0),
        requestsFailed: phases.reduce((n, p) => n + p.requestsFailed, 0),
        connectionsBroken: phases.reduce((n, p) => n + p.connectionsBroken, 0),
      },
      notes,
    };
  } finally {
    await stopCompanion?.().catch((error: unknown) =>
      log(`stopping the dashboard: ${String(error)}`),
    );
    log(`tearing down lab ${lab.name}...`);
    await labDown(lab);
  }
}

interface Mark {
  readonly name: string;
  readonly description: string;
  readonly atMs: number;
}

/** The load generator running through the whole story, and what it reported so far. */
interface Load {
  readonly done: Promise<Awaited<ReturnType<typeof runLoadgenInClient>>>;
  readonly abort: () => void;
  readonly connections: readonly { record: ConnectionRecord; wallMs: number }[];
  readonly holdBreaks: readonly { hold: HoldRecord; wallMs: number }[];
  /** Wall clock = loadgen atMs + this, known from the first progress report. */
  offsetMs(): number | undefined;
}

function startLoad(lab: LabState, options: DemoOptions, totalMs: number): Load {
  const { log, signal } = options;
  const client = lab.clients[0]!;
  const ipv6 = options.ipv6 === true && client.ip6 !== undefined;
  const sources = ipv6
    ? [client.ip6!, ...(client.extraIps6 ?? [])]
    : [client.ip, ...client.extraIps];
  const target = ipv6 ? lab.vip6! : vip;
  const connections: { record: ConnectionRecord; wallMs: number }[] = [];
  const holdBreaks: { hold: HoldRecord; wallMs: number }[] = [];
  let offsetMs: number | undefined;
  const loadAbort = new AbortController();
  signal?.addEventListener('abort', () => loadAbort.abort(), { once: true });
  const progressLine = (p: ProgressRecord): string => {
    const perHost = hostIds.map((id) => `h${id} ${String(p.perHost[String(id)] ?? 0).padStart(4)}`);
    const failed = Object.values(p.failures).reduce((n, x) => n + (x ?? 0), 0);
    return `  t=${(p.atMs / 1000).toFixed(0).padStart(3)}s  ${perHost.join('  ')}   failed ${String(failed).padStart(3)}   held ${p.holdsAlive}/${options.holds}`;
  };
  log(
    `load: ${options.ratePerSecond} new connections/s from ${sources.length} client addresses, ${options.holds} long-lived connections held open`,
  );
  log(
    '  (per second: requests answered by each host, failed requests, long-lived connections alive)',
  );
  const done = runLoadgenInClient(
    lab,
    1,
    {
      target,
      port: 80,
      ratePerSecond: options.ratePerSecond,
      countMax: Math.ceil((options.ratePerSecond * totalMs) / 1000),
      durationMs: totalMs,
      timeoutMs: 2_000,
      holds: options.holds,
      holdPingIntervalMs: 250,
      holdPingTimeoutMs: 2_000,
      progressIntervalMs: 1_000,
      sources,
      signal: loadAbort.signal,
    },
    {
      onProgress: (p) => {
        offsetMs ??= Date.now() - p.atMs;
        log(progressLine(p));
      },
      onConnection: (record) =>
        connections.push({ record, wallMs: (offsetMs ?? Date.now()) + record.atMs }),
      onHoldBreak: (hold) => holdBreaks.push({ hold, wallMs: Date.now() }),
    },
  );
  return {
    done,
    abort: () => loadAbort.abort(),
    connections,
    holdBreaks,
    offsetMs: () => offsetMs,
  };
}

/** What the crash phase measured, for its summary. */
interface Crash {
  readonly atMs: number;
  readonly deadBuckets: readonly number[];
  readonly takeoverMs: number | null;
}

type MarkPhase = (name: string, description: string) => void;

/** Phase 3: host 2 crashes; waits for the survivors to own its buckets, then to the phase end. */
async function crashPhase(
  lab: LabState,
  { log, signal, phaseSeconds }: DemoOptions,
  mark: MarkPhase,
  notes: string[],
): Promise<Crash> {
  const before = await Promise.all(hostIds.map((id) => query(lab, id)));
  const deadBuckets = ownedBy(before[1]);
  mark(
    'crash',
    lab.routed === undefined
      ? `phase 3: host 2 crashes (nlbd killed, link cut); it owned ${deadBuckets.length} buckets`
      : `phase 3: host 2 crashes (nlbd killed, its link to the router cut: BFD takes it out of ECMP); it owned ${deadBuckets.length} buckets`,
  );
  const crashAt = Date.now();
  await killHostDaemon(lab, 2);
  await cutLink(lab, 2);
  let takeoverMs: number | null = null;
  try {
    await waitFor(
      'the survivors to take host 2 buckets',
      async () => {
        const [v1, v3] = await Promise.all([query(lab, 1), query(lab, 3)]);
        const owned = new Set([...ownedBy(v1), ...ownedBy(v3)]);
        return deadBuckets.every((b) => owned.has(b));
      },
      convergeTimeoutMs,
      signal,
    );
    takeoverMs = Date.now() - crashAt;
    log(`   hosts 1 and 3 own host 2's buckets ${takeoverMs} ms after the crash`);
  } catch (error) {
    notes.push(String(error));
  }
  await sleep(Math.max(0, phaseSeconds * 1000 - (Date.now() - crashAt)), undefined, { signal });
  return { atMs: crashAt, deadBuckets, takeoverMs };
}

/** Phase 4: host 2 comes back and the three converge again. */
async function rejoinPhase(
  lab: LabState,
  { log, signal, phaseSeconds }: DemoOptions,
  mark: MarkPhase,
  notes: string[],
): Promise<void> {
  mark('rejoin', 'phase 4: host 2 comes back (link up, nlbd restarted) and rejoins');
  await restoreLink(lab, 2);
  await startHostDaemon(lab, 2);
  const rejoinAt = Date.now();
  try {
    const ms = await waitFor(
      'host 2 to rejoin',
      () => convergedOn(lab, hostIds),
      convergeTimeoutMs,
      signal,
    );
    log(`   converged again with hosts 1, 2, 3 ${ms} ms after nlbd restarted`);
  } catch (error) {
    notes.push(String(error));
  }
  await sleep(Math.max(0, phaseSeconds * 1000 - (Date.now() - rejoinAt)), undefined, { signal });
}

/** Phase 5: host 3 drainstops; its open connections stay while it takes no new ones. */
async function drainstopPhase(
  lab: LabState,
  { log, signal, phaseSeconds }: DemoOptions,
  mark: MarkPhase,
  notes: string[],
): Promise<void> {
  mark('drainstop', 'phase 5: host 3 drainstops: no new connections, its open ones stay');
  const reply = await controlRequest(defaultSocketPath(clusterNameFor(lab.name), 3), {
    verb: 'drainstop',
  });
  if (!reply.ok) notes.push(`drainstop refused: ${reply.error.message}`);
  await sleep(phaseSeconds * 1000, undefined, { signal });
  const drained = await query(lab, 3);
  log(`   host 3 is ${drained?.state ?? 'unreachable'} with ${ownedBy(drained).length} buckets`);
}

/** Counts of one phase: every connection belongs to the phase it started in. */
function summarisePhase(
  m: Mark,
  endMs: number,
  startMs: number,
  load: Load,
  crash: Crash,
  seed: number,
): DemoPhase {
  const inPhase = load.connections
    .filter((c) => c.wallMs >= m.atMs && c.wallMs < endMs)
    .map((c) => c.record);
  const failed = inPhase.filter((r) => r.failure !== undefined);
  const failuresByKind: Record<string, number> = {};
  for (const r of failed) failuresByKind[r.failure!] = (failuresByKind[r.failure!] ?? 0) + 1;
  const answeredPerHost: Record<string, number> = {};
  for (const r of inPhase)
    if (r.host !== undefined)
      answeredPerHost[`h${r.host}`] = (answeredPerHost[`h${r.host}`] ?? 0) + 1;
  const broken = load.holdBreaks.filter((b) => b.wallMs >= m.atMs && b.wallMs < endMs);
  const brokenOnHost: Record<string, number> = {};
  for (const b of broken)
    brokenOnHost[`h${b.hold.host ?? '?'}`] = (brokenOnHost[`h${b.hold.host ?? '?'}`] ?? 0) + 1;
  return {
    name: m.name,
    description: m.description,
    startedAtMs: m.atMs - startMs,
    durationMs: endMs - m.atMs,
    requestsSent: inPhase.length,
    requestsFailed: failed.length,
    failuresByKind,
    answeredPerHost,
    connectionsBroken: broken.length,
    connectionsBrokenOnHost: brokenOnHost,
    takeoverMs: m.name === 'crash' ? crash.takeoverMs : null,
    firstAnsweredInDeadBucketMs:
      m.name === 'crash' ? firstAnsweredInDeadBucket(inPhase, load, crash, seed) : null,
  };
}

const ruleBuckets = 60;

/** From the crash until a survivor answered a request in one of the dead host's buckets. */
function firstAnsweredInDeadBucket(
  inPhase: readonly ConnectionRecord[],
  load: Load,
  crash: Crash,
  seed: number,
): number | null {
  const dead = new Set(crash.deadBuckets);
  const answered = inPhase
    .filter((r) => r.host !== undefined && r.host !== 2)
    .filter((r) => {
      const address = parseAddress(r.sourceIp);
      return (
        address !== undefined &&
        dead.has(flowBucket({ address, port: r.sourcePort }, 'none', ruleBuckets, seed))
      );
    })
    .map((r) => (load.offsetMs() ?? 0) + r.atMs + r.latencyMs - crash.atMs);
  return answered.length > 0 ? Math.round(Math.min(...answered)) : null;
}

async function hashSeedOf(lab: LabState): Promise<number> {
  const loaded = await loadConfigFile(lab.hosts[0]!.config);
  if (!loaded.ok) throw new Error(`the lab's config ${lab.hosts[0]!.config} does not load`);
  return loaded.config.cluster.hashSeed;
}

/** Without root: the same story in the simulator (virtual time, the same protocol code). */
export function runSimulatorDemo(log: (line: string) => void): DemoResult {
  log(
    "not root: the lab needs root (network namespaces, nftables). Running the simulator's version:",
  );
  log('the same protocol code, three hosts, a virtual network and clock.');
  const phases: DemoPhase[] = (['crash', 'join', 'drainstop'] as const).map((scenario, i) => {
    const result = runSimulation({ seed: 1 + i, scenario, hosts: 3 });
    const change = result.changes[0];
    log(
      `  ${scenario}: detected ${change?.detectionMs?.toFixed(1) ?? '-'} ms, new owners serving after ${change?.takeoverMs?.toFixed(1) ?? '-'} ms, buckets moved ${change?.bucketsMoved ?? '-'} (minimum ${change?.bucketsMovedMin ?? '-'}), invariant violations ${result.violations.length}`,
    );
    return {
      name: scenario,
      description: `simulated ${scenario}`,
      startedAtMs: 0,
      durationMs: result.durationMs,
      requestsSent: 0,
      requestsFailed: 0,
      failuresByKind: {},
      answeredPerHost: {},
      connectionsBroken: 0,
      connectionsBrokenOnHost: {},
      takeoverMs: change?.takeoverMs ?? null,
      firstAnsweredInDeadBucketMs: null,
    };
  });
  return {
    mode: 'simulator',
    lab: null,
    phases,
    totals: { requestsSent: 0, requestsFailed: 0, connectionsBroken: 0 },
    notes: ['run as root for the real cluster: bash scripts/demo.sh'],
  };
}
