import { describe, expect, it } from 'vitest';
import { watchLink } from '../src/daemon/link-watch.js';

describe('link watch', () => {
  it('reports carrier changes once each, and a link down at start', async () => {
    const states = [true, true, false, false, true];
    let i = 0;
    const seen: boolean[] = [];
    const stop = watchLink(
      'eth0',
      (up) => seen.push(up),
      5,
      () => states[Math.min(i++, states.length - 1)]!,
    );
    await new Promise((r) => setTimeout(r, 60));
    stop();
    expect(seen).toEqual([false, true]);
    const seenDown: boolean[] = [];
    const stop2 = watchLink(
      'eth0',
      (up) => seenDown.push(up),
      5,
      () => false,
    );
    await new Promise((r) => setTimeout(r, 20));
    stop2();
    expect(seenDown).toEqual([false]);
  });
});
