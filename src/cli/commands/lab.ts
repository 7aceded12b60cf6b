// `nlb lab up|down|status|exec`: a real cluster on this machine, built from network namespaces
// (src/lab/lab.ts, docs/lab.md). Every verb needs root; without it they exit 1 saying so.
import { type Command, Option } from 'commander';
import { hostsMax } from '../../core/config.js';
import {
  LabError,
  type LabState,
  type LabStatus,
  labDown,
  labExec,
  labStatus,
  labUp,
  startDaemonsDefault,
} from '../../lab/lab.js';
import { labClientsMax } from '../../lab/naming.js';
import { type RoutedLabUpOptions, routedLabUp } from '../../lab/router.js';
import { listLabNames } from '../../lab/state.js';
import { badArgument, NlbError } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import type { CliContext } from '../program.js';
import { labService } from './lab-service.js';
import { type CommandOutput, type HumanView, fields, table } from '../render.js';

/** Turns the lab's operating errors into the CLI's one error type, keeping message and hint. */
function toCliError(error: unknown): unknown {
  if (!(error instanceof LabError)) {
    return error;
  }
  const hint = error.hint ?? '';
  switch (error.code) {
    case 'invalid-argument':
    case 'no-such-lab':
    case 'name-in-use':
      return new NlbError('bad-argument', error.message, hint, exitCodes.usage);
    case 'not-root':
    case 'not-built':
    case 'process-failed':
      return new NlbError('failed', error.message, hint, exitCodes.failed);
  }
}

async function lab<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    throw toCliError(error);
  }
}

function integerArgument(argument: string, value: string, min: number, max: number): number {
  const text = value.trim();
  if (!/^\d{1,3}$/.test(text) || Number(text) < min || Number(text) > max) {
    throw badArgument(
      argument,
      `'${value}' is out of range`,
      `give a whole number from ${min} to ${max}`,
    );
  }
  return Number(text);
}

/** `--name` when given, else the only lab there is; several labs make the name mandatory. */
function resolveName(name: string | undefined): string {
  if (name !== undefined) {
    return name;
  }
  if (process.getuid?.() !== 0) {
    // Lab records are readable by root only; let the verb report the missing privilege.
    return '';
  }
  const names = listLabNames();
  if (names.length === 1) {
    return names[0]!;
  }
  throw new NlbError(
    'bad-argument',
    names.length === 0 ? 'there is no lab' : `there are ${names.length} labs: ${names.join(', ')}`,
    names.length === 0 ? 'create one with `nlb lab up --hosts 3`' : 'say which with --name NAME',
    exitCodes.usage,
  );
}

/** What `nlb lab up --json` prints: enough to drive the lab from a script. */
export interface LabUpData {
  readonly name: string;
  readonly dir: string;
  readonly vip: string;
  /** The IPv6 cluster IP of an `--ipv6` lab, else null. */
  readonly vip6: string | null;
  /** `routed`: a routed lab (src/lab/router.ts), whose hosts' configs say unicast for now. */
  readonly mode: 'unicast' | 'multicast' | 'igmp' | 'routed';
  readonly subnet: string;
  readonly switchNamespace: string;
  readonly keyFile: string;
  readonly hosts: ReadonlyArray<{
    readonly id: number;
    readonly namespace: string;
    readonly ip: string;
    readonly interface: string;
    readonly config: string;
    readonly backendPid: number | null;
    readonly daemonPid: number | null;
  }>;
  readonly clients: ReadonlyArray<{
    readonly namespace: string;
    readonly ip: string;
    readonly extraIps: readonly string[];
  }>;
}

function upData(state: LabState): LabUpData {
  return {
    name: state.name,
    dir: state.dir,
    vip: state.vip,
    vip6: state.vip6 ?? null,
    mode: state.routed === undefined ? (state.mode ?? 'unicast') : 'routed',
    subnet: state.subnet,
    switchNamespace: state.switchNamespace,
    keyFile: state.keyFile,
    hosts: state.hosts.map((h) => ({
      id: h.id,
      namespace: h.namespace,
      ip: h.ip,
      interface: h.interface,
      config: h.config,
      backendPid: h.backend?.pid ?? null,
      daemonPid: h.daemon?.pid ?? null,
    })),
    clients: state.clients.map((c) => ({ namespace: c.namespace, ip: c.ip, extraIps: c.extraIps })),
  };
}

interface UpOptions {
  readonly hosts: string;
  readonly clients: string;
  readonly name?: string;
  readonly clientIps: string;
  readonly daemons: boolean;
  readonly mode: 'unicast' | 'multicast' | 'igmp' | 'routed';
  readonly affinity: 'none' | 'single' | 'network';
  readonly ipv6: boolean;
  readonly health: boolean;
  /** Routed labs: how the hosts forward (segment: one segment for all, no encapsulation). */
  readonly forward?: 'vxlan' | 'segment';
}

/** A routed lab has no extra client addresses and no IPv6 yet: refused, not ignored. */
function routedUpOptions(
  options: UpOptions,
  hosts: number,
  clients: number,
  clientExtraIps: number,
): RoutedLabUpOptions {
  if (options.ipv6 || clientExtraIps > 0) {
    throw badArgument(
      options.ipv6 ? '--ipv6' : '--client-ips',
      'is not available with --mode routed yet',
      'leave it out',
    );
  }
  return {
    hosts,
    clients,
    startDaemons: options.daemons,
    health: options.health,
    affinity: options.affinity,
    ...(options.forward === 'segment' ? { segment: true } : {}),
    ...(options.name === undefined ? {} : { name: options.name }),
  };
}

export async function up(options: UpOptions): Promise<CommandOutput<LabUpData>> {
  const hosts = integerArgument('--hosts', options.hosts, 1, hostsMax);
  const clients = integerArgument('--clients', options.clients, 0, labClientsMax);
  const clientExtraIps = integerArgument('--client-ips', options.clientIps, 0, 99);
  if (options.mode !== 'routed' && options.forward !== undefined) {
    throw badArgument(
      '--forward',
      'is only for --mode routed',
      'leave it out, or add --mode routed',
    );
  }
  // Building takes well under a second per host; an interrupt in the middle is honoured right
  // after, by removing what was built, so Ctrl-C never leaves half a lab behind.
  let interrupted = false;
  const onInterrupt = (): void => {
    interrupted = true;
  };
  process.on('SIGINT', onInterrupt);
  process.on('SIGTERM', onInterrupt);
  let state: LabState;
  try {
    state = await lab(() =>
      options.mode === 'routed'
        ? routedLabUp(routedUpOptions(options, hosts, clients, clientExtraIps))
        : labUp({
            hosts,
            clients,
            clientExtraIps,
            startDaemons: options.daemons,
            clusterMode: options.mode,
            affinity: options.affinity,
            ipv6: options.ipv6,
            health: options.health,
            ...(options.name === undefined ? {} : { name: options.name }),
          }),
    );
  } finally {
    process.off('SIGINT', onInterrupt);
    process.off('SIGTERM', onInterrupt);
  }
  if (interrupted) {
    await lab(() => labDown(state.name));
    throw new NlbError('failed', 'interrupted; the lab was removed again', '', exitCodes.failed);
  }
  const data = upData(state);
  return { data, human: upHuman(state, data) };
}

/** What `nlb lab up` prints for people: every namespace, its address and what runs there. */
function upHuman(state: LabState, data: LabUpData): HumanView {
  interface Row {
    readonly target: string;
    readonly namespace: string;
    readonly ip: string;
    readonly runs: string;
  }
  return table<Row>(
    [
      { header: 'target', cell: (r) => r.target },
      { header: 'namespace', cell: (r) => r.namespace },
      { header: 'address', cell: (r) => r.ip },
      { header: 'runs', cell: (r) => r.runs },
    ],
    [
      {
        target: 'sw',
        namespace: state.switchNamespace,
        ip: '-',
        runs:
          state.routed === undefined
            ? `bridge ${state.bridge}`
            : `router: FRR, ECMP over the hosts; the clients' bridge ${state.bridge}`,
      },
      ...data.hosts.map((h) => ({
        target: `h${h.id}`,
        namespace: h.namespace,
        ip: h.ip,
        runs: [
          h.backendPid !== null ? 'backend :80' : '',
          h.daemonPid !== null ? 'nlbd' : '',
          state.routed !== undefined ? 'FRR' : '',
        ]
          .filter((s) => s !== '')
          .join(', '),
      })),
      ...data.clients.map((c, i) => ({
        target: `c${i + 1}`,
        namespace: c.namespace,
        ip: [c.ip, ...c.extraIps].join(' '),
        runs: '',
      })),
      ...(state.bystander === undefined
        ? []
        : [
            {
              target: 'b1',
              namespace: state.bystander.namespace,
              ip: state.bystander.ip,
              runs: 'nothing: a bystander on the switch, in no cluster',
            },
          ]),
    ],
    [
      `lab '${state.name}' is up in ${data.mode} mode: VIP ${state.vip}${state.vip6 === undefined ? '' : ` and ${state.vip6}`} on ${state.subnet}; configs and logs in ${state.dir}`,
      ...(data.hosts.some((h) => h.daemonPid !== null)
        ? []
        : ['nlbd is not running: the VIP answers nowhere yet; the dedicated IPs do.']),
      ...(state.routed === undefined
        ? []
        : data.hosts.some((h) => h.daemonPid !== null)
          ? [
              `each nlbd announces the VIP over BGP while it serves buckets, and forwards what another host serves; the router's paths: nlb lab exec sw --name ${state.name} -- ip route show ${state.vip}`,
            ]
          : [
              `without nlbd, a host announces the VIP while it holds the marker route: nlb lab exec h1 --name ${state.name} -- ip route add ${state.vip}/32 dev lo proto ${state.routed.markerProtocol} (and ip route add local ${state.vip}/32 dev lo)`,
            ]),
      `try: nlb lab exec c1 --name ${state.name} -- curl -s http://${data.hosts.some((h) => h.daemonPid !== null) ? state.vip : (data.hosts[0]?.ip ?? state.vip)}/`,
      `remove it with: nlb lab down --name ${state.name}`,
    ],
  );
}

export interface LabDownData {
  readonly removed: ReadonlyArray<{
    name: string;
    namespaces: readonly string[];
    processesStopped: number;
  }>;
}

export async function down(options: {
  name?: string;
  all?: boolean;
}): Promise<CommandOutput<LabDownData>> {
  if (options.all === true && options.name !== undefined) {
    throw badArgument('--all', 'cannot be combined with --name', 'give one of them');
  }
  const names = options.all === true ? listLabNames() : [resolveName(options.name)];
  const removed = [];
  for (const name of names) {
    const result = await lab(() => labDown(name));
    if (!result.existed && options.all !== true) {
      throw new NlbError(
        'bad-argument',
        `no lab named '${name}'`,
        listLabNames().length === 0
          ? 'there is no lab to remove'
          : `existing labs: ${listLabNames().join(', ')}`,
        exitCodes.usage,
      );
    }
    removed.push({
      name,
      namespaces: result.namespacesDeleted,
      processesStopped: result.processesStopped,
    });
  }
  return {
    data: { removed },
    human: fields(
      removed.map((r) => [
        r.name,
        `removed ${r.namespaces.length} namespace(s), stopped ${r.processesStopped} process(es)`,
      ]),
      removed.length === 0 ? ['there was no lab to remove'] : [],
    ),
  };
}

function labState(s: LabStatus): string {
  if (!s.complete) {
    return 'incomplete';
  }
  return s.healthy ? 'up' : 'degraded';
}

export async function status(): Promise<CommandOutput<{ labs: LabStatus[] }>> {
  const labs = await lab(() => labStatus());
  const count = (s: LabStatus, key: 'backendRunning' | 'daemonRunning'): string =>
    `${s.hosts.filter((h) => h[key]).length}/${s.hosts.length}`;
  return {
    data: { labs },
    human: table(
      [
        { header: 'name', cell: (s: LabStatus) => s.name },
        { header: 'state', cell: (s: LabStatus) => labState(s) },
        { header: 'hosts', cell: (s: LabStatus) => String(s.hosts.length), align: 'right' },
        { header: 'clients', cell: (s: LabStatus) => String(s.clients.length), align: 'right' },
        { header: 'backends', cell: (s: LabStatus) => count(s, 'backendRunning'), align: 'right' },
        { header: 'nlbd', cell: (s: LabStatus) => count(s, 'daemonRunning'), align: 'right' },
        {
          header: 'links down',
          cell: (s: LabStatus) =>
            s.hosts
              .filter((h) => h.link !== 'up')
              .map((h) => `h${h.id}`)
              .join(',') || '-',
        },
        { header: 'vip', cell: (s: LabStatus) => s.vip },
      ],
      labs,
      labs.length === 0
        ? ['no lab; create one with `nlb lab up --hosts 3`']
        : labs.flatMap((s) =>
            s.namespacesMissing.length > 0
              ? [
                  `${s.name}: namespaces missing: ${s.namespacesMissing.join(', ')} (remove it with nlb lab down --name ${s.name})`,
                ]
              : [],
          ),
    ),
  };
}

/** `nlb lab up --mode`. */
function modeOption(): Option {
  return new Option(
    '--mode <mode>',
    'cluster operation mode in the generated configs; routed: a router running FRR with ECMP over hosts in subnets of their own, nlbd announcing the cluster IP through FRR and forwarding to the owner of each bucket (docs/routed.md)',
  )
    .choices(['unicast', 'multicast', 'igmp', 'routed'])
    .default('unicast');
}

/** `nlb lab up --forward`: how a routed lab's hosts forward (and so its topology). */
function forwardOption(): Option {
  return new Option(
    '--forward <forward>',
    'with --mode routed: vxlan (default: a /24 per host) or segment (all hosts on one segment, forwarding without encapsulation)',
  ).choices(['vxlan', 'segment']);
}

export function register(program: Command, ctx: CliContext): void {
  const labCommand = program
    .command('lab')
    .description('build and drive a real cluster on this machine out of network namespaces (root)')
    .addHelpText(
      'after',
      '\nThe lab lives on 198.18.0.0/24: host i at 198.18.0.(10+i), clients from 198.18.0.201,\n' +
        'VIP 198.18.0.100. Nothing is added to the root namespace.\n\nExample:\n' +
        '  nlb lab up --hosts 3 --name demo\n  nlb lab exec c1 --name demo -- curl -s http://198.18.0.11/\n' +
        '  nlb lab down --name demo\n',
    );

  labCommand
    .command('up')
    .description('create a lab: a switch, N hosts running the backend (and nlbd), M clients')
    .requiredOption('--hosts <n>', `number of hosts (1-${hostsMax})`)
    .option('--clients <n>', `number of client namespaces (0-${labClientsMax})`, '1')
    .option('--name <name>', "lab name (letters, digits, '_'); default: generated")
    .option('--client-ips <n>', 'extra source addresses per client (from 198.18.0.101)', '0')
    .option('--daemons', 'start nlbd in every host', startDaemonsDefault)
    .option('--no-daemons', 'do not start nlbd (the backends still run)')
    .addOption(modeOption())
    .addOption(
      new Option('--affinity <affinity>', 'affinity of the port rule (tcp 80)')
        .choices(['none', 'single', 'network'])
        .default('none'),
    )
    .option(
      '--ipv6',
      'an IPv6 cluster IP (2001:db8:18::100) beside the IPv4 one, and IPv6 on every host and client',
      false,
    )
    .option('--no-health', 'no health or agent check of the backend in the generated configs')
    .addOption(forwardOption())
    .action(ctx.action((options: UpOptions) => up(options)));

  labCommand
    .command('service')
    .description("break or mend a lab host's service: ok, refuse, hang, 503 or slow")
    .argument('<host>', 'the host id, e.g. 2 or h2')
    .argument('<mode>', 'ok, refuse (reset), hang (never answer), 503, slow')
    .option('--name <name>', 'the lab (default: the only one)')
    .option(
      '--weight <n|none>',
      'the weight its /weight reports to the agent check (kept if not given)',
    )
    .option('--slow-ms <ms>', 'how late `slow` answers (default 2000)')
    .addHelpText(
      'after',
      '\nExample:\n  nlb lab service 2 503\n  nlb lab service 2 ok --weight 25\n',
    )
    .action(
      ctx.action(
        (
          host: string,
          mode: string,
          options: { name?: string; weight?: string; slowMs?: string },
        ) =>
          lab(() =>
            Promise.resolve(
              labService(host, mode, { ...options, name: resolveName(options.name) }),
            ),
          ),
      ),
    );

  labCommand
    .command('down')
    .description('remove a lab: stop its processes, delete its namespaces and its record')
    .option('--name <name>', 'the lab to remove (default: the only one)')
    .option('--all', 'remove every lab')
    .action(ctx.action((options: { name?: string; all?: boolean }) => down(options)));

  labCommand
    .command('status')
    .description('list labs and check their namespaces, backends, daemons and links')
    .action(ctx.action(() => status()));

  labCommand
    .command('exec')
    .description('run a command inside a lab namespace: sw, h<id> or c<index>')
    .argument('<target>', 'sw, h1, h2, ..., c1, ...')
    .argument('<command...>', 'the command, after --')
    .option('--name <name>', 'the lab (default: the only one)')
    .addHelpText('after', '\nExample:\n  nlb lab exec h1 -- ip -br address\n')
    .action(
      ctx.action(async (target: string, command: string[], options: { name?: string }) => {
        const code = await lab(() => labExec(resolveName(options.name), target, command));
        // The command wrote straight to the terminal (inherited stdio): nlb exits with its own
        // status, which scripts running `nlb lab exec` rely on.
        return { streamed: true, exitCode: code };
      }),
    );
}
