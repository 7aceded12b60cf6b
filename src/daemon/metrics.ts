// nlbd's Prometheus metrics (prom-client), served by the control verb `metrics` and, with
// `nlbd --metrics-listen <addr:port>`, by an HTTP listener at /metrics. Every value is read
// from the daemon when a scrape comes (the host machine's status and details, the data plane's
// counters and conntrack, the driver's and transport's statistics), so nothing is counted twice
// and a scrape always sees one consistent moment. Totals that only grow are Prometheus
// counters, set from the daemon's own totals at each scrape.
//
// Reading the counters runs `nft` and `conntrack`, so a scrape is not free: the text is kept for
// `metricsCacheMsDefault` and every scrape that comes while one is being collected shares that
// collection. However fast scrapes come, nlbd runs them at most once per cache period. The
// HTTP listener admits connections through connection-gate.ts, as remote control does: a
// request within 2 s of connecting, one request per connection, a cap per address, and a full
// listener makes room by closing a connection that has not sent its request yet.
import http from 'node:http';
import type net from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ReportedState } from '../core/protocol.js';
import { ConnectionGate, type GateLimits } from './connection-gate.js';
import type { ControlTarget } from './control.js';
import { portsText } from './control-views.js';
import { errorText } from '../core/error-text.js';
import type { BucketConnections } from '../dataplane/conntrack.js';
import type { DataplaneCounters } from '../dataplane/dataplane.js';

/**
 * How long collected metrics are served again. Prometheus scrapes every 10-60 s, so a second
 * of staleness is invisible, and it caps the nft and conntrack runs at one per second.
 */

/** The resolution of the event loop delay metric (nlbd_nodejs_eventloop_lag_*). */
export const eventLoopMonitoringMs = 100;
export const metricsCacheMsDefault = 1_000;

export interface MetricsOptions {
  /** A monotonic clock in milliseconds; performance.now by default. */
  readonly nowMs?: () => number;
  readonly cacheMs?: number;
}

const reportedStates: readonly ReportedState[] = [
  'converging',
  'converged',
  'converged as default',
  'draining',
  'stopped',
  'suspended',
];

export interface Metrics {
  readonly contentType: string;
  /** The exposition text of every metric, read at most `cacheMs` ago. */
  text(): Promise<string>;
}

export function createMetrics(target: ControlTarget, options: MetricsOptions = {}): Metrics {
  const nowMs = options.nowMs ?? (() => performance.now());
  const cacheMs = options.cacheMs ?? metricsCacheMsDefault;
  const registry = new Registry();
  registry.setDefaultLabels({
    cluster: target.config.cluster.name,
    host: String(target.config.host.id),
  });
  // prom-client samples the event loop delay with a timer of this resolution: its default, 10 ms,
  // would wake an idle nlbd 100 times a second (most of its idle CPU).
  collectDefaultMetrics({
    register: registry,
    prefix: 'nlbd_',
    eventLoopMonitoringPrecision: eventLoopMonitoringMs,
  });
  const metrics = defineMetrics([registry]);

  const collect = async (): Promise<void> => {
    registry.resetMetrics();
    const [counters, conns] = await Promise.all([
      target.counters().catch(() => undefined),
      target.connections?.().catch(() => undefined) ?? Promise.resolve(undefined),
    ]);
    fillHost(metrics, target);
    fillRules(metrics, target, counters, conns);
    if (counters !== undefined) {
      const { uncoveredPackets, leaseExpired } = metrics;
      setCounter(uncoveredPackets, counters.uncovered.accepted.packets, { verdict: 'accepted' });
      setCounter(uncoveredPackets, counters.uncovered.dropped.packets, { verdict: 'dropped' });
      setCounter(leaseExpired, counters.leaseExpired.packets);
    }
    metrics.scrapeErrors.set({ part: 'counters' }, counters === undefined ? 1 : 0);
    metrics.scrapeErrors.set(
      { part: 'connections' },
      conns === undefined && target.connections !== undefined ? 1 : 0,
    );
  };

  // One collection at a time (each resets and refills the same metrics), shared by every scrape
  // that comes meanwhile; its text is served again for `cacheMs` after it is done. A failed
  // collection is not kept: the next scrape tries again.
  let cached: { readonly text: string; readonly atMs: number } | undefined;
  let collecting: Promise<string> | undefined;
  return {
    contentType: registry.contentType,
    text: () => {
      if (cached !== undefined && nowMs() - cached.atMs < cacheMs) {
        return Promise.resolve(cached.text);
      }
      collecting ??= collect()
        .then(() => registry.metrics())
        .then((text) => {
          cached = { text, atMs: nowMs() };
          return text;
        })
        .finally(() => {
          collecting = undefined;
        });
      return collecting;
    },
  };
}

const ruleLabels = ['rule', 'vip', 'ports', 'protocol'] as const;

/** nlb's own metrics (nlbd_* are prom-client's process metrics), registered in `registers`. */
function defineMetrics(registers: Registry[]) {
  return { ...defineHostMetrics(registers), ...defineRuleMetrics(registers) };
}

type NlbMetrics = ReturnType<typeof defineMetrics>;

/** The host's state, its view, its heartbeats and its data plane's health. */
function defineHostMetrics(registers: Registry[]) {
  const gauge = (name: string, help: string, labelNames: string[] = []) =>
    new Gauge({ name, help, labelNames, registers });
  const counter = (name: string, help: string, labelNames: string[] = []) =>
    new Counter({ name, help, labelNames, registers });
  return {
    state: gauge(
      'nlb_host_state',
      'This host state as nlb query reports it: 1 for the current state, 0 for the others',
      ['state'],
    ),
    converged: gauge(
      'nlb_converged',
      'Whether every member reports the same view, config and map (1) or not (0)',
    ),
    members: gauge(
      'nlb_members',
      'Hosts in this host membership view, itself included when it takes part',
    ),
    defaultHost: gauge(
      'nlb_default_host',
      'The default host id (the lowest member), 0 when this host is in no view',
    ),
    convergences: counter('nlb_convergences_total', 'Convergences completed since nlbd started'),
    lastConvergence: gauge(
      'nlb_last_convergence_seconds',
      'How long the last convergence took, from the change to agreement',
    ),
    heartbeatsSent: counter('nlb_heartbeats_sent_total', 'Heartbeats this host sent'),
    heartbeatsReceived: counter(
      'nlb_heartbeats_received_total',
      'Valid heartbeats received from peers',
    ),
    decisionsSkipped: counter(
      'nlb_decisions_skipped_total',
      'Routine heartbeats (nothing new announced, converged) that did not run the decision again',
    ),
    decisionsBatched: counter(
      'nlb_decisions_batched_total',
      'Heartbeats that left the decision to the next of a burst queued behind them',
    ),
    heartbeatsRejected: counter(
      'nlb_heartbeats_rejected_total',
      'Heartbeats dropped unread, by reason (bad MAC, foreign cluster, stale, malformed...)',
      ['reason'],
    ),
    heartbeatsWithheld: counter(
      'nlb_heartbeats_withheld_total',
      'Heartbeats not sent because the kernel did not hold the decided ownership yet',
    ),
    dataplaneErrors: counter(
      'nlb_dataplane_errors_total',
      'Failed data plane operations (program, flush, lease refresh, conntrack)',
    ),
    programSeconds: gauge(
      'nlb_program_seconds',
      'Decision to kernel programmed, for the last ownership change and its p99',
      ['quantile'],
    ),
    scrapeErrors: gauge(
      'nlb_scrape_errors',
      'Parts of this scrape that could not be read (1): counters or connections',
      ['part'],
    ),
  };
}

/** Per port rule: buckets, rule state, traffic through the filter, connections. */
function defineRuleMetrics(registers: Registry[]) {
  return {
    bucketsOwned: new Gauge({
      name: 'nlb_buckets_owned',
      help: 'Buckets of the port rule this host takes new flows for',
      labelNames: ruleLabels,
      registers,
    }),
    ruleEnabled: new Gauge({
      name: 'nlb_rule_state',
      help: 'The port rule state on this host: 1 for the current one (enabled, draining, disabled)',
      labelNames: [...ruleLabels, 'state'],
      registers,
    }),
    packets: new Counter({
      name: 'nlb_rule_packets_total',
      help: 'Packets to the port rule the filter accepted, dropped, answered with a TCP reset, or (routed mode) forwarded to the owner or given a second chance',
      labelNames: [...ruleLabels, 'verdict'],
      registers,
    }),
    bytes: new Counter({
      name: 'nlb_rule_bytes_total',
      help: 'Bytes to the port rule the filter accepted, dropped, answered with a TCP reset, or (routed mode) forwarded to the owner or given a second chance',
      labelNames: [...ruleLabels, 'verdict'],
      registers,
    }),
    uncoveredPackets: new Counter({
      name: 'nlb_uncovered_packets_total',
      help: 'Packets to a cluster IP that no port rule covers (the default host takes them)',
      labelNames: ['verdict'],
      registers,
    }),
    leaseExpired: new Counter({
      name: 'nlb_lease_expired_packets_total',
      help: 'Packets dropped because the kernel lease ran out (nlbd stopped refreshing it)',
      registers,
    }),
    healthy: new Gauge({
      name: 'nlb_rule_healthy',
      help: "The port rule's health check passes on this host (1; also 1 without a check), 0 when it fails",
      labelNames: ruleLabels,
      registers,
    }),
    failingOpen: new Gauge({
      name: 'nlb_rule_failing_open',
      help: 'Every host taking the port rule is unhealthy, so it serves as if all were healthy (1)',
      labelNames: ruleLabels,
      registers,
    }),
    loadWeight: new Gauge({
      name: 'nlb_rule_load_weight',
      help: "This host's load weight for the port rule now: the reported one (agent check), else the config's",
      labelNames: ruleLabels,
      registers,
    }),
    probeLatency: new Gauge({
      name: 'nlb_health_probe_latency_seconds',
      help: "The last health probe's duration for the port rule (absent without a check)",
      labelNames: [...ruleLabels, 'result'],
      registers,
    }),
    connections: new Gauge({
      name: 'nlb_connections',
      help: 'Established connections this host holds for the port rule (conntrack)',
      labelNames: ruleLabels,
      registers,
    }),
  };
}

/** Counters are reset before each collection, so setting one is adding the daemon's total. */
function setCounter(
  counter: Counter<string>,
  value: number,
  labels?: Record<string, string>,
): void {
  if (labels === undefined) counter.inc(value);
  else counter.inc(labels, value);
}

function fillHost(m: NlbMetrics, target: ControlTarget): void {
  const status = target.status();
  const details = target.details();
  const driver = target.driverStats();
  for (const name of reportedStates) {
    m.state.set({ state: name }, status.state === name ? 1 : 0);
  }
  m.converged.set(status.converged ? 1 : 0);
  m.members.set(status.members.length);
  m.defaultHost.set(status.defaultHost ?? 0);
  setCounter(m.convergences, details.counters.convergences);
  m.lastConvergence.set(details.counters.lastConvergenceMs / 1000);
  setCounter(m.heartbeatsSent, details.counters.heartbeatsSent);
  setCounter(m.heartbeatsReceived, details.counters.heartbeatsReceived);
  setCounter(m.decisionsSkipped, details.counters.decisionsSkipped);
  setCounter(m.decisionsBatched, details.counters.decisionsBatched);
  for (const [reason, count] of Object.entries(details.heartbeatsRejected)) {
    setCounter(m.heartbeatsRejected, count, { reason });
  }
  setCounter(m.heartbeatsWithheld, driver.heartbeatsWithheld);
  setCounter(m.dataplaneErrors, driver.dataplaneErrors);
  if (driver.program.lastMs !== null) {
    m.programSeconds.set({ quantile: 'last' }, driver.program.lastMs / 1000);
  }
  if (driver.program.p99Ms !== null) {
    m.programSeconds.set({ quantile: '0.99' }, driver.program.p99Ms / 1000);
  }
}

function fillRules(
  m: NlbMetrics,
  target: ControlTarget,
  counters: DataplaneCounters | undefined,
  conns: readonly BucketConnections[] | undefined,
): void {
  const status = target.status();
  const details = target.details();
  target.config.cluster.portRules.forEach((rule, i) => {
    const labels = {
      rule: String(i),
      vip: rule.vip === 'all' ? 'all' : rule.vip.text,
      ports: portsText(rule),
      protocol: rule.protocol,
    };
    m.bucketsOwned.set(labels, status.ownership.rules[i]?.owned.length ?? 0);
    const ruleState = details.ruleStates[i] ?? 'enabled';
    for (const name of ['enabled', 'draining', 'disabled']) {
      m.ruleEnabled.set({ ...labels, state: name }, ruleState === name ? 1 : 0);
    }
    const health = details.ruleHealth[i];
    m.healthy.set(labels, health?.healthy === false ? 0 : 1);
    m.failingOpen.set(labels, health?.failingOpen === true ? 1 : 0);
    m.loadWeight.set(labels, health?.loadWeight ?? target.config.host.rules[i]?.loadWeight ?? 0);
    const last = target.health?.()[i]?.last;
    if (last !== undefined && last !== null) {
      const result = last.ok ? 'ok' : 'failed';
      m.probeLatency.set({ ...labels, result }, last.latencyMs / 1000);
    }
    const ruleCounters = counters?.rules[i];
    if (ruleCounters !== undefined) {
      for (const verdict of ['accepted', 'dropped', 'reset'] as const) {
        setCounter(m.packets, ruleCounters[verdict].packets, { ...labels, verdict });
        setCounter(m.bytes, ruleCounters[verdict].bytes, { ...labels, verdict });
      }
      // Routed mode: sent on to the owner, or back to the previous owner (second chance).
      for (const [verdict, value] of [
        ['forwarded', ruleCounters.forwarded],
        ['second_chance', ruleCounters.secondChance],
      ] as const) {
        if (value === undefined) continue;
        setCounter(m.packets, value.packets, { ...labels, verdict });
        setCounter(m.bytes, value.bytes, { ...labels, verdict });
      }
    }
    if (conns !== undefined) {
      m.connections.set(
        labels,
        conns.filter((c) => c.rule === i).reduce((sum, c) => sum + c.connections, 0),
      );
    }
  });
}

/**
 * The limits of the metrics listener. A scrape is one small GET from one or two Prometheus
 * servers, sent at once: 2 s to send it is many round trips, 4 connections per address leave
 * room for a scraper and a person with curl, and 32 in all is far more than scrapers need. A
 * scrape not answered within 10 s (Prometheus' default scrape timeout) has been given up by
 * its scraper, or is a client that does not read: its connection is closed either way.
 */
export const metricsLimitsDefault: GateLimits = {
  connectionsMax: 32,
  perPeerMax: 4,
  requestDeadlineMs: 2_000,
  answerDeadlineMs: 5_000,
  busyDeadlineMs: 10_000,
};

/** Node's own limits on an HTTP request, as tight as one small GET allows. */
const metricsHttpOptions: http.ServerOptions = {
  headersTimeout: metricsLimitsDefault.requestDeadlineMs,
  requestTimeout: metricsLimitsDefault.requestDeadlineMs + 1_000,
  keepAliveTimeout: 1_000,
  connectionsCheckingInterval: 250,
  maxHeaderSize: 8 * 1024,
};

/**
 * The optional HTTP listener (`nlbd --metrics-listen`): GET /metrics answers the exposition
 * text, anything else 404; every answer closes the connection. It binds exactly where told; it
 * has no authentication (metrics are read-only), so bind it to a management address or loopback.
 */
export async function listenMetrics(
  metrics: Metrics,
  address: string,
  port: number,
  limits: GateLimits = metricsLimitsDefault,
): Promise<http.Server> {
  const gate = new ConnectionGate(limits);
  const server = http.createServer(metricsHttpOptions, (request, response) => {
    const socket = request.socket;
    if (!gate.requestReceived(socket)) {
      // Not waiting for a request: refused, timed out, or a second request on one connection.
      socket.destroy();
      return;
    }
    // One request per connection: Node closes it once this answer is written.
    response.setHeader('connection', 'close');
    response.once('finish', () => gate.answered(socket));
    const url = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' || url !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' });
      response.end('nlbd serves GET /metrics only\n');
      return;
    }
    metrics.text().then(
      (body) => {
        response.writeHead(200, { 'content-type': metrics.contentType });
        response.end(body);
      },
      (error: unknown) => {
        response.writeHead(500, { 'content-type': 'text/plain' });
        response.end(`${errorText(error)}\n`);
      },
    );
  });
  server.on('connection', (socket: net.Socket) => {
    // A peer over its cap is closed at once: a scraper never needs that many connections.
    if (gate.admit(socket) === 'refused') {
      socket.destroy();
    }
  });
  server.on('close', () => gate.closeAll());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
