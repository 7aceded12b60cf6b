// `nlb lab`: a real cluster on one machine, built from network namespaces
// (docs/lab.md#topology).
//
//   nlb-<name>-sw   the switch: bridge br0, MAC learning on (as a real switch), default ageing;
//                   one port per host (h1, h2, …) and per client (c1, …)
//   nlb-<name>-hI   host I: eth0 = 198.18.0.(10+I)/24, the backend on :80, later nlbd
//   nlb-<name>-cJ   client J: eth0 = 198.18.0.(200+J)/24 (+ optional extra source addresses)
//   VIP 198.18.0.100: configured by nlbd on the hosts, never by the lab.
//
// Every link and address is created inside these namespaces (`ip -n`); veth pairs are created in
// the switch namespace with their far end moved straight into the host's, so the root namespace
// never holds a lab link, address or route, even for an instant. Everything the lab creates is
// recorded in its state directory as it is created, which is what lets `labDown` (also run after
// a failed `labUp`) remove exactly that and nothing else.
//
// This file holds a lab's life cycle (`labUp`, `labDown`) and is the lab's public face: it
// re-exports the parts, which live along their seams: topology.ts (namespaces, links, the way
// in), daemons.ts (backends and nlbd), faults.ts (crashes, cut links), status.ts, state.ts (the
// record and its lock), errors.ts and paths.ts.
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import type { Affinity, ClusterMode } from '../core/config.js';
import { daemonRunFiles, daemonStateFiles, stateDirDefault } from '../daemon/paths.js';
import {
  daemonCommandDefault,
  startBackends,
  startDaemonsDefault,
  startAllDaemons,
  waitForCluster,
} from './daemons.js';
import { assertBuilt, assertIntegerIn, assertLabName, assertRoot } from './errors.js';
import { labClusterName } from './host-config.js';
import {
  labBridge,
  labClientsMax,
  labExtraAddressFirst,
  labExtraAddressLast,
  labHostsMax,
  labSubnet,
  labVip,
  labVip6,
  switchNamespace,
} from './naming.js';
import { netnsDelete, netnsList, netnsPids } from './netns.js';
import { labIgmpGroup, steerClusterFrames } from './switch.js';
import { removeFrrDir } from './frr.js';
import { backendMainPath } from './paths.js';
import { isAlive, type ProcessRef, processRef, terminate } from './process.js';
import {
  type LabRef,
  type LabState,
  labDir,
  nameOf,
  readState,
  newLabRecord,
  updateState,
  writeState,
} from './state.js';
import { buildTopology, claimLabName, isNamespaceOfLab, type TopologyPlan } from './topology.js';

export type { LabState, LabHostState, LabClientState, LabRef } from './state.js';
export { labStateDir, loadLab } from './state.js';
export { LabError, type LabErrorCode } from './errors.js';
export { backendMainPath, daemonMainPath, loadgenMainPath, repoRoot } from './paths.js';
export {
  type StartHostDaemonOptions,
  daemonCommandDefault,
  startDaemonsDefault,
  startHostDaemon,
  stopHostDaemon,
  waitForCluster,
} from './daemons.js';
export { cutLink, killHostDaemon, restoreLink } from './faults.js';
export { type LabHostStatus, type LabStatus, labStatus } from './status.js';
export { clientExtraIps, labExec, labRun, targetNamespace } from './topology.js';

/** What is still running gets this long after SIGTERM before SIGKILL, when a lab goes down. */
const stopGraceMs = 1_000;

export interface LabUpOptions {
  /** Default: `lab` + 4 random hex digits. Letters, digits and '_' only (no '-'). */
  readonly name?: string;
  /** 1..32 hosts. */
  readonly hosts: number;
  /** 0..16 clients; default 1. */
  readonly clients?: number;
  /** Extra source addresses per client (from 198.18.0.101-199), for flows from many client IPs. */
  readonly clientExtraIps?: number;
  /** Start the backend on :80 in every host; default true. */
  readonly startBackends?: boolean;
  /** Start nlbd in every host; default `startDaemonsDefault`. */
  readonly startDaemons?: boolean;
  /** Argv starting nlbd, `{config}` standing for the config path; default `daemonCommandDefault`. */
  readonly daemonCommand?: readonly string[];
  readonly clusterMode?: ClusterMode;
  /** Affinity of the lab's port rule (tcp 80, multiple); default none. */
  readonly affinity?: Affinity;
  readonly heartbeatPeriodMs?: number;
  /** Missed periods before a host is declared dead (2..100); undefined keeps the config default. */
  readonly heartbeatTolerance?: number;
  /** A second port rule (TCP and UDP on this port), for bench:lab's UDP comparison; default none. */
  readonly extraRulePort?: number;
  /**
   * An IPv6 cluster IP (2001:db8:18::100) beside the IPv4 one, and an IPv6 address on every host
   * and client; the port rules cover both cluster IPs. Default false.
   */
  readonly ipv6?: boolean;
  /** Add a bystander namespace on the switch (LabState.bystander); default: in IGMP mode. */
  readonly bystander?: boolean;
  /**
   * Give the port rule an http health check of the backend (/health) and an agent check
   * (/weight), so a broken service takes its host out of the rule; default: when the backends
   * start (`startBackends`).
   */
  readonly health?: boolean;
  /** Heartbeats by unicast to every host's dedicated IP instead of multicast; default false. */
  readonly unicastHeartbeats?: boolean;
}

/** The sizes `labUp` was asked for, checked against the lab's limits. */
function checkedSizes(options: LabUpOptions): Omit<TopologyPlan, 'cluster'> {
  const hosts = options.hosts;
  const clients = options.clients ?? 1;
  const extraPerClient = options.clientExtraIps ?? 0;
  assertIntegerIn('hosts', hosts, 1, labHostsMax);
  assertIntegerIn('clients', clients, 0, labClientsMax);
  const extraMax =
    clients === 0 ? 0 : Math.floor((labExtraAddressLast - labExtraAddressFirst + 1) / clients);
  assertIntegerIn('clientExtraIps', extraPerClient, 0, extraMax);
  return {
    hosts,
    clients,
    extraPerClient,
    ipv6: options.ipv6 ?? false,
    bystander: options.bystander ?? options.clusterMode === 'igmp',
  };
}

function newLabState(name: string, options: LabUpOptions): LabState {
  return newLabRecord(name, {
    subnet: labSubnet,
    vip: labVip,
    switchNamespace: switchNamespace(name),
    bridge: labBridge,
    daemonCommand: [...(options.daemonCommand ?? daemonCommandDefault)],
    mode: options.clusterMode ?? 'unicast',
    ...(options.ipv6 === true ? { vip6: labVip6 } : {}),
  });
}

/**
 * Builds a lab and returns its record. On any failure it removes whatever it had created and
 * rethrows; a name already in use is refused before anything is created.
 */
export async function labUp(options: LabUpOptions): Promise<LabState> {
  assertRoot();
  const sizes = checkedSizes(options);
  const startBackendsToo = options.startBackends ?? true;
  const startDaemons = options.startDaemons ?? startDaemonsDefault;
  if (startBackendsToo) {
    assertBuilt(backendMainPath);
  }
  const name = await claimLabName(options.name);
  const state = newLabState(name, options);
  try {
    writeState(state);
    writeFileSync(state.keyFile, randomBytes(32), { mode: 0o600 });
    await buildTopology(state, {
      ...sizes,
      cluster: {
        labName: name,
        keyFile: state.keyFile,
        mode: options.clusterMode ?? 'unicast',
        affinity: options.affinity ?? 'none',
        // Undefined keeps the config's default: renderHostConfig leaves such a field out.
        heartbeatPeriodMs: options.heartbeatPeriodMs,
        heartbeatTolerance: options.heartbeatTolerance,
        extraRulePort: options.extraRulePort,
        // Without backends every check would fail (and the rule fail open): no checks then.
        health: options.health ?? startBackendsToo,
        hostCount: options.hosts,
        ...(options.unicastHeartbeats === true
          ? { heartbeatPeers: Array.from({ length: options.hosts }, (_, i) => i + 1) }
          : {}),
        ipv6: options.ipv6 ?? false,
      },
    });
    if (startBackendsToo) {
      await startBackends(state);
    }
    if (startDaemons) {
      const ids = state.hosts.map((host) => host.id);
      await startAllDaemons(name, ids);
      // `up` means a cluster that serves: every daemon runs and they agree on one map.
      await waitForCluster(name, ids);
      if (state.mode === 'igmp') {
        await steerClusterFrames(state, labIgmpGroup, ids);
      }
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

export interface LabDownResult {
  readonly name: string;
  /** False when there was nothing to remove (down is idempotent). */
  readonly existed: boolean;
  readonly namespacesDeleted: string[];
  readonly processesStopped: number;
}

/**
 * Removes a lab: stops every process it started and every process still running in its
 * namespaces, deletes exactly the namespaces it recorded, then its directory. Safe to repeat
 * and to run on the remains of a failed `labUp`.
 */
export async function labDown(lab: LabRef): Promise<LabDownResult> {
  assertRoot();
  const name = nameOf(lab);
  assertLabName(name);
  const dir = labDir(name);
  if (!existsSync(dir)) {
    return { name, existed: false, namespacesDeleted: [], processesStopped: 0 };
  }
  let state: LabState | undefined;
  try {
    state = readState(name);
  } catch {
    state = undefined;
  }
  const namespaces = await namespacesOfLab(name, state);
  const processes = await processesOfLab(state, namespaces);
  await terminate(processes, stopGraceMs);

  for (const namespace of namespaces) {
    await netnsDelete(namespace);
  }
  // FRR's directory of each namespace (a routed lab's, router.ts): its daemons were stopped
  // with everything else running in the namespace. Every namespace the lab recorded, deleted
  // now or before, so a directory left by an earlier failed `down` goes too.
  for (const namespace of new Set([...(state?.namespaces ?? []), ...namespaces])) {
    removeFrrDir(namespace);
  }
  // A daemon killed with SIGKILL (killHostDaemon, a crash test) leaves its control socket and
  // run file in the shared /run/nlb; they belong to the lab's hosts, so they go with it. Their
  // retained state is in the lab directory (labStateDir), removed below; a daemon started by
  // hand with the default state directory may have left its file there too.
  for (const host of state?.hosts ?? []) {
    for (const file of [
      ...daemonRunFiles(labClusterName(name), host.id),
      ...daemonStateFiles(labClusterName(name), host.id, stateDirDefault),
    ]) {
      rmSync(file, { force: true });
    }
  }
  rmSync(dir, { recursive: true, force: true });
  return { name, existed: true, namespacesDeleted: namespaces, processesStopped: processes.length };
}

/**
 * The lab's namespaces that exist: the recorded ones, plus any of the lab's form: `up` claimed
 * the name only when none existed, so such a namespace was made by this lab's `up`, killed
 * between creating it and recording it.
 */
async function namespacesOfLab(name: string, state: LabState | undefined): Promise<string[]> {
  const present = new Set(await netnsList());
  return [
    ...new Set([
      ...(state?.namespaces ?? []),
      ...[...present].filter((ns) => isNamespaceOfLab(name, ns)),
    ]),
  ].filter((ns) => present.has(ns));
}

/**
 * The processes the lab started that still run, and anything else still inside its namespaces
 * (loadgens, `lab exec` shells), which is the lab's too: a namespace whose processes live on
 * would keep its links alive after `ip netns delete`.
 */
async function processesOfLab(
  state: LabState | undefined,
  namespaces: readonly string[],
): Promise<ProcessRef[]> {
  const recorded = (state?.hosts ?? [])
    .flatMap((h) => [h.backend, h.daemon])
    .filter((ref): ref is ProcessRef => ref !== undefined && isAlive(ref));
  const inside: ProcessRef[] = [];
  for (const namespace of namespaces) {
    for (const pid of await netnsPids(namespace)) {
      const ref = processRef(pid);
      if (ref !== undefined && pid !== process.pid) {
        inside.push(ref);
      }
    }
  }
  return [...recorded, ...inside.filter((r) => !recorded.some((x) => x.pid === r.pid))];
}
