// nlbd's life, start to exit. The order is what keeps a host from ever taking VIP traffic
// unfiltered or serving a bucket twice (src/dataplane/dataplane.ts has the data plane's half):
//
//   refuse early   config, key file, root, nft/conntrack/ip present, interface and dedicated IP
//                  there, no other nlbd on the control socket or the heartbeat port; nothing on
//                  the host has changed when nlbd refuses, and the message says what to do;
//   clean          what a crashed predecessor left: cluster IPs, cluster MAC, the nftables
//                  tables, and every connection to the cluster IPs (its clients were reset by
//                  the peers that took its buckets);
//   program        the filter with nothing owned, then attach the interface (cluster MAC,
//                  cluster IPs): the filter is in place before the first VIP packet arrives;
//   run            the host driver steps the protocol core with real timers and UDP multicast;
//                  `nlb reload` (or SIGHUP) re-reads the config and applies it atomically;
//   stop           on SIGTERM/SIGINT: step `stop` so peers take over at once, detach the
//                  interface (cluster IPs first), remove the tables, close everything, exit 0.
import { readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { type Config, clusterDigestHex, formatConfigErrors } from '../core/config.js';
import { HostMachine } from '../core/host.js';
import { formatMac, unicastClusterMac } from '../core/mac.js';
import { addressesEqual } from '../core/address.js';
import type { Ownership } from '../core/protocol.js';
import { ConntrackCli } from '../dataplane/conntrack.js';
import {
  type AttachedInterface,
  Dataplane,
  type InterfaceSetup,
  attachInterface,
  cleanupStale,
  detachInterface,
} from '../dataplane/dataplane.js';
import { CommandError, localRunner, type Runner } from '../dataplane/exec.js';
import { IpRoute } from '../dataplane/iproute.js';
import { NftCli } from '../dataplane/nft.js';
import { tableNameDefault } from '../dataplane/render.js';
import { dataplaneSpecFor } from '../dataplane/spec.js';
import { loadConfigFile } from '../node/config-file.js';
import { MonotonicClock } from './clock.js';
import {
  type ControlTarget,
  type DaemonIdentity,
  type ReloadReply,
  answerControl,
} from './control.js';
import { checkReload } from './control-reload.js';
import { type ControlHandler, ControlServer, ControlSocketError } from './control-server.js';
import { EventJournal } from './events.js';
import type { EventSink } from './host-driver.js';
import { createMetrics, listenMetrics } from './metrics.js';
import { readTokenFile, remoteHandler, tokenDigest } from './remote.js';
import { defaultSocketPath, stateFilePath } from './paths.js';
import { HostDriver } from './host-driver.js';
import { watchLink } from './link-watch.js';
import { readKeyFile } from './key-file.js';
import { createDaemonLog, type DaemonLog } from './log.js';
import { TransportError, UdpTransport } from './transport.js';

export interface ListenAddress {
  readonly address: string;
  readonly port: number;
}

export interface DaemonOptions {
  readonly configPath: string;
  /** Default: /run/nlb/nlbd-<cluster name>-<host id>.sock */
  readonly socketPath?: string;
  /** Remote control over TCP (remote.ts); needs `tokenFile`. Off when undefined. */
  readonly controlListen?: ListenAddress;
  readonly tokenFile?: string;
  /** Prometheus metrics over HTTP at /metrics. Off when undefined. */
  readonly metricsListen?: ListenAddress;
}

/** nlbd's exit codes: the same meanings as nlb's (src/cli/exit-codes.ts). */
export const daemonExitCodes = { ok: 0, failed: 1, usage: 2 } as const;

/** The daemon's data plane always uses the default table name: one nlbd per host. */
const tableName = tableNameDefault;

function packageVersion(): string {
  try {
    const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    return (JSON.parse(text) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function currentNetns(): string {
  try {
    return readlinkSync('/proc/self/ns/net');
  } catch {
    return 'unknown';
  }
}

/** Why nlbd will not start, what to do about it, and the exit code. */
export class StartRefused extends Error {
  constructor(
    message: string,
    readonly hint: string,
    readonly exitCode: number = daemonExitCodes.failed,
  ) {
    super(message);
    this.name = 'StartRefused';
  }
}

/** The state file remembers the interface's own MAC across a crash (veths have no permanent one). */
interface StateFile {
  readonly interface: string;
  readonly originalMac: string;
}

function readStateFile(file: string): StateFile | undefined {
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<StateFile>;
    return typeof parsed.originalMac === 'string' && typeof parsed.interface === 'string'
      ? { interface: parsed.interface, originalMac: parsed.originalMac }
      : undefined;
  } catch {
    return undefined;
  }
}

async function checkTool(
  runner: Runner,
  tool: string,
  args: string[],
  install: string,
): Promise<void> {
  try {
    await runner.run(tool, args);
  } catch (error) {
    if (error instanceof CommandError) {
      throw new StartRefused(`'${tool}' cannot be run: ${error.problem}`, install);
    }
    throw error;
  }
}

/** Every check that needs no change to the host. */
async function preflight(config: Config, runner: Runner, ipRoute: IpRoute): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new StartRefused(
      'not running as root: nlbd programs nftables, conntrack and the cluster interface',
      'run it as root (e.g. `sudo nlbd --config <file>`) or from a systemd unit',
    );
  }
  await checkTool(runner, 'nft', ['--version'], 'install nftables: `apt-get install nftables`');
  await checkTool(
    runner,
    'conntrack',
    ['--version'],
    'install conntrack-tools: `apt-get install conntrack`',
  );
  await checkTool(runner, 'ip', ['-V'], 'install iproute2: `apt-get install iproute2`');
  const name = config.cluster.interface;
  let addresses;
  try {
    addresses = await ipRoute.addresses(name);
  } catch {
    let known: string;
    try {
      const result = await runner.run('ip', ['-j', 'link', 'show']);
      const links = JSON.parse(result.stdout) as { ifname?: string }[];
      known = links
        .map((l) => l.ifname)
        .filter((n) => n !== undefined && n !== 'lo')
        .join(', ');
    } catch {
      known = '';
    }
    throw new StartRefused(
      `cluster interface '${name}' does not exist in this network namespace`,
      `set cluster.interface to the interface that carries the dedicated IP${known === '' ? '' : ` (here: ${known})`}`,
    );
  }
  const dedicated = config.host.dedicatedIp.address;
  if (!addresses.some((prefix) => addressesEqual(prefix.address, dedicated))) {
    throw new StartRefused(
      `the dedicated IP ${dedicated.text} is not an address of ${name}`,
      `add it (\`ip addr add ${dedicated.text}/${config.host.dedicatedIp.length} dev ${name}\`) or fix host.dedicatedIp; heartbeats are sent from it`,
    );
  }
  if (config.cluster.mode !== 'unicast') {
    throw new StartRefused(
      `cluster mode '${config.cluster.mode}' is not implemented by the data plane yet`,
      'use mode: unicast for now',
    );
  }
}

function keyPathOf(options: DaemonOptions, config: Config): string {
  // A relative key path is relative to the config file, so a config and its key travel together.
  return path.resolve(path.dirname(options.configPath), config.cluster.keyFile);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

async function loadInputs(options: DaemonOptions): Promise<{
  config: Config;
  key: Uint8Array;
  keyWarning: string | undefined;
  token: string | undefined;
  tokenWarning: string | undefined;
}> {
  const loaded = await loadConfigFile(options.configPath);
  if (!loaded.ok) {
    throw new StartRefused(
      loaded.message,
      loaded.reason === 'unreadable'
        ? '--config takes the path of the host config YAML, e.g. examples/web/host1.yaml'
        : 'fix the keys listed; the files in examples/ show every key with comments',
      daemonExitCodes.usage,
    );
  }
  const config = loaded.config;
  const key = await readKeyFile(keyPathOf(options, config));
  if (!key.ok) {
    throw new StartRefused(key.message, key.hint, daemonExitCodes.usage);
  }
  let token: string | undefined;
  let tokenWarning: string | undefined;
  if (options.controlListen !== undefined) {
    if (options.tokenFile === undefined) {
      throw new StartRefused(
        '--control-listen needs --token-file: remote control without a token is not offered',
        'create a token file (e.g. `openssl rand -hex 32 > /etc/nlb/control.token; chmod 600 /etc/nlb/control.token`) and pass --token-file',
        daemonExitCodes.usage,
      );
    }
    const read = await readTokenFile(options.tokenFile);
    if (!read.ok) {
      throw new StartRefused(read.message, read.hint, daemonExitCodes.usage);
    }
    token = read.token;
    tokenWarning = read.warning;
  } else if (options.tokenFile !== undefined) {
    throw new StartRefused(
      '--token-file is only used with --control-listen',
      'add --control-listen <addr:port> to enable remote control, or drop --token-file',
      daemonExitCodes.usage,
    );
  }
  return { config, key: key.key, keyWarning: key.warning, token, tokenWarning };
}

function refuse(log: DaemonLog | undefined, error: StartRefused): number {
  process.stderr.write(`nlbd: ${error.message}\nhint: ${error.hint}\n`);
  log?.event({ event: 'start refused', problem: error.message, hint: error.hint });
  return error.exitCode;
}

/**
 * Runs nlbd until SIGTERM/SIGINT (or a fatal error) and resolves with the exit code. Refusals
 * to start print `nlbd: <problem>` and `hint: <fix>` on stderr.
 */
export async function runDaemon(options: DaemonOptions): Promise<number> {
  let inputs;
  try {
    inputs = await loadInputs(options);
  } catch (error) {
    if (error instanceof StartRefused) return refuse(undefined, error);
    throw error;
  }
  const { key } = inputs;
  // The config the daemon runs; a successful reload replaces it (in the driver's step).
  let config = inputs.config;
  const hostId = config.host.id;
  const clusterName = config.cluster.name;
  const log = createDaemonLog({ by: hostId, cluster: clusterName });
  const runner = localRunner();
  const ipRoute = new IpRoute(runner);
  try {
    await preflight(config, runner, ipRoute);
  } catch (error) {
    if (error instanceof StartRefused) return refuse(log, error);
    throw error;
  }
  // Every event goes to the log and to the journal `nlb display` and `nlb events` read.
  const journal = new EventJournal();
  const logEvent: EventSink = (record) => {
    log.event(record);
    journal.record(record);
  };
  if (inputs.keyWarning !== undefined) {
    logEvent({ event: 'key file readable by others', warning: inputs.keyWarning });
  }
  if (inputs.tokenWarning !== undefined) {
    logEvent({ event: 'token file readable by others', warning: inputs.tokenWarning });
  }

  const incarnation = Date.now();
  const clock = new MonotonicClock(incarnation);
  const socketPath = options.socketPath ?? defaultSocketPath(clusterName, hostId);
  const stateFile = stateFilePath(clusterName, hostId);
  const machine = new HostMachine({ config, key, incarnation, nowMs: clock.nowMs() });
  const nft = new NftCli({ runner });
  const dataplane = new Dataplane(nft, new ConntrackCli(runner), ipRoute);
  const transport = new UdpTransport({
    dedicatedIp: config.host.dedicatedIp.address.text,
    group: config.cluster.heartbeat.group.text,
    port: config.cluster.heartbeat.port,
  });
  let fatalError: Error | undefined;
  let requestShutdown: (reason: string) => void = () => undefined;
  const driver = new HostDriver({
    machine,
    clock,
    transport,
    dataplane: {
      program: (spec) => dataplane.program(spec),
      refreshLease: () => dataplane.refreshLease(),
      flush: (rule, buckets) => dataplane.flush(rule, buckets),
      flushAll: () => dataplane.flushClusterIps(config.cluster.clusterIps),
      connections: () => dataplane.connections(),
    },
    specFor: (ownership: Ownership) => dataplaneSpecFor(config, ownership, { tableName }),
    log: logEvent,
    onReload: (command) => {
      config = command.config;
    },
    onFatal: (error) => {
      fatalError = error;
      requestShutdown('fatal error');
    },
  });
  const identity: DaemonIdentity = {
    cluster: clusterName,
    hostId,
    pid: process.pid,
    incarnation,
    netns: currentNetns(),
    socket: socketPath,
    configPath: path.resolve(options.configPath),
    version: packageVersion(),
  };
  let reloading = false;
  /** Re-reads the config file; applies it through the host machine, or says why not. */
  const reload = async (): Promise<ReloadReply> => {
    const reject = (reason: string, errors: readonly string[]): ReloadReply => {
      logEvent({ event: 'config rejected', reason, errors });
      return {
        code: 'invalid',
        message: `${reason}; the running config stays:\n${errors.map((e) => `  ${e}`).join('\n')}`,
        errors,
        changes: [],
        clusterChanged: false,
      };
    };
    if (reloading) {
      return {
        code: 'refused',
        message: 'a reload is already in progress; try again in a moment',
        errors: [],
        changes: [],
        clusterChanged: false,
      };
    }
    reloading = true;
    try {
      const loaded = await loadConfigFile(options.configPath);
      if (!loaded.ok) {
        return reject(
          `config file '${options.configPath}' is ${loaded.reason}`,
          loaded.reason === 'invalid'
            ? formatConfigErrors(loaded.errors).split('\n')
            : [loaded.message],
        );
      }
      const next = loaded.config;
      const keyPath = keyPathOf(options, next);
      let keyChanged = false;
      if (keyPath === keyPathOf(options, config)) {
        const nextKey = await readKeyFile(keyPath);
        if (!nextKey.ok) {
          return reject('the cluster key cannot be read', [`${nextKey.message} (${nextKey.hint})`]);
        }
        keyChanged = !sameBytes(nextKey.key, key);
      }
      const check = checkReload(config, next, keyChanged);
      if (check.problems.length > 0) {
        return reject('the new config changes what only a restart can', check.problems);
      }
      if (check.changes.length === 0) {
        return {
          code: 'already',
          message: 'the config file holds the running config: nothing to reload',
          errors: [],
          changes: [],
          clusterChanged: false,
        };
      }
      const clusterChanged = clusterDigestHex(next.cluster) !== clusterDigestHex(config.cluster);
      const reply = await driver.command({ verb: 'reload', config: next });
      return {
        code: reply.code === 'ok' ? 'ok' : reply.code === 'suspended' ? 'suspended' : 'refused',
        message: reply.message,
        errors: [],
        changes: reply.code === 'ok' ? check.changes : [],
        clusterChanged: reply.code === 'ok' && clusterChanged,
      };
    } finally {
      reloading = false;
    }
  };
  const target: ControlTarget = {
    get config() {
      return config;
    },
    identity: () => identity,
    nowMs: () => clock.nowMs(),
    status: () => driver.status(),
    details: () => driver.details(),
    command: (command) => driver.command(command),
    counters: () => dataplane.counters(),
    driverStats: () => driver.stats(),
    transportStats: () => transport.stats(),
    connections: () => dataplane.connections(),
    addresses: async () => {
      const name = config.cluster.interface;
      const [link, prefixes] = await Promise.all([ipRoute.link(name), ipRoute.addresses(name)]);
      return {
        interface: name,
        mac: link.mac,
        up: link.up,
        operState: link.operState,
        addresses: prefixes.map((p) => `${p.address.text}/${p.length}`),
      };
    },
    reload,
    metrics: async () => ({ contentType: metrics.contentType, text: await metrics.text() }),
    events: journal,
  };
  const metrics = createMetrics(target);
  const handle: ControlHandler = (request) =>
    answerControl(request, { target, dataplaneInSync: () => driver.dataplaneInSync });
  const server = new ControlServer(handle);
  const remoteServer =
    options.controlListen === undefined || inputs.token === undefined
      ? undefined
      : new ControlServer(
          remoteHandler(tokenDigest(inputs.token), handle, logEvent, () => clock.nowMs()),
        );
  let metricsServer: Awaited<ReturnType<typeof listenMetrics>> | undefined;

  const clusterMac =
    config.cluster.mode === 'unicast'
      ? formatMac(unicastClusterMac(config.cluster.clusterIps[0]!))
      : undefined;
  const setup: InterfaceSetup = {
    interface: config.cluster.interface,
    clusterIps: config.cluster.clusterIps,
    mode: config.cluster.mode,
    ...(clusterMac === undefined ? {} : { clusterMac }),
  };
  let attached: AttachedInterface | undefined;
  let tableProgrammed = false;

  let stopLinkWatch: (() => void) | undefined;
  /** Undoes whatever was set up, in the safe order; collects problems instead of stopping. */
  const teardown = async (): Promise<string[]> => {
    stopLinkWatch?.();
    const problems: string[] = [];
    const attempt = async (what: string, body: () => Promise<unknown>): Promise<void> => {
      try {
        await body();
      } catch (error) {
        problems.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
      }
    };
    if (attached !== undefined) {
      const done = attached;
      await attempt('detach the interface', () => detachInterface(ipRoute, setup, done));
      attached = undefined;
      rmSync(stateFile, { force: true });
    }
    if (tableProgrammed) {
      await attempt('remove the nftables tables', () => dataplane.remove(tableName));
      tableProgrammed = false;
    }
    await attempt('stop nft', () => nft.close());
    await attempt('close the heartbeat socket', () => transport.close());
    await attempt('close the control socket', () => server.close());
    if (remoteServer !== undefined) {
      await attempt('close the remote control listener', () => remoteServer.close());
    }
    if (metricsServer !== undefined) {
      const done = metricsServer;
      metricsServer = undefined;
      await attempt('close the metrics listener', () => {
        done.closeAllConnections();
        return new Promise<void>((resolve) => done.close(() => resolve()));
      });
    }
    for (const problem of problems) {
      logEvent({ event: 'shutdown problem', problem });
    }
    return problems;
  };

  // ---- claim the control socket and the heartbeat port: a second nlbd stops here.
  try {
    await server.listen(socketPath);
    await transport.start(driver.onDatagram);
  } catch (error) {
    await teardown();
    if (error instanceof ControlSocketError || error instanceof TransportError) {
      return refuse(log, new StartRefused(error.message, error.hint));
    }
    throw error;
  }
  // ---- the optional listeners, bound exactly where told.
  const listen = async (
    what: string,
    flag: string,
    where: ListenAddress,
    body: () => Promise<void>,
  ): Promise<StartRefused | undefined> => {
    try {
      await body();
      return undefined;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      return new StartRefused(
        `cannot listen for ${what} on ${where.address}:${where.port}: ${code ?? String(error)}`,
        code === 'EADDRNOTAVAIL'
          ? `${where.address} is not an address of this host; give ${flag} one of its addresses`
          : code === 'EADDRINUSE'
            ? `another process listens there; give ${flag} another port`
            : `check ${flag}`,
      );
    }
  };
  const listenRefusal =
    (options.controlListen !== undefined && remoteServer !== undefined
      ? await listen('remote control', '--control-listen', options.controlListen, () =>
          remoteServer.listenTcp(options.controlListen!.address, options.controlListen!.port),
        )
      : undefined) ??
    (options.metricsListen !== undefined
      ? await listen('metrics', '--metrics-listen', options.metricsListen, async () => {
          metricsServer = await listenMetrics(
            metrics,
            options.metricsListen!.address,
            options.metricsListen!.port,
          );
        })
      : undefined);
  if (listenRefusal !== undefined) {
    await teardown();
    return refuse(log, listenRefusal);
  }

  // ---- clean, program, attach.
  try {
    const previous = readStateFile(stateFile);
    const cleaned = await cleanupStale(nft, ipRoute, {
      ...setup,
      tableName,
      ...(previous?.interface === setup.interface ? { originalMac: previous.originalMac } : {}),
    });
    const flushed = await dataplane.flushClusterIps(config.cluster.clusterIps);
    if (cleaned.removedAddresses.length > 0 || cleaned.restoredMac !== undefined || flushed > 0) {
      logEvent({
        event: 'stale state cleaned',
        removedAddresses: cleaned.removedAddresses,
        restoredMac: cleaned.restoredMac ?? null,
        connectionsDropped: flushed,
      });
    }
    if (cleaned.warning !== undefined) {
      logEvent({ event: 'shutdown problem', problem: cleaned.warning });
    }
    tableProgrammed = true;
    await driver.programInitial();
    const fresh = await attachInterface(ipRoute, setup);
    // After a crash the interface may still carry the cluster MAC: keep the MAC remembered then.
    const originalMac =
      previous?.interface === setup.interface
        ? previous.originalMac
        : fresh.originalMac !== clusterMac
          ? fresh.originalMac
          : undefined;
    attached = originalMac === undefined ? fresh : { ...fresh, originalMac };
    if (originalMac !== undefined) {
      const record: StateFile = { interface: setup.interface, originalMac };
      writeFileSync(stateFile, `${JSON.stringify(record)}\n`, { mode: 0o600 });
    }
  } catch (error) {
    const problem = error instanceof Error ? error.message : String(error);
    await teardown();
    return refuse(
      log,
      new StartRefused(
        `could not set up the data plane: ${problem}`,
        'nothing was left configured; check that the kernel has nftables and conntrack support',
      ),
    );
  }

  // ---- run until told to stop.
  const exitCode = await new Promise<number>((resolve) => {
    let stopping = false;
    requestShutdown = (reason: string) => {
      if (stopping) {
        return;
      }
      stopping = true;
      void (async () => {
        logEvent({ event: 'nlbd stopping', reason });
        const reply = await driver.shutdown();
        const problems = await teardown();
        logEvent({
          event: 'nlbd stopped',
          reason,
          stopReply: reply?.code ?? null,
          problems: problems.length,
        });
        resolve(fatalError !== undefined || problems.length > 0 ? daemonExitCodes.failed : 0);
      })();
    };
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        // A second signal while stopping: the operator wants out now. The next start cleans up.
        logEvent({ event: 'nlbd forced exit', signal });
        process.exit(daemonExitCodes.failed);
      }
      requestShutdown(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // SIGHUP would kill the process without cleanup; by daemon custom it reloads the config
    // (the same as `nlb reload`, whose answer the log then carries as 'config reloaded' or
    // 'config rejected').
    process.on('SIGHUP', () => {
      void reload().then(
        (reply) =>
          logEvent({ event: 'reload on SIGHUP', code: reply.code, message: reply.message }),
        (error: unknown) =>
          logEvent({ event: 'reload on SIGHUP', code: 'failed', message: String(error) }),
      );
    });
    driver.start();
    // Carrier loss on the cluster interface: take no buckets until it is back (link-watch.ts).
    stopLinkWatch = watchLink(setup.interface, (up) => {
      void driver.command({ verb: 'link', up });
    });
    logEvent({
      event: 'nlbd started',
      incarnation,
      pid: process.pid,
      socket: socketPath,
      controlListen:
        options.controlListen === undefined
          ? null
          : `${options.controlListen.address}:${options.controlListen.port}`,
      metricsListen:
        options.metricsListen === undefined
          ? null
          : `${options.metricsListen.address}:${options.metricsListen.port}`,
      config: identity.configPath,
      interface: setup.interface,
      clusterIps: config.cluster.clusterIps.map((ip) => ip.text),
      heartbeat: `${config.cluster.heartbeat.group.text}:${config.cluster.heartbeat.port}`,
      version: identity.version,
    });
  });
  return exitCode;
}
