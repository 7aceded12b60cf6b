// Time for the daemon, behind one small interface with a simulated twin
// (docs/architecture.md#adapters): the daemon reads `nowMs()` and sets one-shot timers; tests drive
// a FakeClock by hand and never sleep to wait for the protocol.
import { performance } from 'node:perf_hooks';

export interface Clock {
  /** Monotonic milliseconds; never goes back, whatever happens to the wall clock. */
  nowMs(): number;
  /** Calls `fn` once, no earlier than `atMs`; returns a function that cancels it. */
  at(atMs: number, fn: () => void): () => void;
}

/**
 * The real clock: `performance.now()` (monotonic) shifted so that it reads as epoch ms at
 * start. Readable in logs as a time, yet immune to NTP steps, which would otherwise make peers
 * look silent (step forward) or keep dead ones alive (step back).
 */
export class MonotonicClock implements Clock {
  private readonly offsetMs: number;

  constructor(startEpochMs: number = Date.now()) {
    this.offsetMs = startEpochMs - performance.now();
  }

  nowMs(): number {
    return this.offsetMs + performance.now();
  }

  at(atMs: number, fn: () => void): () => void {
    // Node timers have whole-millisecond resolution: round up so a timer never fires before
    // `atMs` by this clock (the host machine would only ask again for the same instant).
    const delayMs = Math.max(0, Math.ceil(atMs - this.nowMs()));
    // `fn` runs after the I/O that was ready when the timer fired (Node runs timers before it
    // polls sockets; setImmediate comes after the poll). A daemon starved of CPU for a while
    // then reads the heartbeats waiting in its socket before it acts on the time that passed,
    // instead of declaring their senders dead first.
    let cancelled = false;
    let immediate: NodeJS.Immediate | undefined;
    const timer = setTimeout(() => {
      immediate = setImmediate(() => {
        if (!cancelled) fn();
      });
    }, delayMs);
    return () => {
      cancelled = true;
      clearTimeout(timer);
      if (immediate !== undefined) clearImmediate(immediate);
    };
  }
}

interface FakeTimer {
  readonly atMs: number;
  readonly seq: number;
  readonly fn: () => void;
}

/** A clock that moves only when a test says so; due timers fire in time order. */
export class FakeClock implements Clock {
  private now: number;
  private timers: FakeTimer[] = [];
  private seq = 0;

  constructor(startMs = 1_000_000) {
    this.now = startMs;
  }

  nowMs(): number {
    return this.now;
  }

  at(atMs: number, fn: () => void): () => void {
    const timer = { atMs, seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  /** When the next timer is due, or undefined when none is set. */
  get nextTimerAtMs(): number | undefined {
    return this.timers.reduce<number | undefined>(
      (min, t) => (min === undefined || t.atMs < min ? t.atMs : min),
      undefined,
    );
  }

  /** Moves time forward by `ms`, firing each due timer at its own instant, in order. */
  advance(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      const due = this.timers
        .filter((t) => t.atMs <= end)
        .sort((a, b) => a.atMs - b.atMs || a.seq - b.seq)[0];
      if (due === undefined) {
        break;
      }
      this.timers = this.timers.filter((t) => t !== due);
      this.now = Math.max(this.now, due.atMs);
      due.fn();
    }
    this.now = end;
  }
}
