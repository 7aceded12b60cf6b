// nlbd's start-up checks, none of which changes anything on the host: the inputs (config, key
// file, token file) and the machine (root, the tools, the cluster interface and the dedicated
// IP). A failed check is a `StartRefused`: what is wrong, what to do about it, and the exit
// code; daemon.ts prints it as `nlbd: <problem>` and `hint: <fix>`.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { type Config } from '../core/config.js';
import { addressesEqual } from '../core/address.js';
import { CommandError, type Runner } from '../dataplane/exec.js';
import type { IpRoute } from '../dataplane/iproute.js';
import { loadConfigFile } from '../node/config-file.js';
import { readKeyFile } from './key-file.js';
import { readTokenFile } from '../control/remote-target.js';
import { frrBinDir } from '../core/bgp.js';

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
  /** Where the retained state lives (paths.ts); default $NLBD_STATE_DIR, else /var/lib/nlb. */
  readonly stateDir?: string;
  /** SCHED_RR priority for nlbd and what it starts (scheduling.ts); 0 leaves it alone. */
  readonly realtimePriority?: number;
}

/** nlbd's exit codes: the same meanings as nlb's (src/cli/exit-codes.ts). */
export const daemonExitCodes = { ok: 0, failed: 1, usage: 2 } as const;

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
export async function preflight(config: Config, runner: Runner, ipRoute: IpRoute): Promise<void> {
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
  const mode = config.cluster.mode;
  if ((mode === 'multicast' || mode === 'igmp') && !(await ipRoute.link(name)).multicast) {
    throw new StartRefused(
      `${mode} mode needs an interface that takes multicast, and ${name} does not (no MULTICAST flag)`,
      `turn multicast on (\`ip link set dev ${name} multicast on\`), or use mode: unicast`,
    );
  }
  if (mode === 'routed') checkFrrInstalled();
  await checkClusterIpsFree(config, ipRoute);
}

/**
 * Routed mode announces the cluster IPs through FRR's bgpd (docs/routed.md): without FRR
 * installed nothing would reach the routers, so nlbd refuses to start. Whether it runs is an
 * event once nlbd serves (routed-parts.ts): FRR may well start after nlbd.
 */
export function checkFrrInstalled(binDir = frrBinDir): void {
  const missing = ['zebra', 'bgpd'].filter((d) => !existsSync(path.join(binDir, d)));
  if (missing.length > 0) {
    throw new StartRefused(
      `routed mode needs FRR, and ${missing.map((d) => path.join(binDir, d)).join(' and ')} ${missing.length > 1 ? 'are' : 'is'} missing`,
      'install FRR (`apt-get install frr`), write its files with `nlb frr-config --config <this file>` and start it; or use another cluster.mode',
    );
  }
}

/**
 * A cluster IP must not be an address the host already uses: on another interface it would
 * take the cluster's traffic past the filter, and on the cluster interface with a prefix of
 * its own (not the /32 or /128 nlbd adds, which a crashed nlbd may have left) it is the
 * operator's, and nlbd would remove it at stop.
 */
async function checkClusterIpsFree(config: Config, ipRoute: IpRoute): Promise<void> {
  const name = config.cluster.interface;
  const present = await ipRoute.allAddresses();
  for (const ip of config.cluster.clusterIps) {
    const full = ip.family === 4 ? 32 : 128;
    const found = present.find(
      (a) =>
        addressesEqual(a.prefix.address, ip) && (a.interface !== name || a.prefix.length !== full),
    );
    if (found !== undefined) {
      const where = `${found.prefix.address.text}/${found.prefix.length} on ${found.interface}`;
      throw new StartRefused(
        `cluster IP ${ip.text} is already configured on this host (${where})`,
        `nlbd adds the cluster IPs to ${name} itself: remove it (\`ip addr del ${where.replace(' on ', ' dev ')}\`) or choose another cluster IP`,
      );
    }
  }
}

export function keyPathOf(options: DaemonOptions, config: Config): string {
  // A relative key path is relative to the config file, so a config and its key travel together.
  return path.resolve(path.dirname(options.configPath), config.cluster.keyFile);
}

export interface DaemonInputs {
  readonly config: Config;
  readonly key: Uint8Array;
  readonly token: string | undefined;
}

/** Reads and checks the config, the key and the token file. */
export async function loadInputs(options: DaemonOptions): Promise<DaemonInputs> {
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
  } else if (options.tokenFile !== undefined) {
    throw new StartRefused(
      '--token-file is only used with --control-listen',
      'add --control-listen <addr:port> to enable remote control, or drop --token-file',
      daemonExitCodes.usage,
    );
  }
  return { config, key: key.key, token };
}
