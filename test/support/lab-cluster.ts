// Shared parts of the lab-cluster integration tests (test/lab-cluster-*.test.ts): a real nlbd
// cluster in network namespaces, real kernel, real TCP. Each test file builds its own labs
// through a `LabSession` (which holds the lab test lock and always removes its labs), reads the
// live bucket map from the hosts' control sockets, runs the lab load generator in the client
// namespace with wall-clock timing, and watches the wire from the client's side:
//   - a SYN-ACK capture (an nftables set in the CLIENT namespace) that records, per connection,
//     every host that answered its SYN, told apart by the masked source MAC each host puts on
//     its frames in unicast mode; a connection with two MACs was answered by two hosts;
//   - extra client addresses in other /24s (198.19.k.7/32 on the client, a route back to them
//     through the client in every host namespace), so `network` affinity sees many networks.
// Network safety: every address and route added here lives inside a namespace of a lab this
// session created, and all of them are in 198.18.0.0/15 (docs/lab.md#network-safety).
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect } from 'vitest';
import { type Address, parseAddress } from '../../src/core/address.js';
import type { Config } from '../../src/core/config.js';
import { type BucketMaps, predictOwner } from '../../src/core/predict.js';
import type { QueryData } from '../../src/control/protocol.js';
import { controlRequest } from '../../src/control/client.js';
import { defaultSocketPath } from '../../src/daemon/paths.js';
import { execIn } from '../../src/lab/netns.js';
import { tableNameFor } from '../../src/dataplane/dataplane-spec.js';
import { labClusterName } from '../../src/lab/host-config.js';
import { type LabState, type LabUpOptions, labDown, labUp } from '../../src/lab/lab.js';
import { type ClientLoadgenOptions, runLoadgenInClient } from '../../src/lab/loadgen-client.js';
import type { ConnectionRecord, HoldRecord, LoadgenSummary } from '../../src/lab/loadgen.js';
import { acquireLabTestLock, labTestLockWaitMs } from '../../src/lab/lock.js';
import { labHttpPort } from '../../src/lab/naming.js';
import { loadConfigFile } from '../../src/node/config-file.js';
import { declareRootRequirement } from './root.js';
import { installSynAckCapture } from './synack-capture.js';
import { type LabVariant, unicastV4 } from './lab-variants.js';

export { isRoot, labRequired } from './root.js';

/**
 * The timeout of a file's `beforeAll`: it may wait for the lab test lock while other lab test
 * files run (at most `labTestLockWaitMs`), then builds a lab.
 */
export const labSetupTimeoutMs = labTestLockWaitMs + 60_000;

/** Called once at the top of a lab test file (see declareRootRequirement). */
export function declareLabRequirement(file: string): void {
  declareRootRequirement(file, `${file} needs root to build its lab`);
}

// ------------------------------------------------------------------------------ labs

export interface ClusterLab {
  readonly state: LabState;
  /** Host 1's config; the cluster part, which predictions need, is the same on every host. */
  readonly config: Config;
  /** Control socket of every host's nlbd, by host id. */
  readonly sockets: ReadonlyMap<number, string>;
  /** The cluster IP the clients connect to: the IPv4 one, or the IPv6 one in a `-v6` variant. */
  readonly vip: Address;
  readonly hostIds: readonly number[];
  /** The mode and family the lab was built for. */
  readonly variant: LabVariant;
  /** Client c1's source addresses in the variant's family: its own, then its extras. */
  readonly sources: readonly string[];
  /** The cluster's nftables tables in every host (`nlb_<cluster name>`). */
  readonly tableName: string;
}

/**
 * The labs of one test file. `lock` takes the lab test lock (so lab tests never share the two
 * cores), `up` builds a lab with a fresh name, and `close` removes every lab still standing and
 * releases the lock, whatever failed before.
 */
export class LabSession {
  private release: (() => void) | undefined;
  private readonly names = new Set<string>();

  async lock(): Promise<void> {
    this.release ??= await acquireLabTestLock();
  }

  async up(
    prefix: string,
    options: Omit<LabUpOptions, 'name' | 'clusterMode' | 'ipv6'>,
    variant: LabVariant = unicastV4,
  ): Promise<ClusterLab> {
    const name = `${prefix}${randomBytes(2).toString('hex')}`;
    this.names.add(name);
    const state = await labUp({
      ...options,
      name,
      clusterMode: variant.mode,
      ipv6: variant.family === 6,
      // Every variant gets the bystander: what reaches it shows what the switch floods.
      bystander: options.bystander ?? true,
    });
    const { config, sockets } = await labConfigAndSockets(state);
    const client = state.clients[0];
    let sources = client === undefined ? [] : [client.ip, ...client.extraIps];
    if (variant.family === 6 && client !== undefined) {
      sources = [client.ip6!, ...(client.extraIps6 ?? [])];
    }
    return {
      state,
      config,
      sockets,
      vip: parseAddress(variant.family === 6 ? state.vip6! : state.vip)!,
      hostIds: state.hosts.map((h) => h.id),
      tableName: tableNameFor(labClusterName(state.name)),
      variant,
      sources,
    };
  }

  async down(lab: ClusterLab): Promise<void> {
    await labDown(lab.state.name);
    this.names.delete(lab.state.name);
  }

  async close(): Promise<void> {
    const errors: unknown[] = [];
    try {
      for (const name of this.names) {
        await labDown(name).catch((error: unknown) => errors.push(error));
      }
      this.names.clear();
    } finally {
      this.release?.();
      this.release = undefined;
    }
    if (errors.length > 0) throw errors[0];
  }
}

/**
 * The lab most test files need: three hosts and a client with ten extra addresses, the SYN-ACK
 * capture installed, built once before the file's tests (under the lab test lock) and removed
 * after them whatever failed. Call it in a `describe`; the getter returns the lab.
 */
export function captureLab(prefix: string, variant: LabVariant = unicastV4): () => ClusterLab {
  const session = new LabSession();
  let lab: ClusterLab | undefined;
  beforeAll(async () => {
    await session.lock();
    lab = await session.up(prefix, { hosts: 3, clients: 1, clientExtraIps: 10 }, variant);
    await installSynAckCapture(lab);
  }, labSetupTimeoutMs);
  afterAll(() => session.close());
  return () => {
    if (lab === undefined) throw new Error(`captureLab(${prefix}): the lab was not built`);
    return lab;
  };
}

// ------------------------------------------------------------------------------ queries

export async function query(socket: string): Promise<QueryData | undefined> {
  const answer = await controlRequest(socket, { verb: 'query' }, 1_000).catch(() => undefined);
  return answer?.ok === true ? (answer.data as QueryData) : undefined;
}

/** A control command (`drainstop`, `start`, …) to one host; returns the reply data. */
export async function command(
  lab: ClusterLab,
  hostId: number,
  verb: string,
): Promise<{ code: string; message: string }> {
  const answer = await controlRequest(lab.sockets.get(hostId)!, { verb }, 5_000);
  if (!answer.ok) throw new Error(`${verb} on host ${hostId}: ${answer.error.message}`);
  return answer.data as { code: string; message: string };
}

export async function queryHosts(
  lab: ClusterLab,
  ids: readonly number[],
): Promise<Map<number, QueryData | undefined>> {
  return new Map(
    await Promise.all(ids.map(async (id) => [id, await query(lab.sockets.get(id)!)] as const)),
  );
}

export interface WaitResult {
  readonly ok: boolean;
  readonly answers: Map<number, QueryData | undefined>;
  readonly elapsedMs: number;
  /** Date.now() when the condition was first seen to hold (or when the wait gave up). */
  readonly atMs: number;
}

/** Polls hosts `ids` every `pollMs` until `accept` holds for all of them, or `waitMs` passes. */
export async function waitForHosts(
  lab: ClusterLab,
  ids: readonly number[],
  accept: (data: QueryData, id: number) => boolean,
  waitMs: number,
  pollMs = 20,
): Promise<WaitResult> {
  const start = Date.now();
  for (;;) {
    const answers = await queryHosts(lab, ids);
    const now = Date.now();
    const ok = [...answers].every(([id, data]) => data !== undefined && accept(data, id));
    if (ok || now - start > waitMs) {
      return { ok, answers, elapsedMs: now - start, atMs: now };
    }
    await sleep(pollMs);
  }
}

/** Every host converged on exactly `members`, data plane in sync, owning `bucketsEach` buckets. */
export function convergedOn(members: readonly number[], bucketsEach?: number) {
  return (d: QueryData): boolean =>
    d.converged &&
    d.dataplaneInSync &&
    d.members.join() === members.join() &&
    (bucketsEach === undefined || d.rules[0]!.owned.length === bucketsEach);
}

/** Waits for `members` to converge, failing the test with the hosts' answers if they do not. */
export async function expectConverged(
  lab: ClusterLab,
  members: readonly number[],
  bucketsEach: number,
  waitMs = 10_000,
): Promise<WaitResult> {
  const result = await waitForHosts(lab, members, convergedOn(members, bucketsEach), waitMs);
  if (!result.ok) {
    const seen = [...result.answers].map(
      ([id, d]) =>
        `host ${id}: ${d === undefined ? 'no answer' : `${d.state} members ${d.members.join(',')} owns ${d.rules[0]!.owned.length}`}`,
    );
    // A host that does not answer usually has a dead nlbd: its log says why.
    const logs = [...result.answers]
      .filter(([, d]) => d === undefined)
      .map(([id]) => `nlbd log of host ${id}:\n${daemonLogTail(lab, id)}`);
    expect.fail(
      `hosts ${members.join(',')} did not converge in ${waitMs} ms: ${seen.join('; ')}${logs.map((l) => `\n${l}`).join('')}`,
    );
  }
  return result;
}

/** The last lines of a host's nlbd log, for failure messages. */
export function daemonLogTail(lab: ClusterLab, hostId: number, lines = 15): string {
  const host = lab.state.hosts.find((h) => h.id === hostId);
  try {
    return readFileSync(host!.daemonLog, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** The owners of rule 0's buckets as the hosts report them; throws when two hosts claim one. */
export function ownersOf(answers: ReadonlyMap<number, QueryData | undefined>): (number | null)[] {
  const first = [...answers.values()].find((d) => d !== undefined);
  if (first === undefined) throw new Error('no host answered');
  const owner = new Array<number | null>(first.rules[0]!.buckets).fill(null);
  for (const [id, data] of answers) {
    for (const bucket of data?.rules[0]!.owned ?? []) {
      if (owner[bucket] !== null) {
        throw new Error(`bucket ${bucket} owned by hosts ${owner[bucket]} and ${id}`);
      }
      owner[bucket] = id;
    }
  }
  return owner;
}

/** The live bucket map from what every host says it owns; throws unless it is a partition. */
export function liveMaps(answers: ReadonlyMap<number, QueryData | undefined>): BucketMaps {
  const owner = ownersOf(answers);
  const unowned = owner.flatMap((o, b) => (o === null ? [b] : []));
  if (unowned.length > 0) throw new Error(`buckets owned by nobody: ${unowned.join(',')}`);
  const first = [...answers.values()].find((d) => d !== undefined)!;
  return { owners: [owner], defaultHost: first.defaultHost };
}

/** The bucket of rule 0 a client falls in, under the lab's affinity. */
export function bucketOf(lab: ClusterLab, sourceIp: string, sourcePort: number): number {
  return predictOwner(
    lab.config.cluster,
    { owners: [[]], defaultHost: null },
    { address: parseAddress(sourceIp)!, port: sourcePort },
    lab.vip,
    labHttpPort,
    'tcp',
  ).bucket!;
}

/** The connections that did not land on the host `maps` predicts, described; [] when all did. */
export function mispredicted(
  lab: ClusterLab,
  maps: BucketMaps,
  connections: readonly ConnectionRecord[],
): string[] {
  const wrong: string[] = [];
  for (const c of connections) {
    const client = { address: parseAddress(c.sourceIp)!, port: c.sourcePort };
    const predicted = predictOwner(lab.config.cluster, maps, client, lab.vip, labHttpPort, 'tcp');
    if (c.failure !== undefined || c.host !== predicted.host) {
      wrong.push(
        `${c.sourceIp}:${c.sourcePort} bucket ${predicted.bucket}: predicted ${predicted.host}, got ${c.host ?? c.failure}`,
      );
    }
  }
  return wrong;
}

export * from './lab-sources.js';
export * from './synack-capture.js';
export * from './lab-variants.js';

// ------------------------------------------------------------------------------ load

export interface TimedLoad {
  /** The loadgen's summary and every connection record, once it has ended. */
  readonly done: Promise<LoadgenSummary & { connections: ConnectionRecord[] }>;
  /** Connection records as they arrive. */
  readonly connections: ConnectionRecord[];
  /** Held connections as they break. */
  readonly holdBreaks: HoldRecord[];
  /** Resolves once the held connections are open and the short ones have begun. */
  readonly started: Promise<void>;
  /**
   * Date.now() at the loadgen's time 0: an upper bound, tight to the few ms a JSON line takes
   * from the client namespace to this process (the least delay seen over every record).
   */
  offsetMs(): number;
  /** The wall-clock time (Date.now()) of a loadgen time `atMs`. */
  wallMs(atMs: number): number;
  /** Stops opening connections early; the held connections close when the loadgen ends. */
  stop(): void;
}

/** Runs the loadgen in client c1 in the background, timing its records against Date.now(). */
export function startLoad(lab: ClusterLab, options: ClientLoadgenOptions): TimedLoad {
  const abort = new AbortController();
  let offset = Number.POSITIVE_INFINITY;
  const observe = (atMs: number): void => {
    offset = Math.min(offset, Date.now() - atMs);
  };
  const connections: ConnectionRecord[] = [];
  const holdBreaks: HoldRecord[] = [];
  let markStarted: () => void = () => undefined;
  const started = new Promise<void>((resolve) => {
    markStarted = resolve;
  });
  const done = runLoadgenInClient(
    lab.state,
    1,
    { progressIntervalMs: 100, target: lab.vip.text, ...options, signal: abort.signal },
    {
      onProgress: (p) => {
        observe(p.atMs);
        markStarted();
      },
      onConnection: (c) => {
        observe(c.atMs + c.latencyMs);
        connections.push(c);
      },
      onHoldBreak: (h) => holdBreaks.push(h),
    },
  );
  // A loadgen that fails before its first progress line must not leave `started` hanging.
  done.then(markStarted, markStarted);
  return {
    done,
    connections,
    holdBreaks,
    started,
    offsetMs: () => offset,
    wallMs: (atMs) => offset + atMs,
    stop: () => abort.abort(),
  };
}

// ------------------------------------------------------------------------------ kernel views

export interface FdbEntry {
  readonly mac: string;
  readonly ifname?: string;
  readonly state?: string;
  readonly flags?: string[];
}

/** The switch's forwarding database (`bridge fdb show br br0` in the switch namespace). */
export async function switchFdb(lab: ClusterLab): Promise<FdbEntry[]> {
  const { stdout } = await execIn(lab.state.switchNamespace, [
    'bridge',
    '-j',
    'fdb',
    'show',
    'br',
    lab.state.bridge,
  ]);
  return stdout.trim() === '' ? [] : (JSON.parse(stdout) as FdbEntry[]);
}

export interface ConntrackEntry {
  readonly state: string;
  readonly src: string;
  readonly sport: number;
}

/** TCP connections to the lab's cluster IP (`lab.vip`) in a host's conntrack table (`conntrack -L`). */
export async function vipConntrack(lab: ClusterLab, hostId: number): Promise<ConntrackEntry[]> {
  const host = lab.state.hosts.find((h) => h.id === hostId)!;
  const { stdout } = await execIn(host.namespace, [
    'conntrack',
    '-L',
    '-p',
    'tcp',
    '-d',
    lab.vip.text,
  ]);
  const entries: ConntrackEntry[] = [];
  for (const line of stdout.split('\n')) {
    const match = /^tcp\s+6\s+\d+\s+([A-Z_]+)\s+src=(\S+)\s+dst=\S+\s+sport=(\d+)/.exec(line);
    if (match !== null) entries.push({ state: match[1]!, src: match[2]!, sport: Number(match[3]) });
  }
  return entries;
}

/** Peer addresses of established TCP sockets on :80 in a host (`ss` in its namespace). */
export async function establishedPeers(lab: ClusterLab, hostId: number): Promise<string[]> {
  const host = lab.state.hosts.find((h) => h.id === hostId)!;
  const { stdout } = await execIn(host.namespace, [
    'ss',
    '-Htn',
    'state',
    'established',
    `( sport = :${labHttpPort} )`,
  ]);
  return stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length >= 4)
    .map((fields) => fields[3]!);
}

/** A counter of the host's nlb table (`nft list counter inet nlb <name>`): packets. */
export async function nlbCounter(lab: ClusterLab, hostId: number, name: string): Promise<number> {
  const host = lab.state.hosts.find((h) => h.id === hostId)!;
  const { stdout } = await execIn(host.namespace, [
    'nft',
    '-j',
    'list',
    'counter',
    'inet',
    lab.tableName,
    name,
  ]);
  const items = (JSON.parse(stdout) as { nftables: { counter?: { packets: number } }[] }).nftables;
  return items.find((i) => i.counter !== undefined)?.counter?.packets ?? 0;
}

export function percentile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0;
}

/** A lab's cluster config (the first host's: the cluster part is the same on all) and nlbd sockets. */
export async function labConfigAndSockets(
  state: LabState,
): Promise<{ config: Config; sockets: Map<number, string> }> {
  const sockets = new Map<number, string>();
  let config: Config | undefined;
  for (const host of state.hosts) {
    const loaded = await loadConfigFile(host.config);
    if (!loaded.ok) throw new Error(loaded.message);
    config ??= loaded.config;
    sockets.set(host.id, defaultSocketPath(labClusterName(state.name), host.id));
  }
  return { config: config!, sockets };
}
