// The daemon's real clock (src/daemon/clock.ts): a wake-up that falls due while the process is
// starved runs after the datagrams that arrived meanwhile, so a daemon reads its peers'
// heartbeats before it acts on the time that passed (and declares nobody dead for its own stall).
import dgram from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { MonotonicClock, afterInputTurnsMax, atAfterInput } from '../src/daemon/clock.js';

function busyWait(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // The event loop is blocked, as in a starved daemon.
  }
}

describe('MonotonicClock', () => {
  it('runs a timer that fell due during a stall after the datagrams that arrived meanwhile', async () => {
    const clock = new MonotonicClock();
    const receiver = dgram.createSocket('udp4');
    const sender = dgram.createSocket('udp4');
    try {
      await new Promise<void>((resolve) => receiver.bind(0, '127.0.0.1', resolve));
      const order: string[] = [];
      const done = new Promise<void>((resolve) => {
        receiver.on('message', () => order.push('datagram'));
        clock.at(clock.nowMs() + 5, () => {
          order.push('tick');
          resolve();
        });
      });
      sender.send(Buffer.from('heartbeat'), receiver.address().port, '127.0.0.1', () => {
        // The datagram is in the receiver's socket; the timer falls due during the stall.
        busyWait(30);
      });
      await done;
      expect(order).toEqual(['datagram', 'tick']);
    } finally {
      receiver.close();
      sender.close();
    }
  });

  it('with afterInput, runs the wake-up after a backlog larger than one poll reads (libuv: 32)', async () => {
    const clock = new MonotonicClock();
    const receiver = dgram.createSocket('udp4');
    const sender = dgram.createSocket('udp4');
    const backlog = 150;
    try {
      await new Promise<void>((resolve) => receiver.bind(0, '127.0.0.1', resolve));
      let received = 0;
      let receivedAtTick = -1;
      const done = new Promise<void>((resolve) => {
        receiver.on('message', () => received++);
        atAfterInput(
          clock,
          clock.nowMs() + 5,
          () => received,
          () => {
            receivedAtTick = received;
            resolve();
          },
        );
      });
      // All of the backlog is in the receiver's socket before the stall ends.
      for (let i = 0; i < backlog; i++)
        sender.send(Buffer.from(`heartbeat ${i}`), receiver.address().port, '127.0.0.1');
      await new Promise((resolve) =>
        sender.send('last', receiver.address().port, '127.0.0.1', resolve),
      );
      busyWait(30);
      await done;
      expect(receivedAtTick).toBe(backlog + 1);
    } finally {
      receiver.close();
      sender.close();
    }
  });

  it('afterInput gives up waiting after afterInputTurnsMax turns of a flood', async () => {
    const clock = new MonotonicClock();
    let turns = 0;
    // Input that never runs dry: every turn has read something new.
    const flood = (): number => ++turns;
    await new Promise<void>((resolve) => clock.afterInput(flood, resolve));
    expect(turns).toBe(afterInputTurnsMax + 2);
  });

  it('never runs a timer cancelled after it fell due but before it ran', async () => {
    const clock = new MonotonicClock();
    let ran = false;
    const cancel = clock.at(clock.nowMs() + 5, () => (ran = true));
    // Due in the same turn, right after the clock's timer: it cancels before the deferred run.
    setTimeout(cancel, 5);
    busyWait(10);
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(ran).toBe(false);
  });
});
