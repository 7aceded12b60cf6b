// The invariants about agreement and convergence, checked from outside the hosts after every
// step that changed something (convergence.ts defines what converged means):
//   I2: hosts that all report converged on one membership agree on the map, and once they have
//       reported it for the allowed settling time every bucket sits in exactly its owner's
//       data plane;
//   I3: after the last fault heals, the cluster converges within the bound, and stays so.
import { convergenceBoundPeriods } from './bounds.js';
import {
  type ClusterView,
  type ObservedHost,
  agreedGroups,
  clusterView,
  coverageProblem,
} from './convergence.js';
import type { ChangeTracker } from './measure.js';
import type { Network } from './network.js';
import type { SimPlan, Violation } from './types.js';

/** What the watch may do of the simulation it watches. */
export interface WatchPort {
  note(text: string): void;
  violate(invariant: Violation['invariant'], message: string): void;
  /** Asks for an evaluation at `atMs`, when the group `key` has been agreed for its settle time. */
  settleAt(atMs: number, key: string): void;
}

export class ConvergenceWatch {
  /** The cluster view of the last evaluation. */
  view: ClusterView = {
    converged: true,
    target: [],
    members: [],
    reason: undefined,
  };
  /** How long after the last fault healed the cluster converged (for the result). */
  convergedAfterQuietMs: number | undefined;
  private convergedSinceMs: number | undefined = 0;
  private readonly agreedSince = new Map<string, number>();
  /** I3's bound has passed with the cluster converged: from now on it must stay so. */
  private boundPassed = false;

  constructor(
    private readonly plan: SimPlan,
    /** I2's allowance in maximal one-way delays (RunOptions.convergedSettleDelays). */
    private readonly settleDelays: number,
    private readonly network: Network,
    private readonly changes: ChangeTracker,
    private readonly port: WatchPort,
  ) {}

  get boundMs(): number {
    return convergenceBoundPeriods(this.plan.shape.tolerance) * this.plan.shape.periodMs;
  }

  /** I2, the cluster view for measurements, and I3's "stays converged". */
  evaluate(live: readonly ObservedHost[], nowMs: number): void {
    const { groups, disagreement } = agreedGroups(live);
    if (disagreement !== undefined) this.port.violate('I2', disagreement);
    const settleMs = this.settleDelays * this.network.maxOneWayDelayMs;
    const keys = new Set<string>();
    for (const group of groups) {
      const key = `${group.members.join(',')}|${group.mapDigest}|${group.hosts.map((h) => h.index).join(',')}`;
      keys.add(key);
      const since = this.agreedSince.get(key);
      if (since === undefined) {
        this.agreedSince.set(key, nowMs);
        this.port.settleAt(nowMs + settleMs, key);
      } else if (nowMs >= since + settleMs) {
        const problem = coverageProblem(group);
        if (problem !== undefined) {
          this.port.violate(
            'I2',
            `${problem}, ${(nowMs - since).toFixed(1)} ms after all members reported converged`,
          );
        }
      }
    }
    for (const key of [...this.agreedSince.keys()])
      if (!keys.has(key)) this.agreedSince.delete(key);

    const wasConverged = this.view.converged;
    this.view = clusterView(live, (a, b) => this.network.isUp(a, b));
    this.changes.observe(this.view.converged, this.view.target, this.view.members, nowMs);
    if (this.view.converged && !wasConverged) {
      this.convergedSinceMs = nowMs;
      this.port.note(
        `sim cluster converged (${
          this.view.members.length > 0
            ? `members ${this.view.members
                .map((m) => m.hostId)
                .sort((a, b) => a - b)
                .join(',')}`
            : 'every connected part'
        })`,
      );
    } else if (!this.view.converged && wasConverged) {
      this.convergedSinceMs = undefined;
    }
    // Before the bound, timers started under the faults may still fire (a peer unheard during a
    // short partition is declared dead after the heal): convergence may come and go. After the
    // bound, nothing is left to react to, so losing convergence is a bug.
    if (this.boundPassed && !this.view.converged) {
      this.port.violate(
        'I3',
        `lost convergence ${(nowMs - this.plan.quietAtMs!).toFixed(1)} ms after the last fault healed, with no fault since: ${this.view.reason}`,
      );
    }
  }

  /** I3 at its bound: converged by now, after a fresh evaluation. */
  atBound(nowMs: number): void {
    if (!this.view.converged) {
      this.port.violate(
        'I3',
        `not converged ${this.boundMs} ms (${convergenceBoundPeriods(this.plan.shape.tolerance)} periods) after the last fault healed at ${this.plan.quietAtMs!.toFixed(1)} ms: ${this.view.reason}`,
      );
    } else {
      this.convergedAfterQuietMs = Math.max(
        0,
        (this.convergedSinceMs ?? nowMs) - this.plan.quietAtMs!,
      );
      this.boundPassed = true;
    }
  }

  /** I3 at the end of a run that did not stop early, and the transcript's last line. */
  atEnd(nowMs: number): void {
    if (this.plan.quietAtMs !== undefined && !this.view.converged) {
      this.port.violate(
        'I3',
        `not converged at the end of the run (${(nowMs - this.plan.quietAtMs).toFixed(1)} ms after the last fault healed): ${this.view.reason}`,
      );
    }
    this.port.note(
      `sim end: ${this.view.converged ? 'converged' : `not converged (${this.view.reason})`}`,
    );
  }
}
