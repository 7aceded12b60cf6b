// What the dashboard remembers of the hosts' event streams: the last events of every host, newest
// first, and the timeline of convergences built from their `converged` events. Every member logs
// its own `converged` event for one convergence of the cluster; reports with the same members
// within `sameConvergenceMs` of each other are one entry of the timeline.
import type { EventEntry } from '../control/protocol.js';
import { levelOf } from '../daemon/event-names.js';
import type { Convergence, DashboardEvent } from './view.js';

/** The page shows the recent past; older events are in `nlb events` and the nlbd logs. */
export const eventsKeptMax = 200;
export const convergencesKeptMax = 50;
/**
 * The members of one convergence report it within a few heartbeat periods of each other (the
 * last heartbeat that completes it reaches them one delay apart); 2 s covers the slowest
 * profile's period (1000 ms) twice.
 */
export const sameConvergenceMs = 2_000;
/** Entries remembered to drop the ones a reconnect sends again (each stream's recent ones). */
const seenKeptMax = 4_096;

const hiddenFields = new Set(['seq', 'time', 'event', 'atMs', 'by']);

/** A value as the page shows it: times to a tenth of a millisecond are precise enough. */
function valueText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && !Number.isInteger(value))
    return String(Math.round(value * 10) / 10);
  return JSON.stringify(value);
}

/** An event's fields after its name, `key=value`, values as compact JSON. */
export function eventDetails(entry: EventEntry): string {
  return Object.entries(entry)
    .filter(([key]) => !hiddenFields.has(key))
    .map(([key, value]) => `${key}=${valueText(value)}`)
    .join(' ');
}

function isWarn(event: string): boolean {
  try {
    return levelOf(event as Parameters<typeof levelOf>[0]) !== 'info';
  } catch {
    // A name this dashboard does not know (a newer nlbd): not flagged.
    return false;
  }
}

function numbers(value: unknown): number[] {
  return Array.isArray(value) ? value.filter((v): v is number => typeof v === 'number') : [];
}

export class EventHistory {
  private readonly recent: DashboardEvent[] = [];
  private readonly convergences: Convergence[] = [];
  private readonly seen = new Set<string>();

  /** Adds one host's event; false when it was seen before (a reconnect's recent events). */
  add(hostId: number, entry: EventEntry): boolean {
    const key = `${hostId}/${entry.time}/${entry.seq}/${entry.event}`;
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    if (this.seen.size > seenKeptMax) {
      this.seen.delete(this.seen.values().next().value!);
    }
    const event: DashboardEvent = {
      hostId,
      seq: entry.seq,
      time: entry.time,
      event: entry.event,
      details: eventDetails(entry),
      warn: isWarn(entry.event),
    };
    // Streams deliver in order, but two hosts' streams interleave: keep newest first by time.
    let at = 0;
    while (at < this.recent.length && this.recent[at]!.time > event.time) at++;
    this.recent.splice(at, 0, event);
    this.recent.length = Math.min(this.recent.length, eventsKeptMax);
    if (entry.event === 'converged') this.addConvergence(hostId, entry);
    return true;
  }

  private addConvergence(hostId: number, entry: EventEntry): void {
    const members = numbers(entry.members);
    const atMs = Date.parse(entry.time);
    const durationMs = typeof entry.durationMs === 'number' ? Math.round(entry.durationMs) : 0;
    const bucketsMoved = typeof entry.bucketsMoved === 'number' ? entry.bucketsMoved : 0;
    const reason = typeof entry.reason === 'string' ? entry.reason : '';
    const index = this.convergences.findIndex(
      (c) =>
        c.members.join() === members.join() &&
        Math.abs(Date.parse(c.at) - atMs) <= sameConvergenceMs &&
        !c.reportedBy.includes(hostId),
    );
    const before = index < 0 ? undefined : this.convergences[index]!;
    const merged: Convergence = {
      at: before === undefined || entry.time < before.at ? entry.time : before.at,
      members,
      durationMs: Math.max(before?.durationMs ?? 0, durationMs),
      bucketsMoved: Math.max(before?.bucketsMoved ?? 0, bucketsMoved),
      reasons: [...new Set([...(before?.reasons ?? []), reason].filter((r) => r !== ''))],
      reportedBy: [...(before?.reportedBy ?? []), hostId].sort((a, b) => a - b),
    };
    if (index >= 0) this.convergences.splice(index, 1);
    let at = 0;
    while (at < this.convergences.length && this.convergences[at]!.at > merged.at) at++;
    this.convergences.splice(at, 0, merged);
    this.convergences.length = Math.min(this.convergences.length, convergencesKeptMax);
  }

  /** Newest first. */
  events(): readonly DashboardEvent[] {
    return [...this.recent];
  }

  /** Newest first. */
  timeline(): readonly Convergence[] {
    return [...this.convergences];
  }
}
