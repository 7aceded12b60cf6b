// Per membership change: how long until a peer noticed, how long until the cluster converged
// with the new owners in place, and how many buckets moved against the fewest possible.
import { type AssignMember, countMoves, minimumMoves } from '../core/assign.js';
import type { HostStatus } from '../core/protocol.js';
import type { ObservedHost, TargetMap } from './convergence.js';
import type { ChangeKind, ChangeReport } from './types.js';

interface OpenChange {
  readonly kind: ChangeKind;
  readonly atMs: number;
  readonly hostId: number | undefined;
  /** Node index of the host process the change is about (for trigger and detection). */
  readonly subject: number | undefined;
  /** Each other live host's members and map digest when the change happened. */
  readonly before: Map<number, string>;
  readonly mapBefore: TargetMap | undefined;
  detectedAtMs: number | undefined;
  triggerAtMs: number | undefined;
  overlapped: boolean;
}

function viewKey(status: HostStatus): string {
  return `${status.members.join(',')}|${status.mapDigest}`;
}

const planned: readonly ChangeKind[] = ['join', 'restart', 'stop', 'drainstop', 'drained'];

export class ChangeTracker {
  private readonly open: OpenChange[] = [];
  private readonly done: ChangeReport[] = [];
  private lastConvergedTarget: TargetMap | undefined;
  /** When a data plane last changed which buckets it accepts new flows for. */
  private lastOwnershipChangeMs = -Infinity;

  /** Some host's data plane gained or lost buckets. */
  ownershipChanged(nowMs: number): void {
    this.lastOwnershipChangeMs = nowMs;
  }

  /** Call after every evaluation of the cluster view, converged or not. */
  observe(
    converged: boolean,
    target: TargetMap | undefined,
    members: readonly ObservedHost[],
    nowMs: number,
  ): void {
    if (!converged) return;
    if (target !== undefined) this.lastConvergedTarget = target;
    for (const change of this.open.splice(0)) {
      const moves =
        target !== undefined ? movesBetween(change.mapBefore, target, members) : undefined;
      this.done.push({
        ...detected(change),
        takeoverMs: Math.max(0, this.lastOwnershipChangeMs - change.atMs),
        convergenceMs: nowMs - change.atMs,
        bucketsMoved: moves?.moved,
        bucketsMovedMin: moves?.minimum,
      });
    }
  }

  /**
   * A change happens now. `convergedNow` and `target` describe the cluster just before it;
   * `hosts` are the live hosts other than the subject.
   */
  begin(
    kind: ChangeKind,
    hostId: number | undefined,
    subject: number | undefined,
    convergedNow: boolean,
    target: TargetMap | undefined,
    hosts: readonly ObservedHost[],
    nowMs: number,
  ): void {
    const overlapped = !convergedNow || this.open.length > 0;
    for (const change of this.open) change.overlapped = true;
    const before = new Map<number, string>();
    for (const host of hosts) before.set(host.index, viewKey(host.status));
    this.open.push({
      kind,
      atMs: nowMs,
      hostId,
      subject,
      before,
      mapBefore: convergedNow ? target : this.lastConvergedTarget,
      detectedAtMs: undefined,
      triggerAtMs: undefined,
      overlapped,
    });
  }

  /** A host's status changed (after one of its steps). */
  statusChanged(host: ObservedHost, nowMs: number): void {
    for (const change of this.open) {
      if (change.detectedAtMs !== undefined || host.index === change.subject) continue;
      const was = change.before.get(host.index);
      if (was === undefined) continue;
      const s = host.status;
      let reacted: boolean;
      if (change.kind === 'crash') {
        reacted =
          was.split('|')[0]!.split(',').includes(String(change.hostId)) &&
          !s.members.includes(change.hostId!);
      } else if (change.kind === 'join') {
        reacted = s.members.includes(change.hostId!);
      } else {
        reacted = viewKey(s) !== was;
      }
      if (reacted) change.detectedAtMs = nowMs;
    }
  }

  /** A host process sent a datagram. */
  sent(index: number, nowMs: number): void {
    for (const change of this.open) {
      if (
        change.subject === index &&
        change.triggerAtMs === undefined &&
        planned.includes(change.kind)
      ) {
        change.triggerAtMs = nowMs;
      }
    }
  }

  /** Reports for every change, the unconverged ones last (with undefined timings). */
  reports(): ChangeReport[] {
    const pending = this.open.map((change) => ({
      ...detected(change),
      takeoverMs: undefined,
      convergenceMs: undefined,
      bucketsMoved: undefined,
      bucketsMovedMin: undefined,
    }));
    return [...this.done, ...pending].sort((a, b) => a.atMs - b.atMs);
  }
}

/** Owner changes between two converged maps, and the fewest the new quotas allow. */
function movesBetween(
  before: TargetMap | undefined,
  after: TargetMap,
  members: readonly ObservedHost[],
): { moved: number; minimum: number } | undefined {
  if (before === undefined || before.length !== after.length || members.length === 0)
    return undefined;
  const rules = members[0]!.config.cluster.portRules;
  if (rules.length !== after.length) return undefined;
  let moved = 0;
  let minimum = 0;
  try {
    for (let r = 0; r < rules.length; r++) {
      const rule = rules[r]!;
      if (rule.mode === 'disabled' || before[r]!.length !== after[r]!.length) continue;
      moved += countMoves(before[r]!, after[r]!);
      const assignMembers: AssignMember[] = members.map((m) => ({
        id: m.hostId,
        loadWeight: m.config.host.rules[r]!.loadWeight,
        handlingPriority: m.config.host.rules[r]!.handlingPriority,
        draining: m.status.state === 'draining',
      }));
      minimum += minimumMoves({
        mode: rule.mode,
        buckets: rule.buckets,
        owners: before[r]!,
        members: assignMembers,
      });
    }
  } catch {
    return undefined;
  }
  return { moved, minimum };
}

/** What is known of a change from its start: when, whom, and how soon it was noticed. */
function detected(
  change: OpenChange,
): Omit<ChangeReport, 'takeoverMs' | 'convergenceMs' | 'bucketsMoved' | 'bucketsMovedMin'> {
  return {
    kind: change.kind,
    atMs: change.atMs,
    hostId: change.hostId,
    detectionMs: change.detectedAtMs === undefined ? undefined : change.detectedAtMs - change.atMs,
    triggerMs: change.triggerAtMs === undefined ? undefined : change.triggerAtMs - change.atMs,
    overlapped: change.overlapped,
  };
}
