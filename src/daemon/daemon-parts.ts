// The parts of a running nlbd, wired together but not started: the host machine and its driver,
// the data plane adapters, the heartbeat transport, the control target with its servers. Building
// them changes nothing on the host; daemon.ts starts each in its phase and registers its release.
import { currentNetns, packageVersion } from '../node/package-info.js';
import path from 'node:path';
import type { Config, HostState } from '../core/config.js';
import { HostMachine } from '../core/host.js';
import { formatMac, igmpGroup, unicastClusterMac } from '../core/mac.js';
import { KernelAnnouncer } from '../dataplane/announce.js';
import type { Command, CommandReply, Ownership } from '../core/protocol.js';
import { ConntrackCli } from '../dataplane/conntrack.js';
import { Dataplane, type InterfaceSetup } from '../dataplane/dataplane.js';
import type { Runner } from '../dataplane/exec.js';
import type { IpRoute } from '../dataplane/iproute.js';
import { NftCli } from '../dataplane/nft.js';
import { tableNameFor } from '../dataplane/render.js';
import { dataplaneSpecFor, groupMacOf } from '../dataplane/spec.js';
import type { Clock } from './clock.js';
import { ClusterInterface, readInterfaceNow, readRunFile } from './cluster-interface.js';
import { type DaemonIdentity, type ReloadReply } from '../control/protocol.js';
import { type ControlTarget, answerControl } from './control.js';
import { type ControlHandler, ControlServer } from './control-server.js';
import { createReload } from './daemon-reload.js';
import type { EventJournal } from './events.js';
import type { EventSink } from './event-names.js';
import { HostDriver, type HostDriverOptions } from './host-driver.js';
import { HealthChecks } from './health.js';
import { RoutedParts } from './routed-parts.js';
import { errorText } from '../core/error-text.js';
import { type LazyMetrics, lazyMetrics } from './metrics-lazy.js';
import { remoteHandler, tokenDigest } from './remote.js';
import type { DaemonInputs, DaemonOptions } from './start-checks.js';
import { type Transport, UdpTransport, UnicastTransport } from './transport.js';

export interface PartsInput {
  readonly options: DaemonOptions;
  readonly inputs: DaemonInputs;
  readonly incarnation: number;
  /** The retained state's word on the start state; undefined lets the config decide. */
  readonly initialState: HostState | undefined;
  readonly clock: Clock;
  readonly runner: Runner;
  readonly ipRoute: IpRoute;
  /** The long-lived nft process's realtime priority (scheduling.ts kernelUpdatePriority). */
  readonly nftPriority?: number | undefined;
  readonly socketPath: string;
  /** The run file remembering the interface's own MAC (paths.ts). */
  readonly runFile: string;
  readonly journal: EventJournal;
  readonly log: EventSink;
  /** The host machine threw: the daemon must stop. */
  readonly onFatal: (error: Error) => void;
  /** The machine answered a command (HostDriverOptions.onReply). */
  readonly onReply: (command: Command, reply: CommandReply) => void;
}

export interface DaemonParts {
  /** The cluster's nftables tables (`nlb_<cluster name>`): several clusters share a host. */
  readonly tableName: string;
  /** The running config; a successful reload replaces it. */
  config(): Config;
  readonly identity: DaemonIdentity;
  readonly driver: HostDriver;
  readonly nft: NftCli;
  readonly dataplane: Dataplane;
  readonly transport: Transport;
  /** Attach and detach the cluster MAC and cluster IPs (its `setup`); both may run more than once. */
  readonly clusterInterface: ClusterInterface;
  readonly metrics: LazyMetrics;
  readonly reload: () => Promise<ReloadReply>;
  /** Routed mode's forwarding set-up and marker routes; undefined in the other modes. */
  readonly routed: RoutedParts | undefined;
  /** The port rules' health and agent checks (started once nlbd serves). */
  readonly health: HealthChecks;
  /** The local control socket's server. */
  readonly server: ControlServer;
  /** Remote control over TCP, when --control-listen is given. */
  readonly remoteServer: ControlServer | undefined;
}

export function buildParts(input: PartsInput): DaemonParts {
  const { options, inputs, clock, runner, ipRoute, incarnation, log } = input;
  // The config the daemon runs; a successful reload replaces it (in the driver's step).
  let config = inputs.config;
  // The cluster name cannot change on reload (control-reload.ts), so neither can the table.
  const tableName = tableNameFor(config.cluster.name);
  // Multicast and IGMP modes leave the interface its own MAC, which the NA rewrite names; the
  // mode cannot change on reload, and neither does nlbd change this MAC.
  const ownMac =
    config.cluster.mode === 'unicast' ? undefined : readInterfaceNow(config.cluster.interface).mac;
  const machine = new HostMachine({
    config,
    key: inputs.key,
    incarnation,
    nowMs: clock.nowMs(),
    ...(input.initialState === undefined ? {} : { initialState: input.initialState }),
  });
  const nft = new NftCli({
    runner,
    ...(input.nftPriority === undefined ? {} : { interactivePriority: input.nftPriority }),
  });
  const dataplane = new Dataplane(nft, new ConntrackCli(runner), ipRoute);
  // Multicast to the group, or unicast to the configured peers (a reload cannot switch).
  const peers = config.cluster.heartbeat.peers;
  const dedicatedIp = config.host.dedicatedIp.address.text;
  const port = config.cluster.heartbeat.port;
  const transport =
    peers === undefined
      ? new UdpTransport({ dedicatedIp, group: config.cluster.heartbeat.group.text, port })
      : new UnicastTransport({ dedicatedIp, port, peers: peers.map((p) => p.text) });
  const routed =
    config.cluster.mode === 'routed' ? new RoutedParts(config, runner, log) : undefined;
  const clusterInterface = clusterInterfaceFor(input, config, routed);
  // Reports go through the driver's queue like any command; a check's report never blocks it.
  const health = new HealthChecks(
    (command) => driver.command(command),
    (error) => log({ event: 'health report failed', error: errorText(error) }),
  );
  const driver = new HostDriver({
    machine,
    clock,
    transport,
    dataplane: driverDataplane(dataplane, () => config, routed),
    specFor: (ownership: Ownership) =>
      dataplaneSpecFor(config, ownership, {
        tableName,
        ownMac,
        ...(routed === undefined ? {} : { mssClamp: routed.mssClamp }),
      }),
    log,
    onReload: (command) => {
      config = command.config;
      health.reload(config);
    },
    onFatal: input.onFatal,
    onReply: input.onReply,
    // Fail closed: a data plane that cannot be put back (nft fails or hangs) takes the cluster
    // IPs and the cluster MAC away, so the host answers nothing unfiltered; they come back once
    // the whole table is in the kernel again (host-driver.ts, header).
    onDataplaneLost: () => clusterInterface.detach(),
    onDataplaneRestored: () => clusterInterface.attach(),
    heartbeat: () => config.cluster.heartbeat,
  });
  const reload = createReload({
    options,
    key: inputs.key,
    config: () => config,
    command: (command) => driver.command(command),
    log,
  });
  const control = controlParts(input, {
    config: () => config,
    health,
    driver,
    dataplane,
    transport,
    reload,
    routed,
  });
  return {
    tableName,
    config: () => config,
    driver,
    nft,
    dataplane,
    transport,
    clusterInterface,
    routed,
    reload,
    health,
    ...control,
  };
}

/** The data plane as the driver uses it; routed mode's routes follow what it programs. */
function driverDataplane(
  dataplane: Dataplane,
  config: () => Config,
  routed: RoutedParts | undefined,
): HostDriverOptions['dataplane'] {
  return {
    program: async (spec) => {
      const result = await dataplane.program(spec);
      routed?.follow(spec.ownership);
      return result;
    },
    lastProgramTiming: () => dataplane.lastProgramTiming(),
    heartbeatSent: () => {
      routed?.keepalive();
      return dataplane.heartbeatSent();
    },
    flush: (rule, buckets) => dataplane.flush(rule, buckets),
    flushAll: () => dataplane.flushClusterIps(config().cluster.clusterIps),
    connections: () => dataplane.connections(),
    watchLost: (listener) => dataplane.watchLost(listener),
  };
}

/**
 * The cluster interface's attach and detach. Its setup is fixed for the daemon's life: a reload
 * cannot change the interface, the mode or the cluster IPs (control-reload.ts refuses those).
 */
function clusterInterfaceFor(
  input: PartsInput,
  config: Config,
  routed: RoutedParts | undefined,
): ClusterInterface {
  const clusterMac =
    config.cluster.mode === 'unicast'
      ? formatMac(unicastClusterMac(config.cluster.clusterIps[0]!))
      : undefined;
  const mode = config.cluster.mode;
  const setup: InterfaceSetup =
    routed !== undefined
      ? {
          interface: config.cluster.interface,
          clusterIps: [],
          mode,
          routedHooks: {
            attach: () => routed.attach(),
            detach: () => routed.detach(),
            cleanup: () => routed.cleanup(),
          },
        }
      : {
          interface: config.cluster.interface,
          clusterIps: config.cluster.clusterIps,
          mode,
          ...(clusterMac === undefined ? {} : { clusterMac }),
          ...(mode === 'multicast'
            ? { groupMac: groupMacOf(mode, config.cluster.clusterIps[0]!) }
            : {}),
          ...(mode === 'igmp'
            ? {
                igmp: {
                  group: igmpGroup(config.cluster.clusterIps[0]!).text,
                  interfaceAddress: config.host.dedicatedIp.address.text,
                },
              }
            : {}),
          announcer: new KernelAnnouncer(input.ipRoute),
        };
  // What the previous nlbd on this host remembered of the interface (after a crash): the MAC to
  // put back when the interface still carries the cluster MAC.
  const previous = readRunFile(input.runFile);
  return new ClusterInterface(
    input.ipRoute,
    setup,
    input.runFile,
    previous?.interface === setup.interface ? previous.originalMac : undefined,
  );
}

/** What `controlParts` needs of the parts built before it. */
interface ControlInputs {
  readonly config: () => Config;
  readonly health: HealthChecks;
  readonly driver: HostDriver;
  readonly dataplane: Dataplane;
  readonly transport: Transport;
  readonly reload: () => Promise<ReloadReply>;
  readonly routed: RoutedParts | undefined;
}

/** The control target over the running parts, its metrics, and the control servers. */
function controlParts(
  input: PartsInput,
  parts: ControlInputs,
): Pick<DaemonParts, 'identity' | 'metrics' | 'server' | 'remoteServer'> {
  const { options, inputs, clock, ipRoute, incarnation, log } = input;
  const identity: DaemonIdentity = {
    cluster: inputs.config.cluster.name,
    hostId: inputs.config.host.id,
    pid: process.pid,
    incarnation,
    netns: currentNetns() ?? 'unknown',
    socket: input.socketPath,
    configPath: path.resolve(options.configPath),
    version: packageVersion(),
  };
  const target: ControlTarget = {
    get config() {
      return parts.config();
    },
    identity: () => identity,
    nowMs: () => clock.nowMs(),
    status: () => parts.driver.status(),
    details: () => parts.driver.details(),
    command: (command) => parts.driver.command(command),
    counters: () => parts.dataplane.counters(),
    driverStats: () => parts.driver.stats(),
    transportStats: () => parts.transport.stats(),
    connections: () => parts.dataplane.connections(),
    health: () => parts.health.views(),
    addresses: async () => {
      const name = parts.config().cluster.interface;
      const [link, prefixes] = await Promise.all([ipRoute.link(name), ipRoute.addresses(name)]);
      return {
        interface: name,
        mac: link.mac,
        up: link.up,
        operState: link.operState,
        addresses: prefixes.map((p) => `${p.address.text}/${p.length}`),
      };
    },
    reload: parts.reload,
    metrics: () => metrics.read(),
    events: input.journal,
  };
  const metrics = lazyMetrics(target);
  const handle: ControlHandler = (request) =>
    answerControl(request, {
      target,
      dataplaneInSync: () => parts.driver.dataplaneInSync,
      announced: () => parts.routed?.announced,
    });
  const server = new ControlServer(handle);
  const remoteServer =
    options.controlListen === undefined || inputs.token === undefined
      ? undefined
      : new ControlServer(
          remoteHandler(tokenDigest(inputs.token), handle, log, () => clock.nowMs()),
        );
  return { identity, metrics, server, remoteServer };
}
