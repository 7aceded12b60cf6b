// The simulator's agenda: timed events in a binary heap. Two events at the same virtual time
// run in the order they were scheduled (a sequence number breaks the tie), so a run never
// depends on the heap's internal layout.

interface Entry<T> {
  readonly atMs: number;
  readonly seq: number;
  readonly item: T;
}

function before<T>(a: Entry<T>, b: Entry<T>): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}

export class EventQueue<T> {
  private readonly heap: Entry<T>[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  push(atMs: number, item: T): void {
    if (!Number.isFinite(atMs)) {
      throw new Error(`event queue: time must be finite, got ${atMs}`);
    }
    const heap = this.heap;
    heap.push({ atMs, seq: this.seq++, item });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) {
        break;
      }
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  peekTimeMs(): number | undefined {
    return this.heap[0]?.atMs;
  }

  pop(): { atMs: number; item: T } | undefined {
    const heap = this.heap;
    const top = heap[0];
    if (top === undefined) {
      return undefined;
    }
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < heap.length && before(heap[left]!, heap[smallest]!)) smallest = left;
        if (right < heap.length && before(heap[right]!, heap[smallest]!)) smallest = right;
        if (smallest === i) break;
        [heap[i], heap[smallest]] = [heap[smallest]!, heap[i]!];
        i = smallest;
      }
    }
    return { atMs: top.atMs, item: top.item };
  }
}
