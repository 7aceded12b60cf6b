import { describe, expect, it } from 'vitest';
import { MiniNet, hostConfig } from './support/mini-net.js';

describe('host state machine (quick)', () => {
  it('three hosts converge to 20 buckets each', () => {
    const net = new MiniNet();
    for (const id of [1, 2, 3]) net.add(hostConfig(id));
    net.run(2000);
    for (const id of [1, 2, 3]) expect(net.hosts.get(id)!.status().converged).toBe(true);
    const counts = [1, 2, 3].map((id) => net.ownership.get(id)!.rules[0]!.owned.length);
    expect(counts).toEqual([20, 20, 20]);
    net.crash(2);
    const t = net.nowMs;
    net.run(t + 3000);
    const counts2 = [1, 3].map((id) => net.ownership.get(id)!.rules[0]!.owned.length);
    expect(counts2).toEqual([30, 30]);
    console.log(
      net.events
        .filter((e) => e.atMs < 2000)
        .map((e) => JSON.stringify(e))
        .join('\n'),
    );
  });
});
