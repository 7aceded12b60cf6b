// The daemon's recent events, for `nlb display` and `nlb events [--follow]`: every record nlbd
// logs (protocol events with their stable names, data plane and control events) also lands in a
// ring of the last `eventsKeptMax`, numbered, with the wall-clock time it was logged. Followers
// get each new record as it is logged; one that cannot keep up is dropped (its `push` returns
// false), so a stuck reader never holds the daemon's memory.
import type { EventRecord } from './event-names.js';

/**
 * A converging cluster logs a few dozen events; 256 keeps minutes of history on a busy host and
 * costs tens of kilobytes.
 */
export const eventsKeptMax = 256;
/** Followers are people and scripts; more than this is a runaway loop. */
export const followersMax = 16;

/** One logged event as `nlb events` shows it. */
export type JournalEntry = {
  /** 1, 2, 3... since nlbd started; a follower sees no gaps unless it was too slow. */
  readonly seq: number;
  /** ISO time it was logged. */
  readonly time: string;
  readonly event: string;
} & Readonly<Record<string, unknown>>;

/** Returns false when the follower cannot take more: it is removed. */
export type Follower = (entry: JournalEntry) => boolean;

export class EventJournal {
  private readonly entries: JournalEntry[] = [];
  private readonly followers = new Set<Follower>();
  private seq = 0;

  constructor(
    private readonly now: () => Date = () => new Date(),
    private readonly keptMax = eventsKeptMax,
  ) {}

  /** Records one event; the sink to chain after the log's. */
  readonly record = (record: EventRecord): void => {
    this.seq++;
    const { event, ...rest } = record;
    const entry: JournalEntry = { seq: this.seq, time: this.now().toISOString(), event, ...rest };
    this.entries.push(entry);
    if (this.entries.length > this.keptMax) {
      this.entries.shift();
    }
    for (const follower of [...this.followers]) {
      let keep: boolean;
      try {
        keep = follower(entry);
      } catch {
        keep = false;
      }
      if (!keep) {
        this.followers.delete(follower);
      }
    }
  };

  /** The last `limit` entries (all kept when undefined), oldest first. */
  recent(limit?: number): JournalEntry[] {
    return limit === undefined ? [...this.entries] : this.entries.slice(-limit);
  }

  /**
   * Calls `follower` for every entry recorded from now on, until it returns false or the
   * returned function is called. Throws when `followersMax` already follow.
   */
  follow(follower: Follower): () => void {
    if (this.followers.size >= followersMax) {
      throw new Error(`${followersMax} clients already follow the events; try again later`);
    }
    this.followers.add(follower);
    return () => {
      this.followers.delete(follower);
    };
  }

  get followerCount(): number {
    return this.followers.size;
  }
}
