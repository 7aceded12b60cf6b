// The simulator's vocabulary: what a host looks like to the driver, the actions a scenario
// schedules, and what a run reports.
import type { Config } from '../core/config.js';
import type {
  Command,
  HostMachineOptions,
  HostStatus,
  Input,
  ProtocolEvent,
  Ready,
} from '../core/protocol.js';
import type { ClusterShape, HostSettings } from './cluster-config.js';
import type { LinkConditions } from './network.js';

/** The part of HostMachine the simulator drives (src/core/protocol.ts). */
export interface SimHost {
  step(input: Input): Ready;
  status(): HostStatus;
}

export type HostFactory = (opts: HostMachineOptions) => SimHost;

/**
 * What the simulator expects of a host process, from the commands it was given:
 * `member` takes part (started or draining), `off` does not (stopped or suspended),
 * `out` must be kept out by its peers (a duplicate host id or a different cluster config).
 */
export type Expectation = 'member' | 'off' | 'out';

export type SimAction =
  /** Starts a host process on a machine slot (a join, or a restart after a crash). */
  | {
      readonly do: 'boot';
      readonly slot: number;
      readonly hostId: number;
      /** Overrides the plan's config for this host (e.g. a different cluster config). */
      readonly config?: Config;
      readonly expect?: 'member' | 'out';
      readonly reason?: string;
      /** Part of forming the cluster at the start: not reported as a membership change. */
      readonly initial?: boolean;
    }
  | { readonly do: 'crash'; readonly slot: number }
  /**
   * An eavesdropper on the segment sends `count` heartbeats it recorded earlier to the host on
   * `slot`, chosen by `pick`. Only heartbeats that host's process already received, or that were
   * sent before it started, are replayed: the protocol must drop every one of them (a heartbeat
   * it never received is indistinguishable from a late one, so it is not a replay here).
   */
  | { readonly do: 'replay'; readonly slot: number; readonly count: number; readonly pick: number }
  | { readonly do: 'command'; readonly slot: number; readonly command: Command }
  | { readonly do: 'partition'; readonly groups: readonly (readonly number[])[] }
  | { readonly do: 'cut'; readonly from: number; readonly to: number }
  | { readonly do: 'heal' }
  | { readonly do: 'conditions'; readonly conditions: LinkConditions; readonly label: string }
  /** Conditions of one directed link (a slow or lossy cable); undefined restores the default. */
  | {
      readonly do: 'link';
      readonly from: number;
      readonly to: number;
      readonly conditions: LinkConditions | undefined;
    };

export interface ScheduledAction {
  readonly atMs: number;
  readonly action: SimAction;
}

/** Everything a run needs; a pure value, so a plan can be printed, stored and replayed. */
export interface SimPlan {
  readonly seed: number;
  /** The scenario or fault profile the seed chose. */
  readonly profile: string;
  /** Cluster size: host ids 1..hosts on slots 0..hosts-1. */
  readonly hosts: number;
  /** Machine slots on the segment: hosts plus spares for intruders (duplicates, mismatches). */
  readonly slots: number;
  readonly shape: ClusterShape;
  /** Indexed by host id - 1. */
  readonly settings: readonly HostSettings[];
  readonly conditions: LinkConditions;
  readonly schedule: readonly ScheduledAction[];
  readonly durationMs: number;
  /**
   * When I3's clock starts: the last fault healed and the last command given. Undefined when
   * faults are still active at the end (e.g. loss for the whole run): I3 does not apply then.
   */
  readonly quietAtMs: number | undefined;
}

export type Invariant = 'I1' | 'I1b' | 'I2' | 'I3' | 'host-error' | 'liveness';

export interface Violation {
  readonly invariant: Invariant;
  readonly atMs: number;
  readonly message: string;
}

export type ChangeKind =
  | 'crash'
  | 'join'
  | 'restart'
  | 'stop'
  | 'drainstop'
  /** A draining host's last connection ended and it stopped. */
  | 'drained'
  | 'partition'
  | 'heal'
  | 'intruder';

export interface ChangeReport {
  readonly kind: ChangeKind;
  readonly atMs: number;
  /** The host the change is about; undefined for network changes. */
  readonly hostId: number | undefined;
  /**
   * crash: until the first survivor's view drops the host; planned changes: until the first
   * other host's view or map reacts. Undefined when nobody reacted.
   */
  readonly detectionMs: number | undefined;
  /** Planned changes: from the change to the subject's first datagram after it. */
  readonly triggerMs: number | undefined;
  /**
   * Until the data planes settled: the last bucket that moved has its new owner accepting new
   * flows (the last ownership change before convergence). What clients see.
   */
  readonly takeoverMs: number | undefined;
  /**
   * Until every connected part of the cluster is converged: new owners in place and every host
   * reporting converged on the same members and map.
   */
  readonly convergenceMs: number | undefined;
  readonly bucketsMoved: number | undefined;
  readonly bucketsMovedMin: number | undefined;
  /** Another change came before this one converged: its numbers include the other's effect. */
  readonly overlapped: boolean;
}

/** A protocol event as a host emitted it, with who emitted it. */
export interface SimEvent {
  readonly atMs: number;
  readonly hostId: number;
  readonly incarnation: number;
  readonly event: ProtocolEvent;
}

export interface SimStats {
  readonly steps: number;
  readonly datagramsSent: number;
  readonly copiesDelivered: number;
  readonly copiesLost: number;
  /**
   * Times a host dropped a live member from its view while the link from it was up (a false
   * detection), counted once per pair of hosts and episode.
   */
  readonly falseDetections: number;
  /** Recorded heartbeats sent again by the eavesdropper (plans with replays). */
  readonly replayed: number;
}

export interface SimResult {
  readonly seed: number;
  readonly profile: string;
  readonly hosts: number;
  readonly periodMs: number;
  readonly tolerance: number;
  readonly durationMs: number;
  readonly maxOneWayDelayMs: number;
  /** I3's bound, in ms (convergenceBoundPeriods × period). */
  readonly convergenceBoundMs: number;
  readonly quietAtMs: number | undefined;
  /** From quietAtMs until the cluster was converged for good; undefined if never. */
  readonly convergedAfterQuietMs: number | undefined;
  readonly changes: readonly ChangeReport[];
  readonly violations: readonly Violation[];
  readonly stats: SimStats;
  /** Every protocol event of the run, oldest first (the first eventsMax of them). */
  readonly events: readonly SimEvent[];
  /** The last transcript lines (all of them unless the run was longer than the limit). */
  readonly transcript: readonly string[];
  readonly transcriptDropped: number;
}
