// `nlb query --cluster`: the whole cluster in one table, one row per host, each host's nlbd
// asked at once (hosts found by resolveCluster, ../cluster.ts): its state, weight and owned
// buckets per port rule, the connections it holds (queryport all:all), the members it sees, its
// map digest and whether it converged. A host that cannot be asked is a row saying so, with the
// reason; the others are still shown. When the hosts that take part disagree (other members or
// another map), a note under the table says who sees what.
//
// --json (ClusterQueryData):
//   { "cluster": "web",
//     "hosts": [ { "hostId": 1, "where": "/run/nlb/nlbd-web-1.sock", "ok": true,
//                  "query": <QueryData, as `nlb query --json` without `socket`>,
//                  "connections": { "total": 12 | null, "rules": [12, null], "error": null } },
//                { "hostId": 3, "where": "10.0.0.13:2504" | null, "ok": false,
//                  "unreachable": true, "error": { "message": "...", "hint": "..." } } ],
//     "answered": 2,
//     "agree": true,           // the answering hosts that take part see one membership and map
//     "disagreement": null,    // or who sees what, as the note says
//     "converged": false }     // every host answered, they agree, and each that takes part
//                              // (one at least) converged
// `connections.rules[i]` is rule i's count; null where the host could not count (error says why).
// Exit code: 0 when every host answered, 1 when any did not (the table is printed all the same).
import { type ClusterLinks, type HostAnswer, askCluster, checkIdentity } from '../cluster.js';
import { exitCodes } from '../exit-codes.js';
import type { QueryData, QueryRule } from '../../control/protocol.js';
import { type CommandOutput, table } from '../render.js';

/** Connections one host holds, per port rule, from its conntrack (queryport all:all). */
export interface ClusterConnections {
  /** The sum over the rules; null when any rule's count is unknown. */
  readonly total: number | null;
  /** By rule index; null for a rule the host could not count. */
  readonly rules: readonly (number | null)[];
  /** Why counts are missing, or null. */
  readonly error: string | null;
}

export type ClusterQueryHost =
  | {
      readonly hostId: number;
      readonly where: string;
      readonly ok: true;
      readonly query: QueryData;
      readonly connections: ClusterConnections;
    }
  | {
      readonly hostId: number;
      readonly where: string | null;
      readonly ok: false;
      readonly unreachable: boolean;
      readonly error: { readonly message: string; readonly hint: string };
    };

export interface ClusterQueryData {
  readonly cluster: string;
  readonly hosts: readonly ClusterQueryHost[];
  readonly answered: number;
  readonly agree: boolean;
  readonly disagreement: string | null;
  readonly converged: boolean;
}

/** The spec that names every port rule: queryport with it counts every rule's connections. */
const everyRule = 'all:all';

function connectionsOf(answer: HostAnswer<'queryport'>, rules: number): ClusterConnections {
  if (!answer.ok) return { total: null, rules: new Array(rules).fill(null), error: answer.error };
  const counts = new Array<number | null>(rules).fill(null);
  for (const rule of answer.data.rules) {
    if (rule.rule < rules) counts[rule.rule] = rule.connections;
  }
  const error =
    answer.data.code === 'not found' ? answer.data.message : answer.data.connectionsError;
  const total = counts.some((c) => c === null)
    ? null
    : counts.reduce<number>((sum, c) => sum + (c ?? 0), 0);
  return { total, rules: counts, error };
}

/** One row per host from the two answers each host gave. */
export function clusterHosts(
  queries: readonly HostAnswer<'query'>[],
  ports: readonly HostAnswer<'queryport'>[],
): ClusterQueryHost[] {
  return queries.map((asked, i): ClusterQueryHost => {
    const answer = checkIdentity(asked);
    if (!answer.ok) {
      const { hostId, where, unreachable } = answer;
      return {
        hostId,
        where,
        ok: false,
        unreachable,
        error: { message: answer.error, hint: answer.hint },
      };
    }
    const connections = connectionsOf(ports[i]!, answer.data.rules.length);
    return {
      hostId: answer.hostId,
      where: answer.where,
      ok: true,
      query: answer.data,
      connections,
    };
  });
}

function takesPart(query: QueryData): boolean {
  return query.state !== 'stopped' && query.state !== 'suspended';
}

/** Who sees what, when the answering hosts that take part do not all see the same. */
export function disagreement(hosts: readonly ClusterQueryHost[]): string | null {
  const views = new Map<string, number[]>();
  for (const host of hosts) {
    if (!host.ok || !takesPart(host.query)) continue;
    const members = host.query.members.join(',') || '-';
    const key = `members ${members}, map ${host.query.mapDigest.slice(0, 8)}`;
    views.set(key, [...(views.get(key) ?? []), host.hostId]);
  }
  if (views.size <= 1) return null;
  return [...views]
    .map(
      ([view, ids]) =>
        `${ids.length === 1 ? 'host' : 'hosts'} ${ids.join(', ')} ${ids.length === 1 ? 'sees' : 'see'} ${view}`,
    )
    .join('; ');
}

export function clusterQueryData(cluster: string, hosts: ClusterQueryHost[]): ClusterQueryData {
  const disagree = disagreement(hosts);
  const answered = hosts.filter((h) => h.ok).length;
  const converged =
    answered === hosts.length &&
    disagree === null &&
    hosts.some((h) => h.ok && takesPart(h.query)) &&
    hosts.every((h) => h.ok && (!takesPart(h.query) || h.query.converged));
  return { cluster, hosts, answered, agree: disagree === null, disagreement: disagree, converged };
}

/** A rule's weight: the load weight, or `pN` (handling priority) for a single-host rule. */
function weightText(rule: QueryRule): string {
  if (rule.mode === 'single') return `p${rule.handlingPriority}`;
  return rule.mode === 'disabled' ? '-' : String(rule.loadWeight);
}

function ownedText(rule: QueryRule): string {
  const owned = `${rule.owned.length}/${rule.buckets}`;
  return rule.state === 'enabled' ? owned : `${owned} ${rule.state}`;
}

/** Cells for a host that answered; '' for one that did not. */
function cell(render: (host: Extract<ClusterQueryHost, { ok: true }>) => string) {
  return (host: ClusterQueryHost): string => (host.ok ? render(host) : '');
}

export function renderClusterQuery(data: ClusterQueryData): CommandOutput<ClusterQueryData> {
  const failed = data.hosts.filter((h) => !h.ok);
  const rules = Math.max(0, ...data.hosts.map((h) => (h.ok ? h.query.rules.length : 0)));
  const notes: string[] = [];
  if (rules > 1) {
    notes.push(
      'weight and owned are per port rule (rule 0 first); pN: handling priority of a single-host rule',
    );
  }
  if (data.disagreement !== null) {
    notes.push(`note: the hosts disagree: ${data.disagreement} (converging, or partitioned)`);
  }
  const hints = [
    ...new Set(failed.flatMap((h) => (h.ok || h.error.hint === '' ? [] : [h.error.hint]))),
  ];
  notes.push(...hints.map((hint) => `hint: ${hint}`));
  notes.push(
    `cluster ${data.cluster}: ${data.answered} of ${data.hosts.length} hosts answered` +
      (data.converged ? ', converged' : ''),
  );
  const human = table<ClusterQueryHost>(
    [
      { header: 'host', cell: (h) => String(h.hostId), align: 'right' },
      { header: 'where', cell: (h) => h.where ?? '-' },
      {
        header: 'state',
        cell: (h) =>
          h.ok
            ? `${h.query.state}${h.query.keptOut === null ? '' : ' (kept out)'}`
            : h.unreachable
              ? 'unreachable'
              : 'failed',
      },
      { header: 'weight', cell: cell((h) => h.query.rules.map(weightText).join(', ')) },
      { header: 'owned', cell: cell((h) => h.query.rules.map(ownedText).join(', ')) },
      {
        header: 'conns',
        cell: cell((h) => (h.connections.total === null ? '-' : String(h.connections.total))),
        align: 'right',
      },
      { header: 'members', cell: cell((h) => h.query.members.join(',') || '-') },
      { header: 'map', cell: cell((h) => h.query.mapDigest.slice(0, 8)) },
      { header: 'converged', cell: cell((h) => (h.query.converged ? 'yes' : 'no')) },
      ...(failed.length === 0
        ? []
        : [{ header: 'reason', cell: (h: ClusterQueryHost) => (h.ok ? '' : h.error.message) }]),
    ],
    data.hosts,
    notes,
  );
  return {
    data,
    human,
    exitCode: failed.length === 0 ? exitCodes.ok : exitCodes.failed,
  };
}

/** Asks every host of `links` for its view and its connections, all at once. */
export async function queryCluster(links: ClusterLinks): Promise<CommandOutput<ClusterQueryData>> {
  const [queries, ports] = await Promise.all([
    askCluster(links, { verb: 'query' }),
    askCluster(links, { verb: 'queryport', spec: everyRule }),
  ]);
  return renderClusterQuery(clusterQueryData(links.cluster, clusterHosts(queries, ports)));
}
