// The interface monitor (src/daemon/interface-events.ts) with a stand-in for `ip monitor`: a
// shell that prints lines when told to. Checks run on each change at once, poll slowly while the
// monitor runs and fast while it does not, and a dead monitor is started again.
import { type ChildProcess, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { checkOnChange, watchInterfaces } from '../src/daemon/interface-events.js';

const monitors: ChildProcess[] = [];

/** A stand-in monitor: prints each line written to its stdin, lives until killed. */
function fakeMonitor(): ChildProcess {
  const child = spawn('cat', [], { stdio: ['pipe', 'pipe', 'ignore'] });
  monitors.push(child);
  return child;
}

async function until(condition: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await sleep(5);
  expect(condition()).toBe(true);
}

afterEach(() => {
  for (const child of monitors.splice(0)) child.kill('SIGKILL');
});

describe('interface events', () => {
  it('checks at once on each change, polls slowly while the monitor runs, and fast when it died', async () => {
    const events = watchInterfaces(fakeMonitor, 50);
    let checks = 0;
    const stop = checkOnChange(() => checks++, 10, events);
    try {
      await until(() => events.live);
      await sleep(30);
      checks = 0;
      // Live: no poll within 200 ms (the safety poll is once a second), a check per change.
      await sleep(200);
      expect(checks).toBe(0);
      monitors.at(-1)!.stdin!.write('2: eth0: <NO-CARRIER,BROADCAST,UP> mtu 1500\n');
      await until(() => checks === 1);
      // Several lines at once make one check, not one each.
      monitors.at(-1)!.stdin!.write('Deleted 2: eth0 inet 198.18.0.100/32\nDeleted x\nDeleted y\n');
      await until(() => checks >= 2);
      await sleep(20);
      expect(checks).toBe(2);
      // The monitor dies: checked at once, then polled every 10 ms until it is back.
      monitors.at(-1)!.kill('SIGKILL');
      await until(() => !events.live);
      const before = checks;
      await sleep(40);
      expect(checks - before).toBeGreaterThanOrEqual(2);
      await until(() => events.live);
      expect(monitors.length).toBe(2);
    } finally {
      stop();
      events.stop();
    }
  });

  it('polls at the fast rate without a monitor, and stops', async () => {
    let checks = 0;
    const stop = checkOnChange(() => checks++, 10, undefined);
    await sleep(60);
    stop();
    const seen = checks;
    expect(seen).toBeGreaterThanOrEqual(3);
    await sleep(30);
    expect(checks).toBe(seen);
  });

  it('keeps trying when the monitor cannot be started', async () => {
    let attempts = 0;
    const events = watchInterfaces(() => {
      attempts++;
      throw new Error('no ip');
    }, 10);
    await sleep(60);
    events.stop();
    expect(events.live).toBe(false);
    expect(attempts).toBeGreaterThanOrEqual(3);
  });
});

describe('interface guard on events', () => {
  it('checks again after a repair when a change came in while it ran', async () => {
    const { guardInterface } = await import('../src/daemon/interface-guard.js');
    let gone: { mac: undefined; ips: never[] } | undefined = { mac: undefined, ips: [] };
    let repairs = 0;
    let listener: (() => void) | undefined;
    const events = {
      live: true,
      subscribe: (l: () => void) => {
        listener = l;
        return () => undefined;
      },
      stop: () => undefined,
    };
    const iface = {
      setup: { interface: 'eth0' },
      missing: () => gone,
      repair: async () => {
        repairs++;
        await sleep(30);
        gone = repairs === 1 ? { mac: undefined, ips: [] } : undefined;
        return ['cluster IP 198.18.0.100'];
      },
    };
    const logged: string[] = [];
    const stop = guardInterface(
      iface as never,
      (record) => logged.push(record.event),
      10_000,
      events,
    );
    try {
      listener!();
      await sleep(10);
      // A second change while the first repair runs: not lost, checked once it is done.
      listener!();
      await until(() => repairs === 2);
      await sleep(40);
      expect(logged).toEqual(['interface restored', 'interface restored']);
    } finally {
      stop();
    }
  });
});
