// The routed benchmark's fault figures (issue item 6, parts 1 and 2):
//   - a host hangs (routed-lab.ts `hang`): the time until the router's FIB no longer leads to it
//     (BFD), and until every bucket it owned answers new connections again from a survivor
//     (the bucket prober of bench/lab/prober.ts, from client c1, into the hung host's buckets);
//   - 90 long-lived connections (the lab loadgen's holds) across one change of the router's
//     paths: a host withdrawing, re-announcing, hanging; which broke, and on which host.
import { setTimeout as sleep } from 'node:timers/promises';
import type { LabState } from '../../src/lab/lab.js';
import { runLoadgenInClient } from '../../src/lab/loadgen-client.js';
import type { FailureKind } from '../../src/lab/loadgen.js';
import { labVip, routedClientIp } from '../../src/lab/naming.js';
import type { ProberConfig, ProberResult } from './prober.js';
import { type Hang, hang, ruleOwners, waitForNexthops, waitWhole, wake } from './routed-lab.js';
import {
  daemonLog,
  flowConfigOf,
  helperReady,
  maxOf,
  median,
  nowEpochMs,
  portsByBucket,
  round,
  startHelper,
} from './support.js';

/** A lab whole again after a hang: BGP re-established (~1.5 s here) and the cluster converged. */
export const wholeTimeoutMs = 30_000;
/** Waiting for the router's FIB to show a change: BFD takes ~300 ms, a withdrawal ~130 ms. */
const fibWaitMs = 5_000;

export interface FailoverTrial {
  readonly trial: number;
  readonly victim: number;
  readonly deadBuckets: number;
  /** Hang → the router's FIB without the victim (polled every fibPollMs). */
  readonly routerOutMs: number | null;
  /** Hang → the last of the victim's buckets first answered by a survivor. */
  readonly servedMs: number | null;
  readonly bucketServedMs: { readonly p50: number | null; readonly max: number | null };
  /** The worst bucket's probe spacing around its first answer: the timing's resolution. */
  readonly resolutionMs: number | null;
  /** Hang → the first survivor declaring the victim dead (its log). */
  readonly declaredDeadMs: number | null;
  /**
   * Hang → the last of the victim's buckets answering every attempt from then on (the attempt
   * after its last failure): served for good, not just once.
   */
  readonly servedForGoodMs: number | null;
  readonly probes: number;
  /** Attempts that failed after their bucket had been answered by a survivor. */
  readonly failedAfterServed: number;
  /** The first few of those: [bucket, ms after the hang, how it failed]. */
  readonly failuresAfterServed: readonly (readonly [number, number, string])[];
  readonly bucketsNeverServed: number;
  /** Wake → the lab whole again (FIB and cluster). */
  readonly wholeAgainMs: number;
}

const probeSlowMs = 50;
const probeFastMs = 10;
const probeTimeoutMs = 50;
const baselineMs = 300;
/** Probing goes on this long after every bucket was answered once, to see that it stays. */
const probeTailMs = 300;

/** One hang of `victim` in the nlb lab, measured from both sides; the lab is whole after it. */
// eslint-disable-next-line max-lines-per-function -- one trial from set-up to the lab whole again, each step in order
export async function failoverTrial(
  lab: LabState,
  trial: number,
  victim: number,
  detectionMs: number,
): Promise<FailoverTrial> {
  const hostIds = lab.hosts.map((h) => h.id);
  const survivors = hostIds.filter((id) => id !== victim);
  const owners = await ruleOwners(lab, 0);
  const dead = owners.flatMap((owner, bucket) => (owner === victim ? [bucket] : []));
  const ports = portsByBucket(routedClientIp(1), await flowConfigOf(lab));
  const config: ProberConfig = {
    target: labVip,
    port: 80,
    sourceIp: routedClientIp(1),
    buckets: dead.map((bucket) => ({ bucket, ports: ports[bucket]! })),
    intervalMs: probeSlowMs,
    timeoutMs: probeTimeoutMs,
    replyTimeoutMs: 2_000,
    durationMsMax: baselineMs + detectionMs + 5_000,
  };
  const prober = startHelper<ProberResult>(lab, 'c1', 'prober', config, 60_000);
  let frozen: Hang | undefined;
  let result: ProberResult;
  let routerOutMs: number | null;
  try {
    await helperReady(prober);
    await sleep(baselineMs);
    frozen = await hang(lab, victim);
    const hungAt = frozen.atEpochMs;
    const routerOut = waitForNexthops(lab, (h) => !h.includes(victim), hungAt, fibWaitMs);
    prober.send({
      cmd: 'until',
      afterEpochMs: hungAt,
      expect: Object.fromEntries(dead.map((bucket) => [String(bucket), survivors])),
      tailMs: probeTailMs,
    });
    // Survivors take over one period before detection at the earliest: probe finely from then.
    await sleep(Math.max(0, hungAt + detectionMs * 0.6 - nowEpochMs()));
    prober.send({ cmd: 'interval', intervalMs: probeFastMs });
    [result, routerOutMs] = await Promise.all([prober.next(), routerOut]);
  } finally {
    prober.kill();
    if (frozen !== undefined) await wake(lab, frozen);
  }
  const hungAt = frozen.atEpochMs;
  const wakeAt = nowEpochMs();
  const wholeAgainMs = await waitWhole(lab, true, wholeTimeoutMs);
  const hungRel = hungAt - result.originEpochMs;

  let probes = 0;
  let never = 0;
  const served: { ms: number; spacing: number; forGoodMs: number | null }[] = [];
  const failuresAfterServed: [number, number, string][] = [];
  const answeredBySurvivor = (o: number | string) => typeof o === 'number' && survivors.includes(o);
  for (const { bucket, attempts } of result.buckets) {
    const sorted = [...attempts].sort((a, b) => a[0] - b[0]).filter(([at]) => at >= hungRel);
    probes += sorted.length;
    const first = sorted.findIndex(([, o]) => answeredBySurvivor(o));
    if (first < 0) {
      never++;
      continue;
    }
    const at = sorted[first]![0];
    let lastBad = -1;
    sorted.forEach(([, o], i) => {
      if (!answeredBySurvivor(o)) lastBad = i;
    });
    const good = sorted[lastBad + 1];
    served.push({
      ms: at - hungRel,
      spacing: first > 0 ? at - sorted[first - 1]![0] : 0,
      forGoodMs: good === undefined ? null : good[0] - hungRel,
    });
    for (const [failedAt, o] of sorted.slice(first)) {
      if (!answeredBySurvivor(o))
        failuresAfterServed.push([bucket, round(failedAt - hungRel), String(o)]);
    }
  }
  const forGood = served.map((b) => b.forGoodMs);
  const worst = served.reduce<(typeof served)[number] | undefined>(
    (w, b) => (w === undefined || b.ms > w.ms ? b : w),
    undefined,
  );
  const declared = survivors.flatMap((id) =>
    daemonLog(lab, id).filter(
      (r) =>
        r.event === 'host declared dead' &&
        r.host === victim &&
        typeof r.atMs === 'number' &&
        r.atMs >= hungAt - 50 &&
        r.atMs <= wakeAt,
    ),
  );
  const declaredAt =
    declared.length === 0 ? null : Math.min(...declared.map((r) => r.atMs as number));
  return {
    trial,
    victim,
    deadBuckets: dead.length,
    routerOutMs: routerOutMs === null ? null : round(routerOutMs),
    servedMs: never > 0 || worst === undefined ? null : round(worst.ms),
    bucketServedMs: {
      p50: served.length === 0 ? null : round(median(served.map((b) => b.ms))!),
      max: served.length === 0 ? null : round(maxOf(served.map((b) => b.ms))!),
    },
    resolutionMs: worst === undefined ? null : round(worst.spacing),
    declaredDeadMs: declaredAt === null ? null : round(declaredAt - hungAt),
    servedForGoodMs:
      never > 0 || forGood.some((ms) => ms === null) ? null : round(maxOf(forGood as number[])!),
    probes,
    failedAfterServed: failuresAfterServed.length,
    failuresAfterServed: failuresAfterServed.slice(0, 20),
    bucketsNeverServed: never,
    wholeAgainMs: round(wholeAgainMs),
  };
}

// ------------------------------------------------------------------ connections across a change

export type System = 'nlb' | 'ecmp';
export type Change = 'withdraw' | 're-announce' | 'hang';

export interface HoldTrial {
  readonly system: System;
  readonly change: Change;
  /** The host that withdrew, re-announced or hung. */
  readonly host: number;
  readonly holdsWanted: number;
  /** Holds that opened (a host answered), by the host that answered. */
  readonly holdsByHost: Record<string, number>;
  /** Holds no host answered (not counted as broken). */
  readonly holdsNotOpened: number;
  /** Opened holds that broke. */
  readonly broken: number;
  /** Broken holds that the changed host answered (for a hang: lost with the host). */
  readonly brokenOnHost: number;
  readonly brokenElsewhere: number;
  readonly brokenKinds: Partial<Record<FailureKind, number>>;
  /** Change → the router's FIB showing it. */
  readonly routerMs: number | null;
  /** New connections opened meanwhile (20/s), and how many failed. */
  readonly newStarted: number;
  readonly newFailed: number;
}

export const holdsWanted = 90;
const holdPingIntervalMs = 200;
const holdPingTimeoutMs = 1_500;
/** Holds open, then this long before the change. */
const beforeChangeMs = 1_000;
/** The loadgen's run after the holds opened; the change comes `beforeChangeMs` into it. */
const runMs = 7_000;
const newPerSecond = 20;

/** Makes a change; says when, and what the router's FIB shows once it has taken effect. */
export type ChangeAct = () => Promise<{
  readonly atEpochMs: number;
  readonly fibShows: (hosts: readonly number[]) => boolean;
}>;

/**
 * Opens `holdsWanted` held connections from client c1, makes the change `beforeChangeMs` after
 * they are all open, keeps pinging them for the rest of `runMs`, and counts what broke. The
 * change returns what the router's FIB must show once it has taken effect.
 */
export async function holdsAcrossChange(
  lab: LabState,
  system: System,
  change: Change,
  host: number,
  act: ChangeAct,
): Promise<HoldTrial> {
  let changed: Promise<number | null> | undefined;
  const result = await runLoadgenInClient(
    lab,
    1,
    {
      target: labVip,
      ratePerSecond: newPerSecond,
      countMax: Math.ceil((newPerSecond * runMs) / 1000),
      durationMs: runMs,
      holds: holdsWanted,
      holdPingIntervalMs,
      holdPingTimeoutMs,
      progressIntervalMs: 100,
    },
    {
      // The first progress line comes once every hold is open (or failed to open).
      onProgress: () => {
        changed ??= sleep(beforeChangeMs).then(async () => {
          const done = await act();
          return waitForNexthops(lab, done.fibShows, done.atEpochMs, fibWaitMs);
        });
      },
    },
  );
  if (changed === undefined) throw new Error(`loadgen in ${lab.name} never reported progress`);
  const routerMs = await changed;
  const holdsByHost: Record<string, number> = {};
  const brokenKinds: Partial<Record<FailureKind, number>> = {};
  let broken = 0;
  let brokenOnHost = 0;
  let notOpened = 0;
  for (const hold of result.holds) {
    if (hold.host === undefined) {
      notOpened++;
      continue;
    }
    holdsByHost[hold.host] = (holdsByHost[hold.host] ?? 0) + 1;
    if (hold.broken === undefined) continue;
    broken++;
    if (hold.host === host) brokenOnHost++;
    brokenKinds[hold.broken.kind] = (brokenKinds[hold.broken.kind] ?? 0) + 1;
  }
  return {
    system,
    change,
    host,
    holdsWanted,
    holdsByHost,
    holdsNotOpened: notOpened,
    broken,
    brokenOnHost,
    brokenElsewhere: broken - brokenOnHost,
    brokenKinds,
    routerMs: routerMs === null ? null : round(routerMs),
    newStarted: result.started,
    newFailed: result.failed,
  };
}
