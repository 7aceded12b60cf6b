// The driver's counts of this host's connections (conntrack -L, ~5 ms per 1,000 entries), made
// only while the machine needs one:
//   - draining (drainstop): once no connection is left, `connectionsEnded` stops the host;
//   - routed mode, holding released buckets (src/core/routed-forward.ts): `connectionsHeld`
//     reports which buckets still have connections, so the machine lets go of the others and
//     their new owners end the second chance there.
// A count for `connectionsHeld` begins at a barrier of the driver's queue: every input stepped
// before it has been carried out, so the kernel has let go of every bucket released until then,
// and a connection the count does not see can no longer appear in those buckets.
import type { Command, CommandReply, HostStatus } from '../core/protocol.js';
import type { BucketConnections } from '../dataplane/conntrack.js';
import type { Clock } from './clock.js';
import type { EventSink } from './event-names.js';

export interface ConnectionPollOptions {
  readonly clock: Clock;
  readonly everyMs: number;
  readonly status: () => HostStatus;
  readonly connections: () => Promise<readonly BucketConnections[]>;
  /** Resolves with the clock time once every input queued before it is carried out. */
  readonly barrier: () => Promise<number>;
  readonly command: (command: Command) => Promise<CommandReply>;
  readonly log: EventSink;
  readonly countFailed: (error: unknown) => void;
}

/** Per port rule, the buckets with at least one connection (the uncovered rule left out). */
export function busyBuckets(counts: readonly BucketConnections[], ruleCount: number): number[][] {
  const buckets = Array.from({ length: ruleCount }, (): number[] => []);
  for (const { rule, bucket, connections } of counts) {
    if (rule !== 'uncovered' && connections > 0) buckets[rule]?.push(bucket);
  }
  return buckets.map((list) => list.sort((a, b) => a - b));
}

export class ConnectionPoll {
  private cancel: (() => void) | undefined;
  private polling = false;
  private stopped = false;

  constructor(private readonly o: ConnectionPollOptions) {}

  start(): void {
    if (this.stopped) return;
    this.cancel = this.o.clock.at(this.o.clock.nowMs() + this.o.everyMs, () => {
      this.cancel = undefined;
      void this.poll().finally(() => this.start());
    });
  }

  stop(): void {
    this.stopped = true;
    this.cancel?.();
    this.cancel = undefined;
  }

  private async poll(): Promise<void> {
    const first = this.o.status();
    const draining = first.state === 'draining';
    const holding = (first.held ?? 0) > 0;
    if (this.polling || this.stopped || (!draining && !holding)) return;
    this.polling = true;
    try {
      const countedAtMs = holding ? await this.o.barrier() : 0;
      const counts = await this.o.connections();
      if (this.stopped) return;
      const status = this.o.status();
      const left = counts.reduce((sum, b) => sum + b.connections, 0);
      if (draining && left === 0 && status.state === 'draining') {
        const reply = await this.o.command({ verb: 'connectionsEnded' });
        this.o.log({ event: 'drainstop finished', reply: reply.code, message: reply.message });
      }
      if (holding && (status.held ?? 0) > 0) {
        const buckets = busyBuckets(counts, status.ownership.rules.length);
        await this.o.command({ verb: 'connectionsHeld', countedAtMs, buckets });
      }
    } catch (error) {
      this.o.countFailed(error);
    } finally {
      this.polling = false;
    }
  }
}
