// The carry-out order (src/core/carry-out.ts) that every driver walks: flush, program, send,
// record, wake, with the empty steps left out.
import { describe, expect, it } from 'vitest';
import { carryOutSteps } from '../src/core/carry-out.js';
import { protocolEvent } from '../src/core/events.js';
import type { Ownership, Ready } from '../src/core/protocol.js';

const ownership: Ownership = {
  rules: [{ owned: [1, 2], orphan: [], disabled: false }],
  isDefault: true,
  active: true,
  dropEstablished: false,
};

function ready(overrides: Partial<Ready>): Ready {
  return {
    ownership: undefined,
    flush: [],
    rejoined: false,
    send: [],
    events: [],
    wakeAtMs: 100,
    reply: undefined,
    ...overrides,
  };
}

describe('carryOutSteps', () => {
  it('puts flush before program before send before record before wake', () => {
    const steps = carryOutSteps(
      ready({
        ownership,
        flush: [{ rule: 0, buckets: [3] }],
        send: [new Uint8Array([1])],
        events: [protocolEvent('host joined', 5, 1, { host: 2 })],
        wakeAtMs: 42,
      }),
    );
    expect(steps.map((s) => s.step)).toEqual(['flush', 'program', 'send', 'record', 'wake']);
    expect(steps[1]).toEqual({ step: 'program', ownership });
    expect(steps[4]).toEqual({ step: 'wake', atMs: 42 });
  });

  it('leaves out what has nothing to do, but always offers program and wake', () => {
    // program comes even without a new ownership: a driver whose kernel lags retries there.
    expect(carryOutSteps(ready({})).map((s) => s.step)).toEqual(['program', 'wake']);
  });

  it('flushes on a rejoin even when no bucket is listed', () => {
    const [first] = carryOutSteps(ready({ rejoined: true }));
    expect(first).toEqual({ step: 'flush', flush: [], rejoined: true });
  });
});
