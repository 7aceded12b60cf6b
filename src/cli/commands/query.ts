// `nlb query`: this host's view of the cluster, from its nlbd over the control socket
// (src/control/protocol.ts): state, members, default host, convergence, the buckets it owns per
// port rule, and its peers as it sees them. Which daemon: see ../local-socket.ts and control.ts.
// `nlb query --cluster`: every host of the cluster in one table (cluster-query.ts).
import type { Command } from 'commander';
import type { QueryData, QueryPeer, QueryRule } from '../../control/protocol.js';
import { resolveCluster } from '../cluster.js';
import type { CliContext } from '../program.js';
import { type CommandOutput, type VerbOutput, fields, renderHuman, table } from '../render.js';
import { queryCluster } from './cluster-query.js';
import { type ClusterOptions, addClusterOption } from './cluster-verbs.js';
import { addDaemonOptions, askLink, resolveDaemon } from './control.js';

/** `0-19, 40-49` for a sorted bucket list. */
export function bucketRanges(buckets: readonly number[]): string {
  const parts: string[] = [];
  let start: number | undefined;
  let previous: number | undefined;
  for (const bucket of [...buckets, Number.NaN]) {
    if (previous !== undefined && bucket === previous + 1) {
      previous = bucket;
      continue;
    }
    if (start !== undefined && previous !== undefined) {
      parts.push(start === previous ? String(start) : `${start}-${previous}`);
    }
    start = bucket;
    previous = bucket;
  }
  return parts.length === 0 ? '-' : parts.join(', ');
}

export type QueryOutputData = QueryData & { readonly socket: string };

/** `50`, or `80 (reported)` when the service's agent check set it. */
function weightText(rule: QueryRule): string {
  return rule.health.reportedWeight === null
    ? String(rule.loadWeight)
    : `${rule.loadWeight} (reported)`;
}

/** `-` without a check, `ok`, `UNHEALTHY`, with `failing open` when every host is unhealthy. */
function healthText(rule: QueryRule): string {
  const h = rule.health;
  const verdict = h.check === null && h.healthy ? '-' : h.healthy ? 'ok' : 'UNHEALTHY';
  return h.failingOpen ? `${verdict}, failing open` : verdict;
}

export function renderQuery(data: QueryOutputData): CommandOutput<QueryOutputData> {
  const rules = renderHuman(
    table<QueryRule>(
      [
        { header: 'rule', cell: (r) => String(r.rule), align: 'right' },
        { header: 'cluster ip', cell: (r) => r.vip },
        { header: 'ports', cell: (r) => r.ports },
        { header: 'protocol', cell: (r) => r.protocol },
        { header: 'mode', cell: (r) => r.mode },
        { header: 'state', cell: (r) => r.state },
        { header: 'weight', cell: weightText, align: 'right' },
        { header: 'health', cell: healthText },
        { header: 'owned', cell: (r) => `${r.owned.length}/${r.buckets}`, align: 'right' },
        { header: 'buckets', cell: (r) => bucketRanges(r.owned) },
        { header: 'orphan', cell: (r) => bucketRanges(r.orphan) },
      ],
      data.rules,
    ),
  ).trimEnd();
  const checks = data.rules
    .filter((r) => r.health.check !== null || r.health.agent !== null)
    .map((r) => {
      const last = r.health.last;
      const agent = r.health.agent;
      return [
        `rule ${r.rule} health: ${r.health.check ?? 'none'}`,
        last === null
          ? ''
          : `; last ${last.ok ? 'ok' : 'FAILED'}: ${last.detail} in ${last.latencyMs} ms`,
        `; ${r.health.successes} ok / ${r.health.failures} failed in a row`,
        agent === null
          ? ''
          : `\nrule ${r.rule} agent: ${agent.check}; read ${agent.reading ?? '-'}, in force ${agent.inForce ?? '-'}`,
      ].join('');
    });
  const peers =
    data.peers.length === 0
      ? 'no peer heard since nlbd started'
      : renderHuman(
          table<QueryPeer>(
            [
              { header: 'peer', cell: (p) => String(p.id), align: 'right' },
              { header: 'view', cell: (p) => p.view },
              { header: 'announced', cell: (p) => p.announced },
              { header: 'last heard', cell: (p) => `${p.lastHeardAgoMs} ms ago`, align: 'right' },
              { header: 'its members', cell: (p) => p.members.join(',') || '-' },
              ...(data.peers.some((p) => p.mismatch !== null)
                ? [{ header: 'mismatch', cell: (p: QueryPeer) => p.mismatch ?? '' }]
                : []),
            ],
            data.peers,
          ),
        ).trimEnd();
  const entries: [string, string][] = [
    ['host', `${data.hostId} (cluster ${data.cluster})`],
    ['state', data.state],
    ['members', data.members.length === 0 ? '-' : data.members.join(', ')],
    ['default host', data.defaultHost === null ? '-' : String(data.defaultHost)],
    ['converged', data.converged ? 'yes' : 'no'],
    ['map digest', data.mapDigest],
    [
      'data plane',
      data.dataplaneInSync
        ? 'in sync'
        : 'behind the decision: heartbeats withheld (see the nlbd log)',
    ],
  ];
  if (data.announced !== undefined) {
    entries.push([
      'routed',
      data.announced
        ? 'announced: FRR advertises the cluster IPs to the routers'
        : 'withdrawn: the routers send this host nothing new',
    ]);
  }
  if (data.keptOut !== null) {
    entries.push(['kept out', data.keptOut]);
  }
  return {
    data,
    human: fields(entries, [rules, ...(checks.length === 0 ? [] : ['', ...checks]), '', peers]),
  };
}

export async function query(options: ClusterOptions): Promise<VerbOutput> {
  if (options.cluster === true) return queryCluster(await resolveCluster(options, 'query'));
  // Local or remote (--host ADDR --token-file FILE): see control.ts.
  const link = await resolveDaemon(options);
  const data = await askLink(link, { verb: 'query' });
  return renderQuery({ ...data, socket: link.where });
}

export function register(program: Command, ctx: CliContext): void {
  addClusterOption(
    addDaemonOptions(
      program
        .command('query')
        .description("show this host's view of the cluster: state, members, buckets, peers"),
    ),
  )
    .addHelpText(
      'after',
      '\nWithout options: the nlbd socket in /run/nlb (in a lab, the daemon of this network\n' +
        'namespace). Examples:\n  nlb query\n  nlb query --lab demo --host 2 --json\n' +
        '  nlb lab exec h1 -- nlb query\n' +
        '  nlb query --host 10.0.0.12 --token-file /etc/nlb/control.token (remote control)\n' +
        '\nWith --cluster: one row per host of the cluster (state, weight and owned buckets per\n' +
        'rule, connections, members, map digest, converged), every nlbd asked at once; a host\n' +
        'that does not answer is a row saying why, and the exit code is then 1. Examples:\n' +
        '  nlb query --cluster --lab demo\n' +
        '  nlb query --cluster                  (this host, the local hosts of its cluster)\n' +
        '  nlb query --cluster --token-file /etc/nlb/control.token   (and its peers, remotely)\n' +
        '  nlb query --cluster --host 10.0.0.12 --token-file /etc/nlb/control.token\n',
    )
    .action(ctx.action((options: ClusterOptions) => query(options)));
}
