// The lab's network: a switch namespace with a bridge, one namespace per host and per client,
// each joined to the switch by a veth pair (the layout is in lab.ts's header), and the way in
// to any of them (`targetNamespace`, `labExec`, `labRun`).
//
// Every namespace is recorded in the lab's state as soon as it exists, so a failure at any
// point leaves nothing `labDown` would not find.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { CommandResult } from '../dataplane/exec.js';
import { LabError, assertLabName, assertRoot } from './errors.js';
import { type LabClusterSettings, renderHostConfig } from './host-config.js';
import {
  bystanderIp,
  bystanderNamespace,
  bystanderSwitchPort,
  clientIp,
  clientIp6,
  hostIp6,
  labPrefixLength6,
  clientNamespace,
  clientSwitchPort,
  hostIp,
  hostNamespace,
  hostSwitchPort,
  labExtraAddressFirst,
  labInterface,
  labPrefixLength,
  namespacePrefix,
} from './naming.js';
import { execIn, ipIn, netnsAdd, netnsList } from './netns.js';
import { buildSwitch } from './switch.js';
import { type LabRef, type LabState, claimLabDir, labDir, loadLab, writeState } from './state.js';

/** Random names are retried this often before `up` gives up (2 hex bytes: 65,536 names). */
const nameAttemptsMax = 20;

/**
 * True when `namespace` has the form of a namespace of lab `name` (its switch or router, a host,
 * a client).
 */
export function isNamespaceOfLab(name: string, namespace: string): boolean {
  const prefix = namespacePrefix(name);
  return (
    namespace.startsWith(prefix) && /^(sw|rt|h\d+|c\d+|b1)$/.test(namespace.slice(prefix.length))
  );
}

/** Extra source addresses of client `index` (1-based), `perClient` each, disjoint across clients. */
export function clientExtraIps(index: number, perClient: number): string[] {
  const first = labExtraAddressFirst + (index - 1) * perClient;
  return Array.from({ length: perClient }, (_, k) => `198.18.0.${first + k}`);
}

/** The IPv6 address of the lab's IPv4 address `ip`: 2001:db8:18:: and its last byte, as written. */
function ip6Twin(ip: string): string {
  return `2001:db8:18::${ip.split('.').at(-1)!}`;
}

function randomLabName(): string {
  return `lab${randomBytes(2).toString('hex')}`;
}

/**
 * Claims a name for a new lab (`wanted`, or a random one): the directory is created atomically,
 * and a namespace of the same name (from a lab whose record was lost, or anyone else's) is
 * never adopted.
 */
export async function claimLabName(wanted: string | undefined): Promise<string> {
  const existing = new Set(await netnsList());
  if (wanted !== undefined) {
    assertLabName(wanted);
  }
  for (let attempt = 0; ; attempt++) {
    const candidate = wanted ?? randomLabName();
    // Any namespace of the lab's form refuses the name, not only those this `up` would create:
    // that is what lets `labDown` treat every such namespace as the lab's own.
    const clash = [...existing].filter((ns) => isNamespaceOfLab(candidate, ns));
    if (clash.length === 0 && claimLabDir(candidate)) {
      return candidate;
    }
    if (wanted !== undefined || attempt >= nameAttemptsMax) {
      throw new LabError(
        'name-in-use',
        clash.length > 0
          ? `lab name '${candidate}' is in use: namespace(s) ${clash.join(', ')} exist`
          : `lab name '${candidate}' is in use: ${labDir(candidate)} exists`,
        `pick another --name, or remove the old lab with \`nlb lab down --name ${candidate}\``,
      );
    }
  }
}

/** Creates a namespace of the lab, records it at once, and brings its loopback up. */
export async function addNamespace(state: LabState, namespace: string): Promise<void> {
  await netnsAdd(namespace);
  // Recorded at once, so a failure from here on is cleaned by `labDown`.
  state.namespaces.push(namespace);
  writeState(state);
  await ipIn(namespace, ['link', 'set', 'lo', 'up']);
}

/**
 * Connects `namespace` to the switch: the veth is created in the switch namespace and its far
 * end moved straight into `namespace`, then addressed and brought up there.
 */
/**
 * A veth from namespace `from` (end `port`) into `namespace` (end eth0, created there, so the
 * root namespace never holds it).
 */
export async function addVeth(from: string, port: string, namespace: string): Promise<void> {
  await ipIn(from, [
    'link',
    'add',
    port,
    'type',
    'veth',
    'peer',
    'name',
    labInterface,
    'netns',
    namespace,
  ]);
}

async function attach(
  state: LabState,
  namespace: string,
  switchPort: string,
  addresses: readonly string[],
): Promise<void> {
  const sw = state.switchNamespace;
  await addVeth(sw, switchPort, namespace);
  await ipIn(sw, ['link', 'set', switchPort, 'master', state.bridge]);
  await ipIn(sw, ['link', 'set', switchPort, 'up']);
  for (const address of addresses) {
    // IPv6 addresses skip duplicate address detection: the lab's addresses are unique by
    // construction, and a tentative address could not be used for a second or two.
    const prefix = address.includes(':')
      ? [`${address}/${labPrefixLength6}`, 'nodad']
      : [`${address}/${labPrefixLength}`];
    await ipIn(namespace, ['address', 'add', prefix[0]!, 'dev', labInterface, ...prefix.slice(1)]);
  }
  await ipIn(namespace, ['link', 'set', labInterface, 'up']);
}

export interface TopologyPlan {
  readonly hosts: number;
  readonly clients: number;
  /** Extra source addresses per client. */
  readonly extraPerClient: number;
  /** What every host's config says of the cluster. */
  readonly cluster: LabClusterSettings;
  /** Give every host and client an IPv6 address too (the cluster gets an IPv6 cluster IP). */
  readonly ipv6: boolean;
  /** Add the bystander namespace (see LabState.bystander). */
  readonly bystander: boolean;
}

/**
 * Builds the switch, then every host (its config file, namespace and link) and every client,
 * recording each in `state` as it goes.
 */
export async function buildTopology(state: LabState, plan: TopologyPlan): Promise<void> {
  const { name, dir } = state;
  const sw = state.switchNamespace;
  await addNamespace(state, sw);
  // A plain Linux bridge learns MACs and ages them (300 s) like a real switch; STP stays off
  // so ports forward at once.
  await buildSwitch(sw, state.bridge, plan.cluster.mode);

  for (let id = 1; id <= plan.hosts; id++) {
    const namespace = hostNamespace(name, id);
    const config = path.join(dir, `h${id}.yaml`);
    writeFileSync(config, renderHostConfig(plan.cluster, id).text, { mode: 0o644 });
    await addNamespace(state, namespace);
    state.hosts.push({
      id,
      namespace,
      interface: labInterface,
      switchPort: hostSwitchPort(id),
      ip: hostIp(id),
      config,
      backendLog: path.join(dir, `h${id}-backend.log`),
      daemonLog: path.join(dir, `h${id}-nlbd.log`),
    });
    await attach(state, namespace, hostSwitchPort(id), [
      hostIp(id),
      ...(plan.ipv6 ? [hostIp6(id)] : []),
    ]);
  }
  for (let index = 1; index <= plan.clients; index++) {
    const namespace = clientNamespace(name, index);
    const extraIps = clientExtraIps(index, plan.extraPerClient);
    await addNamespace(state, namespace);
    const extraIps6 = extraIps.map(ip6Twin);
    state.clients.push({
      index,
      namespace,
      interface: labInterface,
      switchPort: clientSwitchPort(index),
      ip: clientIp(index),
      extraIps,
      ...(plan.ipv6 ? { ip6: clientIp6(index), extraIps6 } : {}),
    });
    await attach(state, namespace, clientSwitchPort(index), [
      clientIp(index),
      ...extraIps,
      ...(plan.ipv6 ? [clientIp6(index), ...extraIps6] : []),
    ]);
  }
  if (plan.bystander) {
    const namespace = bystanderNamespace(name);
    await addNamespace(state, namespace);
    state.bystander = {
      index: 0,
      namespace,
      interface: labInterface,
      switchPort: bystanderSwitchPort,
      ip: bystanderIp,
      extraIps: [],
    };
    await attach(state, namespace, bystanderSwitchPort, [bystanderIp]);
  }
  writeState(state);
}

/**
 * The namespace of `target`: 'sw' (in a routed lab also 'rt', the router), 'h<id>', 'c<index>',
 * or a full namespace name of the lab.
 */
export function targetNamespace(state: LabState, target: string): string {
  if (target === 'sw' || (target === 'rt' && state.routed !== undefined)) {
    return state.switchNamespace;
  }
  if (target === 'b1' && state.bystander !== undefined) {
    return state.bystander.namespace;
  }
  const host = /^h(\d+)$/.exec(target);
  if (host && state.hosts.some((h) => h.id === Number(host[1]))) {
    return hostNamespace(state.name, Number(host[1]));
  }
  const client = /^c(\d+)$/.exec(target);
  if (client && state.clients.some((c) => c.index === Number(client[1]))) {
    return clientNamespace(state.name, Number(client[1]));
  }
  if (state.namespaces.includes(target)) {
    return target;
  }
  const targets = [
    'sw',
    ...(state.routed === undefined ? [] : ['rt']),
    ...(state.bystander === undefined ? [] : ['b1']),
    ...state.hosts.map((h) => `h${h.id}`),
    ...state.clients.map((c) => `c${c.index}`),
  ];
  throw new LabError(
    'invalid-argument',
    `lab '${state.name}' has no target '${target}'`,
    `targets: ${targets.join(', ')}`,
  );
}

/**
 * Runs `argv` inside one of the lab's namespaces with the caller's stdin/stdout/stderr and
 * resolves with its exit code (128 + signal number when killed by a signal).
 */
export async function labExec(
  lab: LabRef,
  target: string,
  argv: readonly string[],
): Promise<number> {
  assertRoot();
  if (argv.length === 0) {
    throw new LabError(
      'invalid-argument',
      'no command given',
      'e.g. `nlb lab exec h1 -- ip -br addr`',
    );
  }
  const namespace = targetNamespace(loadLab(lab), target);
  const child = spawn('ip', ['netns', 'exec', namespace, ...argv], { stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      resolve(code ?? 128 + (signal ? (signalNumbers[signal] ?? 0) : 0));
    });
  });
}

const signalNumbers: Partial<Record<NodeJS.Signals, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGTERM: 15,
};

/** Like labExec but collects the output; for tests and the demo. Throws on a non-zero exit. */
export function labRun(
  lab: LabRef,
  target: string,
  argv: readonly string[],
): Promise<CommandResult> {
  assertRoot();
  return execIn(targetNamespace(loadLab(lab), target), argv);
}
