// The routed lab (docs/routed.md#the-routed-lab): clusters beyond one L2 segment. A router
// namespace running FRR takes the switch's place; every host is on a link of its own and runs
// FRR too, peering with the router over BGP with BFD; the clients sit on a segment behind the
// router.
//
//   nlb-<name>-rt   the router: port hI = 198.18.I.1/24 towards host I; bridge br0 =
//                   198.18.100.1/24 with a port cJ per client; ip_forward on; ECMP hashed on the
//                   5-tuple (fib_multipath_hash_policy 3, fields 0x0037); FRR AS 65000 with every
//                   host a neighbor, maximum-paths 32
//   nlb-<name>-hI   host I: eth0 = 198.18.I.2/24, default route via the router; FRR AS 65001
//                   announcing 198.18.0.100/32 while the marker route `198.18.0.100/32 dev lo
//                   proto 250` is in its main table (nlbd will add it; the lab never does)
//   nlb-<name>-cJ   client J: eth0 = 198.18.100.(200+J)/24, default route via the router
//
// With `segment` the hosts share one segment instead: the router's bridge seg0 = 198.18.1.1/24
// takes every host's port hI, host I is 198.18.1.(10+I)/24, the BGP sessions run over it, and
// the hosts' configs say `forward: segment` (no encapsulation, routed-segment.ts); ECMP as above.
//
// Like the switch lab, every link is made inside the lab's namespaces (`ip -n`), each namespace
// is recorded before anything is put in it, and `labDown` removes it all, FRR's processes and
// its directories under /run/frr included. The hosts get nlbd configs in routed mode (unicast
// heartbeats to every host's address, since multicast does not cross the router, and
// cluster.routed and host.routed, from which each host's FRR files are written as `nlb
// frr-config` writes them), and nlbd runs in each: it adds and deletes the marker route, and
// forwards each packet to its bucket's owner over VXLAN (docs/routed.md#forwarding).
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type FrrFiles,
  bfdTimersDefault,
  bgpTimersDefault,
  describeFrrErrors,
  renderHostFrr,
  renderRouterFrr,
} from '../routed/frr-config.js';
import { bgpSessionStates } from '../routed/frr-settings.js';
import { hostFrrSettingsOf } from '../routed/host-settings.js';
import type { Affinity, Config } from '../core/config.js';
import {
  daemonCommandDefault,
  startAllDaemons,
  startBackends,
  startDaemonsDefault,
  waitForCluster,
} from './daemons.js';
import { assertBuilt, assertIntegerIn, assertRoot, LabError } from './errors.js';
import { frrMissingProblem, startFrr, vtysh } from './frr.js';
import { type LabClusterSettings, renderHostConfig } from './host-config.js';
import { labDown } from './lab.js';
import {
  clientNamespace,
  clientSwitchPort,
  hostNamespace,
  hostSwitchPort,
  labBridge,
  labClientsMax,
  labHostsMax,
  labInterface,
  labSafeRange,
  labVip,
  routedClientIp,
  routedHostAs,
  routedHostIp,
  routedHostLinkPrefixLength,
  routedMarkerProtocol,
  routedRouterAs,
  routedRouterClientIp,
  routedRouterIp,
  routedSegmentBridge,
  routedSegmentHostIp,
  routedSegmentRouterIp,
  routerNamespace,
} from './naming.js';
import { execIn, ipIn } from './netns.js';
import { backendMainPath } from './paths.js';
import { type LabState, newLabRecord, updateState, writeState } from './state.js';
import { addNamespace, addVeth, claimLabName } from './topology.js';

/**
 * Sessions come up within a second or two of the hosts' bgpd starting (they connect to the
 * router, which runs first); 15 s means something is wrong, and the error says which peers.
 */
const sessionsWaitMs = 15_000;

export interface RoutedLabUpOptions {
  /** Default: `lab` + 4 random hex digits. */
  readonly name?: string;
  /** 1..32 hosts. */
  readonly hosts: number;
  /** 0..16 clients; default 1. */
  readonly clients?: number;
  /** Start the backend on :80 in every host; default true. */
  readonly startBackends?: boolean;
  /** Start nlbd in every host and wait for the cluster to converge; default true. */
  readonly startDaemons?: boolean;
  /** Argv starting nlbd, `{config}` standing for the config path; default `daemonCommandDefault`. */
  readonly daemonCommand?: readonly string[];
  /** Give the port rule health checks of the backend; default: when backends start. */
  readonly health?: boolean;
  readonly heartbeatPeriodMs?: number;
  readonly heartbeatTolerance?: number;
  /** The port rule's affinity; default none. */
  readonly affinity?: Affinity;
  /**
   * A second port rule on this port (TCP and UDP, the lab's affinity), as in the switch lab
   * (LabClusterSettings.extraRulePort); default none. For bench:routed's iperf3 on :5201.
   */
  readonly extraRulePort?: number;
  /**
   * Every host and the router on one segment, the hosts forwarding on it without encapsulation
   * (`forward: segment`); default false: a /24 per host, VXLAN.
   */
  readonly segment?: boolean;
}

/** Host `id`'s address in a lab and its router's address on the host's link (a /24 either way). */
function hostLink(segment: boolean, id: number) {
  return segment
    ? { ip: routedSegmentHostIp(id), router: routedSegmentRouterIp }
    : { ip: routedHostIp(id), router: routedRouterIp(id) };
}

function newRoutedState(name: string, options: RoutedLabUpOptions): LabState {
  return newLabRecord(name, {
    subnet: labSafeRange,
    vip: labVip,
    switchNamespace: routerNamespace(name),
    bridge: labBridge,
    daemonCommand: [...(options.daemonCommand ?? daemonCommandDefault)],
    mode: 'routed',
    routed: {
      routerNamespace: routerNamespace(name),
      routerAs: routedRouterAs,
      hostAs: routedHostAs,
      markerProtocol: routedMarkerProtocol,
      ...(options.segment === true ? { segment: true } : {}),
    },
  });
}

/**
 * Builds a routed lab and returns its record, once every host's BGP session with the router is
 * established. On any failure it removes whatever it had created and rethrows.
 */
export async function routedLabUp(options: RoutedLabUpOptions): Promise<LabState> {
  assertRoot();
  const clients = options.clients ?? 1;
  assertIntegerIn('hosts', options.hosts, 1, labHostsMax);
  assertIntegerIn('clients', clients, 0, labClientsMax);
  const frrProblem = frrMissingProblem();
  if (frrProblem !== undefined) throw frrProblem;
  const startBackendsToo = options.startBackends ?? true;
  if (startBackendsToo) assertBuilt(backendMainPath);
  const name = await claimLabName(options.name);
  const state = newRoutedState(name, options);
  try {
    writeState(state);
    writeFileSync(state.keyFile, randomBytes(32), { mode: 0o600 });
    await buildRouter(state, options.segment === true);
    const configs: Config[] = [];
    for (let id = 1; id <= options.hosts; id++) {
      configs.push(await addRoutedHost(state, id, options));
    }
    for (let index = 1; index <= clients; index++) {
      await addRoutedClient(state, index);
    }
    writeState(state);
    // The router's FRR first: each host's bgpd then finds it listening and connects at once.
    await startFrr(state.switchNamespace, routerFrrFiles(state.hosts.map((h) => h.ip)));
    for (const [i, host] of state.hosts.entries()) {
      await startFrr(host.namespace, hostFrrFiles(configs[i]!));
    }
    await waitForSessions(state);
    if (startBackendsToo) await startBackends(state);
    if (options.startDaemons ?? startDaemonsDefault) {
      const ids = state.hosts.map((host) => host.id);
      await startAllDaemons(name, ids);
      await waitForCluster(name, ids);
    }
    return await updateState(name, (current) => {
      current.complete = true;
      return current;
    });
  } catch (error) {
    await labDown(name).catch(() => undefined);
    throw error;
  }
}

async function sysctls(namespace: string, settings: Readonly<Record<string, string>>) {
  for (const [key, value] of Object.entries(settings)) {
    await execIn(namespace, ['sysctl', '-q', '-w', `${key}=${value}`]);
  }
}

/**
 * The router's namespace, forwarding and hashing on the 5-tuple, the clients' bridge, and with
 * `segment` the hosts' bridge.
 */
async function buildRouter(state: LabState, segment: boolean): Promise<void> {
  const rt = state.switchNamespace;
  await addNamespace(state, rt);
  // Policy 3 with fields 0x0037 (addresses, protocol, ports) is the real 5-tuple: policy 1 was
  // not repeatable here (a socket's hash is re-rolled on SYN retransmit), policy 0 sent every
  // flow to one host (docs/routed.md#the-routed-lab).
  await sysctls(rt, {
    'net.ipv4.ip_forward': '1',
    'net.ipv4.fib_multipath_hash_policy': '3',
    'net.ipv4.fib_multipath_hash_fields': '0x0037',
  });
  await ipIn(rt, ['link', 'add', state.bridge, 'type', 'bridge']);
  await ipIn(rt, ['address', 'add', `${routedRouterClientIp}/24`, 'dev', state.bridge]);
  await ipIn(rt, ['link', 'set', state.bridge, 'up']);
  if (segment) {
    await ipIn(rt, ['link', 'add', routedSegmentBridge, 'type', 'bridge']);
    const address = `${routedSegmentRouterIp}/${routedHostLinkPrefixLength}`;
    await ipIn(rt, ['address', 'add', address, 'dev', routedSegmentBridge]);
    await ipIn(rt, ['link', 'set', routedSegmentBridge, 'up']);
  }
}

/**
 * A veth from the router's namespace (end `port`) into `namespace` (end eth0, moved there at
 * creation, so the root namespace never holds it), both ends up.
 */
async function link(rt: string, port: string, namespace: string): Promise<void> {
  await addVeth(rt, port, namespace);
  await ipIn(rt, ['link', 'set', port, 'up']);
  await ipIn(namespace, ['link', 'set', labInterface, 'up']);
}

/** Adds host `id`: its nlbd config (returned), namespace, link and addresses. */
async function addRoutedHost(
  state: LabState,
  id: number,
  options: RoutedLabUpOptions,
): Promise<Config> {
  const rt = state.switchNamespace;
  const namespace = hostNamespace(state.name, id);
  const config = path.join(state.dir, `h${id}.yaml`);
  const segment = options.segment === true;
  const { ip, router } = hostLink(segment, id);
  const rendered = renderHostConfig(routedClusterSettings(state, options), id);
  writeFileSync(config, rendered.text, { mode: 0o644 });
  await addNamespace(state, namespace);
  state.hosts.push({
    id,
    namespace,
    interface: labInterface,
    switchPort: hostSwitchPort(id),
    ip,
    config,
    backendLog: path.join(state.dir, `h${id}-backend.log`),
    daemonLog: path.join(state.dir, `h${id}-nlbd.log`),
  });
  writeState(state);
  await link(rt, hostSwitchPort(id), namespace);
  const len = routedHostLinkPrefixLength;
  if (segment) {
    await ipIn(rt, ['link', 'set', hostSwitchPort(id), 'master', routedSegmentBridge]);
  } else {
    await ipIn(rt, ['address', 'add', `${router}/${len}`, 'dev', hostSwitchPort(id)]);
  }
  await ipIn(namespace, ['address', 'add', `${ip}/${len}`, 'dev', labInterface]);
  await ipIn(namespace, ['route', 'add', 'default', 'via', router]);
  return rendered.config;
}

async function addRoutedClient(state: LabState, index: number): Promise<void> {
  const rt = state.switchNamespace;
  const namespace = clientNamespace(state.name, index);
  await addNamespace(state, namespace);
  state.clients.push({
    index,
    namespace,
    interface: labInterface,
    switchPort: clientSwitchPort(index),
    ip: routedClientIp(index),
    extraIps: [],
  });
  writeState(state);
  await link(rt, clientSwitchPort(index), namespace);
  await ipIn(rt, ['link', 'set', clientSwitchPort(index), 'master', state.bridge]);
  await ipIn(namespace, ['address', 'add', `${routedClientIp(index)}/24`, 'dev', labInterface]);
  await ipIn(namespace, ['route', 'add', 'default', 'via', routedRouterClientIp]);
}

/**
 * What the hosts' nlbd configs say: unicast heartbeats to every host, each in its subnet, and
 * the BGP settings their FRR files are written from (as `nlb frr-config` writes them).
 */
function routedClusterSettings(state: LabState, options: RoutedLabUpOptions): LabClusterSettings {
  const segment = options.segment === true;
  return {
    labName: state.name,
    keyFile: state.keyFile,
    mode: 'routed',
    affinity: options.affinity ?? 'none',
    ...(options.extraRulePort === undefined ? {} : { extraRulePort: options.extraRulePort }),
    // Without backends every check would fail (and the rule fail open): no checks then.
    health: options.health ?? options.startBackends ?? true,
    hostCount: options.hosts,
    heartbeatPeriodMs: options.heartbeatPeriodMs,
    heartbeatTolerance: options.heartbeatTolerance,
    heartbeatPeers: Array.from({ length: options.hosts }, (_, i) => i + 1),
    dedicatedIp: (id) => ({
      ip: hostLink(segment, id).ip,
      prefixLength: routedHostLinkPrefixLength,
    }),
    routed: {
      as: routedHostAs,
      peers: (id) => [{ address: hostLink(segment, id).router, as: routedRouterAs }],
      ...(segment ? { forward: 'segment' as const } : {}),
    },
  };
}

function filesOrThrow(result: ReturnType<typeof renderHostFrr>, what: string): FrrFiles {
  if (!result.ok) {
    // The lab builds these settings itself: a refusal is a bug here, not input.
    throw new Error(
      `the ${what}'s FRR settings were refused:\n${describeFrrErrors(result.errors)}`,
    );
  }
  return result.files;
}

/**
 * The router's FRR: every host (by its address) a neighbor with BFD, ECMP over as many hosts as
 * a lab has.
 */
export function routerFrrFiles(hostIps: readonly string[]): FrrFiles {
  const result = renderRouterFrr({
    hostname: 'rt',
    localAs: routedRouterAs,
    routerId: routedRouterClientIp,
    peers: hostIps.map((address) => ({ address, as: routedHostAs })),
    timers: bgpTimersDefault,
    bfd: bfdTimersDefault,
    maximumPaths: labHostsMax,
  });
  return filesOrThrow(result, 'router');
}

/**
 * A host's FRR, from its nlbd config exactly as `nlb frr-config` takes it: announces the lab's
 * cluster IP while the marker route is there.
 */
export function hostFrrFiles(config: Config): FrrFiles {
  const settings = hostFrrSettingsOf(config);
  if (settings === undefined) {
    throw new Error(`host ${config.host.id}'s config has no routed settings`);
  }
  return filesOrThrow(renderHostFrr(settings), `host ${config.host.id}`);
}

/** The BGP state of every neighbor of `namespace`'s FRR (`Established`, `Active`, …), by address. */
export async function bgpPeerStates(namespace: string): Promise<Map<string, string>> {
  const text = await vtysh(namespace, 'show bgp summary json');
  return new Map([...bgpSessionStates(text)].map(([peer, state]) => [peer, state ?? '?']));
}

/** Waits until the router's session with every host is established; fails naming the others. */
async function waitForSessions(state: LabState): Promise<void> {
  const deadline = Date.now() + sessionsWaitMs;
  for (;;) {
    const states = await bgpPeerStates(state.switchNamespace);
    const down = state.hosts.filter((h) => states.get(h.ip) !== 'Established');
    if (down.length === 0) return;
    if (Date.now() > deadline) {
      throw new LabError(
        'process-failed',
        `BGP sessions not established within ${sessionsWaitMs} ms: ${down
          .map((h) => `h${h.id} (${h.ip}: ${states.get(h.ip) ?? 'no session'})`)
          .join(', ')}`,
        `see the FRR logs in /run/frr/<namespace>/ and \`nlb lab exec sw -- vtysh -N ${state.switchNamespace} --config_dir /run/frr -c 'show bgp summary'\``,
      );
    }
    await sleep(100);
  }
}
