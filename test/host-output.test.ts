// The outputs alone (src/core/host-output.ts): when a heartbeat leaves and what it says, and the
// rate-limited summary of rejected heartbeats.
import { describe, expect, it } from 'vitest';
import { decodeHeartbeat } from '../src/core/heartbeat.js';
import { badHeartbeatReportMs } from '../src/core/host.js';
import { maybeSend, reportBadHeartbeats, wakeAt } from '../src/core/host-output.js';
import { immediateBurst, immediateGapPerPeerMs } from '../src/core/host-state.js';
import { countBad } from '../src/core/host-receive.js';
import { addPeer, eventNames, heartbeatFor, machineState, testKey } from './support/host-state.js';

describe('host-output: maybeSend', () => {
  it('listens until the first period, then sends a heartbeat that acks every heard peer', () => {
    const s = machineState(1);
    addPeer(s, heartbeatFor(s, 2, { incarnation: 5, sequence: 9 }), 0);
    maybeSend(s, s.periodMs - 1, true);
    expect(s.send).toHaveLength(0);
    maybeSend(s, s.periodMs, false);
    expect(s.send).toHaveLength(1);
    expect(s.sequence).toBe(1);
    expect(s.nextSendMs).toBe(s.periodMs + s.sendIntervalMs);
    const decoded = decodeHeartbeat(s.send[0]!, testKey, s.clusterId);
    if (!decoded.ok) throw new Error(decoded.reason);
    expect(decoded.heartbeat).toMatchObject({ hostId: 1, incarnation: 100, sequence: 1 });
    expect(decoded.heartbeat.acks).toEqual([{ host: 2, incarnation: 5, sequence: 9 }]);
  });

  it('sends again before the next period only when what it announces changed or a peer needs an answer', () => {
    const s = machineState(1);
    maybeSend(s, s.periodMs, false);
    maybeSend(s, s.periodMs + 1, false);
    expect(s.sequence).toBe(1);
    maybeSend(s, s.periodMs + 2, true);
    expect(s.sequence).toBe(2);
    s.adminState = 'stopped';
    maybeSend(s, s.periodMs + 3, false);
    expect(s.sequence).toBe(3);
  });
});

describe('host-output: heartbeats sent at once', () => {
  /** A host that hears `peers` peers, past its first scheduled heartbeat. */
  function hearing(peers: number) {
    const s = machineState(1);
    s.heardIds = Array.from({ length: peers }, (_, i) => i + 2);
    maybeSend(s, s.periodMs, false);
    return s;
  }

  it('sends a burst of answers at once, then one per gap, which grows with the peers heard', () => {
    const s = hearing(31);
    // Between two scheduled heartbeats (the next is due at periodMs + sendIntervalMs).
    const start = s.periodMs + 100;
    expect(s.immediateGapMs).toBe(31);
    const sentAt: number[] = [];
    // 31 peers each need an answer, one after the other, 0.1 ms apart; then time runs on.
    for (let t = start; t <= start + 80; t += 0.1) {
      const before = s.sequence;
      maybeSend(s, t, t < start + 3.1);
      if (s.sequence > before) sentAt.push(Math.round((t - start) * 10) / 10);
    }
    // The burst, then the owed answer once a token is back (about a gap after the burst),
    // and nothing after: every answer owed was in it.
    expect(sentAt.slice(0, immediateBurst)).toEqual([0, 0.1, 0.2, 0.3]);
    expect(sentAt.slice(immediateBurst)).toHaveLength(1);
    expect(sentAt[immediateBurst]).toBeGreaterThanOrEqual(30);
    expect(sentAt[immediateBurst]).toBeLessThanOrEqual(31.5);
  });

  it('answers a lone change at once in a small cluster, and the gap never exceeds a quarter period', () => {
    const s = hearing(2);
    expect(s.immediateGapMs).toBe(2 * immediateGapPerPeerMs);
    const t = s.periodMs + 50;
    maybeSend(s, t, true);
    expect(s.sequence).toBe(2);
    expect(hearing(200).immediateGapMs).toBe(s.periodMs / 4);
  });

  it('asks to be woken when the owed heartbeat may leave', () => {
    const s = hearing(31);
    const t = s.periodMs + 100;
    for (let i = 0; i < immediateBurst; i++) maybeSend(s, t, true);
    expect(s.sequence).toBe(1 + immediateBurst);
    maybeSend(s, t, true);
    expect(s.sequence).toBe(1 + immediateBurst);
    expect(wakeAt(s, t)).toBe(t + 31);
    maybeSend(s, t + 31, false);
    expect(s.sequence).toBe(2 + immediateBurst);
  });
});

describe('host-output: reportBadHeartbeats', () => {
  it('stays quiet about unproven heartbeats alone, and reports others at most once per interval', () => {
    const s = machineState(1);
    countBad(s, 'unproven');
    reportBadHeartbeats(s, 0, false);
    expect(eventNames(s)).toEqual([]);
    countBad(s, 'bad authentication');
    reportBadHeartbeats(s, 0, false);
    expect(s.events[0]).toMatchObject({
      event: 'bad heartbeats',
      counts: { unproven: 1, 'bad authentication': 1 },
    });
    countBad(s, 'truncated');
    reportBadHeartbeats(s, badHeartbeatReportMs - 1, false);
    expect(s.events).toHaveLength(1);
    reportBadHeartbeats(s, badHeartbeatReportMs - 1, true);
    expect(s.events).toHaveLength(2);
    expect(s.badCountsTotal.get('unproven')).toBe(1);
  });
});
