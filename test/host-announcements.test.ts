// The announcement part of the host machine alone (src/core/host-announcements.ts): the sent
// log that bounds the freshness window, the log of announced targets, and the rule that decides
// whether a peer's report of our target counts (reportCounts).
import { describe, expect, it } from 'vitest';
import {
  freshFromSequence,
  recordAnnouncement,
  recordSent,
  reportCounts,
} from '../src/core/host-announcements.js';
import { addPeer, heartbeatFor, machineState } from './support/host-state.js';

describe('host-announcements: the sent log', () => {
  it('forgets sends older than the freshness window, and never reaches below the pause floor', () => {
    const s = machineState();
    const window = s.freshWindowMs;
    recordSent(s, 0, 1);
    recordSent(s, 100, 2);
    recordSent(s, window + 50, 3);
    expect(freshFromSequence(s, window)).toBe(1);
    // At window + 60 the send at 0 is older than the window; the one at 100 is not.
    expect(freshFromSequence(s, window + 60)).toBe(2);
    expect(freshFromSequence(s, window + 150)).toBe(3);
    s.freshFloorSequence = 10;
    expect(freshFromSequence(s, window + 150)).toBe(10);
  });
});

describe('host-announcements: the announcement log', () => {
  it('extends a run of one digest, and drops the oldest run beyond 16', () => {
    const s = machineState();
    recordAnnouncement(s, 1, 'a');
    recordAnnouncement(s, 2, 'a');
    expect(s.announced).toHaveLength(1);
    expect(s.announced[0]).toMatchObject({ digest: 'a', firstSequence: 1, lastSequence: 2 });
    for (let i = 0; i < 16; i++) recordAnnouncement(s, 3 + i, `d${i}`);
    expect(s.announced).toHaveLength(16);
    expect(s.announced[0]!.digest).toBe('d0');
    // Reports acking below this can no longer be judged by the log.
    expect(s.announcedFromSequence).toBe(3);
  });
});

describe('host-announcements: reportCounts', () => {
  /**
   * Host 1 announced target A (bucket 0 to peer 2) at sequences 1-2, then target B (bucket 0 to
   * us) from 3 on; it does not own bucket 0 yet.
   */
  function setUp() {
    const s = machineState(1);
    const buckets = s.config.cluster.portRules[0]!.buckets;
    const targetA = [Array.from({ length: buckets }, (_, b) => (b === 0 ? 2 : 1))];
    const targetB = [Array.from({ length: buckets }, () => 1)];
    addPeer(s, heartbeatFor(s, 2, { incarnation: 7, generation: 3 }), 0);
    s.members = [1, 2];
    s.targets = targetA;
    recordAnnouncement(s, 1, 'A');
    recordAnnouncement(s, 2, 'A');
    s.lastSentDigest = 'A';
    s.lastSentSequence = 2;
    s.targets = targetB;
    recordAnnouncement(s, 3, 'B');
    s.previousDigestSequence = 2;
    s.lastSentDigest = 'B';
    s.lastSentSequence = 3;
    return { s, targetB };
  }

  it('counts a report that acks our last announcement of another target (the strict rule)', () => {
    const { s, targetB } = setUp();
    const report = heartbeatFor(s, 2, { incarnation: 7, generation: 3 });
    expect(reportCounts(s, 2, report, 2, 'B', targetB)).toBe(true);
  });

  it('does not count an older report while an announcement after it gave the peer what we take', () => {
    const { s, targetB } = setUp();
    const report = heartbeatFor(s, 2, { incarnation: 7, generation: 3 });
    expect(reportCounts(s, 2, report, 1, 'B', targetB)).toBe(false);
  });

  it('counts it once the peer shows a newer generation: it can never compute that target again', () => {
    const { s, targetB } = setUp();
    const report = heartbeatFor(s, 2, { incarnation: 7, generation: 4 });
    expect(reportCounts(s, 2, report, 1, 'B', targetB)).toBe(true);
  });

  it('counts it when we already own the bucket the missed announcement gave the peer', () => {
    const { s, targetB } = setUp();
    s.owned[0]!.add(0);
    const report = heartbeatFor(s, 2, { incarnation: 7, generation: 3 });
    expect(reportCounts(s, 2, report, 1, 'B', targetB)).toBe(true);
  });

  it('falls back to the strict rule when the log does not reach back to the ack', () => {
    const { s, targetB } = setUp();
    s.announcedFromSequence = 3;
    const report = heartbeatFor(s, 2, { incarnation: 7, generation: 4 });
    expect(reportCounts(s, 2, report, 1, 'B', targetB)).toBe(false);
  });
});
