// What bench/routed-bench.ts does to a routed lab (src/lab/router.ts) and reads from it: the
// router's FIB for the cluster IP and its ECMP choice for one flow, a host's marker route, a host
// hanging and waking, the hosts' nftables counters and the bucket owners of a port rule.
//
// Every command runs inside the lab's own namespaces (`ip netns exec`), and every address is the
// lab's (198.18.0.0/15). A hang is both halves of a frozen machine: its router port drops every
// packet in both directions (an nftables table of the bench's own in the router's namespace, so
// the host's kernel answers nothing either, as a hung kernel would not), and every process in the
// host's namespace is stopped (SIGSTOP: nlbd, its route announcer and nft, zebra, bfdd, bgpd, the
// backend). The port stays up: only BFD can tell the router, as with a real hang.
import { setTimeout as sleep } from 'node:timers/promises';
import type { LabState } from '../../src/lab/lab.js';
import { labClusterName } from '../../src/lab/host-config.js';
import {
  assertLabSafeAddress,
  labVip,
  routedClientIp,
  routedMarkerProtocol,
} from '../../src/lab/naming.js';
import { netnsPids } from '../../src/lab/netns.js';
import { type ProcessRef, processRef, signalProcess } from '../../src/lab/process.js';
import { tableNameFor } from '../../src/dataplane/dataplane-spec.js';
import { execNs, execNsChecked } from './ns-exec.js';
import { nowEpochMs, query, waitConverged } from './support.js';

/** Every `ip`/`nft` call here answers in milliseconds; this only catches a hung one. */
const commandTimeoutMs = 5_000;
/** The router's FIB is polled this often while a change is timed: the figures' resolution. */
export const fibPollMs = 5;
/** The bench's table in the router's namespace that makes a host's link drop everything. */
const hangTable = 'rb_hang';

/** Host id of a routed lab host address: 198.18.<id>.2, or 198.18.1.<10 + id> on a segment lab. */
export function hostOfGateway(gateway: string): number | undefined {
  const own = /^198\.18\.(\d+)\.2$/.exec(gateway);
  if (own !== null) return Number(own[1]);
  const segment = /^198\.18\.1\.(\d+)$/.exec(gateway);
  const id = segment === null ? 0 : Number(segment[1]) - 10;
  return id >= 1 ? id : undefined;
}

interface RouteJson {
  readonly gateway?: string;
  readonly nexthops?: readonly { readonly gateway?: string }[];
}

/** The hosts the router's route to the cluster IP leads to now (its ECMP nexthops), sorted. */
export async function routerNexthops(lab: LabState): Promise<number[]> {
  const out = await execNsChecked(
    lab,
    'rt',
    ['ip', '-j', 'route', 'show', `${labVip}/32`],
    commandTimeoutMs,
  );
  const routes = JSON.parse(out.trim() === '' ? '[]' : out) as RouteJson[];
  return routes
    .flatMap((r) => (r.nexthops ?? [r]).map((n) => hostOfGateway(n.gateway ?? '')))
    .filter((id): id is number => id !== undefined)
    .sort((a, b) => a - b);
}

/**
 * Polls the router's FIB until `accept` holds; the ms from `sinceEpochMs` to the first poll
 * that saw it (the poll's start, so never late by more than one poll), or null after `waitMs`.
 */
export async function waitForNexthops(
  lab: LabState,
  accept: (hosts: readonly number[]) => boolean,
  sinceEpochMs: number,
  waitMs: number,
): Promise<number | null> {
  const deadline = nowEpochMs() + waitMs;
  while (nowEpochMs() < deadline) {
    const at = nowEpochMs();
    if (accept(await routerNexthops(lab))) return at - sinceEpochMs;
    await sleep(fibPollMs);
  }
  return null;
}

/**
 * The host the router sends one TCP flow from client 1 to the cluster IP to: its own FIB lookup
 * for a packet arriving from the clients' bridge, with the flow's ports (the 5-tuple hash).
 */
export async function firstHop(lab: LabState, sourcePort: number, port: number): Promise<number> {
  const argv = ['ip', '-j', 'route', 'get', labVip, 'from', routedClientIp(1), 'iif', 'br0'];
  argv.push('ipproto', 'tcp', 'sport', String(sourcePort), 'dport', String(port));
  const out = await execNsChecked(lab, 'rt', argv, commandTimeoutMs);
  const [route] = JSON.parse(out) as { gateway?: string }[];
  const host = hostOfGateway(route?.gateway ?? '');
  if (host === undefined) throw new Error(`the router has no host for ${argv.join(' ')}: ${out}`);
  return host;
}

/** Adds or deletes host `hostId`'s marker route, from which its FRR announces the cluster IP. */
export async function setMarker(lab: LabState, hostId: number, action: 'add' | 'del') {
  const marker = ['ip', 'route', action, `${labVip}/32`, 'dev', 'lo'];
  await execNsChecked(
    lab,
    `h${hostId}`,
    [...marker, 'proto', String(routedMarkerProtocol)],
    commandTimeoutMs,
  );
}

/**
 * ECMP alone (no nlbd): every host takes the cluster IP's packets by a `local` route and
 * announces it by the marker route, as plain BGP anycast (MetalLB's BGP mode) does.
 */
export async function announceWithoutNlb(lab: LabState): Promise<void> {
  for (const host of lab.hosts) {
    const local = ['ip', 'route', 'add', 'local', `${labVip}/32`, 'dev', 'lo'];
    await execNsChecked(lab, `h${host.id}`, local, commandTimeoutMs);
    await setMarker(lab, host.id, 'add');
  }
}

export interface Hang {
  readonly hostId: number;
  /** Epoch ms just before the link started dropping. */
  readonly atEpochMs: number;
  readonly stopped: readonly ProcessRef[];
}

function hangRuleset(port: string): string {
  return [
    `table inet ${hangTable} {`,
    '  chain hang_forward {',
    '    type filter hook forward priority -300; policy accept;',
    `    iifname "${port}" drop`,
    `    oifname "${port}" drop`,
    '  }',
    '  chain hang_input {',
    '    type filter hook input priority -300; policy accept;',
    `    iifname "${port}" drop`,
    '  }',
    '  chain hang_output {',
    '    type filter hook output priority -300; policy accept;',
    `    oifname "${port}" drop`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** Freezes host `hostId` (see the top of this file); `wake` undoes it. */
export async function hang(lab: LabState, hostId: number): Promise<Hang> {
  const host = lab.hosts.find((h) => h.id === hostId);
  if (host === undefined) throw new Error(`lab ${lab.name} has no host ${hostId}`);
  const atEpochMs = nowEpochMs();
  await execNsChecked(
    lab,
    'rt',
    ['nft', '-f', '-'],
    commandTimeoutMs,
    hangRuleset(host.switchPort),
  );
  const stopped: ProcessRef[] = [];
  for (const pid of await netnsPids(host.namespace)) {
    const ref = processRef(pid);
    if (ref !== undefined && signalProcess(ref, 'SIGSTOP')) stopped.push(ref);
  }
  return { hostId, atEpochMs, stopped };
}

/** Lets a hung host's link carry packets again and its processes run. Never throws. */
export async function wake(lab: LabState, frozen: Hang): Promise<void> {
  await execNs(lab, 'rt', ['nft', 'delete', 'table', 'inet', hangTable], commandTimeoutMs);
  for (const ref of frozen.stopped) signalProcess(ref, 'SIGCONT');
}

/** Packets of every named counter of the host's nlb table. */
export async function counters(lab: LabState, hostId: number): Promise<Record<string, number>> {
  const table = tableNameFor(labClusterName(lab.name));
  const out = await execNsChecked(
    lab,
    `h${hostId}`,
    ['nft', '-j', 'list', 'counters', 'table', 'inet', table],
    commandTimeoutMs,
  );
  const parsed = JSON.parse(out) as {
    nftables: { counter?: { name: string; packets: number } }[];
  };
  const result: Record<string, number> = {};
  for (const item of parsed.nftables) {
    if (item.counter !== undefined) result[item.counter.name] = item.counter.packets;
  }
  return result;
}

/** Every host's counters, summed by name. */
export async function countersSum(lab: LabState): Promise<Record<string, number>> {
  const sum: Record<string, number> = {};
  for (const host of lab.hosts) {
    for (const [name, packets] of Object.entries(await counters(lab, host.id))) {
      sum[name] = (sum[name] ?? 0) + packets;
    }
  }
  return sum;
}

export function counterDelta(
  before: Readonly<Record<string, number>>,
  after: Readonly<Record<string, number>>,
): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after).map(([name, packets]) => [name, packets - (before[name] ?? 0)]),
  );
}

/** The owner of every bucket of port rule `rule`, from what each host says it owns. */
export async function ruleOwners(lab: LabState, rule: number): Promise<(number | null)[]> {
  const owners: (number | null)[] = [];
  for (const host of lab.hosts) {
    const view = await query(lab, host.id);
    const owned = view?.rules[rule]?.owned;
    if (owned === undefined) throw new Error(`host ${host.id} did not say what it owns`);
    for (const bucket of owned) {
      if (owners[bucket] !== undefined && owners[bucket] !== null) {
        throw new Error(`bucket ${bucket} of rule ${rule} is owned by two hosts`);
      }
      owners[bucket] = host.id;
    }
  }
  return Array.from(owners, (owner) => owner ?? null);
}

/**
 * Until the lab is whole again after a change: every host in the router's FIB and, with nlbd,
 * the cluster converged on all hosts with its kernels in sync. Returns the ms it took.
 */
export async function waitWhole(lab: LabState, nlb: boolean, timeoutMs: number): Promise<number> {
  const start = nowEpochMs();
  const all = lab.hosts.map((h) => h.id);
  const fib = await waitForNexthops(lab, (hosts) => hosts.length === all.length, start, timeoutMs);
  if (fib === null) {
    throw new Error(`lab ${lab.name}: the router's FIB lacks a host after ${timeoutMs} ms`);
  }
  if (nlb) await waitConverged(lab, all, Math.max(1_000, timeoutMs - fib), undefined, 50);
  return nowEpochMs() - start;
}

/** The lab's addresses this bench sends to, checked once against the lab range. */
export function assertRoutedLabAddresses(lab: LabState): void {
  assertLabSafeAddress(labVip, 'cluster IP');
  assertLabSafeAddress(routedClientIp(1), 'client');
  for (const host of lab.hosts) assertLabSafeAddress(host.ip, 'host');
}
