// Time for the daemon, behind one small interface with a simulated twin
// (docs/architecture.md#adapters): the daemon reads `nowMs()` and sets one-shot timers; tests drive
// a FakeClock by hand and never sleep to wait for the protocol.
import { performance } from 'node:perf_hooks';

export interface Clock {
  /** Monotonic milliseconds; never goes back, whatever happens to the wall clock. */
  nowMs(): number;
  /** Calls `fn` once, no earlier than `atMs`; returns a function that cancels it. */
  at(atMs: number, fn: () => void): () => void;
  /**
   * Calls `fn` once the input waiting now has been read: after a turn of the event loop in
   * which `arrivals` (a count that grows with every datagram read) did not grow. A clock
   * without it (the fake one) has no input of its own to wait for.
   */
  afterInput?(arrivals: () => number, fn: () => void): () => void;
}

/**
 * Turns of the event loop `afterInput` waits at most: a flood that never lets the socket run
 * dry delays a wake-up by this many turns (each reads at most 32 datagrams), never forever.
 */
export const afterInputTurnsMax = 64;

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

  /**
   * libuv reads at most 32 datagrams from a socket per turn of the event loop. After a stall
   * longer than a few heartbeat periods more than that wait in the socket, and a wake-up run
   * after the first 32 would take the senders of the rest for silent. So `fn` waits turn by
   * turn (setImmediate runs after each poll) until a poll reads nothing new.
   */
  afterInput(arrivals: () => number, fn: () => void): () => void {
    let seen = arrivals();
    let turns = 0;
    const check = (): void => {
      const now = arrivals();
      if (now !== seen && turns < afterInputTurnsMax) {
        seen = now;
        turns++;
        immediate = setImmediate(check);
        return;
      }
      fn();
    };
    let immediate = setImmediate(check);
    return () => clearImmediate(immediate);
  }
}

/**
 * `clock.at(atMs, fn)`, then, with a clock that has input of its own, `afterInput`: `fn` runs
 * once the input that waited meanwhile has been read. One function cancels either stage.
 */
export function atAfterInput(
  clock: Clock,
  atMs: number,
  arrivals: () => number,
  fn: () => void,
): () => void {
  let cancel = clock.at(atMs, () => {
    if (clock.afterInput === undefined) fn();
    else cancel = clock.afterInput(arrivals, fn);
  });
  return () => cancel();
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
