// The contract between the host state machine (src/core/host.ts) and whatever drives it: the
// simulator in src/sim, the daemon in src/daemon. In the style of etcd's raft: the driver feeds
// inputs to `step`, and carries out the `Ready` that comes back completely, in the order
// `carryOutSteps` (src/core/carry-out.ts) gives, before it steps the next input.
import type { Config } from './config.js';
import type { ProtocolEvent } from './events.js';
import type { RoutedOwnership } from './routed-forward.js';

/** Operator commands; each maps to an `nlb` verb. */
export type Command =
  | { readonly verb: 'start' }
  | { readonly verb: 'stop' }
  | { readonly verb: 'drainstop' }
  | { readonly verb: 'suspend' }
  | { readonly verb: 'resume' }
  /** `rule` is an index into cluster.portRules, or 'all'. */
  | { readonly verb: 'enable' | 'disable' | 'drain'; readonly rules: readonly number[] }
  | { readonly verb: 'reload'; readonly config: Config }
  /** The daemon reports that a draining host has no established connections left. */
  | { readonly verb: 'connectionsEnded' }
  /**
   * Routed mode: the daemon counted the connections this host holds, in a count that began at
   * `countedAtMs` (when the kernel held every ownership decided before). `buckets`, per rule:
   * the buckets with at least one. Released buckets without any end their second chance.
   */
  | {
      readonly verb: 'connectionsHeld';
      readonly countedAtMs: number;
      readonly buckets: readonly (readonly number[])[];
    }
  /**
   * The daemon's health check of port rule `rule` reached a verdict (after `fall` failures or
   * `rise` successes in a row): an unhealthy host yields the rule's buckets as a draining one
   * does, keeping its connections. `detail` says why (the last probe's result).
   */
  | {
      readonly verb: 'health';
      readonly rule: number;
      readonly healthy: boolean;
      readonly detail: string;
    }
  /**
   * The rule's agent check reported a load weight (0..100; the daemon has filtered it), or
   * null: back to the config's weight.
   */
  | { readonly verb: 'weight'; readonly rule: number; readonly weight: number | null }
  /**
   * The daemon reports the cluster interface's carrier: a host whose link is down cannot
   * serve, so it takes no buckets instead of claiming them all as a partition of one (which
   * would answer clients twice in the moment the link comes back).
   */
  | {
      readonly verb: 'link';
      readonly up: boolean;
      /**
       * With `up: false`: when the host last sent a heartbeat, if earlier than now (a data plane
       * that could not be programmed made the driver withhold heartbeats before it reported the
       * link down). Peers count the host's silence from then, so the link-down time that
       * decides whether the host drops its old connections on return counts from then too.
       */
      readonly silentSinceMs?: number;
    };

export type Input =
  | { readonly kind: 'tick'; readonly nowMs: number }
  | {
      readonly kind: 'datagram';
      readonly nowMs: number;
      readonly bytes: Uint8Array;
      /** How long it waited after it arrived before it was stepped (a busy or stalled host). */
      readonly waitedMs?: number;
      /** The sender's address as the transport saw it (text), kept per peer for the operator. */
      readonly from?: string;
      /**
       * More datagrams wait to be stepped right after this one: the decision may wait for the
       * last of them (host.ts, batches), so a burst of N heartbeats costs one decision, not N.
       */
      readonly moreQueued?: boolean;
    }
  | { readonly kind: 'command'; readonly nowMs: number; readonly command: Command };

/** What the data plane must do for one port rule. Bucket lists are sorted ascending. */
export interface RuleOwnership {
  /** Buckets this host accepts new flows for. */
  readonly owned: readonly number[];
  /**
   * The subset of `owned` inherited from a host that died: unknown non-SYN packets there get a
   * TCP reset so the dead host's clients fail over at once.
   */
  readonly orphan: readonly number[];
  /** disabled: drop everything the rule covers, established connections included. */
  readonly disabled: boolean;
}

export interface Ownership {
  /** One entry per cluster port rule, in config order. */
  readonly rules: readonly RuleOwnership[];
  /** The default host takes VIP traffic that no port rule covers. */
  readonly isDefault: boolean;
  /**
   * Whether the host takes part at all. false (stopped, suspended): the data plane accepts no
   * new VIP flows; `dropEstablished` says whether existing ones are cut too (stop) or not.
   */
  readonly active: boolean;
  readonly dropEstablished: boolean;
  /** Routed mode only: where packets of buckets other hosts serve go (routed-forward.ts). */
  readonly routed?: RoutedOwnership;
}

/** The states `nlb query` shows (NLB's names). */
export type ReportedState =
  'converging' | 'converged' | 'converged as default' | 'draining' | 'stopped' | 'suspended';

export type { ProtocolEvent } from './events.js';

export interface Ready {
  /** The ownership to program now, or undefined when it did not change. */
  readonly ownership: Ownership | undefined;
  /**
   * Per rule, buckets whose established connections this host must drop before anything else
   * (it came back after its peers declared it dead, or a rule was disabled). Empty usually.
   */
  readonly flush: readonly { readonly rule: number; readonly buckets: readonly number[] }[];
  /**
   * The host rejoined after its peers declared it dead: `flush` covers every bucket and the
   * driver must also drop the host's sockets to the cluster IPs. A flush for a disabled rule
   * alone must not touch the default host's connections on uncovered ports, so the driver
   * cannot tell the two apart from `flush` itself.
   */
  readonly rejoined: boolean;
  readonly send: readonly Uint8Array[];
  readonly events: readonly ProtocolEvent[];
  /** Call step with a tick no later than this (virtual or wall-clock ms). */
  readonly wakeAtMs: number;
  /** The answer to a command input; undefined for ticks and datagrams. */
  readonly reply: CommandReply | undefined;
}

export type ReplyCode = 'ok' | 'already' | 'suspended' | 'not found' | 'refused';

export interface CommandReply {
  readonly code: ReplyCode;
  readonly message: string;
}

/** A read-only view of one host, for `nlb query`, metrics and the simulator's invariant checks. */
export interface HostStatus {
  readonly hostId: number;
  readonly incarnation: number;
  readonly state: ReportedState;
  /** Host ids in this host's membership view (itself included when it takes part), sorted. */
  readonly members: readonly number[];
  /**
   * The incarnation this host takes each member to be, parallel to `members`. Two hosts agree
   * on a view only if they mean the same processes: around a restart, or with two hosts on one
   * id, the same member ids can name different incarnations.
   */
  readonly memberIncarnations: readonly number[];
  /** The lowest member id, or null when this host is not a member of any view. */
  readonly defaultHost: number | null;
  /** Every member reports the same membership, config digest and target map. */
  readonly converged: boolean;
  /** Hex digest of the target map (all rules) this host works towards. */
  readonly mapDigest: string;
  /** Per rule, the target owner of every bucket (host id or null). */
  readonly target: readonly (readonly (number | null)[])[];
  /** What this host has told its data plane to do, as of the last Ready. */
  readonly ownership: Ownership;
  /**
   * Routed mode: how many buckets this host released that may still hold its connections (all
   * rules); the driver counts its connections while there are any (`connectionsHeld`).
   */
  readonly held?: number;
}

/**
 * How drivers create a host (implemented in src/core/host.ts):
 *   new HostMachine({ config, key, incarnation, nowMs })
 *   machine.step(input): Ready
 *   machine.status(): HostStatus
 * `incarnation` must grow every time the host process starts (the daemon uses the start time
 * in ms; the simulator a counter), so peers tell a restarted host from a replayed message.
 */
export interface HostMachineOptions {
  readonly config: Config;
  /** The cluster key: HMAC-SHA256 key for heartbeats, at least 16 bytes. */
  readonly key: Uint8Array;
  readonly incarnation: number;
  readonly nowMs: number;
  /**
   * The state to start in, when the daemon remembers one that overrides
   * `config.host.initialState` (a host suspended before a restart stays suspended, as NLB's
   * "retain suspended state" does).
   */
  readonly initialState?: 'started' | 'stopped' | 'suspended';
  /**
   * Runs the decision on every step, routine heartbeats included (host.ts skips it for those
   * while converged). The outcome is the same either way; tests compare the two.
   */
  readonly decideEveryStep?: boolean;
}
