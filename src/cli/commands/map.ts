// `nlb map`: which host takes each client's new flows, predicted offline from a config file.
// For each client: the port rule covering the traffic, the client's bucket under that rule's
// affinity (the kernel-exact hash in src/core/flow.ts) and the owner of that bucket in the map
// `assign` gives when the listed hosts form the cluster. The lab tests check real connections
// land where this says.
import { type Command, Option } from 'commander';
import { type Address, type Endpoint, addressesEqual, formatEndpoint } from '../../core/address.js';
import {
  type ClusterConfig,
  type Config,
  type HostRuleSettings,
  type PortRule,
  equalLoadWeight,
} from '../../core/config.js';
import type { PacketProtocol } from '../../core/flow.js';
import {
  type BucketMaps,
  type PlannedHost,
  type Prediction,
  type PredictionReason,
  planBucketMaps,
  predictOwner,
} from '../../core/predict.js';
import {
  loadConfigArgument,
  parseAddressArgument,
  parseHostIdArgument,
  parseHostIdsArgument,
  parsePortArgument,
} from '../arguments.js';
import { readClients, parseClientFlags } from '../clients.js';
import { badArgument } from '../errors.js';
import type { CliContext } from '../program.js';
import { type CommandOutput, table } from '../render.js';

export interface MapOptions {
  readonly config: string;
  readonly client?: readonly string[];
  readonly clientsFile?: string;
  readonly vip?: string;
  readonly port?: string;
  readonly protocol: PacketProtocol;
  readonly hosts?: string;
  readonly weights?: string;
}

/** One row of `nlb map --json`. */
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
}

/**
 * The port predicted when --port is not given: 80 if the first port rule for this VIP and
 * protocol covers it (the common web case, and NLB's default all-ports rule), else that rule's
 * first port; 80 when no rule applies at all.
 */
export function defaultPort(
  cluster: ClusterConfig,
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

/** `1=50,2=equal` → host id → load weight (0..100). */
function parseWeights(value: string): Map<number, number> {
  const weights = new Map<number, number>();
  for (const part of value.split(',')) {
    const match = /^\s*([^=\s]+)\s*=\s*(\S+)\s*$/.exec(part);
    if (match === null) {
      throw badArgument(
        '--weights',
        `'${part}' is not host=weight`,
        'write host=weight pairs separated by commas, e.g. --weights 1=50,2=30,3=equal',
      );
    }
    const id = parseHostIdArgument('--weights', match[1]!);
    const weightText = match[2]!;
    const weight =
      weightText === 'equal'
        ? equalLoadWeight
        : /^\d{1,3}$/.test(weightText) && Number(weightText) <= 100
          ? Number(weightText)
          : undefined;
    if (weight === undefined) {
      throw badArgument(
        '--weights',
        `host ${id}'s weight '${weightText}' is not a load weight`,
        "a load weight is 0..100 or 'equal' (50); 0 takes no new flows",
      );
    }
    if (weights.has(id)) {
      throw badArgument('--weights', `host ${id} is given twice`, 'give each host one weight');
    }
    weights.set(id, weight);
  }
  return weights;
}

/**
 * The live hosts: the config's own host keeps its per-rule settings; any other host gets load
 * weight 'equal' (50) and its host id as handling priority, which is what a host config that
 * sets neither would give. --weights replaces a host's load weight on every rule.
 */
export function plannedHosts(
  config: Config,
  hostIds: readonly number[],
  weights: ReadonlyMap<number, number>,
): PlannedHost[] {
  return [...hostIds]
    .sort((a, b) => a - b)
    .map((id) => {
      const own = id === config.host.id;
      const weight = weights.get(id);
      const rules: HostRuleSettings[] = config.cluster.portRules.map((_, i) => ({
        loadWeight: weight ?? (own ? config.host.rules[i]!.loadWeight : equalLoadWeight),
        handlingPriority: own ? config.host.rules[i]!.handlingPriority : id,
      }));
      return { id, rules };
    });
}

function describeRule(rule: PortRule): string {
  const ports =
    rule.portStart === rule.portEnd ? `${rule.portStart}` : `${rule.portStart}-${rule.portEnd}`;
  const vip = rule.vip === 'all' ? 'all cluster IPs' : rule.vip.text;
  return `${vip} port ${ports} ${rule.protocol}, ${rule.mode}, affinity ${rule.affinity}, ${rule.buckets} buckets`;
}

function summary(
  cluster: ClusterConfig,
  hosts: readonly PlannedHost[],
  maps: BucketMaps,
  traffic: string,
  rows: readonly MapRow[],
): string[] {
  const first = rows[0];
  const notes: string[] = [];
  const ruleIndex = first?.rule ?? null;
  if (first === undefined) {
    return notes;
  }
  if (first.reason === 'no-rule') {
    notes.push(
      `${traffic}: no port rule covers it; the default host (${maps.defaultHost ?? 'none'}) takes it`,
    );
  } else if (ruleIndex !== null) {
    const rule = cluster.portRules[ruleIndex]!;
    notes.push(`${traffic}: rule ${ruleIndex} (${describeRule(rule)})`);
    if (rule.mode === 'disabled') {
      notes.push('the rule is disabled: every host drops this traffic');
    }
  }
  const hostText = hosts
    .map((h) => {
      if (ruleIndex === null) {
        return `${h.id}`;
      }
      const settings = h.rules[ruleIndex]!;
      return cluster.portRules[ruleIndex]!.mode === 'single'
        ? `${h.id} (priority ${settings.handlingPriority})`
        : `${h.id} (weight ${settings.loadWeight})`;
    })
    .join(', ');
  notes.push(`live hosts: ${hostText}; default host ${maps.defaultHost ?? 'none'}`);
  // Per-host counts, so a large clients file shows the spread at a glance.
  const counts = new Map<number | null, number>();
  for (const row of rows) {
    counts.set(row.host, (counts.get(row.host) ?? 0) + 1);
  }
  const share = (n: number): string => `${((100 * n) / rows.length).toFixed(1)}%`;
  const parts = hosts.map(
    (h) => `host ${h.id}: ${counts.get(h.id) ?? 0} (${share(counts.get(h.id) ?? 0)})`,
  );
  const dropped = counts.get(null) ?? 0;
  if (dropped > 0) {
    parts.push(`dropped: ${dropped} (${share(dropped)})`);
  }
  notes.push(`clients: ${rows.length}; ${parts.join(', ')}`);
  return notes;
}

export async function map(options: MapOptions, ctx: CliContext): Promise<CommandOutput<MapRow[]>> {
  const config = await loadConfigArgument(options.config);
  const cluster = config.cluster;

  const vip =
    options.vip === undefined
      ? cluster.clusterIps[0]!
      : parseAddressArgument('--vip', options.vip, cluster.clusterIps[0]!.text);
  if (!cluster.clusterIps.some((ip) => addressesEqual(ip, vip))) {
    throw badArgument(
      '--vip',
      `${vip.text} is not a cluster IP of cluster '${cluster.name}'`,
      `give one of: ${cluster.clusterIps.map((ip) => ip.text).join(', ')}`,
    );
  }
  const protocol = options.protocol;
  const port =
    options.port === undefined
      ? defaultPort(cluster, vip, protocol)
      : parsePortArgument('--port', options.port);

  const hostIds =
    options.hosts === undefined ? [config.host.id] : parseHostIdsArgument('--hosts', options.hosts);
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
  const wrongFamily = clients.find((c) => c.address.family !== vip.family);
  if (wrongFamily !== undefined) {
    throw badArgument(
      '--client',
      `${formatEndpoint(wrongFamily)} is IPv${wrongFamily.address.family} but the cluster IP ${vip.text} is IPv${vip.family}`,
      'give clients of the same address family as --vip',
    );
  }

  const hosts = plannedHosts(config, hostIds, weights);
  // One `assign` per rule, then one hash per client.
  const maps = planBucketMaps(cluster, hosts);
  const rows: MapRow[] = new Array<MapRow>(clients.length);
  for (let i = 0; i < clients.length; i++) {
    const client = clients[i]!;
    const p = predictOwner(cluster, maps, client, vip, port, protocol);
    rows[i] = {
      client: formatEndpoint(client),
      rule: p.rule,
      mode: p.mode,
      affinity: p.affinity,
      bucket: p.bucket,
      host: p.host,
      reason: p.reason,
    };
  }

  const traffic = `${vip.family === 6 ? `[${vip.text}]` : vip.text}:${port}/${protocol}`;
  const dash = (n: number | null): string => (n === null ? '-' : String(n));
  return {
    data: rows,
    human: table<MapRow>(
      [
        { header: 'client', cell: (r) => r.client },
        { header: 'bucket', cell: (r) => dash(r.bucket), align: 'right' },
        { header: 'host', cell: (r) => dash(r.host), align: 'right' },
      ],
      rows,
      summary(cluster, hosts, maps, traffic, rows),
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
    .description('predict which host takes each client: port rule, bucket and owning host')
    .requiredOption('--config <file>', "a host's config YAML (any host of the cluster)")
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
    .option('--hosts <ids>', "the live hosts, e.g. 1,2,3 (default: the config's own host only)")
    .option(
      '--weights <id=weight,...>',
      "load weights (0..100 or 'equal') for listed hosts on every rule, e.g. 1=50,2=30 " +
        "(default: the config's own settings for its host, 'equal' for the others)",
    )
    .addHelpText(
      'after',
      "\nHosts other than the config's own get handling priority = their host id. The bucket\n" +
        'map is the one a cluster of exactly these hosts converges to from scratch.\n\n' +
        'Examples:\n' +
        '  nlb map --config examples/web/host1.yaml --hosts 1,2,3 --client 198.18.0.50:40000\n' +
        '  nlb map --config examples/web/host1.yaml --hosts 1,2,3 --port 443 --clients-file clients.txt\n' +
        '  seq 1024 65535 | sed s/^/198.18.0.50:/ | nlb map --config c.yaml --clients-file - --json\n',
    )
    .action(ctx.action((options: MapOptions) => map(options, ctx)));
}
