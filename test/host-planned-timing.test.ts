// Planned changes complete in two one-way delays even when a periodic heartbeat of the old map
// crosses the change in flight (virtual time: MiniNet, 1 ms one-way delay, 200 ms period).
//
// The crossing is the hard case for the acknowledgement rule (host.ts, `reportCounts`): the
// first report of the new map was made before its sender heard that periodic heartbeat, so the
// strict rule ("a report must ack our last announcement of any other target") waits a third
// delay for a fresh report. The refined rule counts the first report when the crossed
// announcement cannot serve its sender to take what we take.
import { describe, expect, it } from 'vitest';
import type { Command } from '../src/core/protocol.js';
import { MiniNet, hostConfig } from './support/mini-net.js';

const delayMs = 1;

function counts(net: MiniNet, ids: number[]): number[] {
  return ids.map((id) => net.ownership.get(id)?.rules[0]?.owned.length ?? 0);
}

/**
 * Converges hosts 1-3, then gives `command` to host 3 half a delay before `crossing`'s next
 * periodic heartbeat leaves, so that heartbeat (old map) and the change pass each other.
 * Returns how long after the command the expected ownership was reached.
 */
function takeoverAfterCrossing(command: Command, crossing: number, expected: number[]): number {
  const net = new MiniNet(delayMs);
  for (const id of [1, 2, 3]) net.add(hostConfig(id));
  net.run(1500);
  expect(counts(net, [1, 2, 3])).toEqual([20, 20, 20]);
  // Let every host send its periodic heartbeat once more, so that the next wake-up of the
  // crossing host is its next periodic send, not a liveness deadline.
  const due = net.wake.get(crossing)!;
  const trigger = due - delayMs / 2;
  net.run(trigger);
  expect(net.command(3, command)?.code).toBe('ok');
  for (let t = trigger; t <= trigger + 10 * delayMs; t += delayMs / 4) {
    net.run(t);
    if (counts(net, [1, 2, 3]).join() === expected.join()) return t - trigger;
  }
  throw new Error(
    `ownership never reached ${expected.join(',')}: ${counts(net, [1, 2, 3]).join(',')}`,
  );
}

describe('planned changes across a crossing periodic heartbeat', () => {
  for (const crossing of [1, 2]) {
    it(`stop, host ${crossing}'s periodic heartbeat crossing: new owners within 2 delays`, () => {
      expect(takeoverAfterCrossing({ verb: 'stop' }, crossing, [30, 30, 0])).toBeLessThanOrEqual(
        2 * delayMs,
      );
    });

    it(`drainstop, host ${crossing}'s periodic heartbeat crossing: new owners within 2 delays`, () => {
      expect(
        takeoverAfterCrossing({ verb: 'drainstop' }, crossing, [30, 30, 0]),
      ).toBeLessThanOrEqual(2 * delayMs);
    });

    it(`rule drain, host ${crossing}'s periodic heartbeat crossing: new owners within 2 delays`, () => {
      expect(
        takeoverAfterCrossing({ verb: 'drain', rules: [0] }, crossing, [30, 30, 0]),
      ).toBeLessThanOrEqual(2 * delayMs);
    });
  }
});
