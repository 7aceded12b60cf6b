// What the demo's phases share: the lab's cluster IP and hosts, asking a host's nlbd, and
// bounded waits for the cluster.
import { setTimeout as sleep } from 'node:timers/promises';
import { controlRequest } from '../control/client.js';
import type { QueryData } from '../control/protocol.js';
import { defaultSocketPath } from '../daemon/paths.js';
import { labClusterName as clusterNameFor } from '../lab/host-config.js';
import type { LabState } from '../lab/lab.js';

export const vip = '198.18.0.100';
export const hostIds = [1, 2, 3] as const;
/** Every wait for the cluster is bounded; a demo that hangs teaches nothing. */
export const convergeTimeoutMs = 15_000;
const pollMs = 20;

export async function query(lab: LabState, hostId: number): Promise<QueryData | undefined> {
  try {
    const response = await controlRequest(
      defaultSocketPath(clusterNameFor(lab.name), hostId),
      { verb: 'query' },
      1_000,
    );
    return response.ok ? (response.data as QueryData) : undefined;
  } catch {
    return undefined;
  }
}

export async function waitFor(
  what: string,
  predicate: () => Promise<boolean>,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    signal?.throwIfAborted();
    if (await predicate()) return Date.now() - start;
    await sleep(pollMs);
  }
  throw new Error(`the demo waited ${timeoutMs} ms for ${what}; see the nlbd logs in the lab dir`);
}

export async function convergedOn(lab: LabState, members: readonly number[]): Promise<boolean> {
  const views = await Promise.all(members.map((id) => query(lab, id)));
  return views.every(
    (v) => v !== undefined && v.converged && v.members.join(',') === members.join(','),
  );
}

export function ownedBy(view: QueryData | undefined): number[] {
  return view?.rules[0]?.owned.slice() ?? [];
}
