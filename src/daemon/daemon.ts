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
//   stop           on SIGTERM/SIGINT: step `stop` so peers take over at once, detach the
//                  interface (cluster IPs first), remove the tables, close everything, exit 0.
import { readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../core/config.js';
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
import { type ControlTarget, type DaemonIdentity, handleControl } from './control.js';
import { ControlServer, ControlSocketError } from './control-server.js';
import { defaultSocketPath, stateFilePath } from './paths.js';
import { HostDriver } from './host-driver.js';
import { readKeyFile } from './key-file.js';
import { createDaemonLog, type DaemonLog } from './log.js';
import { TransportError, UdpTransport } from './transport.js';

export interface DaemonOptions {
  readonly configPath: string;
  /** Default: /run/nlb/nlbd-<cluster name>-<host id>.sock */
  readonly socketPath?: string;
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

async function loadInputs(
  options: DaemonOptions,
): Promise<{ config: Config; key: Uint8Array; keyWarning: string | undefined }> {
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
  // A relative key path is relative to the config file, so a config and its key travel together.
  const keyPath = path.resolve(path.dirname(options.configPath), config.cluster.keyFile);
  const key = await readKeyFile(keyPath);
  if (!key.ok) {
    throw new StartRefused(key.message, key.hint, daemonExitCodes.usage);
  }
  return { config, key: key.key, keyWarning: key.warning };
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
  const { config, key } = inputs;
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
  if (inputs.keyWarning !== undefined) {
    log.event({ event: 'key file readable by others', warning: inputs.keyWarning });
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
    log: log.event,
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
  const target: ControlTarget = {
    config,
    identity: () => identity,
    nowMs: () => clock.nowMs(),
    status: () => driver.status(),
    details: () => driver.details(),
    command: (command) => driver.command(command),
    counters: () => dataplane.counters(),
    driverStats: () => driver.stats(),
    transportStats: () => transport.stats(),
  };
  const server = new ControlServer((request) =>
    handleControl(request, { target, dataplaneInSync: () => driver.dataplaneInSync }),
  );

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

  /** Undoes whatever was set up, in the safe order; collects problems instead of stopping. */
  const teardown = async (): Promise<string[]> => {
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
    for (const problem of problems) {
      log.event({ event: 'shutdown problem', problem });
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
      log.event({
        event: 'stale state cleaned',
        removedAddresses: cleaned.removedAddresses,
        restoredMac: cleaned.restoredMac ?? null,
        connectionsDropped: flushed,
      });
    }
    if (cleaned.warning !== undefined) {
      log.event({ event: 'shutdown problem', problem: cleaned.warning });
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
        log.event({ event: 'nlbd stopping', reason });
        const reply = await driver.shutdown();
        const problems = await teardown();
        log.event({
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
        log.event({ event: 'nlbd forced exit', signal });
        process.exit(daemonExitCodes.failed);
      }
      requestShutdown(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // SIGHUP would kill the process without cleanup (a closed terminal); config reload is a
    // control verb, not a signal, so it is only noted.
    process.on('SIGHUP', () => log.event({ event: 'signal ignored', signal: 'SIGHUP' }));
    driver.start();
    log.event({
      event: 'nlbd started',
      incarnation,
      pid: process.pid,
      socket: socketPath,
      config: identity.configPath,
      interface: setup.interface,
      clusterIps: config.cluster.clusterIps.map((ip) => ip.text),
      heartbeat: `${config.cluster.heartbeat.group.text}:${config.cluster.heartbeat.port}`,
      version: identity.version,
    });
  });
  return exitCode;
}
