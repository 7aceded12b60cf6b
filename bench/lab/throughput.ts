// Throughput in the lab: what the filter costs a bulk TCP stream (iperf3), and requests per
// second of the cluster against the same three backends behind haproxy and the kernel directors.
//
// Filter overhead. iperf3's server runs in host 1 on port 80 (the lab's port rule, so the VIP
// stream goes through the whole filter: verdict map, port rule, conntrack state); its client
// runs in the client namespace. The same stream goes once to host 1's dedicated IP (which the
// filter leaves alone: the verdict map does not match it) and once to the VIP, alternately, in
// one lab. In unicast mode both addresses resolve to the cluster MAC, so both streams are
// flooded to every host alike: the only difference is the filter. iperf3 opens a control
// connection from an ephemeral port and the data stream from --cport; both must hash into a
// bucket host 1 owns, so the client namespace's ephemeral range is narrowed to one such port.
//
// Cluster vs its peers. A closed-loop client (http-client.ts) opens a new connection per request
// at fixed concurrency for a fixed time, against the VIP, then against haproxy (Debian's package,
// round robin over the hosts' dedicated IPs) running in a namespace of its own on the lab's
// switch (a lab "client" namespace used as the proxy machine). haproxy runs in TCP mode (layer
// 4, like the cluster) and in HTTP mode. The kernel directors of ipvs.ts (IPVS, nftables DNAT)
// run in a third namespace (c3). The runs alternate, the order rotating every round, so that
// drift hits all alike; each peer gets its median requests/s, its median p99 latency, and the
// cluster's ratio to it per round and over the rounds.
import type { ChildProcess } from 'node:child_process';
import { abbaOrder } from './figures.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LabState } from '../../src/lab/lab.js';
import { assertLabSafeAddress, hostIp6, labVip } from '../../src/lab/naming.js';
import type { HttpClientConfig, HttpClientResult } from './http-client.js';
import {
  type DirectorKind,
  type Directors,
  type DirectorStatus,
  directorPorts,
  startDirectors,
} from './ipvs.js';
import { execNs, spawnNs, stopChild, waitListening } from './ns-exec.js';
import { floodOwnAddress, sendOwnAddressTo } from './flood-baseline.js';
import {
  flowConfigOf,
  median,
  pairedRatios,
  ownersNow,
  portsByBucket,
  round,
  helperReady,
  startHelper,
  waitConverged,
} from './support.js';

const convergeTimeoutMs = 20_000;

// ---------------------------------------------------------------------------- filter overhead

function optionalRound(value: number | undefined): number | null {
  return value === undefined ? null : round(value);
}

/**
 * 'dedicated': to host 1's own address, flooded to every host as the VIP's frames are (the
 * baseline); 'vip': through the filter; 'switched': to host 1's own address in frames to its own
 * MAC, which the switch sends to host 1 alone (multicast and IGMP modes only: their cost of
 * flooding, a diagnostic).
 */
export type IperfPath = 'dedicated' | 'vip' | 'switched';

export interface IperfRun {
  readonly round: number;
  readonly path: IperfPath;
  readonly target: string;
  readonly gbps: number;
  readonly retransmits: number | null;
  readonly cpuSenderPercent: number | null;
  readonly cpuReceiverPercent: number | null;
}

export interface FilterResult {
  readonly seconds: number;
  readonly rounds: number;
  readonly runs: IperfRun[];
  /** Per round, VIP / dedicated IP of its two adjacent runs. */
  readonly roundRatios: number[];
  readonly dedicatedGbps: number | null;
  readonly vipGbps: number | null;
  /** Multicast and IGMP modes: the median of the 'switched' runs (not flooded); else null. */
  readonly switchedGbps?: number | null;
  /** The verdict: the median of the per-round ratios (adjacent runs, so drift cancels). */
  readonly ratio: number | null;
  /** Median through the filter / median without it, for comparison. */
  readonly ratioOfMedians: number | null;
}

interface IperfJson {
  error?: string;
  end?: {
    sum_received?: { bits_per_second?: number };
    sum_sent?: { retransmits?: number };
    cpu_utilization_percent?: { host_total?: number; remote_total?: number };
  };
}

const pathLabels: Record<IperfPath, string> = {
  dedicated: "the dedicated IP (no filter; flooded as the VIP's frames are)",
  vip: 'the VIP (filter)',
  switched: 'the dedicated IP, switched to host 1 alone',
};

// eslint-disable-next-line max-lines-per-function -- one measurement from set-up to teardown, each step in order; to be split when issue 11 reworks the benchmarks
export async function runFilterOverhead(
  lab: LabState,
  seconds: number,
  rounds: number,
  log: (line: string) => void,
  signal: AbortSignal,
  family: 4 | 6 = 4,
  groupMac?: string,
): Promise<FilterResult> {
  const pairs: IperfPath[] = abbaOrder(rounds, 'dedicated' as const, 'vip' as const);
  // Multicast and IGMP modes: each round's pair, then host 1's own address switched to it alone.
  const order =
    groupMac === undefined
      ? pairs
      : pairs.flatMap((kind, i): IperfPath[] => (i % 2 === 1 ? [kind, 'switched'] : [kind]));
  const perRound = groupMac === undefined ? 2 : 3;
  const hostIds = lab.hosts.map((h) => h.id);
  await waitConverged(lab, hostIds, convergeTimeoutMs, signal);
  const flow = await flowConfigOf(lab);
  const client = lab.clients[0]!;
  const host = lab.hosts[0]!;
  // IPv6: the lab's IPv6 cluster IP, and host 1's IPv6 address beside it.
  const vipTarget = family === 6 ? lab.vip6! : labVip;
  const hostTarget = family === 6 ? hostIp6(host.id) : host.ip;
  assertLabSafeAddress(hostTarget, 'iperf3 target');
  assertLabSafeAddress(vipTarget, 'iperf3 target');
  const owners = await ownersNow(lab, hostIds, flow.buckets);
  const ports = portsByBucket(family === 6 ? client.ip6! : client.ip, flow);
  const hostPorts = ports
    .flatMap((list, bucket) => (owners[bucket] === host.id ? list : []))
    .sort((a, b) => a - b);
  if (hostPorts.length < 2 * order.length)
    throw new Error('too few source ports in host 1 buckets');

  const server = spawnNs(lab, 'h1', ['iperf3', '-s', '-p', '80']);
  const runs: IperfRun[] = [];
  try {
    await waitListening(lab, 'h1', 80, 5_000);
    if (groupMac !== undefined) await floodOwnAddress(lab, hostTarget, family);
    for (const [i, kind] of order.entries()) {
      signal.throwIfAborted();
      if (groupMac !== undefined && kind !== 'vip') {
        await sendOwnAddressTo(
          lab,
          hostTarget,
          family,
          kind === 'dedicated' ? groupMac : undefined,
        );
      }
      // A fresh pair of ports per run: the client leaves the control connection in TIME_WAIT.
      const controlPort = hostPorts[2 * i]!;
      const dataPort = hostPorts[2 * i + 1]!;
      const range = await execNs(
        lab,
        'c1',
        ['sysctl', '-q', '-w', `net.ipv4.ip_local_port_range=${controlPort} ${controlPort}`],
        5_000,
      );
      if (range.code !== 0) throw new Error(`sysctl in c1 failed: ${range.stderr.trim()}`);
      const target = kind === 'vip' ? vipTarget : hostTarget;
      const out = await execNs(
        lab,
        'c1',
        [
          'iperf3',
          '-c',
          target,
          '-p',
          '80',
          '-t',
          String(seconds),
          '-J',
          '--cport',
          String(dataPort),
          '--connect-timeout',
          '3000',
        ],
        (seconds + 20) * 1000,
      );
      let parsed: IperfJson;
      try {
        parsed = JSON.parse(out.stdout) as IperfJson;
      } catch {
        throw new Error(
          `iperf3 to ${target} printed no JSON (exit ${out.code}): ${out.stderr.trim()}`,
        );
      }
      const bps = parsed.end?.sum_received?.bits_per_second;
      if (parsed.error !== undefined || bps === undefined) {
        throw new Error(`iperf3 to ${target} failed: ${parsed.error ?? 'no sum_received'}`);
      }
      const run: IperfRun = {
        round: Math.floor(i / perRound) + 1,
        path: kind,
        target,
        gbps: round(bps / 1e9, 3),
        retransmits: parsed.end?.sum_sent?.retransmits ?? null,
        cpuSenderPercent: optionalRound(parsed.end?.cpu_utilization_percent?.host_total),
        cpuReceiverPercent: optionalRound(parsed.end?.cpu_utilization_percent?.remote_total),
      };
      runs.push(run);
      log(`  round ${run.round}: iperf3 ${seconds} s to ${pathLabels[kind]}: ${run.gbps} Gbit/s`);
      await sleep(500, undefined, { signal });
    }
  } finally {
    await stopChild(server);
    await execNs(
      lab,
      'c1',
      ['sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=32768 60999'],
      5_000,
    );
  }
  const dedicated = median(runs.filter((r) => r.path === 'dedicated').map((r) => r.gbps));
  const vip = median(runs.filter((r) => r.path === 'vip').map((r) => r.gbps));
  const switched = median(runs.filter((r) => r.path === 'switched').map((r) => r.gbps));
  const { roundRatios, ratio } = pairedRatios(runs, rounds, (run) => run.gbps);
  return {
    seconds,
    rounds,
    runs,
    roundRatios,
    dedicatedGbps: dedicated === null ? null : round(dedicated, 3),
    vipGbps: vip === null ? null : round(vip, 3),
    ...(groupMac === undefined
      ? {}
      : { switchedGbps: switched === null ? null : round(switched, 3) }),
    ratio: ratio === null ? null : round(ratio, 3),
    ratioOfMedians:
      dedicated === null || vip === null || dedicated === 0 ? null : round(vip / dedicated, 3),
  };
}

// ---------------------------------------------------------------------------- cluster vs peers

export type ProxyKind = 'cluster' | 'haproxy-tcp' | 'haproxy-http' | DirectorKind;
const baseKinds: readonly ProxyKind[] = ['cluster', 'haproxy-tcp', 'haproxy-http'];
/** haproxy listens in its namespace on one port per mode; both run for the whole comparison. */
const haproxyPorts = { 'haproxy-tcp': 80, 'haproxy-http': 8080 } as const;

export interface ProxyRun {
  readonly round: number;
  readonly kind: ProxyKind;
  readonly target: string;
  readonly requestsPerSecond: number;
  readonly completed: number;
  readonly failed: number;
  readonly failures: Record<string, number>;
  readonly perHost: Record<string, number>;
  readonly latencyP50Ms: number | null;
  readonly latencyP99Ms: number | null;
}

export interface ProxyOptions {
  readonly seconds: number;
  readonly rounds: number;
  readonly concurrency: number;
}

export interface ProxyResult {
  readonly seconds: number;
  readonly rounds: number;
  readonly concurrency: number;
  readonly haproxyVersion: string;
  /** The kernel directors (IPVS, nftables DNAT): whether each ran, and its version or why not. */
  readonly directors: DirectorStatus[];
  readonly runs: ProxyRun[];
  readonly medianRequestsPerSecond: Partial<Record<ProxyKind, number>>;
  /** Per target, the median over the rounds of each run's p99 latency. */
  readonly medianLatencyP99Ms: Partial<Record<ProxyKind, number>>;
  /** Per round, cluster / the faster haproxy mode of that round. */
  readonly roundRatios: number[];
  /** The verdict: the median of the per-round ratios (runs close in time, so drift cancels). */
  readonly ratio: number | null;
  /** Cluster / the faster haproxy mode, from the medians over all rounds, for comparison. */
  readonly ratioOfMedians: number | null;
  readonly ratioTcp: number | null;
  readonly ratioHttp: number | null;
  /** Per round, cluster / IPVS; empty when IPVS did not run. */
  readonly roundRatiosIpvs: number[];
  /** The IPVS verdict: the median of the per-round ratios; null when IPVS did not run. */
  readonly ratioIpvs: number | null;
  readonly roundRatiosNft: number[];
  readonly ratioNft: number | null;
}

export function haproxyConfig(
  mode: 'tcp' | 'http',
  bindIp: string,
  port: number,
  servers: readonly string[],
): string {
  return [
    `# haproxy in front of the lab's backends (${mode} mode), written by bench/lab-bench.ts`,
    'global',
    // Enough for the benchmark's concurrency; more would need a higher file limit than we have.
    '  maxconn 4096',
    'defaults',
    `  mode ${mode}`,
    '  timeout connect 3s',
    '  timeout client 10s',
    '  timeout server 10s',
    'frontend bench',
    `  bind ${bindIp}:${port}`,
    '  default_backend hosts',
    'backend hosts',
    '  balance roundrobin',
    ...servers.map((ip, i) => `  server h${i + 1} ${ip}:80`),
    '',
  ].join('\n');
}

/** Starts haproxy in both modes in `target`; the children are pushed to `children` at once. */
async function startHaproxies(
  lab: LabState,
  target: string,
  bindIp: string,
  servers: readonly string[],
  children: ChildProcess[],
): Promise<void> {
  for (const mode of ['tcp', 'http'] as const) {
    const port = haproxyPorts[`haproxy-${mode}`];
    const file = path.join(lab.dir, `haproxy-${mode}.cfg`);
    writeFileSync(file, haproxyConfig(mode, bindIp, port, servers));
    const child = spawnNs(lab, target, ['haproxy', '-db', '-f', file]);
    children.push(child);
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-2048)));
    try {
      await waitListening(lab, target, port, 5_000);
    } catch (error) {
      throw new Error(`haproxy (${mode} mode) did not start: ${stderr.trim() || String(error)}`, {
        cause: error,
      });
    }
  }
}

/**
 * Requests/s of the cluster's VIP against the same backends behind haproxy (tcp and http mode,
 * in c2) and behind the kernel directors of ipvs.ts (in c3), in one lab: one client process in
 * c1, a warm-up of every path, then `rounds` rounds with the order rotating every round.
 */
export async function runProxyComparison(
  lab: LabState,
  options: ProxyOptions,
  log: (line: string) => void,
  signal: AbortSignal,
): Promise<ProxyResult> {
  const hostIds = lab.hosts.map((h) => h.id);
  await waitConverged(lab, hostIds, convergeTimeoutMs, signal);
  const proxy = lab.clients[1]!;
  const director = lab.clients[2]!;
  assertLabSafeAddress(proxy.ip, 'haproxy address');
  const version = await execNs(lab, 'c2', ['haproxy', '-v'], 5_000);
  const haproxyVersion = version.stdout.split('\n')[0]?.trim() ?? 'unknown';
  const servers = lab.hosts.map((h) => h.ip);
  const haproxies: ChildProcess[] = [];
  let directors: Directors | undefined;
  let directorStatuses: DirectorStatus[];
  const kindsMax = baseKinds.length + Object.keys(directorPorts).length;
  const client = startHelper<HttpClientResult>(
    lab,
    'c1',
    'http-client',
    undefined,
    (options.rounds * kindsMax + kindsMax + 1) * (options.seconds * 1000 + 5_000) + 30_000,
  );
  const runs: ProxyRun[] = [];
  try {
    await startHaproxies(lab, 'c2', proxy.ip, servers, haproxies);
    directors = await startDirectors(lab, 'c3', director.ip, servers);
    directorStatuses = directors.statuses;
    for (const status of directors.statuses) {
      log(`  ${status.kind}: ${status.available ? status.detail : `not run: ${status.detail}`}`);
    }
    const kinds: readonly ProxyKind[] = [...baseKinds, ...directors.ready];
    await helperReady(client);
    const target = (kind: ProxyKind): { target: string; port: number } =>
      kind === 'cluster'
        ? { target: labVip, port: 80 }
        : kind === 'haproxy-tcp' || kind === 'haproxy-http'
          ? { target: proxy.ip, port: haproxyPorts[kind] }
          : { target: director.ip, port: directorPorts[kind] };
    const once = async (kind: ProxyKind, durationMs: number): Promise<HttpClientResult> => {
      const config: HttpClientConfig = {
        ...target(kind),
        concurrency: options.concurrency,
        durationMs,
        timeoutMs: 2_000,
      };
      client.send(config);
      return client.next();
    };
    // A short warm-up of every path, not recorded: the backends' JIT, haproxy, the caches.
    for (const kind of kinds) await once(kind, 1_000);
    for (let round = 1; round <= options.rounds; round++) {
      // Rotate the order every round, so no path always runs first or last.
      const order = kinds.map((_, i) => kinds[(i + round - 1) % kinds.length]!);
      for (const kind of order) {
        signal.throwIfAborted();
        const r = await once(kind, options.seconds * 1000);
        const run: ProxyRun = {
          round,
          kind,
          target: `${target(kind).target}:${target(kind).port}`,
          requestsPerSecond: Math.round(r.completed / options.seconds),
          completed: r.completed,
          failed: r.failed,
          failures: r.failures,
          perHost: r.perHost,
          latencyP50Ms: r.latencyMs?.p50 ?? null,
          latencyP99Ms: r.latencyMs?.p99 ?? null,
        };
        runs.push(run);
        log(
          `  round ${round} ${kind}: ${run.requestsPerSecond} requests/s (${run.failed} failed, p50 ${run.latencyP50Ms ?? '-'} ms, p99 ${run.latencyP99Ms ?? '-'} ms)`,
        );
      }
    }
  } finally {
    client.end();
    for (const child of haproxies) await stopChild(child);
    await directors?.stop();
    client.kill();
  }
  return {
    seconds: options.seconds,
    rounds: options.rounds,
    concurrency: options.concurrency,
    haproxyVersion,
    directors: directorStatuses,
    runs,
    ...summarize(runs, options.rounds),
  };
}

type ProxySummary = Omit<
  ProxyResult,
  'seconds' | 'rounds' | 'concurrency' | 'haproxyVersion' | 'directors' | 'runs'
>;

/** Medians per target, and the cluster's ratio to each peer, per round and over the rounds. */
export function summarize(runs: readonly ProxyRun[], rounds: number): ProxySummary {
  const rates: Partial<Record<ProxyKind, number>> = {};
  const p99s: Partial<Record<ProxyKind, number>> = {};
  for (const kind of new Set(runs.map((r) => r.kind))) {
    const of = runs.filter((r) => r.kind === kind);
    const m = median(of.map((r) => r.requestsPerSecond));
    if (m !== null) rates[kind] = m;
    const p = median(of.flatMap((r) => (r.latencyP99Ms === null ? [] : [r.latencyP99Ms])));
    if (p !== null) p99s[kind] = round(p, 2);
  }
  const ratioTo = (kind: ProxyKind): number | null =>
    rates.cluster === undefined || rates[kind] === undefined || rates[kind] === 0
      ? null
      : round(rates.cluster / rates[kind], 3);
  const best = Math.max(rates['haproxy-tcp'] ?? 0, rates['haproxy-http'] ?? 0);
  // Per round, the cluster over the fastest of `peers` in that round.
  const perRound = (peers: readonly ProxyKind[]): number[] =>
    Array.from({ length: rounds }, (_, i) => {
      const inRound = runs.filter((r) => r.round === i + 1);
      const cluster = inRound.find((r) => r.kind === 'cluster')?.requestsPerSecond;
      const peer = Math.max(
        0,
        ...inRound.filter((r) => peers.includes(r.kind)).map((r) => r.requestsPerSecond),
      );
      return cluster === undefined || peer === 0 ? NaN : round(cluster / peer, 3);
    }).filter((x) => !Number.isNaN(x));
  const verdict = (ratios: readonly number[]): number | null => {
    const m = median(ratios);
    return m === null ? null : round(m, 3);
  };
  const roundRatios = perRound(['haproxy-tcp', 'haproxy-http']);
  const roundRatiosIpvs = perRound(['ipvs']);
  const roundRatiosNft = perRound(['nft-dnat']);
  return {
    medianRequestsPerSecond: rates,
    medianLatencyP99Ms: p99s,
    roundRatios,
    ratio: verdict(roundRatios),
    ratioOfMedians:
      rates.cluster === undefined || best === 0 ? null : round(rates.cluster / best, 3),
    ratioTcp: ratioTo('haproxy-tcp'),
    ratioHttp: ratioTo('haproxy-http'),
    roundRatiosIpvs,
    ratioIpvs: verdict(roundRatiosIpvs),
    roundRatiosNft,
    ratioNft: verdict(roundRatiosNft),
  };
}
