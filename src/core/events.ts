// The protocol's events: every name the host machine can emit, with the fields each carries,
// defined once here. The daemon logs them (src/daemon/log.ts takes each one's level from
// `protocolEvents`), the simulator records them, and docs/events.md is generated from this table
// (`npm run docs:events`; test/events-docs.test.ts fails when the two differ). nlbd's own
// events are in src/daemon/event-names.ts.
import type { DecodeFailure } from './heartbeat.js';

/** The fields of each event, by name; every event also has `event`, `atMs` and `by`. */
export interface ProtocolEventFields {
  started: { readonly incarnation: number };
  stopped: { readonly incarnation?: number };
  suspended: { readonly incarnation?: number };
  resumed: { readonly incarnation?: number };
  'drain started': { readonly host: number };
  'drain completed': { readonly host: number };
  'rule enabled': { readonly rule: number };
  'rule disabled': { readonly rule: number };
  'rule drained': { readonly rule: number };
  'service unhealthy': { readonly rule: number; readonly detail: string };
  'service healthy': { readonly rule: number; readonly detail: string };
  'weight reported': { readonly rule: number; readonly weight: number; readonly previous: number };
  'all hosts unhealthy: failing open': { readonly rule: number; readonly hosts: readonly number[] };
  'failing open ended': { readonly rule: number; readonly healthy: readonly number[] };
  converging: { readonly reason: string; readonly members: readonly number[] };
  converged: {
    readonly members: readonly number[];
    readonly defaultHost: number | null;
    readonly isDefault: boolean;
    readonly durationMs: number;
    readonly bucketsMoved: number;
    readonly reason: string;
  };
  'host joined': { readonly host: number };
  'host left': { readonly host: number; readonly reason: string };
  'host declared dead': { readonly host: number; readonly silentMs: number };
  'host restarted': { readonly host: number; readonly incarnation: number };
  'partition detected': { readonly host: number; readonly reason: string };
  'partition healed': {
    readonly host: number;
    readonly ourSide: readonly number[];
    readonly theirSide: readonly number[];
    readonly separatedMs: number;
  };
  'rejoining: dropping connections': {
    readonly host: number;
    readonly afterPauseMs?: number;
    readonly afterLinkDownMs?: number;
    readonly joins?: readonly number[];
  };
  paused: { readonly pausedMs: number; readonly hint: string };
  'running late': { readonly lateMs: number; readonly graceMs: number; readonly hint: string };
  'link down': { readonly interface: string };
  'link up': { readonly interface: string; readonly downMs: number };
  'config reloaded': { readonly clusterChanged: boolean };
  'config rejected': { readonly reason: string };
  'config mismatch': { readonly host: number; readonly differs: string; readonly hint?: string };
  'duplicate host id': {
    readonly host: number;
    readonly incarnations: readonly number[];
    readonly keptOut: number;
    readonly hint?: string;
  };
  'kept out': { readonly reason: string | undefined; readonly hint: string };
  admitted: { readonly reason: string };
  'bad heartbeats': { readonly counts: Readonly<Partial<Record<DecodeFailure, number>>> };
}

export type ProtocolEventName = keyof ProtocolEventFields;

/**
 * One structured event, discriminated by `event`: `atMs` is the machine's clock when it
 * happened, `by` the id of the host that emits it.
 */
export type ProtocolEvent = {
  readonly [N in ProtocolEventName]: {
    readonly event: N;
    readonly atMs: number;
    readonly by: number;
  } & ProtocolEventFields[N];
}[ProtocolEventName];

/** What a reader of the log needs to know about one event name. */
export interface EventInfo {
  /** warn: something an operator should look at; info: the cluster doing its job; fatal: a bug. */
  readonly level: 'info' | 'warn' | 'fatal';
  /** One line for docs/events.md. */
  readonly about: string;
}

/** Every protocol event; the compiler checks that no name is missing or extra. */
export const protocolEvents: { readonly [N in ProtocolEventName]: EventInfo } = {
  started: { level: 'info', about: 'the host takes part (at start, or after `nlb start`)' },
  stopped: { level: 'info', about: 'the host stopped taking part (`nlb stop`, or it starts so)' },
  suspended: { level: 'info', about: '`nlb suspend`: stopped, and only `resume` starts it again' },
  resumed: { level: 'info', about: '`nlb resume` after a suspend' },
  'drain started': { level: 'info', about: '`nlb drainstop`: no new flows, old ones finish' },
  'drain completed': {
    level: 'info',
    about: 'a draining host has no connections left and stops',
  },
  'rule enabled': { level: 'info', about: '`nlb enable`: the rule takes new flows again' },
  'rule disabled': { level: 'info', about: "`nlb disable`: the rule's connections are dropped" },
  'rule drained': { level: 'info', about: '`nlb drain`: the rule takes no new flows' },
  'service unhealthy': {
    level: 'warn',
    about: "the rule's health check failed `fall` times in a row: the host yields its buckets",
  },
  'service healthy': {
    level: 'info',
    about: "the rule's health check passed `rise` times in a row: the host takes its share back",
  },
  'weight reported': {
    level: 'info',
    about: "the rule's agent check changed this host's load weight (after its hysteresis)",
  },
  'all hosts unhealthy: failing open': {
    level: 'warn',
    about: 'every host taking part is unhealthy for the rule: it serves as if all were healthy',
  },
  'failing open ended': {
    level: 'info',
    about: 'a host is healthy for the rule again: unhealthy hosts yield their buckets again',
  },
  converging: { level: 'info', about: 'the membership or the map changed; with the reason' },
  converged: {
    level: 'info',
    about: 'every member reports the same view and map; with the duration and buckets moved',
  },
  'host joined': { level: 'info', about: 'a host entered this host’s membership view' },
  'host left': { level: 'info', about: 'a host left the view; with the reason' },
  'host declared dead': { level: 'warn', about: 'a peer was silent for the detection time' },
  'host restarted': { level: 'info', about: 'a peer came back with a new incarnation' },
  'partition detected': {
    level: 'warn',
    about: 'a peer that takes part left the view (it no longer hears this host)',
  },
  'partition healed': { level: 'info', about: 'two sides that took each other for dead merge' },
  'rejoining: dropping connections': {
    level: 'info',
    about: 'the peers took this host for dead: it drops its old connections before it serves',
  },
  paused: {
    level: 'warn',
    about: 'nlbd did not run for longer than the detection time: it rejoins',
  },
  'running late': {
    level: 'warn',
    about:
      'this host ran late (starved of CPU): it gives its peers that much longer before it declares them dead (at most once a detection window)',
  },
  'link down': { level: 'info', about: 'the cluster interface lost its carrier' },
  'link up': { level: 'info', about: 'the carrier is back; with how long it was down' },
  'config reloaded': { level: 'info', about: '`nlb reload` applied a new config' },
  'config rejected': {
    level: 'info',
    about: 'a reload was refused (by nlbd’s checks or the host machine); with every reason',
  },
  'config mismatch': {
    level: 'warn',
    about: 'a peer runs a different cluster config; with what differs and the fix',
  },
  'duplicate host id': {
    level: 'warn',
    about: 'two processes claim one host id; the newer one is kept out',
  },
  'kept out': {
    level: 'warn',
    about: 'this host does not take part: its cluster config conflicts with the cluster’s',
  },
  admitted: { level: 'info', about: 'a host that was kept out takes part again' },
  'bad heartbeats': {
    level: 'warn',
    about: 'rejected datagrams, counted by reason (at most one event every 10 s)',
  },
};

/**
 * Builds one event. The only place that widens a name and its fields to the union: TypeScript
 * cannot see that `event: N` and `ProtocolEventFields[N]` make one variant.
 */
export function protocolEvent<N extends ProtocolEventName>(
  event: N,
  atMs: number,
  by: number,
  fields: ProtocolEventFields[N],
): ProtocolEvent {
  return { event, atMs, by, ...fields } as ProtocolEvent;
}

/** The event names, in the table's order. */
export const protocolEventNames = Object.keys(protocolEvents) as ProtocolEventName[];
