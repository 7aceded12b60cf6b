// What the dashboard's server sends its page: one `DashboardView` of the whole cluster, pushed
// over server-sent events whenever it changes, and the action request and answer. The one
// contract between src/dashboard (Node) and src/web (the browser): plain JSON types with no
// imports, so the page's bundle and its type check take nothing of the server's code with them.

/** How a host is doing, as the hosts panel colours it. */
export type HostHealth =
  /** answers, takes part, converged */
  | 'ok'
  /** answers, takes part, converging */
  | 'converging'
  /** answers, drainstopping: no new flows, its open ones finish */
  | 'draining'
  /** answers, stopped or suspended: takes no part */
  | 'stopped'
  /** answers, but something is wrong (kept out, data plane out of sync, taken for dead) */
  | 'problem'
  /** does not answer, and the hosts that answer declared it dead */
  | 'dead'
  /** does not answer (or cannot be asked) */
  | 'unreachable';

/** A host's data plane counters, summed over its port rules. */
export interface HostCounters {
  readonly acceptedPackets: number;
  readonly acceptedBytes: number;
  readonly droppedPackets: number;
  /** Accepted packets per second since the previous gather; null on the first one. */
  readonly packetsPerSecond: number | null;
  readonly bytesPerSecond: number | null;
}

export interface HostView {
  readonly hostId: number;
  /** Where the dashboard reaches its nlbd (socket or address), or null when it cannot. */
  readonly where: string | null;
  readonly reachable: boolean;
  /** Why it did not answer; null when it did. */
  readonly error: string | null;
  /** Its own state (converged, converging, draining, stopped...), or null when unreachable. */
  readonly state: string | null;
  readonly converged: boolean | null;
  readonly members: readonly number[] | null;
  readonly mapDigest: string | null;
  readonly incarnation: number | null;
  readonly keptOut: string | null;
  readonly dataplaneInSync: boolean | null;
  /** How each answering peer sees it (member, dead, stopped...), by the peer's host id. */
  readonly seenAs: Readonly<Record<string, string>>;
  readonly health: HostHealth;
  /** One line for people: why the health is what it is. */
  readonly healthText: string;
  readonly counters: HostCounters | null;
  /** Connections it holds over all its rules (conntrack), or null when unknown. */
  readonly connections: number | null;
}

export interface BucketCell {
  readonly bucket: number;
  /** The owner in the map drawn (see RuleView.source), or null: nobody. */
  readonly owner: number | null;
  /** The hosts that claim it now, as the map's source hears them. */
  readonly claims: readonly number[];
  /** Its claims are not yet exactly its owner: it is moving. */
  readonly inFlight: boolean;
  /** Connections in it over every answering host, or null when no host could count. */
  readonly connections: number | null;
  /** The same, per host holding some (a moved bucket keeps its old connections on the old host). */
  readonly connectionsByHost: Readonly<Record<string, number>>;
  /** Why the hosts disagree about this bucket, or null. */
  readonly disagreement: string | null;
}

export interface RuleView {
  readonly rule: number;
  readonly vip: string;
  readonly ports: string;
  readonly protocol: string;
  readonly mode: string;
  readonly affinity: string;
  readonly buckets: number;
  /** enabled | draining | disabled, by host id (the answering hosts). */
  readonly states: Readonly<Record<string, string>>;
  readonly cells: readonly BucketCell[];
  /** Buckets per owner in the map drawn. */
  readonly owners: Readonly<Record<string, number>>;
}

/** Two answering hosts that do not hold the same map, or a bucket two hosts claim. */
export interface Disagreement {
  readonly text: string;
  readonly hosts: readonly number[];
  /** The buckets concerned, per rule. */
  readonly buckets: readonly { readonly rule: number; readonly buckets: readonly number[] }[];
}

/** One convergence of the cluster, as the `converged` events of its members report it. */
export interface Convergence {
  /** ISO time of the first report. */
  readonly at: string;
  readonly members: readonly number[];
  /** The longest any member took, from the change it saw to every member agreeing. */
  readonly durationMs: number;
  readonly bucketsMoved: number;
  readonly reasons: readonly string[];
  /** The hosts whose `converged` event this is. */
  readonly reportedBy: readonly number[];
}

/** One event of one host's nlbd (`nlb events`). */
export interface DashboardEvent {
  readonly hostId: number;
  readonly seq: number;
  readonly time: string;
  readonly event: string;
  /** The other fields, `key=value`. */
  readonly details: string;
  readonly warn: boolean;
}

export interface DashboardView {
  readonly cluster: string;
  /** Grows by one with every view that differs from the one before. */
  readonly version: number;
  /** ISO time the hosts were last asked. */
  readonly gatheredAt: string;
  readonly hosts: readonly HostView[];
  /** The host whose map the grid draws (the lowest converged member that answers), or null. */
  readonly mapSource: number | null;
  readonly rules: readonly RuleView[];
  /** Every answering host that takes part converged, and they agree. */
  readonly converged: boolean;
  readonly disagreements: readonly Disagreement[];
  /** Newest first. */
  readonly timeline: readonly Convergence[];
  /** Newest first. */
  readonly events: readonly DashboardEvent[];
  /** Where the control token for actions is to be found, for the token field's hint. */
  readonly tokenHint: string;
}

export type ActionName = 'drainstop' | 'start' | 'stop' | 'drain';

/** POST /api/action, with the control token in `Authorization: Bearer <token>`. */
export interface ActionRequest {
  readonly action: ActionName;
  readonly host: number;
  /** drain only: the port rule (index into the cluster's rules). */
  readonly rule?: number;
  /** drain only: on every reachable host instead of `host` alone. */
  readonly everyHost?: boolean;
}

/** One host's reply to an action. */
export interface ActionResult {
  readonly hostId: number;
  readonly ok: boolean;
  /** The host's reply code (ok, already, refused, not found, suspended), or 'unreachable'. */
  readonly code: string;
  readonly message: string;
}

/** The answer to POST /api/action: results (200), or an error (401, 400, 409, 429). */
export type ActionAnswer =
  | { readonly ok: true; readonly results: readonly ActionResult[] }
  | { readonly ok: false; readonly error: string; readonly hint: string };

/** The server-sent event that carries a DashboardView. */
export const snapshotEventName = 'snapshot';
/** The header the page sends the control token in (as `Bearer <token>`). */
export const tokenHeader = 'authorization';
