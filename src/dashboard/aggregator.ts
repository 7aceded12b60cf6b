// The dashboard's view of the cluster, kept live: it follows every host's event stream (one
// connection per host, reconnecting with backoff), and on each new event, on each action, and
// on a modest timer (counters and connections change without events) asks every host query,
// map, queryport all:all and params at once, builds the view (build-view.ts) and hands it to
// the subscribers when it differs from the last one. The page never polls: it is pushed what
// this decides.
//
// Gathers never overlap: a request while one runs makes one more run after it, at least
// `gatherSpacingMs` later, so an event storm costs the hosts a bounded number of questions.
// Life cycle: `start` (followers, first gather, timer), `stop` (aborts them, waits for the gather
// in flight).
import { setTimeout as sleep } from 'node:timers/promises';
import type { EventEntry, RequestOf, Verb, VerbData } from '../control/protocol.js';
import { errorText } from '../core/error-text.js';
import { type HostAnswers, type Rate, buildView } from './build-view.js';
import { EventHistory } from './history.js';
import type { DashboardHost } from './hosts.js';
import type { DashboardView } from './view.js';

/** How long one host may take to answer one verb before it shows as unreachable. */
export const askTimeoutMs = 1_500;
/** The counters and connections change without events: asked again this often. */
export const gatherEveryMs = 1_000;
/** While the cluster converges (buckets in flight), more often, so the grid shows the moves. */
export const gatherConvergingEveryMs = 250;
/** At most this often under an event storm (see the header comment). */
export const gatherSpacingMs = 100;
/** A host's event stream is followed again after this, doubling up to the max, when it ends. */
export const followBackoffMs = 250;
export const followBackoffMaxMs = 5_000;
/** Rediscovery (a host heard that the dashboard does not reach) at most this often. */
export const discoverEveryMs = 10_000;
/** Recent events each host's stream starts with. */
const followRecentEvents = 50;

export interface AggregatorOptions {
  readonly cluster: string;
  readonly hosts: readonly DashboardHost[];
  /** Finds the cluster's hosts again (when one is heard that is not in `hosts`); optional. */
  readonly discover?: () => Promise<readonly DashboardHost[]>;
  /** Shown by the page's token field: where the control token is. */
  readonly tokenHint: string;
  readonly now?: () => number;
  /** Timer periods, shorter in tests. */
  readonly gatherEveryMs?: number;
  readonly gatherConvergingEveryMs?: number;
}

type Listener = (view: DashboardView) => void;

interface Sample {
  readonly atMs: number;
  readonly incarnation: number;
  readonly packets: number;
  readonly bytes: number;
}

/** Asks one verb of one host; a failure of any kind is its message. */
async function askHost<V extends Verb>(
  host: DashboardHost,
  request: RequestOf<V>,
): Promise<{ data: VerbData[V] } | { error: string }> {
  try {
    const response = await host.ask(request, askTimeoutMs);
    return response.ok ? { data: response.data } : { error: response.error.message };
  } catch (error) {
    return { error: errorText(error) };
  }
}

/** Everything one host answers in one gather (its query failing makes it unreachable). */
export async function gatherHost(host: DashboardHost): Promise<HostAnswers> {
  const none = { query: null, map: null, queryport: null, params: null };
  if (host.unreachable !== null) {
    return { hostId: host.hostId, where: host.where, error: host.unreachable, ...none };
  }
  const [query, map, queryport, params] = await Promise.all([
    askHost(host, { verb: 'query' }),
    askHost(host, { verb: 'map' }),
    askHost(host, { verb: 'queryport', spec: 'all:all' }),
    askHost(host, { verb: 'params' }),
  ]);
  if ('error' in query) {
    return { hostId: host.hostId, where: host.where, error: query.error, ...none };
  }
  if (query.data.hostId !== host.hostId) {
    // A stale socket or a reused address: not the host it is listed as.
    const error = `host ${query.data.hostId} of cluster ${query.data.cluster} answers there, not host ${host.hostId}`;
    return { hostId: host.hostId, where: host.where, error, ...none };
  }
  return {
    hostId: host.hostId,
    where: host.where,
    error: null,
    query: query.data,
    map: 'data' in map ? map.data : null,
    queryport: 'data' in queryport ? queryport.data : null,
    params: 'data' in params ? params.data : null,
  };
}

export class Aggregator {
  private hosts: DashboardHost[];
  private readonly history = new EventHistory();
  private readonly listeners = new Set<Listener>();
  private readonly abort = new AbortController();
  private readonly followers = new Map<number, Promise<void>>();
  private readonly samples = new Map<number, Sample>();
  private readonly rates = new Map<number, Rate>();
  private readonly now: () => number;
  private waiters: ((view: DashboardView) => void)[] = [];
  private running: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private view: DashboardView | undefined;
  private content = '';
  private version = 0;
  private lastDiscoverMs = Number.NEGATIVE_INFINITY;

  constructor(private readonly options: AggregatorOptions) {
    this.hosts = [...options.hosts].sort((a, b) => a.hostId - b.hostId);
    this.now = options.now ?? Date.now;
  }

  /** Follows every host and gathers the first view; resolves with it. */
  async start(): Promise<DashboardView> {
    for (const host of this.hosts) this.followHost(host);
    return this.refresh();
  }

  /** Stops following and gathering; resolves once nothing of it runs. */
  async stop(): Promise<void> {
    this.abort.abort();
    clearTimeout(this.timer);
    this.listeners.clear();
    await Promise.all([...this.followers.values(), this.running]);
  }

  /** The last view gathered, if any. */
  current(): DashboardView | undefined {
    return this.view;
  }

  /** Calls `listener` with every new view from now on; returns the unsubscribe. */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Gathers soon (after the one in flight, if any); resolves with that gather's view. */
  refresh(): Promise<DashboardView> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.requestGather();
    });
  }

  /** The hosts as the dashboard reaches them (for actions). */
  host(hostId: number): DashboardHost | undefined {
    return this.hosts.find((h) => h.hostId === hostId);
  }

  allHosts(): readonly DashboardHost[] {
    return this.hosts;
  }

  private requestGather(): void {
    if (this.abort.signal.aborted) return;
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    this.running = this.gatherLoop().finally(() => {
      this.running = undefined;
    });
  }

  private async gatherLoop(): Promise<void> {
    do {
      this.again = false;
      const waiting = this.waiters.splice(0);
      const view = await this.gatherOnce();
      for (const resolve of waiting) resolve(view);
      if (this.again)
        await sleep(gatherSpacingMs, undefined, { signal: this.abort.signal }).catch(() => {});
    } while (this.again && !this.abort.signal.aborted);
    // Anyone who asked while the last gather ran and was not served gets the last view.
    if (this.view !== undefined) for (const resolve of this.waiters.splice(0)) resolve(this.view);
    this.schedule();
  }

  private schedule(): void {
    clearTimeout(this.timer);
    if (this.abort.signal.aborted) return;
    const converging = this.view?.hosts.some((h) => h.health === 'converging') === true;
    const every = converging
      ? (this.options.gatherConvergingEveryMs ?? gatherConvergingEveryMs)
      : (this.options.gatherEveryMs ?? gatherEveryMs);
    this.timer = setTimeout(() => this.requestGather(), every);
    this.timer.unref();
  }

  private async gatherOnce(): Promise<DashboardView> {
    const answers = await Promise.all(this.hosts.map((host) => gatherHost(host)));
    const atMs = this.now();
    for (const a of answers) this.sample(a, atMs);
    const built = buildView({
      cluster: this.options.cluster,
      version: this.version,
      gatheredAt: new Date(atMs).toISOString(),
      answers,
      rates: this.rates,
      timeline: this.history.timeline(),
      events: this.history.events(),
      tokenHint: this.options.tokenHint,
    });
    const content = JSON.stringify({ ...built, version: 0, gatheredAt: '' });
    if (content !== this.content || this.view === undefined) {
      this.content = content;
      this.version += 1;
      this.view = { ...built, version: this.version };
      for (const listener of [...this.listeners]) listener(this.view);
    }
    this.maybeDiscover(answers);
    return this.view;
  }

  /** Packets and bytes per second from the previous sample of the same nlbd. */
  private sample(a: HostAnswers, atMs: number): void {
    const c = a.params?.counters;
    if (a.query === null || c === null || c === undefined) {
      this.rates.delete(a.hostId);
      this.samples.delete(a.hostId);
      return;
    }
    const now: Sample = {
      atMs,
      incarnation: a.query.incarnation,
      packets: c.rules.reduce((n, r) => n + r.accepted.packets, 0),
      bytes: c.rules.reduce((n, r) => n + r.accepted.bytes, 0),
    };
    const before = this.samples.get(a.hostId);
    // A rate over less than a few hundred ms is noise: keep the last one until then.
    if (before !== undefined && now.atMs - before.atMs < 500) return;
    this.samples.set(a.hostId, now);
    if (
      before === undefined ||
      before.incarnation !== now.incarnation ||
      now.packets < before.packets
    ) {
      this.rates.delete(a.hostId);
      return;
    }
    const seconds = (now.atMs - before.atMs) / 1000;
    this.rates.set(a.hostId, {
      packetsPerSecond: Math.round((now.packets - before.packets) / seconds),
      bytesPerSecond: Math.round((now.bytes - before.bytes) / seconds),
    });
  }

  private maybeDiscover(answers: readonly HostAnswers[]): void {
    const discover = this.options.discover;
    if (discover === undefined || this.now() - this.lastDiscoverMs < discoverEveryMs) return;
    const known = new Set(this.hosts.map((h) => h.hostId));
    const unknown = answers.some((a) => a.query?.peers.some((p) => !known.has(p.id)) === true);
    if (!unknown) return;
    this.lastDiscoverMs = this.now();
    discover().then(
      (found) => {
        if (this.abort.signal.aborted) return;
        for (const host of found) {
          if (known.has(host.hostId)) continue;
          this.hosts = [...this.hosts, host].sort((a, b) => a.hostId - b.hostId);
          this.followHost(host);
        }
        this.requestGather();
      },
      // The seed did not answer: the hosts stay as they are, and the next heard peer retries.
      () => undefined,
    );
  }

  private followHost(host: DashboardHost): void {
    if (host.unreachable !== null || this.followers.has(host.hostId)) return;
    this.followers.set(host.hostId, this.followLoop(host));
  }

  private onEvent(hostId: number, entry: EventEntry): void {
    if (this.history.add(hostId, entry)) this.requestGather();
  }

  /** Follows one host's events until stop, again after each end with a growing backoff. */
  private async followLoop(host: DashboardHost): Promise<void> {
    const signal = this.abort.signal;
    let backoffMs = followBackoffMs;
    while (!signal.aborted) {
      try {
        await host.follow(
          { verb: 'events', limit: followRecentEvents },
          {
            onResponse: (response) => {
              if (!response.ok) return false;
              backoffMs = followBackoffMs;
              for (const entry of response.data.events) this.history.add(host.hostId, entry);
              this.requestGather();
              return true;
            },
            onLine: (entry) => this.onEvent(host.hostId, entry),
          },
          signal,
        );
      } catch {
        // Unreachable: the gather shows why; try again after the backoff.
      }
      if (signal.aborted) return;
      // The stream ended: the host stopped or died. Show it at once.
      this.requestGather();
      await sleep(backoffMs, undefined, { signal }).catch(() => {});
      backoffMs = Math.min(backoffMs * 2, followBackoffMaxMs);
    }
  }
}
