// One queue of asynchronous tasks that run one at a time, in the order they were asked for.
// The adapters need it where two overlapping calls would corrupt each other: the long-lived
// nft process must see one command and its answer before the next, and the Dataplane must
// never restore a table while a program is half done. Written once so that every such lock
// behaves alike: a task that fails does not stop the tasks queued after it.

export class Serial {
  /** The last task queued, its failure swallowed: the next one starts when it settles. */
  private tail: Promise<unknown> = Promise.resolve();

  /** Runs `task` once every task queued before it has settled; resolves or rejects as it does. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /**
   * Resolves once the queue is empty: every task queued so far has settled, and so has every
   * task they queued in turn while running.
   */
  async idle(): Promise<void> {
    for (;;) {
      const tail = this.tail;
      await tail;
      if (tail === this.tail) return;
    }
  }
}
