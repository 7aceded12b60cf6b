// The control API of nlbd, as a pure function from a request to response data (the hono way):
// the unix socket server (control-server.ts) only frames bytes, so every verb is tested
// in-process, and a new verb is one entry in `verbs`.
//
// Protocol: one request per connection, one JSON object on one line, e.g. `{"verb":"query"}`;
// one JSON line back, then the server closes:
//   {"ok":true,"data":...}   or   {"ok":false,"error":{"code","message","hint"}}
// Verbs: identity, query, params, display, queryport, events, metrics; the commands start,
// stop, drainstop, suspend, resume, reload, and enable/disable/drain with `"rules": [0, 2]` or
// `"rules": "all"` (indexes into cluster.portRules) or `"spec": "198.18.0.100:80"` (vip:port,
// vip:all, all:port, all:all; control-rules.ts). A command's data is the host machine's reply
// {code, message}, code one of ok | already | suspended | not found | refused.
//
// `{"verb":"events","follow":true}` is the one request that keeps its connection: after the
// response line, every new event follows as one JSON line until the client closes. Over the
// remote listener (remote.ts) a request also carries `"token"`, checked and removed before it
// reaches this handler.
import { z } from 'zod';
import type { Config, PortRule } from '../core/config.js';
import type { HostDetails } from '../core/host.js';
import type { Command, CommandReply, HostStatus, ReportedState } from '../core/protocol.js';
import type { BucketConnections } from '../dataplane/conntrack.js';
import type { DataplaneCounters } from '../dataplane/dataplane.js';
import { parseRuleSpec, resolveRuleSpec, ruleSpecExamples } from './control-rules.js';
import type { EventJournal, JournalEntry } from './events.js';
import type { DriverStats } from './host-driver.js';
import type { TransportStats } from './transport.js';
import { errorText } from '../core/error-text.js';

/** A request line larger than this is not a control request. */
export const requestBytesMax = 64 * 1024;

export type ControlErrorCode =
  | 'bad-request'
  | 'unknown-verb'
  | 'failed'
  /** Remote control only: no token, or not the right one. Nothing was executed. */
  | 'unauthorized'
  /** The daemon does not offer this (an older or a test target). */
  | 'unavailable';

export type ControlResponse<Data = unknown> =
  | { readonly ok: true; readonly data: Data }
  | {
      readonly ok: false;
      readonly error: {
        readonly code: ControlErrorCode;
        readonly message: string;
        readonly hint: string;
      };
    };

/** Who answers: enough for `nlb query` to pick the daemon of its own network namespace. */
export interface DaemonIdentity {
  readonly cluster: string;
  readonly hostId: number;
  readonly pid: number;
  readonly incarnation: number;
  /** `net:[inode]` of the daemon's network namespace (readlink /proc/self/ns/net). */
  readonly netns: string;
  readonly socket: string;
  readonly configPath: string;
  readonly version: string;
}

/** What the handler needs of a running daemon; tests pass a fake. */
export interface ControlTarget {
  readonly config: Config;
  identity(): DaemonIdentity;
  nowMs(): number;
  status(): HostStatus;
  details(): HostDetails;
  command(command: Command): Promise<CommandReply>;
  counters(): Promise<DataplaneCounters>;
  driverStats(): DriverStats;
  transportStats(): TransportStats;
  /** Live connections per rule and bucket (conntrack); queryport and metrics use it. */
  connections?(): Promise<readonly BucketConnections[]>;
  /** The cluster interface as the kernel has it now, for `display`. */
  addresses?(): Promise<InterfaceView>;
  /** Re-reads the config file and applies it (the `reload` verb). */
  reload?(): Promise<ReloadReply>;
  /** The Prometheus exposition text (the `metrics` verb). */
  metrics?(): Promise<{ readonly contentType: string; readonly text: string }>;
  /** The recent events, and new ones as they come (`display`, `events`). */
  readonly events?: EventJournal;
}

export interface InterfaceView {
  readonly interface: string;
  readonly mac: string;
  readonly up: boolean;
  readonly operState: string;
  /** Every address on it, `a.b.c.d/len`: the dedicated IP and the cluster IPs. */
  readonly addresses: readonly string[];
}

/**
 * The answer to `reload`. `invalid`: the file does not validate, or changes what only a restart
 * can (`errors` lists each problem); the running config stays. `already`: nothing changed.
 */
export interface ReloadReply {
  readonly code: 'ok' | 'already' | 'invalid' | 'refused' | 'suspended';
  readonly message: string;
  readonly errors: readonly string[];
  /** What changed, one line each (`cluster.portRules[0].ports: 80 -> 80-81`). */
  readonly changes: readonly string[];
  readonly clusterChanged: boolean;
}

// ------------------------------------------------------------------------------- query data

/** How this host sees a peer. */
export type PeerView =
  /** heard, and a member of this host's view */
  | 'member'
  /** heard, taking part, not (yet) a member: it does not hear us, or just arrived */
  | 'joining'
  /** heard, but its cluster config differs: kept out */
  | 'mismatch'
  /** heard, announcing stopped or suspended */
  | 'stopped'
  | 'suspended'
  /** silent for the detection time while it was taking part: declared dead */
  | 'dead'
  /** silent after it announced stopped or suspended (nlbd ended cleanly) */
  | 'gone';

/** A port rule as text, the way query, queryport and the config view all show it. */
export interface PortRuleView {
  readonly vip: string;
  readonly ports: string;
  readonly protocol: PortRule['protocol'];
  readonly mode: PortRule['mode'];
  readonly affinity: PortRule['affinity'];
}

export interface QueryRule extends PortRuleView {
  readonly rule: number;
  readonly buckets: number;
  /** enabled | draining | disabled on this host */
  readonly state: string;
  /** Buckets this host takes new flows for (what its data plane was told). */
  readonly owned: readonly number[];
  readonly orphan: readonly number[];
}

export interface QueryPeer {
  readonly id: number;
  readonly view: PeerView;
  /** The state in its last heartbeat. */
  readonly announced: string;
  readonly incarnation: number;
  readonly lastHeardAgoMs: number;
  readonly members: readonly number[];
  readonly mismatch: string | null;
}

export interface QueryData {
  readonly cluster: string;
  readonly hostId: number;
  readonly incarnation: number;
  readonly state: ReportedState;
  readonly converged: boolean;
  readonly members: readonly number[];
  readonly defaultHost: number | null;
  readonly mapDigest: string;
  /** Why this host stays out of the cluster (duplicate id, config mismatch), or null. */
  readonly keptOut: string | null;
  /** False while the kernel does not hold what the host decided (heartbeats are withheld). */
  readonly dataplaneInSync: boolean;
  readonly rules: readonly QueryRule[];
  readonly peers: readonly QueryPeer[];
}

export function portsText(rule: PortRule): string {
  return rule.portStart === rule.portEnd
    ? String(rule.portStart)
    : rule.portStart === 0 && rule.portEnd === 65535
      ? 'all'
      : `${rule.portStart}-${rule.portEnd}`;
}

function portRuleView(rule: PortRule): PortRuleView {
  return {
    vip: rule.vip === 'all' ? 'all' : rule.vip.text,
    ports: portsText(rule),
    protocol: rule.protocol,
    mode: rule.mode,
    affinity: rule.affinity,
  };
}

function peerView(peer: HostDetails['peers'][number], members: readonly number[]): PeerView {
  const takingPart = peer.state === 'started' || peer.state === 'draining';
  if (!peer.heard) {
    return takingPart ? 'dead' : 'gone';
  }
  if (members.includes(peer.id)) return 'member';
  if (peer.mismatch !== undefined) return 'mismatch';
  if (peer.state === 'stopped' || peer.state === 'suspended') return peer.state;
  return 'joining';
}

export function queryData(target: ControlTarget, dataplaneInSync: boolean): QueryData {
  const status = target.status();
  const details = target.details();
  const now = target.nowMs();
  const cluster = target.config.cluster;
  return {
    cluster: cluster.name,
    hostId: status.hostId,
    incarnation: status.incarnation,
    state: status.state,
    converged: status.converged,
    members: status.members,
    defaultHost: status.defaultHost,
    mapDigest: status.mapDigest,
    keptOut: details.keptOut ?? null,
    dataplaneInSync,
    rules: cluster.portRules.map((rule, i) => ({
      rule: i,
      ...portRuleView(rule),
      buckets: rule.buckets,
      state: details.ruleStates[i] ?? 'enabled',
      owned: status.ownership.rules[i]?.owned ?? [],
      orphan: status.ownership.rules[i]?.orphan ?? [],
    })),
    peers: details.peers.map((peer) => ({
      id: peer.id,
      view: peerView(peer, status.members),
      announced: peer.state,
      incarnation: peer.incarnation,
      lastHeardAgoMs: Math.max(0, Math.round(now - peer.lastHeardMs)),
      members: peer.members,
      mismatch: peer.mismatch ?? null,
    })),
  };
}

/** The config as plain JSON: addresses as text, nothing derived. */
export function configView(config: Config): unknown {
  const c = config.cluster;
  return {
    cluster: {
      name: c.name,
      clusterIps: c.clusterIps.map((ip) => ip.text),
      mode: c.mode,
      interface: c.interface,
      heartbeat: { ...c.heartbeat, group: c.heartbeat.group.text },
      buckets: c.buckets,
      hashSeed: c.hashSeed,
      keyFile: c.keyFile,
      portRules: c.portRules.map((rule) => ({
        ...portRuleView(rule),
        buckets: rule.buckets,
      })),
    },
    host: {
      id: config.host.id,
      dedicatedIp: `${config.host.dedicatedIp.address.text}/${config.host.dedicatedIp.length}`,
      initialState: config.host.initialState,
      rules: config.host.rules,
    },
  };
}

// ---------------------------------------------------------------------------------- requests

const ruleList = z.union([z.literal('all'), z.array(z.number().int().min(0)).min(1).max(256)]);

const ruleSpecText = z.string().min(1).max(100);
const eventsLimit = z.number().int().min(1).max(1024);

const requestSchema = z.discriminatedUnion('verb', [
  z.object({ verb: z.literal('identity') }).strict(),
  z.object({ verb: z.literal('query') }).strict(),
  z.object({ verb: z.literal('params') }).strict(),
  z.object({ verb: z.literal('display'), events: eventsLimit.optional() }).strict(),
  z.object({ verb: z.literal('queryport'), spec: ruleSpecText }).strict(),
  z
    .object({
      verb: z.literal('events'),
      limit: eventsLimit.optional(),
      follow: z.boolean().optional(),
    })
    .strict(),
  z.object({ verb: z.literal('metrics') }).strict(),
  z.object({ verb: z.literal('reload') }).strict(),
  z.object({ verb: z.enum(['start', 'stop', 'drainstop', 'suspend', 'resume']) }).strict(),
  z
    .object({
      verb: z.enum(['enable', 'disable', 'drain']),
      rules: ruleList.optional(),
      spec: ruleSpecText.optional(),
    })
    .strict(),
]);

export type ControlRequest = z.output<typeof requestSchema>;

export const verbNames = [
  'identity',
  'query',
  'params',
  'display',
  'queryport',
  'events',
  'metrics',
  'reload',
  'start',
  'stop',
  'drainstop',
  'suspend',
  'resume',
  'enable',
  'disable',
  'drain',
] as const;

/** The verbs that change the host (the rest only read); remote ones are logged with the sender. */
export const changingVerbNames: ReadonlySet<string> = new Set(
  verbNames.slice(verbNames.indexOf('reload')),
);

export interface ControlContext {
  readonly target: ControlTarget;
  /** Whether the kernel holds what the host machine decided (from the driver). */
  readonly dataplaneInSync: () => boolean;
}

type VerbHandler = (request: ControlRequest, context: ControlContext) => Promise<unknown>;

/** An operating refusal the handler turns into a failure response (not a crash). */
class Unavailable extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'Unavailable';
  }
}

async function params(context: ControlContext): Promise<unknown> {
  const target = context.target;
  let counters: DataplaneCounters | null = null;
  let countersError: string | null = null;
  try {
    counters = await target.counters();
  } catch (error) {
    countersError = errorText(error);
  }
  const details = target.details();
  const now = target.nowMs();
  return {
    identity: target.identity(),
    config: configView(target.config),
    counters,
    countersError,
    protocol: {
      ...details,
      keptOut: details.keptOut ?? null,
      peers: details.peers.map(({ lastHeardMs, mismatch, ...peer }) => ({
        ...peer,
        mismatch: mismatch ?? null,
        lastHeardAgoMs: Math.max(0, Math.round(now - lastHeardMs)),
      })),
    },
    driver: target.driverStats(),
    transport: target.transportStats(),
  };
}

const verbs: Record<ControlRequest['verb'], VerbHandler> = {
  identity: (_request, { target }) => Promise.resolve(target.identity()),
  query: (_request, context) =>
    Promise.resolve(queryData(context.target, context.dataplaneInSync())),
  params: (_request, context) => params(context),
  display: (request, context) => display(request, context),
  queryport: (request, context) => queryport(request, context),
  events: (request, context) => Promise.resolve(recentEvents(request, context)),
  metrics: async (_request, { target }) => {
    if (target.metrics === undefined) {
      throw new Unavailable('this nlbd serves no metrics', 'upgrade nlbd');
    }
    return target.metrics();
  },
  reload: async (_request, { target }) => {
    if (target.reload === undefined) {
      throw new Unavailable('this nlbd cannot reload its config', 'restart nlbd instead');
    }
    return target.reload();
  },
  start: (request, { target }) => target.command(request as Command),
  stop: (request, { target }) => target.command(request as Command),
  drainstop: (request, { target }) => target.command(request as Command),
  suspend: (request, { target }) => target.command(request as Command),
  resume: (request, { target }) => target.command(request as Command),
  enable: (request, context) => ruleCommand(request, context),
  disable: (request, context) => ruleCommand(request, context),
  drain: (request, context) => ruleCommand(request, context),
};

/** A rule command's reply: the machine's, plus the rules the request named. */
export type RuleCommandReply = CommandReply & { readonly rules: readonly number[] };

async function ruleCommand(
  request: ControlRequest,
  { target }: ControlContext,
): Promise<RuleCommandReply> {
  if (request.verb !== 'enable' && request.verb !== 'disable' && request.verb !== 'drain') {
    throw new Error(`ruleCommand: '${request.verb}' is not a rule verb`);
  }
  if ((request.spec === undefined) === (request.rules === undefined)) {
    throw new BadRequest(
      `'${request.verb}' takes either "rules" or "spec", not ${request.spec === undefined ? 'neither' : 'both'}`,
      `e.g. {"verb":"${request.verb}","spec":"all:80"}, {"verb":"${request.verb}","rules":[0]} or {"verb":"${request.verb}","rules":"all"}`,
    );
  }
  let rules: number[];
  if (request.spec !== undefined) {
    const spec = parseRuleSpec(request.spec);
    if ('error' in spec) {
      throw new BadRequest(spec.error, `name rules as ${ruleSpecExamples}`);
    }
    const resolved = resolveRuleSpec(target.config.cluster, spec);
    if (!resolved.ok) {
      return { code: 'not found', message: resolved.message, rules: [] };
    }
    rules = [...resolved.rules];
  } else if (request.rules === 'all' || request.rules === undefined) {
    rules = target.config.cluster.portRules.map((_, i) => i);
  } else {
    rules = [...new Set(request.rules)].sort((a, b) => a - b);
  }
  const reply = await target.command({ verb: request.verb, rules });
  return { ...reply, rules };
}

class BadRequest extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'BadRequest';
  }
}

// ------------------------------------------------------------------------- display, events

/** Recent events `display` shows unless the request asks for another number. */
export const displayEventsDefault = 20;

export interface DisplayData {
  readonly identity: DaemonIdentity;
  readonly config: unknown;
  readonly interface: InterfaceView | null;
  readonly interfaceError: string | null;
  readonly events: readonly JournalEntry[];
}

async function display(request: ControlRequest, { target }: ControlContext): Promise<DisplayData> {
  const limit = request.verb === 'display' ? (request.events ?? displayEventsDefault) : 0;
  let view: InterfaceView | null = null;
  let interfaceError: string | null = null;
  if (target.addresses === undefined) {
    interfaceError = 'this nlbd does not report its interface';
  } else {
    try {
      view = await target.addresses();
    } catch (error) {
      interfaceError = errorText(error);
    }
  }
  return {
    identity: target.identity(),
    config: configView(target.config),
    interface: view,
    interfaceError,
    events: target.events?.recent(limit) ?? [],
  };
}

export interface EventsData {
  readonly events: readonly JournalEntry[];
  /** True when new events follow on this connection, one JSON line each. */
  readonly following: boolean;
}

function recentEvents(request: ControlRequest, { target }: ControlContext): EventsData {
  if (target.events === undefined) {
    throw new Unavailable('this nlbd keeps no event history', 'read its log instead');
  }
  const limit = request.verb === 'events' ? request.limit : undefined;
  return {
    events: target.events.recent(limit),
    following: request.verb === 'events' && request.follow === true,
  };
}

// ------------------------------------------------------------------------------- queryport

export interface QueryportBucket {
  readonly bucket: number;
  /** The owner in the map this host works towards (every member's, once converged). */
  readonly owner: number | null;
  /** This host takes new flows for it now. */
  readonly ownedHere: boolean;
  readonly orphan: boolean;
  /** Connections this host holds in it (conntrack), or null when unknown. */
  readonly connections: number | null;
}

export interface QueryportRule extends PortRuleView {
  readonly rule: number;
  /** enabled | draining | disabled on this host */
  readonly state: string;
  readonly buckets: readonly QueryportBucket[];
  /** Buckets per owner in the target map: `{ "1": 20, "2": 20, ... }`. */
  readonly owners: Readonly<Record<string, number>>;
  readonly ownedHere: number;
  readonly connections: number | null;
}

export interface QueryportData {
  readonly code: 'ok' | 'not found';
  readonly message: string;
  readonly spec: string;
  readonly hostId: number;
  readonly converged: boolean;
  readonly rules: readonly QueryportRule[];
  readonly connectionsError: string | null;
}

async function queryport(
  request: ControlRequest,
  { target }: ControlContext,
): Promise<QueryportData> {
  if (request.verb !== 'queryport') {
    throw new Error(`queryport: '${request.verb}' is not queryport`);
  }
  const spec = parseRuleSpec(request.spec);
  if ('error' in spec) {
    throw new BadRequest(spec.error, `name the port as ${ruleSpecExamples}`);
  }
  const status = target.status();
  const base = { spec: request.spec, hostId: status.hostId, converged: status.converged };
  const cluster = target.config.cluster;
  const resolved = resolveRuleSpec(cluster, spec);
  if (!resolved.ok) {
    return {
      ...base,
      code: 'not found',
      message: resolved.message,
      rules: [],
      connectionsError: null,
    };
  }
  let connections: readonly BucketConnections[] | undefined;
  let connectionsError: string | null = null;
  if (target.connections === undefined) {
    connectionsError = 'this nlbd does not count connections';
  } else {
    try {
      connections = await target.connections();
    } catch (error) {
      connectionsError = errorText(error);
    }
  }
  const details = target.details();
  const rules = resolved.rules.map((r): QueryportRule => {
    const rule = cluster.portRules[r]!;
    const owned = new Set(status.ownership.rules[r]?.owned ?? []);
    const orphan = new Set(status.ownership.rules[r]?.orphan ?? []);
    const targetMap = status.target[r] ?? [];
    const perBucket = new Map<number, number>();
    for (const entry of connections ?? []) {
      if (entry.rule === r) perBucket.set(entry.bucket, entry.connections);
    }
    const buckets = Array.from({ length: rule.buckets }, (_, b): QueryportBucket => ({
      bucket: b,
      owner: targetMap[b] ?? null,
      ownedHere: owned.has(b),
      orphan: orphan.has(b),
      connections: connections === undefined ? null : (perBucket.get(b) ?? 0),
    }));
    const owners: Record<string, number> = {};
    for (const bucket of buckets) {
      const key = bucket.owner === null ? 'none' : String(bucket.owner);
      owners[key] = (owners[key] ?? 0) + 1;
    }
    return {
      rule: r,
      ...portRuleView(rule),
      state: details.ruleStates[r] ?? 'enabled',
      buckets,
      owners,
      ownedHere: owned.size,
      connections:
        connections === undefined ? null : [...perBucket.values()].reduce((a, b) => a + b, 0),
    };
  });
  return { ...base, code: 'ok', message: '', rules, connectionsError };
}

function failure(code: ControlErrorCode, message: string, hint: string): ControlResponse<never> {
  return { ok: false, error: { code, message, hint } };
}

/** Parses one request line; never throws. */
export function parseRequestLine(line: string): unknown {
  try {
    return JSON.parse(line) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * The events that follow an answer on the same connection (`events` with `follow`). It is
 * subscribed when the answer is made, so no event falls between the answer and the stream;
 * the server attaches a sender once the answer is written, and closes it when the client goes.
 */
export interface ControlStream {
  /** Sends buffered and future entries; `send` returns false when the client cannot take more. */
  attach(send: (entry: JournalEntry) => boolean): void;
  close(): void;
}

export interface ControlAnswer {
  readonly response: ControlResponse;
  readonly stream?: ControlStream;
}

/** Entries a follower may have waiting before its sender is attached (a few ms). */
const streamBufferMax = 256;

function followJournal(journal: EventJournal): ControlStream {
  const waiting: JournalEntry[] = [];
  let sender: ((entry: JournalEntry) => boolean) | undefined;
  let stop: () => void = () => undefined;
  stop = journal.follow((entry) => {
    if (sender !== undefined) return sender(entry);
    waiting.push(entry);
    return waiting.length <= streamBufferMax;
  });
  return {
    attach: (send) => {
      sender = send;
      for (const entry of waiting.splice(0)) {
        if (!send(entry)) {
          stop();
          return;
        }
      }
    },
    close: () => stop(),
  };
}

/** Answers one request (already parsed from JSON). Never throws: failures are responses. */
export async function handleControl(
  request: unknown,
  context: ControlContext,
): Promise<ControlResponse> {
  const answer = await answerControl(request, context);
  // A caller that cannot stream must not leave a follower behind.
  answer.stream?.close();
  return answer.response;
}

/** `handleControl` for servers that can stream: the response, and the events that follow it. */
export async function answerControl(
  request: unknown,
  context: ControlContext,
): Promise<ControlAnswer> {
  const parsed = requestSchema.safeParse(request);
  const journal = context.target.events;
  if (
    parsed.success &&
    parsed.data.verb === 'events' &&
    parsed.data.follow === true &&
    journal !== undefined
  ) {
    // The recent events and the subscription are taken in one synchronous block, so the
    // follower sees every event exactly once, with no gap between the two.
    let stream: ControlStream;
    try {
      stream = followJournal(journal);
    } catch (error) {
      return { response: failure('failed', errorText(error), 'close another follower first') };
    }
    const data: EventsData = { events: journal.recent(parsed.data.limit), following: true };
    return { response: { ok: true, data }, stream };
  }
  return { response: await respond(request, context) };
}

async function respond(request: unknown, context: ControlContext): Promise<ControlResponse> {
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    return failure(
      'bad-request',
      'a request is one JSON object on one line',
      'send e.g. {"verb":"query"} followed by a newline',
    );
  }
  const verb = (request as { verb?: unknown }).verb;
  if (typeof verb !== 'string' || !(verbNames as readonly string[]).includes(verb)) {
    return failure(
      'unknown-verb',
      `unknown verb ${JSON.stringify(verb)}`,
      `verbs: ${verbNames.join(', ')}`,
    );
  }
  const parsed = requestSchema.safeParse(request);
  if (!parsed.success) {
    const issues = parsed.error.issues
      .map((issue) => `${issue.path.join('.') || '(request)'}: ${issue.message}`)
      .join('; ');
    return failure(
      'bad-request',
      `bad '${verb}' request: ${issues}`,
      verb === 'enable' || verb === 'disable' || verb === 'drain'
        ? `e.g. {"verb":"${verb}","rules":[0]}, {"verb":"${verb}","rules":"all"} or {"verb":"${verb}","spec":"all:80"}`
        : verb === 'queryport'
          ? `e.g. {"verb":"queryport","spec":"198.18.0.100:80"}`
          : verb === 'events'
            ? `e.g. {"verb":"events","limit":50} or {"verb":"events","follow":true}`
            : `e.g. {"verb":"${verb}"} with no other field`,
    );
  }
  try {
    return { ok: true, data: await verbs[parsed.data.verb](parsed.data, context) };
  } catch (error) {
    if (error instanceof BadRequest) {
      return failure('bad-request', error.message, error.hint);
    }
    if (error instanceof Unavailable) {
      return failure('unavailable', error.message, error.hint);
    }
    return failure('failed', errorText(error), 'see the nlbd log for details');
  }
}
