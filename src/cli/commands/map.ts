// `nlb map`: which host takes each client's new flows. For each client: the port rule covering
// the traffic, the client's bucket under that rule's affinity (the kernel-exact hash in
// src/core/flow.ts) and the owner of that bucket. Two sources for the owners:
//   live   the map a running nlbd holds (map-live.ts): the cluster's own, history included;
//          used whenever one answers (the local one, --socket, --lab NAME [--host ID],
//          --host ADDR --token-file F, or the nlbd of --config F);
//   model  the map `assign` gives when the --hosts listed form the cluster from scratch
//          (--hosts, --weights; needs --config F). A running cluster's map may differ from it:
//          minimal movement makes a map depend on the order hosts came and went.
// The output says which (`source`), and for a live map its digest, when it converged, and
// the buckets in flight while it converges. The lab tests check real connections land where
// this says.
import { type Command, Option } from 'commander';
import { type Address, type Endpoint, addressesEqual, formatEndpoint } from '../../core/address.js';
import type { Config, PortRule } from '../../core/config.js';
import type { PacketProtocol } from '../../core/flow.js';
import {
  type BucketMaps,
  type Prediction,
  type PredictionCluster,
  type PredictionReason,
  planBucketMaps,
  predictOwner,
} from '../../core/predict.js';
import { defaultSocketPath } from '../../control/paths.js';
import {
  loadConfigArgument,
  parseAddressArgument,
  parseHostIdsArgument,
  parsePortArgument,
} from '../arguments.js';
import { readClients, parseClientFlags } from '../clients.js';
import { NlbError, badArgument } from '../errors.js';
import type { CliContext } from '../program.js';
import { type CommandOutput, table } from '../render.js';
import type { ControlOptions } from './control.js';
import {
  type LiveMap,
  fetchLiveMap,
  inFlightText,
  liveCluster,
  liveMaps,
  namesDaemon,
} from './map-live.js';
import { parseWeights, plannedHosts } from './map-model.js';

export interface MapOptions extends ControlOptions {
  readonly config?: string;
  readonly client?: readonly string[];
  readonly clientsFile?: string;
  readonly vip?: string;
  readonly port?: string;
  readonly protocol: PacketProtocol;
  readonly hosts?: string;
  readonly weights?: string;
}

/** One client of `nlb map --json`. */
export interface MapRow {
  /** `ip:port`, IPv6 as `[addr]:port`, in canonical form. */
  readonly client: string;
  readonly rule: number | null;
  readonly mode: Prediction['mode'];
  readonly affinity: Prediction['affinity'];
  readonly bucket: number | null;
  /** null where the flow is dropped: the rule is disabled or nobody owns the bucket. */
  readonly host: number | null;
  readonly reason: PredictionReason;
  /** Live, converging: the bucket's claims are not yet `[host]` (it is moving). */
  readonly inFlight: boolean;
  /** Live: the hosts that claim the bucket now (take its new flows); null for the model. */
  readonly claimedBy: readonly number[] | null;
}

/** `nlb map --json`. */
export interface MapOutput {
  readonly source: 'live' | 'model';
  readonly cluster: string;
  /** Live: the nlbd that answered; null for the model. */
  readonly from: { readonly hostId: number; readonly where: string } | null;
  /** Live: the digest of the answering host's target map; null for the model. */
  readonly mapDigest: string | null;
  readonly converged: boolean | null;
  /** Live: ISO time the cluster last converged (null while converging). */
  readonly convergedAt: string | null;
  /** Live, converging: per rule, the buckets whose claims are not yet their owner. */
  readonly inFlight: readonly { readonly rule: number; readonly buckets: readonly number[] }[];
  /** The model's hosts; live, the members of the answering host's view. */
  readonly hosts: readonly number[];
  /** Why the model was used without --hosts (no nlbd answered for --config), or null. */
  readonly note: string | null;
  readonly clients: readonly MapRow[];
}

/**
 * The port predicted when --port is not given: 80 if the first port rule for this VIP and
 * protocol covers it (the common web case, and NLB's default all-ports rule), else that rule's
 * first port; 80 when no rule applies at all.
 */
export function defaultPort(
  cluster: PredictionCluster,
  vip: Address,
  protocol: PacketProtocol,
): number {
  const rule = cluster.portRules.find(
    (r) =>
      (r.vip === 'all' || addressesEqual(r.vip, vip)) &&
      (r.protocol === 'both' || r.protocol === protocol),
  );
  if (rule === undefined || (rule.portStart <= 80 && rule.portEnd >= 80)) {
    return 80;
  }
  return rule.portStart;
}

function describeRule(rule: PortRule): string {
  const ports =
    rule.portStart === rule.portEnd ? `${rule.portStart}` : `${rule.portStart}-${rule.portEnd}`;
  const vip = rule.vip === 'all' ? 'all cluster IPs' : rule.vip.text;
  return `${vip} port ${ports} ${rule.protocol}, ${rule.mode}, affinity ${rule.affinity}, ${rule.buckets} buckets`;
}

/** Where the owners come from: a live nlbd's map, or the model for the listed hosts. */
type MapSource =
  | { readonly kind: 'live'; readonly live: LiveMap }
  | {
      readonly kind: 'model';
      readonly config: Config;
      readonly hostIds: readonly number[];
      readonly weights: ReadonlyMap<number, number>;
      readonly note: string | null;
    };

const modelHint = 'or predict from scratch with --config F --hosts 1,2,3';

async function pickSource(options: MapOptions): Promise<MapSource> {
  const modelAsked = options.hosts !== undefined || options.weights !== undefined;
  const config =
    options.config === undefined ? undefined : await loadConfigArgument(options.config);
  if (modelAsked) {
    const flag = options.hosts === undefined ? '--weights' : '--hosts';
    if (config === undefined) {
      throw badArgument(
        flag,
        'predicts from scratch, which needs the cluster config',
        `give --config <file> (any host's config of the cluster) with ${flag}; without ${flag}, nlb map asks the live nlbd`,
      );
    }
    if (namesDaemon(options)) {
      throw badArgument(
        flag,
        'predicts from scratch; --socket, --lab, --host and --token-file ask a live nlbd',
        `give one or the other: ${flag} with --config for the model, or the daemon options for the live map`,
      );
    }
    const hostIds =
      options.hosts === undefined
        ? [config.host.id]
        : parseHostIdsArgument('--hosts', options.hosts);
    const weights =
      options.weights === undefined ? new Map<number, number>() : parseWeights(options.weights);
    for (const id of weights.keys()) {
      if (!hostIds.includes(id)) {
        throw badArgument(
          '--weights',
          `host ${id} is not a live host (live: ${hostIds.join(',')})`,
          `add it to --hosts, or drop it from --weights`,
        );
      }
    }
    return { kind: 'model', config, hostIds, weights, note: null };
  }
  if (config === undefined || namesDaemon(options)) {
    try {
      return { kind: 'live', live: await fetchLiveMap(options) };
    } catch (error) {
      if (error instanceof NlbError && !namesDaemon(options) && config === undefined) {
        throw new NlbError(
          error.code,
          error.message,
          `${error.hint}; ${modelHint}`,
          error.exitCode,
        );
      }
      throw error;
    }
  }
  // --config alone: the live map of that host's nlbd when it runs here, else the model for
  // that host alone, saying so.
  const socket = defaultSocketPath(config.cluster.name, config.host.id);
  try {
    return { kind: 'live', live: await fetchLiveMap({ socket }) };
  } catch (error) {
    if (!(error instanceof NlbError)) throw error;
    const note =
      `no live map (${error.message}): predicted from scratch for host ${config.host.id} alone; ` +
      'give --hosts for the live hosts, or run it where nlbd runs';
    return { kind: 'model', config, hostIds: [config.host.id], weights: new Map(), note };
  }
}

/** What a source gives the prediction: the config part, the owners, and the summary facts. */
interface Planned {
  readonly cluster: PredictionCluster;
  readonly maps: BucketMaps;
  readonly hostIds: readonly number[];
  /** `1 (weight 50), 2 (weight 50)` for the model, the members for a live map. */
  readonly hostText: (rule: number | null) => string;
  readonly claims: ((rule: number, bucket: number) => readonly number[]) | null;
  readonly inFlight: (rule: number, bucket: number) => boolean;
}

function plan(source: MapSource): Planned {
  if (source.kind === 'live') {
    const data = source.live.data;
    const inFlight = data.rules.map((rule) => new Set(rule.inFlight));
    return {
      cluster: liveCluster(data),
      maps: liveMaps(data),
      hostIds: data.members,
      hostText: () => data.members.join(', ') || 'none',
      claims: (rule, bucket) => data.rules[rule]?.claims[bucket] ?? [],
      inFlight: (rule, bucket) => inFlight[rule]?.has(bucket) ?? false,
    };
  }
  const cluster = source.config.cluster;
  const hosts = plannedHosts(source.config, source.hostIds, source.weights);
  return {
    cluster,
    // One `assign` per rule, then one hash per client.
    maps: planBucketMaps(cluster, hosts),
    hostIds: hosts.map((h) => h.id),
    hostText: (ruleIndex) =>
      hosts
        .map((h) => {
          if (ruleIndex === null) return `${h.id}`;
          const settings = h.rules[ruleIndex]!;
          return cluster.portRules[ruleIndex]!.mode === 'single'
            ? `${h.id} (priority ${settings.handlingPriority})`
            : `${h.id} (weight ${settings.loadWeight})`;
        })
        .join(', '),
    claims: null,
    inFlight: () => false,
  };
}

function sourceNotes(source: MapSource): string[] {
  if (source.kind === 'model') {
    return [
      source.note ??
        `model: the map hosts ${source.hostIds.join(',')} reach from scratch (a running cluster's may differ: without --hosts nlb map asks its nlbd)`,
    ];
  }
  const data = source.live.data;
  const notes = [
    `live map of cluster ${data.cluster} from host ${data.hostId} (${source.live.where}), digest ${data.mapDigest.slice(0, 16)}`,
  ];
  const moving = inFlightText(data);
  if (data.converged) {
    notes.push(`converged${data.convergedAt === null ? '' : ` at ${data.convergedAt}`}`);
  } else {
    notes.push(
      `CONVERGING: the map is changing${moving === undefined ? '' : `; buckets in flight: ${moving}`}`,
    );
  }
  return notes;
}

function summary(
  cluster: PredictionCluster,
  planned: Planned,
  traffic: string,
  rows: readonly MapRow[],
): string[] {
  const first = rows[0];
  const notes: string[] = [];
  const ruleIndex = first?.rule ?? null;
  if (first === undefined) {
    return notes;
  }
  const defaultHost = planned.maps.defaultHost;
  if (first.reason === 'no-rule') {
    notes.push(
      `${traffic}: no port rule covers it; the default host (${defaultHost ?? 'none'}) takes it`,
    );
  } else if (ruleIndex !== null) {
    const rule = cluster.portRules[ruleIndex]!;
    notes.push(`${traffic}: rule ${ruleIndex} (${describeRule(rule)})`);
    if (rule.mode === 'disabled') {
      notes.push('the rule is disabled: every host drops this traffic');
    }
  }
  notes.push(`live hosts: ${planned.hostText(ruleIndex)}; default host ${defaultHost ?? 'none'}`);
  // Per-host counts, so a large clients file shows the spread at a glance.
  const counts = new Map<number | null, number>();
  for (const row of rows) {
    counts.set(row.host, (counts.get(row.host) ?? 0) + 1);
  }
  const share = (n: number): string => `${((100 * n) / rows.length).toFixed(1)}%`;
  const parts = planned.hostIds.map(
    (id) => `host ${id}: ${counts.get(id) ?? 0} (${share(counts.get(id) ?? 0)})`,
  );
  const dropped = counts.get(null) ?? 0;
  if (dropped > 0) {
    parts.push(`dropped: ${dropped} (${share(dropped)})`);
  }
  notes.push(`clients: ${rows.length}; ${parts.join(', ')}`);
  return notes;
}

async function readClientArguments(options: MapOptions, ctx: CliContext): Promise<Endpoint[]> {
  const clients: Endpoint[] = parseClientFlags(options.client ?? []);
  if (options.clientsFile !== undefined) {
    await readClients(options.clientsFile, ctx.io, clients);
  }
  if (clients.length === 0) {
    throw badArgument(
      '--client',
      'no clients given',
      'give --client ip:port (repeatable) or --clients-file <path> (- for stdin)',
    );
  }
  return clients;
}

export async function map(options: MapOptions, ctx: CliContext): Promise<CommandOutput<MapOutput>> {
  const source = await pickSource(options);
  const planned = plan(source);
  const cluster = planned.cluster;
  const clusterName =
    source.kind === 'live' ? source.live.data.cluster : source.config.cluster.name;

  const vip =
    options.vip === undefined
      ? cluster.clusterIps[0]!
      : parseAddressArgument('--vip', options.vip, cluster.clusterIps[0]!.text);
  if (!cluster.clusterIps.some((ip) => addressesEqual(ip, vip))) {
    throw badArgument(
      '--vip',
      `${vip.text} is not a cluster IP of cluster '${clusterName}'`,
      `give one of: ${cluster.clusterIps.map((ip) => ip.text).join(', ')}`,
    );
  }
  const protocol = options.protocol;
  const port =
    options.port === undefined
      ? defaultPort(cluster, vip, protocol)
      : parsePortArgument('--port', options.port);

  const clients = await readClientArguments(options, ctx);
  const wrongFamily = clients.find((c) => c.address.family !== vip.family);
  if (wrongFamily !== undefined) {
    throw badArgument(
      '--client',
      `${formatEndpoint(wrongFamily)} is IPv${wrongFamily.address.family} but the cluster IP ${vip.text} is IPv${vip.family}`,
      'give clients of the same address family as --vip',
    );
  }

  const rows: MapRow[] = new Array<MapRow>(clients.length);
  for (let i = 0; i < clients.length; i++) {
    const client = clients[i]!;
    const p = predictOwner(cluster, planned.maps, client, vip, port, protocol);
    const placed = p.rule !== null && p.bucket !== null;
    rows[i] = {
      client: formatEndpoint(client),
      rule: p.rule,
      mode: p.mode,
      affinity: p.affinity,
      bucket: p.bucket,
      host: p.host,
      reason: p.reason,
      inFlight: placed && planned.inFlight(p.rule, p.bucket),
      claimedBy: planned.claims === null || !placed ? null : planned.claims(p.rule, p.bucket),
    };
  }
  const live = source.kind === 'live' ? source.live : undefined;
  const data: MapOutput = {
    source: source.kind,
    cluster: clusterName,
    from: live === undefined ? null : { hostId: live.data.hostId, where: live.where },
    mapDigest: live?.data.mapDigest ?? null,
    converged: live?.data.converged ?? null,
    convergedAt: live?.data.convergedAt ?? null,
    inFlight: (live?.data.rules ?? [])
      .filter((rule) => rule.inFlight.length > 0)
      .map((rule) => ({ rule: rule.rule, buckets: rule.inFlight })),
    hosts: planned.hostIds,
    note: source.kind === 'model' ? source.note : null,
    clients: rows,
  };

  const traffic = `${vip.family === 6 ? `[${vip.text}]` : vip.text}:${port}/${protocol}`;
  const dash = (n: number | null): string => (n === null ? '-' : String(n));
  const anyInFlight = rows.some((r) => r.inFlight);
  return {
    data,
    human: table<MapRow>(
      [
        { header: 'client', cell: (r) => r.client },
        { header: 'bucket', cell: (r) => dash(r.bucket), align: 'right' },
        { header: 'host', cell: (r) => dash(r.host), align: 'right' },
        ...(anyInFlight
          ? [
              {
                header: 'in flight',
                cell: (r: MapRow) =>
                  r.inFlight ? `claimed by ${r.claimedBy?.join(',') || 'nobody'}` : '',
              },
            ]
          : []),
      ],
      rows,
      [...sourceNotes(source), ...summary(cluster, planned, traffic, rows)],
    ),
  };
}

/** Commander option parser for a repeatable option; no default, so help shows none. */
function collect(value: string, previous: readonly string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('map')
    .description(
      "predict which host takes each client: port rule, bucket and owning host, from the live cluster's map (or --hosts: from scratch)",
    )
    .option('--client <ip:port>', 'a client address and source port; repeatable', collect)
    .option('--clients-file <path>', 'one ip:port per line ([addr]:port for IPv6); - reads stdin')
    .option('--vip <ip>', 'the cluster IP the clients connect to (default: the first cluster IP)')
    .option(
      '--port <port>',
      "the destination port (default: 80 if the first port rule for the VIP covers it, else that rule's first port)",
    )
    .addOption(
      new Option('--protocol <protocol>', 'the transport protocol')
        .choices(['tcp', 'udp'])
        .default('tcp'),
    )
    .option(
      '--config <file>',
      "a host's config YAML: its nlbd's live map when it runs here, else (and with --hosts) the model",
    )
    .option('--socket <path>', 'the control socket of the nlbd to ask')
    .option('--lab <name>', 'a lab: its first host that answers (or --host <id>)')
    .option(
      '--host <id|addr[:port]>',
      'with --lab, a lab host id; otherwise a remote nlbd (with --token-file)',
    )
    .option('--token-file <path>', 'the remote control token')
    .option(
      '--hosts <ids>',
      'predict from scratch (the model) for these live hosts, e.g. 1,2,3; needs --config',
    )
    .option(
      '--weights <id=weight,...>',
      "model: load weights (0..100 or 'equal') for listed hosts on every rule, e.g. 1=50,2=30 " +
        "(default: the config's own settings for its host, 'equal' for the others)",
    )
    .addHelpText(
      'after',
      '\nLive (the default): the owners are those of the map a running nlbd holds, which carries\n' +
        "the cluster's history; the output says `source: live`, the map's digest, when it\n" +
        'converged, and the buckets in flight while it converges. Model (--hosts): the map a\n' +
        "cluster of exactly these hosts reaches from scratch; hosts other than the config's own\n" +
        'get handling priority = their host id.\n\n' +
        'Examples:\n' +
        '  nlb map --client 198.18.0.50:40000                       (the nlbd of this host)\n' +
        '  nlb map --lab demo --clients-file clients.txt --json\n' +
        '  nlb map --host 10.0.0.12 --token-file /etc/nlb/control.token --client 192.0.2.7:50000\n' +
        '  nlb map --config examples/web/host1.yaml --hosts 1,2,3 --client 198.18.0.50:40000\n' +
        '  seq 1024 65535 | sed s/^/198.18.0.50:/ | nlb map --config c.yaml --hosts 1,2 --clients-file - --json\n',
    )
    .action(ctx.action((options: MapOptions) => map(options, ctx)));
}
