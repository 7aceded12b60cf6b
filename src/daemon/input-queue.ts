// HostDriver's inputs, queued: the machine steps one at a time, and each Ready is carried out
// completely before the next input is stepped. Ticks coalesce (one queued at most); the driver's
// own urgent work (a lost data plane, its side of `link`) goes first.
import type { Command, CommandReply, Input } from '../core/protocol.js';

export type Job =
  | { readonly kind: 'tick' }
  /** A command of the driver's own (the data plane's side of `link`), stepped before the rest. */
  | { readonly kind: 'internal'; readonly command: Command }
  /** The data plane reported itself lost between steps: fail closed before anything else. */
  | { readonly kind: 'lost'; readonly reason: string }
  /** Steps nothing: resolves with the time once every input queued before it is carried out. */
  | { readonly kind: 'barrier'; readonly resolve: (nowMs: number) => void }
  | {
      readonly kind: 'datagram';
      readonly bytes: Uint8Array;
      readonly from: string;
      readonly queuedAtMs: number;
    }
  | {
      readonly kind: 'command';
      readonly command: Command;
      readonly resolve: (reply: CommandReply) => void;
      readonly reject: (error: Error) => void;
    };

export class InputQueue {
  private readonly jobs: Job[] = [];
  private tickQueued = false;
  private running = false;
  private started = false;
  private idleWaiters: (() => void)[] = [];
  /** Datagrams queued so far: it grows with every datagram read, unless the queue is full. */
  datagramsQueued = 0;
  /** Datagrams and commands waiting, for the driver's bounds. */
  datagrams = 0;
  commands = 0;
  /** The longest the queue has been. */
  depthMax = 0;

  constructor(private readonly run: (job: Job) => Promise<void>) {}

  /** Jobs run from the next push on, those queued before first, in order. */
  start(): void {
    if (this.started) {
      throw new Error('HostDriver.start: already started');
    }
    this.started = true;
  }

  push(job: Job): void {
    if (job.kind === 'tick') {
      if (this.tickQueued) {
        return;
      }
      this.tickQueued = true;
    }
    if (job.kind === 'datagram') {
      this.datagrams++;
      this.datagramsQueued++;
    }
    if (job.kind === 'command') this.commands++;
    this.jobs.push(job);
    this.depthMax = Math.max(this.depthMax, this.jobs.length);
    if (this.started) {
      void this.pump();
    }
  }

  /** Runs `job` before anything already queued (the driver's own urgent work). */
  pushFirst(job: Job): void {
    this.jobs.unshift(job);
    if (this.started) {
      void this.pump();
    }
  }

  /** Resolves once no job is queued or running. */
  idle(): Promise<void> {
    if (!this.running && (this.jobs.length === 0 || !this.started)) {
      return Promise.resolve();
    }
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async pump(): Promise<void> {
    if (this.running) {
      return;
    }
    this.running = true;
    try {
      for (;;) {
        const job = this.jobs.shift();
        if (job === undefined) {
          break;
        }
        if (job.kind === 'tick') this.tickQueued = false;
        if (job.kind === 'datagram') this.datagrams--;
        if (job.kind === 'command') this.commands--;
        await this.run(job);
      }
    } finally {
      this.running = false;
      for (const wake of this.idleWaiters.splice(0)) {
        wake();
      }
    }
  }
}

/** The machine's input for a queued datagram, stepped at `nowMs` after waiting `waitedMs`. */
export function datagramInput(
  job: Extract<Job, { kind: 'datagram' }>,
  nowMs: number,
  waitedMs: number,
  moreQueued: boolean,
): Input {
  return { kind: 'datagram', nowMs, bytes: job.bytes, from: job.from, waitedMs, moreQueued };
}
