// nlbd's log: one JSON line per event on stdout (pino), e.g.
//   {"level":"info","time":"2026-01-01T12:00:00.000Z","by":1,"cluster":"web","event":"host joined","host":3}
// `event` is a stable name a reader can match on; `by` is the id of the host that logs, the
// name the protocol core gives it in its events (ProtocolEvent.by), because `host` is already
// an event field: the host an event is about ("host joined", "host declared dead"). Protocol
// events carry `atMs`, the daemon's monotonic clock, which orders events exactly even across a
// wall-clock step. Writes are synchronous, so the last lines before an exit are never lost.
import { pino } from 'pino';
import type { EventRecord, EventSink } from './host-driver.js';

/** Events worth a warning: something an operator should look at. */
const warnEvents = new Set([
  'dataplane error',
  'dataplane lost',
  'dataplane still lost',
  'dataplane lost: detach failed',
  'dataplane restored: attach failed',
  'retained state unreadable',
  'retained state not written',
  'heartbeat withheld',
  'heartbeats blocked',
  'paused',
  'interface restored',
  'mac guard missing',
  'interface repair failed',
  'heartbeat send failed',
  'bad heartbeats',
  'config mismatch',
  'duplicate host id',
  'kept out',
  'partition detected',
  'host declared dead',
  'start refused',
  'shutdown problem',
]);

export interface DaemonLog {
  readonly event: EventSink;
  /** For fatal errors: logged at level fatal. */
  readonly fatal: EventSink;
}

export function createDaemonLog(base: { by: number; cluster?: string }): DaemonLog {
  const logger = pino({
    base,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
  return {
    event: (record: EventRecord) => {
      if (warnEvents.has(record.event)) logger.warn(record);
      else logger.info(record);
    },
    fatal: (record: EventRecord) => logger.fatal(record),
  };
}
