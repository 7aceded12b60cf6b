// nlbd's log: one JSON line per event on stdout (pino), e.g.
//   {"level":"info","time":"2026-01-01T12:00:00.000Z","by":1,"cluster":"web","event":"host joined","host":3}
// `event` is a stable name a reader can match on; `by` is the id of the host that logs, the
// name the protocol core gives it in its events (ProtocolEvent.by), because `host` is already
// an event field: the host an event is about ("host joined", "host declared dead"). Protocol
// events carry `atMs`, the daemon's monotonic clock, which orders events exactly even across a
// wall-clock step. Writes are synchronous, so the last lines before an exit are never lost.
import { pino } from 'pino';
import { levelOf, type EventRecord, type EventSink } from './event-names.js';

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
      logger[levelOf(record.event)](record);
    },
    fatal: (record: EventRecord) => logger.fatal(record),
  };
}
