// The daemon's side of the control protocol (src/control/protocol.ts): the handler of every
// verb, as a pure function from a request to response data (the hono way). The unix socket
// server (control-server.ts) only frames bytes, so every verb is tested in-process.
import type { Command, CommandReply } from '../core/protocol.js';
import type { BucketConnections } from '../dataplane/conntrack.js';
import type { DataplaneCounters } from '../dataplane/dataplane.js';
import {
  type ControlErrorCode,
  type ControlHandlers,
  type ControlRequest,
  type ControlResponse,
  type DaemonIdentity,
  type DisplayData,
  type EventsData,
  type InterfaceView,
  type ParamsData,
  type QueryportBucket,
  type QueryportData,
  type QueryportRule,
  type ReloadReply,
  type RequestOf,
  type RuleCommandReply,
  displayEventsDefault,
  requestSchema,
  verbNames,
} from '../control/protocol.js';
import { parseRuleSpec, resolveRuleSpec, ruleSpecExamples } from '../control/rule-spec.js';
import type { EventJournal, JournalEntry } from './events.js';
import type { DriverStats } from './host-driver.js';
import type { TransportStats } from './transport.js';
import {
  type HostView,
  bucketClaims,
  claimsMatch,
  configView,
  mapData,
  portRuleView,
  queryData,
  ruleHealth,
} from './control-views.js';
import { errorText } from '../core/error-text.js';

/** What the handler needs of a running daemon; tests pass a fake. */
export interface ControlTarget extends HostView {
  identity(): DaemonIdentity;
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

// ---------------------------------------------------------------------------------- requests

export interface ControlContext {
  readonly target: ControlTarget;
  /** Whether the kernel holds what the host machine decided (from the driver). */
  readonly dataplaneInSync: () => boolean;
  /** Routed mode: whether the cluster IPs are announced; undefined in the other modes. */
  readonly announced?: () => boolean | undefined;
}

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

async function params(context: ControlContext): Promise<ParamsData> {
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
    health: target.health?.() ?? [],
  };
}

export const controlHandlers: ControlHandlers<ControlContext> = {
  identity: (_request, { target }) => Promise.resolve(target.identity()),
  query: (_request, context) =>
    Promise.resolve(queryData(context.target, context.dataplaneInSync(), context.announced?.())),
  params: (_request, context) => params(context),
  display: (request, context) => display(request, context),
  queryport: (request, context) => queryport(request, context),
  map: (_request, { target }) => Promise.resolve(mapData(target, Date.now())),
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
  start: (request, { target }) => target.command(request),
  stop: (request, { target }) => target.command(request),
  drainstop: (request, { target }) => target.command(request),
  suspend: (request, { target }) => target.command(request),
  resume: (request, { target }) => target.command(request),
  enable: (request, context) => ruleCommand(request, context),
  disable: (request, context) => ruleCommand(request, context),
  drain: (request, context) => ruleCommand(request, context),
};

/**
 * Calls the handler of the request's verb. TypeScript cannot see that `controlHandlers[request.verb]`
 * takes this very request (it widens both to every verb), hence the one cast; the table's type
 * is what checks each handler against its verb.
 */
function dispatch(request: ControlRequest, context: ControlContext): Promise<unknown> {
  const handler = controlHandlers[request.verb] as (
    request: ControlRequest,
    context: ControlContext,
  ) => Promise<unknown>;
  return handler(request, context);
}

async function ruleCommand(
  request: RequestOf<'enable' | 'disable' | 'drain'>,
  { target }: ControlContext,
): Promise<RuleCommandReply> {
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

async function display(
  request: RequestOf<'display'>,
  { target }: ControlContext,
): Promise<DisplayData> {
  const limit = request.events ?? displayEventsDefault;
  const view = await readOptional(
    target.addresses?.bind(target),
    'this nlbd does not report its interface',
  );
  return {
    identity: target.identity(),
    config: configView(target.config),
    interface: view.value ?? null,
    interfaceError: view.error,
    events: target.events?.recent(limit) ?? [],
  };
}

function recentEvents(request: RequestOf<'events'>, { target }: ControlContext): EventsData {
  if (target.events === undefined) {
    throw new Unavailable('this nlbd keeps no event history', 'read its log instead');
  }
  return {
    events: target.events.recent(request.limit),
    following: request.follow === true,
  };
}

// ------------------------------------------------------------------------------- queryport

async function queryport(
  request: RequestOf<'queryport'>,
  { target }: ControlContext,
): Promise<QueryportData> {
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
  const { value: connections, error: connectionsError } = await readOptional(
    target.connections?.bind(target),
    'this nlbd does not count connections',
  );
  const details = target.details();
  const claims = bucketClaims(target);
  const rules = resolved.rules.map((r): QueryportRule => {
    const rule = cluster.portRules[r]!;
    const owned = new Set(status.ownership.rules[r]?.owned ?? []);
    const orphan = new Set(status.ownership.rules[r]?.orphan ?? []);
    const targetMap = status.target[r] ?? [];
    const perBucket = new Map<number, number>();
    for (const entry of connections ?? []) {
      if (entry.rule === r) perBucket.set(entry.bucket, entry.connections);
    }
    const buckets = Array.from({ length: rule.buckets }, (_, b): QueryportBucket => {
      const owner = targetMap[b] ?? null;
      const claimedBy = claims[r]?.[b] ?? [];
      const matches = claimsMatch(claimedBy, owner);
      return {
        bucket: b,
        owner,
        ownedHere: owned.has(b),
        orphan: orphan.has(b),
        connections: connections === undefined ? null : (perBucket.get(b) ?? 0),
        claimedBy,
        disagreement: claimedBy.length > 1 || (status.converged && !matches),
        inFlight: !status.converged && !matches,
      };
    });
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
      disagreements: buckets.filter((bucket) => bucket.disagreement).length,
      health: ruleHealth(target, details, r),
      connections:
        connections === undefined ? null : [...perBucket.values()].reduce((a, b) => a + b, 0),
    };
  });
  return { ...base, code: 'ok', message: '', rules, connectionsError };
}

function failure(code: ControlErrorCode, message: string, hint: string): ControlResponse<never> {
  return { ok: false, error: { code, message, hint } };
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
    return { ok: true, data: await dispatch(parsed.data, context) };
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

/**
 * Reads what a target may not offer: the value, or why there is none (`missing` when the
 * target lacks the reader, the error's text when it failed).
 */
async function readOptional<T>(
  read: (() => Promise<T>) | undefined,
  missing: string,
): Promise<{ readonly value: T | undefined; readonly error: string | null }> {
  if (read === undefined) return { value: undefined, error: missing };
  try {
    return { value: await read(), error: null };
  } catch (error) {
    return { value: undefined, error: errorText(error) };
  }
}
