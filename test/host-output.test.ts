// The outputs alone (src/core/host-output.ts): when a heartbeat leaves and what it says, and the
// rate-limited summary of rejected heartbeats.
import { describe, expect, it } from 'vitest';
import { decodeHeartbeat } from '../src/core/heartbeat.js';
import { badHeartbeatReportMs } from '../src/core/host.js';
import { maybeSend, reportBadHeartbeats } from '../src/core/host-output.js';
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
