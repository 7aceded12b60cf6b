// Receiving alone (src/core/host-receive.ts): what is dropped and counted, how an unproven
// process is remembered, and how a proven one enters the peer table.
import { describe, expect, it } from 'vitest';
import { type Heartbeat, encodeHeartbeat } from '../src/core/heartbeat.js';
import { recordSent } from '../src/core/host-announcements.js';
import { receive } from '../src/core/host-receive.js';
import { heartbeatFor, machineState, testKey } from './support/host-state.js';

describe('host-receive', () => {
  it('drops and counts a datagram that does not authenticate', () => {
    const s = machineState(1);
    expect(receive(s, 0, new Uint8Array(40))).toBe('dropped');
    expect([...s.badCountsTotal.values()].reduce((a, b) => a + b, 0)).toBe(1);
    expect(s.peers.size).toBe(0);
  });

  it('remembers an unproven process only as a candidate, and answers a newcomer while listening', () => {
    const s = machineState(1);
    const bytes = encodeHeartbeat(heartbeatFor(s, 2, { incarnation: 7 }), testKey);
    expect(receive(s, 0, bytes)).toBe('answer');
    expect(s.peers.size).toBe(0);
    expect(s.candidates.get('2:7')).toMatchObject({ host: 2, newest: true });
    expect(s.badCountsTotal.get('unproven')).toBe(1);
    // The same process again changes nothing but the counters.
    const again = encodeHeartbeat(heartbeatFor(s, 2, { incarnation: 7, sequence: 2 }), testKey);
    expect(receive(s, 1, again)).toBe('dropped');
  });

  it('takes a process that acks a recent heartbeat of ours as a heard peer, then guards its sequence', () => {
    const s = machineState(1);
    s.sequence = 1;
    recordSent(s, 0, 1);
    const acks = [{ host: 1, incarnation: 100, sequence: 1 }];
    const hb = heartbeatFor(s, 2, { incarnation: 7, sequence: 3, acks });
    expect(receive(s, 10, encodeHeartbeat(hb, testKey))).toBe('answer');
    expect(s.peers.get(2)).toMatchObject({ heard: true, incarnation: 7, lastSequence: 3 });
    expect(receive(s, 11, encodeHeartbeat(hb, testKey))).toBe('dropped');
    expect(s.badCountsTotal.get('replayed or stale')).toBe(1);
  });

  it('drops a heartbeat that acks our current incarnation at a sequence before the window', () => {
    const s = machineState(1);
    s.sequence = 2;
    recordSent(s, 0, 1);
    recordSent(s, s.freshWindowMs + 1, 2);
    const acks = [{ host: 1, incarnation: 100, sequence: 1 }];
    const hb = heartbeatFor(s, 2, { incarnation: 7, acks });
    receive(s, s.freshWindowMs + 2, encodeHeartbeat(hb, testKey));
    expect(s.peers.size).toBe(0);
    expect(s.badCountsTotal.get('replayed or stale')).toBe(1);
  });

  it("calls a heard peer's heartbeat routine when it announces what the previous one did", () => {
    const s = machineState(1);
    s.sequence = 2;
    recordSent(s, 0, 1);
    recordSent(s, 5, 2);
    const at = (sequence: number, ack: number, fields: Partial<Heartbeat> = {}): Uint8Array =>
      encodeHeartbeat(
        heartbeatFor(s, 2, {
          incarnation: 7,
          sequence,
          acks: [{ host: 1, incarnation: 100, sequence: ack }],
          ...fields,
        }),
        testKey,
      );
    expect(receive(s, 10, at(3, 1))).toBe('answer');
    // Only the sequence and the acked sequence moved on.
    expect(receive(s, 11, at(4, 2))).toBe('routine');
    expect(s.peers.get(2)).toMatchObject({ lastSequence: 4, lastHeardMs: 11 });
    // Anything announced differently is not routine: a bucket owned, the state, the view.
    const rules = heartbeatFor(s, 2).rules.map((rule) => ({ ...rule, owned: [0] }));
    expect(receive(s, 12, at(5, 2, { rules }))).toBe('taken');
    expect(receive(s, 13, at(6, 2, { rules }))).toBe('routine');
    expect(receive(s, 14, at(7, 2, { rules, state: 'draining' }))).toBe('taken');
    expect(receive(s, 15, at(8, 2, { rules, state: 'draining', members: [1, 2] }))).toBe('answer');
    expect(receive(s, 16, at(9, 2, { rules, state: 'draining', members: [1, 2] }))).toBe('routine');
  });
});
