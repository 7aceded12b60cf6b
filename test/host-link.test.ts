// The link-down time that decides whether a returning host drops its old connections counts
// from its last heartbeat when the driver says so (a data plane that could not be programmed
// withholds heartbeats before the link is reported down): peers declared it dead from then on.
import { describe, expect, it } from 'vitest';
import { MiniNet, hostConfig } from './support/mini-net.js';

describe('link down since the last heartbeat', () => {
  function downAndUp(silentForMs: number, reportedAfterMs: number) {
    const net = new MiniNet(1);
    for (const id of [1, 2]) net.add(hostConfig(id));
    net.run(2000);
    const silentSinceMs = net.nowMs;
    net.run(net.nowMs + reportedAfterMs);
    net.command(2, { verb: 'link', up: false, silentSinceMs });
    net.run(silentSinceMs + silentForMs);
    const before = net.events.length;
    net.command(2, { verb: 'link', up: true });
    return net.events.slice(before).map((e) => e.event);
  }

  it('silent for longer than detection: the host drops its connections on return', () => {
    // Reported down 600 ms after the last heartbeat, up 500 ms later: 1,100 ms of silence.
    expect(downAndUp(1100, 600)).toContain('rejoining: dropping connections');
  });

  it('silent for less than detection: it keeps them', () => {
    expect(downAndUp(800, 300)).not.toContain('rejoining: dropping connections');
  });
});
