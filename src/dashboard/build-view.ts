// From what every host answered (query, map, queryport all:all, params) to the one view the page
// draws. A pure function of its inputs: the aggregator gathers, this decides what is shown, and
// test/dashboard-view.test.ts checks it on answers made by the daemon's own handlers.
//
// The grid draws one host's map: the lowest host that answers, takes part and converged (every
// member then holds the same map), else the lowest that answers and takes part, else the lowest
// that answers. The others are compared with it, and where they differ the page says so
// (a disagreement) instead of hiding it behind one host's picture.
import type {
  MapData,
  MapRuleData,
  ParamsData,
  QueryData,
  QueryportData,
} from '../control/protocol.js';
import type {
  BucketCell,
  Convergence,
  DashboardEvent,
  DashboardView,
  Disagreement,
  HostCounters,
  HostHealth,
  HostView,
  RuleView,
} from './view.js';

/** Everything one host answered in one gather; `error` set when its query failed. */
export interface HostAnswers {
  readonly hostId: number;
  readonly where: string | null;
  readonly error: string | null;
  readonly query: QueryData | null;
  readonly map: MapData | null;
  readonly queryport: QueryportData | null;
  readonly params: ParamsData | null;
}

export interface Rate {
  readonly packetsPerSecond: number;
  readonly bytesPerSecond: number;
}

export interface ViewInputs {
  readonly cluster: string;
  readonly version: number;
  readonly gatheredAt: string;
  readonly answers: readonly HostAnswers[];
  readonly rates: ReadonlyMap<number, Rate>;
  readonly timeline: readonly Convergence[];
  readonly events: readonly DashboardEvent[];
  readonly tokenHint: string;
}

type RuleCounters = NonNullable<ParamsData['counters']>['rules'][number];

type Answered = HostAnswers & { readonly query: QueryData };

const takingPart = new Set(['converged', 'converged as default', 'converging', 'draining']);

function answered(answers: readonly HostAnswers[]): Answered[] {
  return answers.filter((a): a is Answered => a.error === null && a.query !== null);
}

function hostList(ids: readonly number[]): string {
  const sorted = [...ids].sort((a, b) => a - b);
  return `${sorted.length === 1 ? 'host' : 'hosts'} ${sorted.join(', ')}`;
}

/** Sorted bucket numbers as ranges: `0-5, 9, 12-14`. */
export function rangesText(buckets: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < buckets.length;) {
    let j = i;
    while (j + 1 < buckets.length && buckets[j + 1] === buckets[j]! + 1) j++;
    parts.push(j === i ? `${buckets[i]}` : `${buckets[i]}-${buckets[j]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

/** The host whose map the grid draws (see the header comment). */
export function mapSource(answers: readonly HostAnswers[]): Answered | undefined {
  const withMap = answered(answers)
    .filter((a) => a.map !== null)
    .sort((a, b) => a.hostId - b.hostId);
  const part = withMap.filter((a) => takingPart.has(a.query.state));
  return part.find((a) => a.query.converged) ?? part[0] ?? withMap[0];
}

function counters(params: ParamsData | null, rate: Rate | undefined): HostCounters | null {
  const c = params?.counters;
  if (c === null || c === undefined) return null;
  const sum = (pick: (r: RuleCounters) => number): number =>
    c.rules.reduce((n, r) => n + pick(r), 0);
  return {
    acceptedPackets: sum((r) => r.accepted.packets),
    acceptedBytes: sum((r) => r.accepted.bytes),
    droppedPackets: sum((r) => r.dropped.packets),
    packetsPerSecond: rate?.packetsPerSecond ?? null,
    bytesPerSecond: rate?.bytesPerSecond ?? null,
  };
}

function connectionsOf(queryport: QueryportData | null): number | null {
  const known = (queryport?.rules ?? []).map((r) => r.connections).filter((n) => n !== null);
  return known.length === 0 ? null : known.reduce((n, c) => n + c, 0);
}

function health(
  a: HostAnswers,
  seenAs: Readonly<Record<string, string>>,
): { health: HostHealth; healthText: string } {
  const deadBy = Object.entries(seenAs)
    .filter(([, view]) => view === 'dead')
    .map(([id]) => Number(id));
  const q = a.query;
  if (a.error !== null || q === null) {
    const error = a.error ?? 'no answer';
    return deadBy.length > 0
      ? { health: 'dead', healthText: `declared dead by ${hostList(deadBy)}; ${error}` }
      : { health: 'unreachable', healthText: error };
  }
  if (q.keptOut !== null) return { health: 'problem', healthText: `kept out: ${q.keptOut}` };
  if (!q.dataplaneInSync) {
    return {
      health: 'problem',
      healthText: 'the kernel does not hold what it decided yet (heartbeats withheld)',
    };
  }
  if (deadBy.length > 0) {
    return {
      health: 'problem',
      healthText: `answers, but ${hostList(deadBy)} took it for dead (a partition?)`,
    };
  }
  const sick = q.rules.filter((r) => !r.health.healthy);
  if (sick.length > 0 && q.state !== 'stopped' && q.state !== 'suspended') {
    const rules = sick
      .map((r) => `rule ${r.rule}${r.health.last === null ? '' : ` (${r.health.last.detail})`}`)
      .join(', ');
    return {
      health: 'problem',
      healthText: sick.some((r) => r.health.failingOpen)
        ? `service unhealthy: ${rules}; every host is, so the rule fails open`
        : `service unhealthy: ${rules}; its buckets went to the healthy hosts`,
    };
  }
  switch (q.state) {
    case 'stopped':
    case 'suspended':
      return { health: 'stopped', healthText: `${q.state}: takes no part` };
    case 'draining':
      return { health: 'draining', healthText: 'drainstopping: no new flows, open ones finish' };
    case 'converging':
      return { health: 'converging', healthText: `converging with ${hostList(q.members)}` };
    default:
      return { health: 'ok', healthText: `${q.state} with ${hostList(q.members)}` };
  }
}

function hostViews(answers: readonly HostAnswers[], rates: ReadonlyMap<number, Rate>): HostView[] {
  const live = answered(answers);
  const known = new Set(answers.map((a) => a.hostId));
  // Hosts the answering ones heard but the dashboard was not given: listed, not reached.
  const heard = new Map<number, string>();
  for (const a of live) {
    for (const peer of a.query.peers) {
      if (!known.has(peer.id) && !heard.has(peer.id)) {
        heard.set(peer.id, `heard by host ${a.hostId}; the dashboard does not reach it`);
      }
    }
  }
  const all: HostAnswers[] = [
    ...answers,
    ...[...heard].map(([hostId, error]) => ({
      hostId,
      where: null,
      error,
      query: null,
      map: null,
      queryport: null,
      params: null,
    })),
  ];
  return all
    .sort((a, b) => a.hostId - b.hostId)
    .map((a): HostView => {
      const seenAs: Record<string, string> = {};
      for (const other of live) {
        const peer = other.query.peers.find((p) => p.id === a.hostId);
        if (other.hostId !== a.hostId && peer !== undefined) seenAs[other.hostId] = peer.view;
      }
      const q = a.error === null ? a.query : null;
      return {
        hostId: a.hostId,
        where: a.where,
        reachable: q !== null,
        error: q === null ? (a.error ?? 'no answer') : null,
        state: q?.state ?? null,
        converged: q?.converged ?? null,
        members: q?.members ?? null,
        mapDigest: q?.mapDigest ?? null,
        incarnation: q?.incarnation ?? null,
        keptOut: q?.keptOut ?? null,
        dataplaneInSync: q?.dataplaneInSync ?? null,
        seenAs,
        ...health(a, seenAs),
        counters: q === null ? null : counters(a.params, rates.get(a.hostId)),
        connections: q === null ? null : connectionsOf(a.queryport),
      };
    });
}

/** Per rule and bucket, why the hosts disagree about it: `${rule}/${bucket}` → lines. */
type CellNotes = Map<string, string[]>;

function note(notes: CellNotes, rule: number, bucket: number, text: string): void {
  const key = `${rule}/${bucket}`;
  notes.set(key, [...(notes.get(key) ?? []), text]);
}

/** Converged hosts that take part but hold another map than the source. */
function mapDisagreements(
  source: Answered,
  live: readonly Answered[],
  notes: CellNotes,
): Disagreement[] {
  const converged = live.filter(
    (a) => a.map !== null && a.query.converged && takingPart.has(a.query.state),
  );
  const groups = new Map<string, Answered[]>();
  for (const a of converged)
    groups.set(a.map!.mapDigest, [...(groups.get(a.map!.mapDigest) ?? []), a]);
  if (groups.size < 2) return [];
  const describe = (group: readonly Answered[]): string => {
    const map = group[0]!.map!;
    return `${hostList(group.map((a) => a.hostId))} ${group.length === 1 ? 'holds' : 'hold'} map ${map.mapDigest.slice(0, 8)} (members ${map.members.join(', ') || 'none'})`;
  };
  const buckets: { rule: number; buckets: number[] }[] = [];
  for (const a of converged) {
    if (a.map!.mapDigest === source.map!.mapDigest) continue;
    a.map!.rules.forEach((rule, i) => {
      const ours = source.map!.rules[i];
      const differ = rule.owners.flatMap((owner, b) => (ours?.owners[b] === owner ? [] : [b]));
      for (const b of differ) {
        note(notes, i, b, `host ${a.hostId} says owner ${rule.owners[b] ?? 'none'}`);
      }
      if (differ.length > 0) buckets.push({ rule: i, buckets: differ });
    });
  }
  const differing = buckets.map((r) => `rule ${r.rule} buckets ${rangesText(r.buckets)}`);
  return [
    {
      text: `the hosts do not hold the same map: ${[...groups.values()].map(describe).join('; ')}${differing.length === 0 ? '' : `; owners differ in ${differing.join(', ')}`}`,
      hosts: converged.map((a) => a.hostId),
      buckets,
    },
  ];
}

/** Buckets a host hears claimed against the map (two claimants, or not the owner). */
function claimDisagreements(live: readonly Answered[], notes: CellNotes): Disagreement[] {
  const found: Disagreement[] = [];
  for (const a of live) {
    const buckets: { rule: number; buckets: number[] }[] = [];
    const examples: string[] = [];
    for (const rule of a.queryport?.rules ?? []) {
      const bad = rule.buckets.filter((b) => b.disagreement);
      for (const b of bad) {
        const text = `host ${a.hostId} hears claims by ${b.claimedBy.join(', ') || 'nobody'} (owner ${b.owner ?? 'none'})`;
        note(notes, rule.rule, b.bucket, text);
        if (examples.length < 3)
          examples.push(
            `rule ${rule.rule} bucket ${b.bucket}: ${b.claimedBy.join(' and ') || 'nobody'}`,
          );
      }
      if (bad.length > 0) buckets.push({ rule: rule.rule, buckets: bad.map((b) => b.bucket) });
    }
    if (buckets.length === 0) continue;
    const count = buckets.reduce((n, r) => n + r.buckets.length, 0);
    found.push({
      text: `host ${a.hostId} hears ${count} ${count === 1 ? 'bucket' : 'buckets'} claimed against the map (${examples.join('; ')}${count > examples.length ? '; ...' : ''})`,
      hosts: [a.hostId],
      buckets,
    });
  }
  return found;
}

function cellsOf(rule: MapRuleData, live: readonly Answered[], notes: CellNotes): BucketCell[] {
  const inFlight = new Set(rule.inFlight);
  const perHost = live.map((a) => ({
    hostId: a.hostId,
    buckets: a.queryport?.rules.find((r) => r.rule === rule.rule)?.buckets,
  }));
  return rule.owners.map((owner, b): BucketCell => {
    const byHost: Record<string, number> = {};
    let total: number | null = null;
    for (const { hostId, buckets } of perHost) {
      const n = buckets?.[b]?.connections;
      if (n === null || n === undefined) continue;
      total = (total ?? 0) + n;
      if (n > 0) byHost[hostId] = n;
    }
    return {
      bucket: b,
      owner,
      claims: rule.claims[b] ?? [],
      inFlight: inFlight.has(b),
      connections: total,
      connectionsByHost: byHost,
      disagreement: notes.get(`${rule.rule}/${b}`)?.join('; ') ?? null,
    };
  });
}

/** The view of the cluster from one gather's answers and what the aggregator keeps. */
export function buildView(inputs: ViewInputs): DashboardView {
  const live = answered(inputs.answers);
  const source = mapSource(inputs.answers);
  const notes: CellNotes = new Map();
  const disagreements =
    source === undefined
      ? []
      : [...mapDisagreements(source, live, notes), ...claimDisagreements(live, notes)];
  const rules = (source?.map?.rules ?? []).map((rule): RuleView => {
    const owners: Record<string, number> = {};
    for (const owner of rule.owners) {
      if (owner !== null) owners[owner] = (owners[owner] ?? 0) + 1;
    }
    const states: Record<string, string> = {};
    for (const a of live) {
      const state = a.map?.rules[rule.rule]?.state;
      if (state !== undefined) states[a.hostId] = state;
    }
    return {
      rule: rule.rule,
      vip: rule.vip,
      ports: rule.ports,
      protocol: rule.protocol,
      mode: rule.mode,
      affinity: rule.affinity,
      buckets: rule.buckets,
      states,
      cells: cellsOf(rule, live, notes),
      owners,
    };
  });
  const part = live.filter((a) => takingPart.has(a.query.state));
  return {
    cluster: inputs.cluster,
    version: inputs.version,
    gatheredAt: inputs.gatheredAt,
    hosts: hostViews(inputs.answers, inputs.rates),
    mapSource: source?.hostId ?? null,
    rules,
    converged:
      part.length > 0 && part.every((a) => a.query.converged) && disagreements.length === 0,
    disagreements,
    timeline: inputs.timeline,
    events: inputs.events,
    tokenHint: inputs.tokenHint,
  };
}
