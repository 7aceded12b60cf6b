// The control protocol between `nlb` and `nlbd`, in one place: the wire schema of a request,
// the data each verb answers with, and the type of the table of handlers that the daemon
// implements (src/daemon/control.ts). Adding a verb is one entry in `requestSchema` and one in
// `VerbData`; the compiler then asks for the handler (ControlHandlers), and `controlAsk`
// (client.ts) returns the new data type with no cast. This folder imports only src/core and
// src/node: the daemon and the CLI both import it, never the reverse.
//
// Protocol: one request per connection, one JSON object on one line, e.g. `{"verb":"query"}`;
// one JSON line back, then the server closes:
//   {"ok":true,"data":...}   or   {"ok":false,"error":{"code","message","hint"}}
// Verbs: identity, query, params, display, queryport, map, events, metrics; the commands start,
// stop, drainstop, suspend, resume, reload, and enable/disable/drain with `"rules": [0, 2]`,
// `"rules": "all"` or `"spec": "198.18.0.100:80"` (rule-spec.ts). A command's data is the host
// machine's reply {code, message}, code one of ok | already | suspended | not found | refused.
//
// `{"verb":"events","follow":true}` is the one request that keeps its connection (every new
// event follows as one JSON line). Over the remote listener a request also carries `"token"`.
import { z } from 'zod';
import type { AgentCheck, HealthCheck, PortRule } from '../core/config.js';
import type { HostDetails } from '../core/host.js';
import type { CommandReply, ReportedState } from '../core/protocol.js';
import type { RuleHealth, RuleHealthView } from './protocol-health.js';
export type { ProbeView, RuleHealth, RuleHealthView } from './protocol-health.js';

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

// ----------------------------------------------------------------------------- response data

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
  /** This host's settings for the rule now (after any reload; a reported weight wins). */
  readonly loadWeight: number;
  readonly handlingPriority: number;
  readonly health: RuleHealth;
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
  /** The address its last accepted heartbeat came from (its dedicated IP), or null. */
  readonly address: string | null;
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
  /** Routed mode: whether the marker routes have FRR announce the cluster IPs; else absent. */
  readonly announced?: boolean;
  readonly rules: readonly QueryRule[];
  readonly peers: readonly QueryPeer[];
}

/** The config as plain JSON (the daemon's configView): addresses as text, nothing derived. */
export interface ConfigView {
  readonly cluster: {
    readonly name: string;
    readonly clusterIps: readonly string[];
    readonly mode: string;
    readonly interface: string;
    readonly heartbeat: {
      readonly periodMs: number;
      readonly tolerance: number;
      readonly port: number;
      readonly group: string;
      /** Unicast heartbeat peers, or null: multicast to the group. */
      readonly peers: readonly string[] | null;
    };
    readonly buckets: number;
    readonly hashSeed: number;
    readonly keyFile: string | undefined;
    readonly portRules: readonly (PortRuleView & {
      readonly buckets: number;
      readonly health: HealthCheck | null;
      readonly agent: AgentCheck | null;
    })[];
  };
  readonly host: {
    readonly id: number;
    readonly dedicatedIp: string;
    readonly initialState: string;
    readonly rules: readonly { readonly loadWeight: number; readonly handlingPriority: number }[];
  };
}

/** Packets and bytes of one nftables counter, as `params` reports them. */
export interface CounterView {
  readonly packets: number;
  readonly bytes: number;
}

/** The data plane's counters (the daemon's DataplaneCounters), as `params` reports them. */
export interface CountersView {
  readonly rules: readonly {
    readonly accepted: CounterView;
    readonly dropped: CounterView;
    readonly reset: CounterView;
  }[];
  readonly uncovered: { readonly accepted: CounterView; readonly dropped: CounterView };
  readonly leaseExpired: CounterView;
}

/** Latencies the daemon's host driver keeps (host-driver.ts names this LatencyStats). */
export interface LatencyView {
  readonly count: number;
  readonly lastMs: number | null;
  readonly maxMs: number | null;
  /** Over the last 256 samples. */
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
}

/** What the daemon's host driver counts (host-driver.ts names this DriverStats). */
export interface DriverView {
  readonly steps: { readonly ticks: number; readonly datagrams: number; readonly commands: number };
  /** Decision (step returned) to kernel programmed, for each ownership change. */
  readonly program: LatencyView & { readonly sets: number; readonly table: number };
  /** How long datagrams waited in the queue before being stepped. */
  readonly datagramQueueWait: LatencyView;
  readonly queueDepthMax: number;
  readonly datagramsDropped: number;
  readonly heartbeatsWithheld: number;
  readonly leaseRefreshes: number;
  readonly dataplaneErrors: number;
  readonly sendErrors: number;
}

/** What the heartbeat transport counts (transport.ts names this TransportStats). */
export interface TransportView {
  readonly sent: number;
  readonly received: number;
  /** Sends that failed (no route, interface down); the protocol treats them as lost. */
  readonly sendErrors: number;
  /** Received datagrams over datagramBytesMax: never from a peer, dropped unread. */
  readonly oversize: number;
}

type HostDetailsData = HostDetails;
type HostPeerData = HostDetailsData['peers'][number];

/** The host machine's details, with absent values as null and peer times as ages. */
export type ProtocolView = Omit<HostDetailsData, 'keptOut' | 'peers'> & {
  readonly keptOut: string | null;
  readonly peers: readonly (Omit<HostPeerData, 'lastHeardMs' | 'mismatch'> & {
    readonly mismatch: string | null;
    readonly lastHeardAgoMs: number;
  })[];
};

export interface ParamsData {
  readonly identity: DaemonIdentity;
  readonly config: ConfigView;
  readonly counters: CountersView | null;
  readonly countersError: string | null;
  readonly protocol: ProtocolView;
  readonly driver: DriverView;
  readonly transport: TransportView;
  /** The port rules' health and agent checks as nlbd runs them. */
  readonly health: readonly RuleHealthView[];
}

/** One logged event as `nlb events` shows it (the daemon's journal entry). */
export type EventEntry = {
  /** 1, 2, 3... since nlbd started; a follower sees no gaps unless it was too slow. */
  readonly seq: number;
  /** ISO time it was logged. */
  readonly time: string;
  readonly event: string;
} & Readonly<Record<string, unknown>>;

/** A rule command's reply: the machine's, plus the rules the request named. */
export type RuleCommandReply = CommandReply & { readonly rules: readonly number[] };

/** Recent events `display` shows unless the request asks for another number. */
export const displayEventsDefault = 20;

export interface DisplayData {
  readonly identity: DaemonIdentity;
  readonly config: ConfigView;
  readonly interface: InterfaceView | null;
  readonly interfaceError: string | null;
  readonly events: readonly EventEntry[];
}

export interface EventsData {
  readonly events: readonly EventEntry[];
  /** True when new events follow on this connection, one JSON line each. */
  readonly following: boolean;
}

export interface QueryportBucket {
  readonly bucket: number;
  /** The owner in the map this host works towards (every member's, once converged). */
  readonly owner: number | null;
  /** This host takes new flows for it now. */
  readonly ownedHere: boolean;
  readonly orphan: boolean;
  /** Connections this host holds in it (conntrack), or null when unknown. */
  readonly connections: number | null;
  /**
   * The hosts that claim it now, sorted: this host if it takes new flows for it, and every
   * heard peer whose last heartbeat says it does. Once converged, exactly `[owner]`.
   */
  readonly claimedBy: readonly number[];
  /**
   * The claims do not match the target: two hosts claim it, or (converged) the claimant is
   * not the owner. While converging a bucket in flight is not a disagreement (see inFlight).
   */
  readonly disagreement: boolean;
  /** Converging, and this bucket's claims are not yet `[owner]`. */
  readonly inFlight: boolean;
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
  /** Buckets with a disagreement (see QueryportBucket). */
  readonly disagreements: number;
  readonly health: RuleHealth;
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

/** One port rule of the live map (the `map` verb). */
export interface MapRuleData extends PortRuleView {
  readonly rule: number;
  /** The rule's ports as numbers (`ports` is their text), for matching a client's traffic. */
  readonly portStart: number;
  readonly portEnd: number;
  readonly buckets: number;
  /** enabled | draining | disabled on this host */
  readonly state: string;
  /** Per bucket, the owner in the target map this host works towards (the agreed map once converged). */
  readonly owners: readonly (number | null)[];
  /** Per bucket, the hosts that claim it now (QueryportBucket.claimedBy). */
  readonly claims: readonly (readonly number[])[];
  /** Buckets whose claims are not exactly `[owner]`: in flight while converging. */
  readonly inFlight: readonly number[];
}

/**
 * The cluster's map as one host holds it: what `nlb map` predicts from, and what the dashboard
 * draws. With what a prediction needs (cluster IPs, hash seed, the rules' matching fields), so
 * no config file is needed beside it.
 */
export interface MapData {
  readonly cluster: string;
  readonly hostId: number;
  readonly converged: boolean;
  readonly mapDigest: string;
  /** ISO time the last convergence ended, or null (never converged, or converging now). */
  readonly convergedAt: string | null;
  readonly members: readonly number[];
  readonly defaultHost: number | null;
  readonly clusterIps: readonly string[];
  readonly hashSeed: number;
  readonly rules: readonly MapRuleData[];
}

export interface MetricsData {
  readonly contentType: string;
  readonly text: string;
}

// ---------------------------------------------------------------------------------- requests

const ruleList = z.union([z.literal('all'), z.array(z.number().int().min(0)).min(1).max(256)]);

const ruleSpecText = z.string().min(1).max(100);
const eventsLimit = z.number().int().min(1).max(1024);

export const requestSchema = z.discriminatedUnion('verb', [
  z.object({ verb: z.literal('identity') }).strict(),
  z.object({ verb: z.literal('query') }).strict(),
  z.object({ verb: z.literal('params') }).strict(),
  z.object({ verb: z.literal('display'), events: eventsLimit.optional() }).strict(),
  z.object({ verb: z.literal('queryport'), spec: ruleSpecText }).strict(),
  z.object({ verb: z.literal('map') }).strict(),
  z
    .object({
      verb: z.literal('events'),
      limit: eventsLimit.optional(),
      follow: z.boolean().optional(),
    })
    .strict(),
  z.object({ verb: z.literal('metrics') }).strict(),
  z.object({ verb: z.literal('reload') }).strict(),
  z.object({ verb: z.literal('start') }).strict(),
  z.object({ verb: z.literal('stop') }).strict(),
  z.object({ verb: z.literal('drainstop') }).strict(),
  z.object({ verb: z.literal('suspend') }).strict(),
  z.object({ verb: z.literal('resume') }).strict(),
  z
    .object({
      verb: z.literal('enable'),
      rules: ruleList.optional(),
      spec: ruleSpecText.optional(),
    })
    .strict(),
  z
    .object({
      verb: z.literal('disable'),
      rules: ruleList.optional(),
      spec: ruleSpecText.optional(),
    })
    .strict(),
  z
    .object({
      verb: z.literal('drain'),
      rules: ruleList.optional(),
      spec: ruleSpecText.optional(),
    })
    .strict(),
]);

export type ControlRequest = z.output<typeof requestSchema>;

/** Every verb, in the schema's order (the reading verbs first, then those that change). */
export const verbNames: readonly ControlRequest['verb'][] = requestSchema.options.map(
  (option) => option.shape.verb.value,
);

/** The verbs that change the host (the rest only read); remote ones are logged with the sender. */
export const changingVerbNames: ReadonlySet<string> = new Set(
  verbNames.slice(verbNames.indexOf('reload')),
);

export type Verb = ControlRequest['verb'];

/** The request of one verb. */
export type RequestOf<V extends Verb> = Extract<ControlRequest, { verb: V }>;

/** The data each verb answers with: the one table the client and the handlers share. */
export interface VerbData {
  readonly identity: DaemonIdentity;
  readonly query: QueryData;
  readonly params: ParamsData;
  readonly display: DisplayData;
  readonly queryport: QueryportData;
  readonly map: MapData;
  readonly events: EventsData;
  readonly metrics: MetricsData;
  readonly reload: ReloadReply;
  readonly start: CommandReply;
  readonly stop: CommandReply;
  readonly drainstop: CommandReply;
  readonly suspend: CommandReply;
  readonly resume: CommandReply;
  readonly enable: RuleCommandReply;
  readonly disable: RuleCommandReply;
  readonly drain: RuleCommandReply;
}

/**
 * The daemon's handlers: one per verb, each taking that verb's request and answering with its
 * data. A verb in the schema without a handler, or a handler answering the wrong data, does not
 * compile.
 */
export type ControlHandlers<Context> = {
  readonly [V in Verb]: (request: RequestOf<V>, context: Context) => Promise<VerbData[V]>;
};

/** A success as the client checks it before handing the data on. */
export const successSchema = z.object({ ok: z.literal(true), data: z.unknown() });

/** A failure as the client checks it: `nlb` prints its message and hint. */
export const failureSchema = z.object({
  ok: z.literal(false),
  error: z.object({
    code: z.enum(['bad-request', 'unknown-verb', 'failed', 'unauthorized', 'unavailable']),
    message: z.string(),
    hint: z.string(),
  }),
});

/** Parses one request line; never throws. */
export function parseRequestLine(line: string): unknown {
  try {
    return JSON.parse(line) as unknown;
  } catch {
    return undefined;
  }
}
