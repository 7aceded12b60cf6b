// The control API of nlbd, as a pure function from a request to response data (the hono way):
// the unix socket server (control-server.ts) only frames bytes, so every verb is tested
// in-process, and a new verb is one entry in `verbs`.
//
// Protocol: one request per connection, one JSON object on one line, e.g. `{"verb":"query"}`;
// one JSON line back, then the server closes:
//   {"ok":true,"data":...}   or   {"ok":false,"error":{"code","message","hint"}}
// Verbs: identity, query, params; the commands start, stop, drainstop, suspend, resume, and
// enable/disable/drain with `"rules": [0, 2]` or `"rules": "all"` (indexes into
// cluster.portRules). A command's data is the host machine's reply {code, message}, code one
// of ok | already | suspended | not found | refused.
import { z } from 'zod';
import type { Config, PortRule } from '../core/config.js';
import type { HostMachine } from '../core/host.js';
import type { Command, CommandReply, HostStatus, ReportedState } from '../core/protocol.js';
import type { DataplaneCounters } from '../dataplane/dataplane.js';
import type { DriverStats } from './host-driver.js';
import type { TransportStats } from './transport.js';

/** A request line larger than this is not a control request. */
export const requestBytesMax = 64 * 1024;

export type ControlErrorCode = 'bad-request' | 'unknown-verb' | 'failed';

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
  details(): ReturnType<HostMachine['details']>;
  command(command: Command): Promise<CommandReply>;
  counters(): Promise<DataplaneCounters>;
  driverStats(): DriverStats;
  transportStats(): TransportStats;
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

export interface QueryRule {
  readonly rule: number;
  readonly vip: string;
  readonly ports: string;
  readonly protocol: PortRule['protocol'];
  readonly mode: PortRule['mode'];
  readonly affinity: PortRule['affinity'];
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

function peerView(
  peer: ReturnType<HostMachine['details']>['peers'][number],
  members: readonly number[],
): PeerView {
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
      vip: rule.vip === 'all' ? 'all' : rule.vip.text,
      ports: portsText(rule),
      protocol: rule.protocol,
      mode: rule.mode,
      affinity: rule.affinity,
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
        vip: rule.vip === 'all' ? 'all' : rule.vip.text,
        ports: portsText(rule),
        protocol: rule.protocol,
        mode: rule.mode,
        affinity: rule.affinity,
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

const requestSchema = z.discriminatedUnion('verb', [
  z.object({ verb: z.literal('identity') }).strict(),
  z.object({ verb: z.literal('query') }).strict(),
  z.object({ verb: z.literal('params') }).strict(),
  z.object({ verb: z.enum(['start', 'stop', 'drainstop', 'suspend', 'resume']) }).strict(),
  z.object({ verb: z.enum(['enable', 'disable', 'drain']), rules: ruleList }).strict(),
]);

export type ControlRequest = z.output<typeof requestSchema>;

export const verbNames = [
  'identity',
  'query',
  'params',
  'start',
  'stop',
  'drainstop',
  'suspend',
  'resume',
  'enable',
  'disable',
  'drain',
] as const;

export interface ControlContext {
  readonly target: ControlTarget;
  /** Whether the kernel holds what the host machine decided (from the driver). */
  readonly dataplaneInSync: () => boolean;
}

type VerbHandler = (request: ControlRequest, context: ControlContext) => Promise<unknown>;

async function params(context: ControlContext): Promise<unknown> {
  const target = context.target;
  let counters: DataplaneCounters | null = null;
  let countersError: string | null = null;
  try {
    counters = await target.counters();
  } catch (error) {
    countersError = error instanceof Error ? error.message : String(error);
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
  start: (request, { target }) => target.command(request as Command),
  stop: (request, { target }) => target.command(request as Command),
  drainstop: (request, { target }) => target.command(request as Command),
  suspend: (request, { target }) => target.command(request as Command),
  resume: (request, { target }) => target.command(request as Command),
  enable: (request, context) => ruleCommand(request, context),
  disable: (request, context) => ruleCommand(request, context),
  drain: (request, context) => ruleCommand(request, context),
};

function ruleCommand(request: ControlRequest, { target }: ControlContext): Promise<CommandReply> {
  if (request.verb !== 'enable' && request.verb !== 'disable' && request.verb !== 'drain') {
    throw new Error(`ruleCommand: '${request.verb}' is not a rule verb`);
  }
  const rules =
    request.rules === 'all'
      ? target.config.cluster.portRules.map((_, i) => i)
      : [...new Set(request.rules)].sort((a, b) => a - b);
  return target.command({ verb: request.verb, rules });
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

/** Answers one request (already parsed from JSON). Never throws: failures are responses. */
export async function handleControl(
  request: unknown,
  context: ControlContext,
): Promise<ControlResponse> {
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
        ? `e.g. {"verb":"${verb}","rules":[0]} or {"verb":"${verb}","rules":"all"}`
        : `e.g. {"verb":"${verb}"} with no other field`,
    );
  }
  try {
    return { ok: true, data: await verbs[parsed.data.verb](parsed.data, context) };
  } catch (error) {
    return failure(
      'failed',
      error instanceof Error ? error.message : String(error),
      'see the nlbd log for details',
    );
  }
}
