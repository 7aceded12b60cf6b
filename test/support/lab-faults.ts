// The fault-injection harness of test/lab-faults*.test.ts (issue 9, "Hardening"). One fault is
// a small table entry: `inject` makes it (and may wait for what it causes), `heal` ends it, and
// `expect` says what the client may see. `runFault` runs one under a steady, bounded client load
// in a converged three-host lab (hosts 1..3, 20 buckets each) and measures, from outside the
// hosts:
//   - what the client saw: connections started, failed (by kind), and answered only after a
//     SYN retransmission (latency of 1 s or more);
//   - connections answered by two hosts (the SYN-ACK capture of support/lab-cluster.ts, read
//     so that a SYN-ACK leaving with the unmasked cluster MAC is counted instead of thrown);
//   - whether the learning bridge ever held the cluster MAC on a port (sampled every 100 ms);
//   - how long after the fault ended every host was converged on hosts 1..3 again, each with
//     its 20 buckets (the faulted host back by itself: nothing but the fault's end is done);
//   - that connections started after that land where the live map says.
// It prints one line per fault (`lab-faults: <name>: ...`) with those numbers, then asserts the
// common expectations; fault-specific checks live in the fault's inject/heal or its test.
// Everything here acts inside the namespaces of the lab the calling file built.
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { controlRequest } from '../../src/control/client.js';
import type { JournalEntry } from '../../src/daemon/events.js';
import { execIn } from '../../src/lab/netns.js';
import type { ConnectionRecord } from '../../src/lab/loadgen.js';
import {
  type ClusterLab,
  type FdbEntry,
  type SynAckCapture,
  type TimedLoad,
  type WaitResult,
  bucketOf,
  clearSynAcks,
  clientSources,
  convergedOn,
  expectConverged,
  endpointOf,
  hostOfSourceMacIn,
  liveMaps,
  mispredicted,
  startLoad,
  switchFdb,
  waitForHosts,
} from './lab-cluster.js';
import { clusterHosts } from './lab-hosts.js';

/** The lab's cluster MAC (unicast, VIP 198.18.0.100): `nlb ip2mac 198.18.0.100`. */
export const clusterMac = '02:bf:c6:12:00:64';
/** The hosts every fault starts and ends with, and the buckets each then owns (60 / 3). */
/** The buckets each of them then owns (60 / 3). */
export const bucketsEach = 20;
/** Detection with the lab's defaults: tolerance 5 × period 200 ms. */
export const detectionMs = 1_000;

/** Load of one fault run: steady, bounded in count and time (the run stops it earlier). */
const loadRatePerSecond = 200;
const loadMsMax = 25_000;
/**
 * Two SYN retransmissions (1 s, 3 s) fit, so a SYN lost while a dead host's buckets wait for
 * detection is still answered: a failure then means the client really lost its connection.
 */
const loadTimeoutMs = 5_000;
/** Load before the fault, and after everyone converged again, so both sides are measured. */
const leadMs = 500;
const tailMs = 800;
/** A fault that has ended must be healed well within this. */
const rejoinWaitMsDefault = 10_000;
/** Connections answered only after a retransmitted SYN (the first one is resent after 1 s). */
const retriedLatencyMs = 1_000;
/** Polling slack: a connection this long after convergence was seen must land as predicted. */
const settledSlackMs = 100;

export interface FaultContext {
  readonly lab: ClusterLab;
  readonly load: TimedLoad;
  /** Adds `key=value` to the fault's line of output. */
  note(key: string, value: unknown): void;
}

export interface Fault {
  readonly name: string;
  /** The host the fault hits (its buckets are where failures may be). */
  readonly host: number;
  /** Makes the fault, and waits for whatever the test wants to see while it lasts. */
  inject(context: FaultContext): Promise<void>;
  /** Ends the fault; the host must then come back by itself. */
  heal(context: FaultContext): Promise<void>;
  readonly expect: {
    /**
     * Failed connections allowed besides those answered twice (see `doubles`), all of them in
     * the faulted host's buckets (its own clients, caught by the fault) and started before it
     * was back; 0 for a fault the client must not see.
     */
    readonly failuresMax: number;
    /**
     * When a fault makes a double answer impossible to prevent (the kernel has no filter for a
     * moment), why, and for how long after the fault began a connection may be answered twice.
     */
    readonly doubles?: { readonly why: string; readonly windowMs: number };
    /** The backend id that answers for a host id, when it differs (a duplicate id's machine). */
    readonly backendOf?: ReadonlyMap<number, number>;
    /** Bound on the time from the end of the fault to the cluster converged again. */
    readonly rejoinMsMax?: number;
  };
}

export interface FaultReport {
  readonly name: string;
  readonly started: number;
  readonly failed: number;
  readonly failures: Record<string, number>;
  readonly retried: number;
  readonly doubles: number;
  readonly doublesOutsideWindow: string[];
  readonly unmasked: number;
  readonly rejoinMs: number;
  readonly faultMs: number;
  readonly fdbLearned: number;
  readonly fdbSamples: number;
  readonly notes: Record<string, unknown>;
  readonly rejoined: WaitResult;
}

/**
 * The SYN-ACK capture as `readSynAcks` reads it, except that a SYN-ACK sent with the cluster
 * MAC itself (a host whose MAC masking failed) is counted in `unmasked`, for `unmaskedHost`,
 * rather than failing the read.
 */
export async function readCapture(
  lab: ClusterLab,
  unmaskedHost: number,
): Promise<SynAckCapture & { unmasked: number }> {
  const hostOf = await hostOfSourceMacIn(lab);
  const { stdout } = await execIn(lab.state.clients[0]!.namespace, [
    'nft',
    '-j',
    'list',
    'set',
    'inet',
    'nlbtest_synack',
    'synacks',
  ]);
  const items = (JSON.parse(stdout) as { nftables: { set?: { elem?: { concat: unknown[] }[] } }[] })
    .nftables;
  const answers = new Map<string, number[]>();
  const answersByEndpoint = new Map<string, Set<number>>();
  let unmasked = 0;
  for (const element of items.find((item) => item.set !== undefined)?.set?.elem ?? []) {
    const [ip, port, ackseq, mac] = element.concat as [string, number, number, string];
    let host = hostOf(mac);
    if (host === undefined && mac === clusterMac) {
      host = unmaskedHost;
      unmasked++;
    }
    if (host === undefined) throw new Error(`SYN-ACK from an unexpected MAC ${mac}`);
    const key = `${ip}:${port}:${ackseq}`;
    answers.set(
      key,
      [...new Set([...(answers.get(key) ?? []), host])].sort((a, b) => a - b),
    );
    const endpoint = `${ip}:${port}`;
    answersByEndpoint.set(endpoint, (answersByEndpoint.get(endpoint) ?? new Set()).add(host));
  }
  const doubles = [...answers]
    .filter(([, hosts]) => hosts.length > 1)
    .map(([connection, hosts]) => ({ connection, hosts }));
  return { packets: 0, answers, answersByEndpoint, doubles, unmasked };
}

/** Runs one fault under load; see the header. Returns the numbers it printed. */
export async function runFault(lab: ClusterLab, fault: Fault): Promise<FaultReport> {
  const before = await expectConverged(lab, [...clusterHosts], bucketsEach);
  const hostBuckets = new Set(before.answers.get(fault.host)!.rules[0]!.owned);
  await clearSynAcks(lab);

  const fdbSamples: FdbEntry[][] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      fdbSamples.push(await switchFdb(lab));
      await sleep(100);
    }
  })();
  const notes: Record<string, unknown> = {};
  const load = startLoad(lab, {
    ratePerSecond: loadRatePerSecond,
    countMax: (loadRatePerSecond * loadMsMax) / 1_000,
    durationMs: loadMsMax,
    sources: clientSources(lab),
    timeoutMs: loadTimeoutMs,
  });
  const context: FaultContext = { lab, load, note: (key, value) => (notes[key] = value) };
  let injectAt: number;
  let healAt: number;
  let rejoined: WaitResult;
  try {
    await load.started;
    await sleep(leadMs);
    injectAt = Date.now();
    await fault.inject(context);
    healAt = Date.now();
    await fault.heal(context);
    rejoined = await waitForHosts(
      lab,
      [...clusterHosts],
      convergedOn([...clusterHosts], bucketsEach),
      rejoinWaitMsDefault,
    );
    await sleep(tailMs);
  } finally {
    load.stop();
    sampling = false;
  }
  const result = await load.done;
  await sampler;
  const capture = await readCapture(lab, fault.host);

  const started = (c: { atMs: number }): number => load.wallMs(c.atMs);
  const inHostBuckets = (c: ConnectionRecord): boolean =>
    hostBuckets.has(bucketOf(lab, c.sourceIp, c.sourcePort));
  const failed = result.connections.filter((c) => c.failure !== undefined);
  const retried = result.connections.filter(
    (c) => c.failure === undefined && c.latencyMs >= retriedLatencyMs,
  );
  const byEndpoint = new Map<string, ConnectionRecord[]>();
  for (const c of result.connections) {
    const key = `${c.sourceIp}:${c.sourcePort}`;
    byEndpoint.set(key, [...(byEndpoint.get(key) ?? []), c]);
  }
  // A double answer is allowed only for a connection that started in the fault's window. The
  // capture names the connection by its ISN, the load generator by its address and port, which
  // the client may reuse: a reused port's double answer belongs to the start the client reset
  // (the second SYN-ACK does not match its connection), when one did; otherwise every start
  // from that address and port must fall in the window.
  const window = fault.expect.doubles;
  const startsOf = (connection: string): ConnectionRecord[] => {
    const all = byEndpoint.get(endpointOf(connection).endpoint) ?? [];
    const reset = all.filter((c) => c.failure === 'reset');
    return all.length > 1 && reset.length > 0 ? reset : all;
  };
  const doubleEndpoints = new Set(capture.doubles.map((d) => endpointOf(d.connection).endpoint));
  const doublesOutsideWindow = capture.doubles
    .filter((d) => {
      const starts = startsOf(d.connection).map((c) => started(c) - injectAt);
      return (
        window === undefined ||
        starts.length === 0 ||
        starts.some((at) => at < -settledSlackMs || at > window.windowMs)
      );
    })
    .map((d) => {
      const starts = (byEndpoint.get(endpointOf(d.connection).endpoint) ?? []).map((c) =>
        Math.round(started(c) - healAt),
      );
      return `${d.connection} answered by ${d.hosts.join(' and ')}, started ${starts.join(' or ')} ms after the fault ended`;
    });
  // A connection answered by two hosts is usually reset by the client's own TCP (the second
  // SYN-ACK does not match): that is the double answer again, allowed only in its window.
  const failedOtherwise = failed.filter(
    (c) => !doubleEndpoints.has(`${c.sourceIp}:${c.sourcePort}`),
  );
  const fdbLearned = fdbSamples.filter((s) => s.some((e) => e.mac === clusterMac)).length;
  const report: FaultReport = {
    name: fault.name,
    started: result.started,
    failed: failed.length,
    failures: result.failures as Record<string, number>,
    retried: retried.length,
    doubles: capture.doubles.length,
    doublesOutsideWindow,
    unmasked: capture.unmasked,
    rejoinMs: rejoined.atMs - healAt,
    faultMs: healAt - injectAt,
    fdbLearned,
    fdbSamples: fdbSamples.length,
    notes,
    rejoined,
  };
  const noteText = Object.entries(notes)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  console.log(
    `lab-faults: ${fault.name}: ${report.started} connections, ${report.failed} failed ${JSON.stringify(report.failures)} (resets ${report.failures.reset ?? 0}; ${failedOtherwise.length} not answered twice), ${report.retried} answered after a SYN retransmission; ${report.doubles} answered by two hosts (${doublesOutsideWindow.length} outside the fault's window${doublesOutsideWindow.length === 0 ? '' : `: ${doublesOutsideWindow.join('; ')}`}); ${report.unmasked} SYN-ACKs unmasked; fault lasted ${report.faultMs} ms, all converged again ${report.rejoinMs} ms after it ended${rejoined.ok ? '' : ' (NOT converged)'}; cluster MAC on a bridge port in ${fdbLearned} of ${fdbSamples.length} samples${noteText === '' ? '' : `; ${noteText}`}`,
  );

  // The common expectations.
  expect(rejoined.ok, `converged again after ${fault.name}`).toBe(true);
  if (fault.expect.rejoinMsMax !== undefined) {
    expect(report.rejoinMs).toBeLessThanOrEqual(fault.expect.rejoinMsMax);
  }
  expect(doublesOutsideWindow).toEqual([]);
  expect(report.unmasked).toBe(0);
  expect(fdbLearned).toBe(0);
  expect(failedOtherwise.length).toBeLessThanOrEqual(fault.expect.failuresMax);
  expect(
    failedOtherwise
      .filter((c) => !inHostBuckets(c) || started(c) > rejoined.atMs)
      .map((c) => `${c.sourceIp}:${c.sourcePort} ${c.failure}`),
  ).toEqual([]);
  const settled = result.connections.filter((c) => started(c) > rejoined.atMs + settledSlackMs);
  expect(settled.length).toBeGreaterThan(50);
  const backendOf = fault.expect.backendOf;
  const maps = liveMaps(rejoined.answers);
  const landed =
    backendOf === undefined
      ? maps
      : {
          ...maps,
          owners: maps.owners.map((o) => o.map((h) => (h === null ? h : (backendOf.get(h) ?? h)))),
        };
  expect(mispredicted(lab, landed, settled)).toEqual([]);
  return report;
}

// ------------------------------------------------------------------------------ views

export function hostNamespaceOf(lab: ClusterLab, hostId: number): string {
  return lab.state.hosts.find((h) => h.id === hostId)!.namespace;
}

/** nlbd's recent events through its control socket (`nlb events --json`). */
export async function events(socket: string): Promise<JournalEntry[]> {
  const answer = await controlRequest(socket, { verb: 'events', limit: 1024 }, 2_000);
  if (!answer.ok) throw new Error(`events: ${answer.error.message}`);
  return [...(answer.data as { events: JournalEntry[] }).events];
}

/** The last event sequence number of each host, to see later what came after. */
export async function eventMarks(
  lab: ClusterLab,
  ids: readonly number[],
): Promise<Map<number, number>> {
  const marks = new Map<number, number>();
  for (const id of ids) {
    marks.set(id, (await events(lab.sockets.get(id)!)).at(-1)?.seq ?? 0);
  }
  return marks;
}

/** Per host, the events logged since `marks` (`event` names only, with the host id). */
export async function eventsSince(
  lab: ClusterLab,
  marks: ReadonlyMap<number, number>,
): Promise<JournalEntry[]> {
  const since: JournalEntry[] = [];
  for (const [id, mark] of marks) {
    since.push(...(await events(lab.sockets.get(id)!)).filter((e) => e.seq > mark));
  }
  return since;
}

/** `nlb params --json`'s protocol.heartbeatsRejected, summed over the reasons. */
export async function heartbeatsRejected(socket: string): Promise<Record<string, number>> {
  const answer = await controlRequest(socket, { verb: 'params' }, 2_000);
  if (!answer.ok) throw new Error(`params: ${answer.error.message}`);
  return (answer.data as { protocol: { heartbeatsRejected: Record<string, number> } }).protocol
    .heartbeatsRejected;
}

export function sum(counts: Readonly<Record<string, number>>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

/** The cluster interface of a host as the kernel has it: its MAC and IPv4 addresses. */
export async function interfaceOf(
  lab: ClusterLab,
  hostId: number,
): Promise<{ mac: string; addresses: string[] }> {
  const namespace = hostNamespaceOf(lab, hostId);
  const { stdout } = await execIn(namespace, ['ip', '-j', 'addr', 'show', 'dev', 'eth0']);
  const [link] = JSON.parse(stdout) as {
    address: string;
    addr_info: { family: string; local: string; prefixlen: number }[];
  }[];
  return {
    mac: link!.address,
    addresses: link!.addr_info
      .filter((a) => a.family === 'inet')
      .map((a) => `${a.local}/${a.prefixlen}`),
  };
}

/** The nftables tables in a host's namespace, e.g. ['inet nlb_web', 'netdev nlb_web']. */
export async function tablesOf(lab: ClusterLab, hostId: number): Promise<string[]> {
  const { stdout } = await execIn(hostNamespaceOf(lab, hostId), ['nft', 'list', 'tables']);
  return stdout
    .split('\n')
    .map((line) => line.replace(/^table /, '').trim())
    .filter((line) => line !== '')
    .sort();
}

export * from './lab-hosts.js';
