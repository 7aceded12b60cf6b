// nlbd's own events (the data plane, the interface, the process), beside the protocol's
// (src/core/events.ts): every name nlbd logs is in one of the two tables, with its level and a
// line for docs/events.md (generated: `npm run docs:events`).
import { protocolEvents, type EventInfo, type ProtocolEventName } from '../core/events.js';

/** Every event nlbd logs that does not come from the host machine. */
export const daemonEvents = {
  'nlbd started': {
    level: 'info',
    about: 'nlbd is up: the interface attached, the kernel programmed',
  },
  'nlbd stopping': { level: 'info', about: 'a stop was requested (signal or `nlb stop --exit`)' },
  'nlbd stopped': { level: 'info', about: 'nlbd released everything it held and exits' },
  'nlbd forced exit': {
    level: 'warn',
    about: 'a second signal during the stop: nlbd exits at once',
  },
  'start refused': { level: 'warn', about: 'nlbd cannot start; with the problem and the fix' },
  'shutdown problem': {
    level: 'warn',
    about: 'a step of the teardown failed; the others still ran',
  },
  'stale state cleaned': {
    level: 'info',
    about: 'a crashed predecessor left addresses, a MAC or connections; nlbd removed them',
  },
  'test pause': { level: 'info', about: 'only in tests: nlbd waits before a start-up phase' },
  'reload on SIGHUP': { level: 'info', about: 'SIGHUP re-read the config; with the outcome' },
  'suspended state retained': {
    level: 'info',
    about: 'the host was suspended before a restart and stays so until `nlb resume`',
  },
  'retained state unreadable': { level: 'warn', about: 'the state file could not be read' },
  'retained state not written': { level: 'warn', about: 'the state file could not be written' },
  scheduling: {
    level: 'info',
    about:
      "nlbd's CPU scheduling policy and priority, and whether nlbd set it (--realtime-priority)",
  },
  'realtime scheduling unavailable': {
    level: 'warn',
    about: 'nlbd could not get realtime priority and runs at normal priority; with why and the fix',
  },
  'ownership programmed': {
    level: 'info',
    about: 'the kernel holds a new ownership; with how and how long it took',
  },
  'connections flushed': { level: 'info', about: 'established connections dropped; with counts' },
  'drainstop finished': { level: 'info', about: 'a draining host has no connections left' },
  'dataplane error': {
    level: 'warn',
    about: 'an nft or conntrack operation failed (rate-limited)',
  },
  'dataplane restored': {
    level: 'info',
    about: "someone changed or deleted nlbd's nftables table; nlbd put it back",
  },
  'dataplane lost': {
    level: 'warn',
    about: 'the table cannot be put back: the host detaches and its peers take its buckets',
  },
  'dataplane still lost': { level: 'warn', about: 'a retry of a lost data plane failed' },
  'dataplane lost: detach failed': { level: 'warn', about: 'detaching after a loss failed' },
  'dataplane restored: attach failed': {
    level: 'warn',
    about: 'attaching again after the data plane came back failed',
  },
  'heartbeat withheld': {
    level: 'warn',
    about: 'heartbeats wait until the kernel holds what they would announce',
  },
  'heartbeat send failed': { level: 'warn', about: 'the transport could not send (rate-limited)' },
  'heartbeats blocked': { level: 'warn', about: 'heartbeats have failed to leave for a while' },
  'heartbeats flowing': { level: 'info', about: 'heartbeats leave again after a block' },
  'interface restored': {
    level: 'warn',
    about: 'someone removed a cluster IP or the cluster MAC; nlbd put it back',
  },
  'interface repair failed': { level: 'warn', about: 'putting the interface back failed' },
  'health report failed': {
    level: 'warn',
    about: "a health check's verdict could not be handed to the host machine (nlbd stopping)",
  },
  'announce failed': {
    level: 'warn',
    about:
      'the gratuitous ARPs / unsolicited NAs for the cluster IPs could not be sent (the host serves without them)',
  },
  'mac guard missing': {
    level: 'warn',
    about: 'the guard that keeps the cluster MAC from leaking could not be installed',
  },
  'remote command': { level: 'info', about: 'a verb arrived over remote control; with its origin' },
  'remote control refused': {
    level: 'info',
    about: 'a remote control request was refused (bad token, not allowed)',
  },
  fatal: { level: 'fatal', about: 'the host machine threw: a bug; nlbd takes the host out' },
  'cluster IPs announced': {
    level: 'info',
    about: 'routed mode: the marker routes are in, so FRR announces the cluster IPs to the routers',
  },
  'cluster IPs withdrawn': {
    level: 'info',
    about:
      'routed mode: the marker routes are gone (stopped, suspended, drained, or no data plane)',
  },
  'route announcer problem': {
    level: 'warn',
    about: "routed mode: a marker route could not be added or deleted; with the kernel's answer",
  },
  'routed set-up problem': {
    level: 'warn',
    about: 'routed mode: FRR or the forwarding set-up is not as it must be; with what to do',
  },
} as const satisfies Readonly<Record<string, EventInfo>>;

export type DaemonEventName = keyof typeof daemonEvents;
export type EventName = ProtocolEventName | DaemonEventName;

/** One line of nlbd's log: a known event name and its fields. */
export type EventRecord = { readonly event: EventName } & Readonly<Record<string, unknown>>;
export type EventSink = (record: EventRecord) => void;

/** The level an event is logged at. */
export function levelOf(event: EventName): EventInfo['level'] {
  return event in daemonEvents
    ? daemonEvents[event as DaemonEventName].level
    : protocolEvents[event as ProtocolEventName].level;
}
