// Planned changes under load in the lab: a host joins, a host drainstops, a host stops, while the
// load generator opens new connections at a steady rate and holds long-lived ones open. For each
// change: failed requests and broken long-lived connections (the targets: 0), requests whose
// first SYN was lost (they succeed on the retransmission, ~1 s late), and the gap: how long each
// moving bucket accepted no new connection, measured by the prober at 5 ms spacing.
//
// NLB semantics: `stop` drops the connections of the stopped host (drainstop is the way to keep
// them). The run is arranged so that no long-lived connection lives on the host that stops (it
// joined after they were opened); short requests in flight on it at that instant are counted
// apart as "dropped by stop, by design".
import { setTimeout as sleep } from 'node:timers/promises';
import { parseAddress } from '../../src/core/address.js';
import { flowBucket } from '../../src/core/flow.js';
import { type LabState, startHostDaemon, stopHostDaemon } from '../../src/lab/lab.js';
import { runLoadgenInClient } from '../../src/lab/loadgen-client.js';
import type { ConnectionRecord, HoldRecord, ProgressRecord } from '../../src/lab/loadgen.js';
import { labVip } from '../../src/lab/naming.js';
import type { Attempt, ProberConfig, ProberResult } from './prober.js';
import {
  command,
  daemonLog,
  flowConfigOf,
  nowEpochMs,
  ownersNow,
  portsByBucket,
  round,
  helperReady,
  startHelper,
  targetOwners,
  waitConverged,
} from './support.js';

export interface PlannedOptions {
  readonly ratePerSecond: number;
  readonly holds: number;
  readonly settleMs: number;
}

export interface PlannedChange {
  readonly change: 'join' | 'drainstop' | 'drain rule' | 'enable rule' | 'stop';
  readonly host: number;
  readonly bucketsMoved: number;
  /** The map after convergence is the one assign() predicts from the map before. */
  readonly movedAsPredicted: boolean;
  /** Command (or daemon start, for a join) → every member converged with its kernel in sync. */
  readonly convergedMs: number;
  /** Requests started from this change until the next, and how they ended. */
  readonly requests: number;
  readonly requestsFailed: number;
  /** Failed requests in flight on the host being stopped (NLB's stop drops them, by design). */
  readonly requestsDroppedByStop: number;
  readonly failuresByKind: Record<string, number>;
  /** Answered, but only after ≥ 900 ms: the first SYN fell in a gap and was retransmitted. */
  readonly requestsSynRetried: number;
  readonly holdsBroken: number;
  /** Gap per moving bucket: last answer of the old owner → first answer of the new owner. */
  readonly gap: {
    readonly bucketsProbed: number;
    readonly probeSpacingMs: number | null;
    /** Upper bound: includes one probe spacing; the largest over the moving buckets. */
    readonly maxUpperMs: number | null;
    /** Probes that no host answered between the two (each a SYN that fell into a gap). */
    readonly probesUnanswered: number;
    readonly unansweredByKind: Record<string, number>;
    /** Lower bound from unanswered probes: first to last unanswered one, largest bucket. */
    readonly maxLowerMs: number;
    /** Answers by the old owner after the new owner answered (two owners at once): must be 0. */
    readonly answersByOldAfterNew: number;
    /** Moving buckets the new owner never answered within the prober's bound. */
    readonly bucketsNotTaken: number;
    /**
     * From the daemons' own logs: the old owner's kernel stops taking the buckets ("ownership
     * programmed" with fewer) → the new owner's kernel takes them (with more); the largest over
     * the (old, new) pairs. Independent of the prober, whose process competes for the CPU.
     */
    readonly kernelMaxMs: number | null;
    /** The same, per moved bucket: old owner's kernel released it → new owner's took it. */
    readonly kernelGapsMs: readonly number[];
  };
}

export interface PlannedResult {
  readonly ratePerSecond: number;
  readonly holds: number;
  readonly holdsOpened: number;
  /** Before the first change: the baseline, where nothing should fail either. */
  readonly steady: { readonly requests: number; readonly requestsFailed: number };
  readonly changes: PlannedChange[];
  readonly loadgen: {
    readonly started: number;
    readonly failed: number;
    readonly holdsBroken: number;
    readonly latencyMs: unknown;
  };
}

/** join, drainstop, rule drain, rule enable, stop. */
export const plannedChangeCount = 5;
const probeIntervalMs = 5;
const probeTimeoutMs = 50;
/** Once connected, the backend's answer only names the host: it may be slow under load. */
const probeReplyTimeoutMs = 2_000;
const convergeTimeoutMs = 20_000;
/** An answered request this slow had its first SYN retransmitted (Linux waits 1 s). */
const synRetryMs = 900;

/**
 * The kernel-side gap of each moved bucket from the nlbd logs: the first `ownership programmed`
 * of the old owner after the change that released the bucket, and the first of the new owner
 * that gained it; gap = acquired − released, both at `atMs` (wall clock with µs: the lab's hosts
 * share the machine's clock). Each is logged once the kernel confirmed the transaction, so both
 * ends carry the same small delay.
 */
function kernelGaps(
  lab: LabState,
  fromEpochMs: number,
  toEpochMs: number,
  moving: readonly { bucket: number; from: number | null; to: number | null }[],
): number[] {
  const records = new Map(
    lab.hosts.map((h) => [
      h.id,
      daemonLog(lab, h.id).filter(
        (r) =>
          r.event === 'ownership programmed' &&
          typeof r.atMs === 'number' &&
          r.atMs >= fromEpochMs - 1 &&
          r.atMs <= toEpochMs,
      ),
    ]),
  );
  const firstWith = (
    host: number,
    field: 'gained' | 'released',
    bucket: number,
  ): number | undefined => {
    const record = records
      .get(host)
      ?.find((r) => Array.isArray(r[field]) && (r[field] as number[][])[0]?.includes(bucket));
    return record === undefined ? undefined : (record.atMs as number);
  };
  const gaps: number[] = [];
  for (const m of moving) {
    if (m.from === null || m.to === null) continue;
    const released = firstWith(m.from, 'released', m.bucket);
    const acquired = firstWith(m.to, 'gained', m.bucket);
    if (released !== undefined && acquired !== undefined) gaps.push(round(acquired - released));
  }
  return gaps;
}

function analyseGap(
  result: ProberResult,
  moving: readonly { bucket: number; from: number | null; to: number | null }[],
  kernelGapsMs: readonly number[],
): PlannedChange['gap'] {
  let upper: number | null = null;
  let lower = 0;
  let unanswered = 0;
  let oldAfterNew = 0;
  let notTaken = 0;
  const byKind: Record<string, number> = {};
  const spacings: number[] = [];
  for (const m of moving) {
    const attempts = [...(result.buckets.find((b) => b.bucket === m.bucket)?.attempts ?? [])].sort(
      (a, b) => a[0] - b[0],
    );
    for (let i = 1; i < attempts.length; i++) spacings.push(attempts[i]![0] - attempts[i - 1]![0]);
    const firstNew = attempts.findIndex(([, o]) => o === m.to);
    if (firstNew < 0) {
      notTaken++;
      continue;
    }
    const newAt = attempts[firstNew]![0];
    oldAfterNew += attempts.filter(([at, o]) => at > newAt && o === m.from).length;
    let lastOld = -1;
    for (let i = firstNew - 1; i >= 0; i--) {
      if (attempts[i]![1] === m.from) {
        lastOld = i;
        break;
      }
    }
    // A bucket nobody owned before (m.from null) has no old owner to measure from.
    if (lastOld < 0) continue;
    const between: Attempt[] = attempts.slice(lastOld + 1, firstNew);
    const failed = between.filter(([, o]) => typeof o !== 'number');
    unanswered += failed.length;
    for (const [, kind] of failed) byKind[String(kind)] = (byKind[String(kind)] ?? 0) + 1;
    upper = Math.max(upper ?? 0, newAt - attempts[lastOld]![0]);
    if (failed.length > 0) lower = Math.max(lower, failed.at(-1)![0] - failed[0]![0]);
  }
  const sortedSpacing = spacings.sort((a, b) => a - b);
  return {
    bucketsProbed: moving.length,
    probeSpacingMs:
      sortedSpacing.length === 0
        ? null
        : round(sortedSpacing[Math.floor((sortedSpacing.length - 1) / 2)]!),
    maxUpperMs: upper === null ? null : round(upper),
    probesUnanswered: unanswered,
    unansweredByKind: byKind,
    maxLowerMs: round(lower),
    answersByOldAfterNew: oldAfterNew,
    bucketsNotTaken: notTaken,
    kernelMaxMs: kernelGapsMs.length === 0 ? null : Math.max(...kernelGapsMs),
    kernelGapsMs,
  };
}

// eslint-disable-next-line max-lines-per-function -- one measurement from set-up to teardown, each step in order; to be split when issue 11 reworks the benchmarks
export async function runPlanned(
  lab: LabState,
  options: PlannedOptions,
  log: (line: string) => void,
  signal: AbortSignal,
): Promise<PlannedResult> {
  const flow = await flowConfigOf(lab);
  await waitConverged(lab, [1, 2, 3], convergeTimeoutMs, signal);
  // Host 3 leaves cleanly first, so that it can join under load.
  await stopHostDaemon(lab, 3);
  await waitConverged(lab, [1, 2], convergeTimeoutMs, signal);

  const loadClient = lab.clients[0]!;
  const probeClient = lab.clients[1]!;
  const ports = portsByBucket(probeClient.ip, flow);
  const sources = [loadClient.ip, ...loadClient.extraIps];
  const connections: { record: ConnectionRecord; epochMs: number }[] = [];
  const holdBreaks: { hold: HoldRecord; epochMs: number }[] = [];
  let offsetMs: number | undefined;
  let holdsAlive = 0;
  const loadAbort = new AbortController();
  const onAbort = (): void => loadAbort.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  const loadDurationMs = 120_000;
  const load = runLoadgenInClient(
    lab,
    1,
    {
      target: labVip,
      port: 80,
      ratePerSecond: options.ratePerSecond,
      countMax: Math.ceil((options.ratePerSecond * loadDurationMs) / 1000),
      durationMs: loadDurationMs,
      timeoutMs: 3_000,
      holds: options.holds,
      holdPingIntervalMs: 100,
      holdPingTimeoutMs: 2_000,
      progressIntervalMs: 100,
      sources,
      signal: loadAbort.signal,
    },
    {
      onProgress: (p: ProgressRecord) => {
        // The loadgen's clock starts when it does; its first progress line ties it to ours
        // (to within the few ms the line takes to arrive, far below the phases' length).
        offsetMs ??= nowEpochMs() - p.atMs;
        holdsAlive = p.holdsAlive;
      },
      onConnection: (record) =>
        connections.push({ record, epochMs: (offsetMs ?? nowEpochMs()) + record.atMs }),
      onHoldBreak: (hold) => holdBreaks.push({ hold, epochMs: nowEpochMs() }),
    },
  );
  load.catch(() => undefined);

  const changes: PlannedChange[] = [];
  try {
    const openedBy = nowEpochMs() + 10_000;
    while (holdsAlive < options.holds && nowEpochMs() < openedBy) await sleep(50);
    const holdsOpened = holdsAlive;
    log(
      `  load: ${options.ratePerSecond}/s new connections, ${holdsOpened} long-lived connections open`,
    );
    await sleep(options.settleMs, undefined, { signal });

    const plan: {
      change: PlannedChange['change'];
      host: number;
      members: { id: number; draining?: boolean }[];
      act: () => Promise<unknown>;
    }[] = [
      {
        change: 'join',
        host: 3,
        members: [{ id: 1 }, { id: 2 }, { id: 3 }],
        act: () => startHostDaemon(lab, 3),
      },
      {
        change: 'drainstop',
        host: 2,
        members: [{ id: 1 }, { id: 2, draining: true }, { id: 3 }],
        act: () => command(lab, 2, 'drainstop'),
      },
      {
        // Host 1 drains the port rule: its buckets go to host 3 (host 2 is draining).
        change: 'drain rule',
        host: 1,
        members: [{ id: 1, draining: true }, { id: 2, draining: true }, { id: 3 }],
        act: () => command(lab, 1, 'drain', { rules: [0] }),
      },
      {
        change: 'enable rule',
        host: 1,
        members: [{ id: 1 }, { id: 2, draining: true }, { id: 3 }],
        act: () => command(lab, 1, 'enable', { rules: [0] }),
      },
      {
        change: 'stop',
        host: 3,
        members: [{ id: 1 }, { id: 2, draining: true }],
        act: () => command(lab, 3, 'stop'),
      },
    ];
    const marks: number[] = [];
    const before: (number | null)[][] = [];
    let live = [1, 2];
    for (const step of plan) {
      signal.throwIfAborted();
      const owners = await ownersNow(lab, live, flow.buckets);
      const target = targetOwners(owners, step.members);
      const moving = owners.flatMap((from, bucket) =>
        from !== target[bucket] ? [{ bucket, from, to: target[bucket]! }] : [],
      );
      const config: ProberConfig = {
        target: labVip,
        port: 80,
        sourceIp: probeClient.ip,
        buckets: moving.map((m) => ({ bucket: m.bucket, ports: ports[m.bucket]! })),
        intervalMs: probeIntervalMs,
        timeoutMs: probeTimeoutMs,
        replyTimeoutMs: probeReplyTimeoutMs,
        durationMsMax: convergeTimeoutMs,
      };
      const prober = startHelper<ProberResult>(
        lab,
        'c2',
        'prober',
        config,
        convergeTimeoutMs + 30_000,
      );
      let probed: ProberResult;
      let changeAt: number;
      let convergedMs: number;
      try {
        await helperReady(prober);
        await sleep(200, undefined, { signal });
        changeAt = nowEpochMs();
        marks.push(changeAt);
        before.push(owners);
        prober.send({
          cmd: 'until',
          afterEpochMs: changeAt,
          expect: Object.fromEntries(moving.map((m) => [String(m.bucket), [m.to]])),
          tailMs: 200,
        });
        await step.act();
        live = step.members.map((m) => m.id);
        await waitConverged(lab, live, convergeTimeoutMs, signal);
        convergedMs = nowEpochMs() - changeAt;
        probed = await prober.next();
      } finally {
        prober.kill();
      }
      const after = await ownersNow(lab, live, flow.buckets);
      const gap = analyseGap(
        probed,
        moving,
        kernelGaps(lab, changeAt, changeAt + convergedMs + 100, moving),
      );
      changes.push({
        change: step.change,
        host: step.host,
        bucketsMoved: moving.length,
        movedAsPredicted: after.every((owner, b) => owner === target[b]),
        convergedMs: round(convergedMs),
        requests: 0,
        requestsFailed: 0,
        requestsDroppedByStop: 0,
        failuresByKind: {},
        requestsSynRetried: 0,
        holdsBroken: 0,
        gap,
      });
      log(
        `  ${step.change} host ${step.host}: ${moving.length} buckets moved, converged in ${round(convergedMs)} ms, gap in the kernels ${gap.kernelMaxMs ?? '-'} ms, seen by the prober ≤ ${gap.maxUpperMs ?? '-'} ms (${gap.probesUnanswered} probes unanswered)`,
      );
      await sleep(options.settleMs, undefined, { signal });
    }
    marks.push(nowEpochMs());
    loadAbort.abort();
    const summary = await load;

    // Attribute each request to the change whose window it started in.
    for (let i = 0; i < changes.length; i++) {
      const from = marks[i]!;
      const to = marks[i + 1]!;
      const inWindow = connections.filter((c) => c.epochMs >= from && c.epochMs < to);
      const failed = inWindow.filter((c) => c.record.failure !== undefined);
      const change = changes[i]!;
      const owners = before[i]!;
      const droppedByStop =
        change.change === 'stop'
          ? failed.filter((c) => {
              const address = parseAddress(c.record.sourceIp);
              if (address === undefined || c.record.sourcePort === 0) return false;
              const bucket = flowBucket(
                { address, port: c.record.sourcePort },
                'none',
                flow.buckets,
                flow.hashSeed,
              );
              return owners[bucket] === change.host && c.epochMs < from + change.convergedMs;
            })
          : [];
      const failuresByKind: Record<string, number> = {};
      for (const c of failed) {
        failuresByKind[c.record.failure!] = (failuresByKind[c.record.failure!] ?? 0) + 1;
      }
      changes[i] = {
        ...change,
        requests: inWindow.length,
        requestsFailed: failed.length - droppedByStop.length,
        requestsDroppedByStop: droppedByStop.length,
        failuresByKind,
        requestsSynRetried: inWindow.filter(
          (c) => c.record.failure === undefined && c.record.latencyMs >= synRetryMs,
        ).length,
        holdsBroken: holdBreaks.filter((b) => b.epochMs >= from && b.epochMs < to).length,
      };
    }
    const steady = connections.filter((c) => c.epochMs < marks[0]!);
    return {
      ratePerSecond: options.ratePerSecond,
      holds: options.holds,
      holdsOpened,
      steady: {
        requests: steady.length,
        requestsFailed: steady.filter((c) => c.record.failure !== undefined).length,
      },
      changes,
      loadgen: {
        started: summary.started,
        failed: summary.failed,
        holdsBroken: summary.holdsBroken,
        latencyMs: summary.latencyMs,
      },
    };
  } finally {
    loadAbort.abort();
    signal.removeEventListener('abort', onAbort);
    await load.catch(() => undefined);
  }
}
