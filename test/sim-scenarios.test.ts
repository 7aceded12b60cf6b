// One story per kind of membership change, run through the simulator against the real protocol
// (src/core/host.ts), with timings asserted in heartbeat periods and one-way delays. Each run
// also checks I1, I1b, I2 and I3 at every step; `violations` must stay empty.
import { describe, expect, it } from 'vitest';
import type { HostMachineOptions, HostStatus, Input, Ready } from '../src/core/protocol.js';
import {
  type ChangeReport,
  type SimResult,
  type SimulationOptions,
  convergenceBoundPeriods,
  fakeHostFactory,
  formatFailure,
  runSimulation,
} from '../src/sim/index.js';
import { HostMachine } from '../src/core/host.js';

const periodMs = 200;
const tolerance = 5;
const hosts = 4;
const boundMs = convergenceBoundPeriods(tolerance) * periodMs;

function run(
  scenario: SimulationOptions['scenario'],
  extra: Partial<SimulationOptions> = {},
): SimResult {
  const result = runSimulation({ seed: 7, scenario, hosts, periodMs, tolerance, ...extra });
  if (result.violations.length > 0) console.error(formatFailure(result));
  return result;
}

function only(result: SimResult, kind: ChangeReport['kind']): ChangeReport {
  const found = result.changes.filter((c) => c.kind === kind);
  expect(found, `one ${kind} change`).toHaveLength(1);
  return found[0]!;
}

/** Protocol events by name, as [emitting host, event fields]. */
function events(
  result: SimResult,
  name: string,
): { hostId: number; incarnation: number; fields: Record<string, unknown> }[] {
  return result.events
    .filter((e) => e.event.event === name)
    .map((e) => ({
      hostId: e.hostId,
      incarnation: e.incarnation,
      fields: e.event as Record<string, unknown>,
    }));
}

/** The change's subject, from the transcript-independent change report. */
function subjectOf(change: ChangeReport): number {
  expect(change.hostId).toBeDefined();
  return change.hostId!;
}

describe('simulator scenarios (real protocol, 4 hosts, 200 ms × 5)', () => {
  it('crash: detected in tolerance periods, converged two round trips later, minimal moves', () => {
    const result = run('crash');
    expect(result.violations).toEqual([]);
    const crash = only(result, 'crash');
    const delay = result.maxOneWayDelayMs;
    // The last heartbeat before the crash left up to one period earlier.
    expect(crash.detectionMs!).toBeGreaterThan((tolerance - 1) * periodMs);
    expect(crash.detectionMs!).toBeLessThanOrEqual(tolerance * periodMs + delay);
    expect(crash.convergenceMs! - crash.detectionMs!).toBeLessThanOrEqual(4 * delay);
    expect(crash.bucketsMoved).toBeGreaterThan(0);
    expect(crash.bucketsMoved).toBe(crash.bucketsMovedMin);
    const dead = subjectOf(crash);
    const declared = events(result, 'host declared dead').filter((e) => e.fields.host === dead);
    expect(new Set(declared.map((e) => e.hostId)).size).toBe(hosts - 1);
    expect(result.convergedAfterQuietMs!).toBeLessThanOrEqual(boundMs);
  });

  it('join: the new host speaks after listening one period; new owners take flows within two one-way delays', () => {
    const result = run('join');
    expect(result.violations).toEqual([]);
    const join = only(result, 'join');
    const delay = result.maxOneWayDelayMs;
    expect(join.triggerMs!).toBeGreaterThanOrEqual(periodMs);
    expect(join.triggerMs!).toBeLessThanOrEqual(periodMs + 1);
    expect(join.takeoverMs! - join.triggerMs!).toBeLessThanOrEqual(2 * delay);
    expect(join.convergenceMs! - join.triggerMs!).toBeLessThanOrEqual(3 * delay);
    expect(join.bucketsMoved).toBe(join.bucketsMovedMin);
    const joined = events(result, 'host joined').filter((e) => e.fields.host === join.hostId);
    expect(new Set(joined.map((e) => e.hostId)).size).toBe(hosts - 1);
  });

  it('leave (stop): announced, so no detection delay; new owners within two one-way delays', () => {
    const result = run('leave');
    expect(result.violations).toEqual([]);
    const stop = only(result, 'stop');
    const delay = result.maxOneWayDelayMs;
    expect(stop.triggerMs).toBe(0);
    expect(stop.detectionMs!).toBeLessThanOrEqual(delay);
    expect(stop.takeoverMs!).toBeLessThanOrEqual(2 * delay);
    expect(stop.bucketsMoved).toBe(stop.bucketsMovedMin);
    const left = events(result, 'host left').filter((e) => e.fields.host === stop.hostId);
    expect(left.map((e) => e.fields.reason)).toEqual(Array(hosts - 1).fill('it is stopped'));
    expect(events(result, 'host declared dead')).toEqual([]);
  });

  it('drainstop: buckets move at once, the host stops when its connections end', () => {
    const result = run('drainstop');
    expect(result.violations).toEqual([]);
    const drain = only(result, 'drainstop');
    const drained = only(result, 'drained');
    const delay = result.maxOneWayDelayMs;
    expect(drain.takeoverMs!).toBeLessThanOrEqual(2 * delay);
    expect(drain.bucketsMoved).toBeGreaterThan(0);
    expect(drain.bucketsMoved).toBe(drain.bucketsMovedMin);
    // Draining already gave every bucket away: stopping afterwards moves none.
    expect(drained.bucketsMoved).toBe(0);
    expect(events(result, 'drain started').map((e) => e.hostId)).toEqual([drain.hostId]);
    expect(events(result, 'drain completed').map((e) => e.hostId)).toEqual([drain.hostId]);
  });

  it('partition and heal: each side converges alone, then they merge within the bound', () => {
    const result = run('partition');
    expect(result.violations).toEqual([]);
    const partition = only(result, 'partition');
    const heal = only(result, 'heal');
    const delay = result.maxOneWayDelayMs;
    expect(partition.detectionMs!).toBeGreaterThan((tolerance - 1) * periodMs);
    expect(partition.detectionMs!).toBeLessThanOrEqual(tolerance * periodMs + delay);
    expect(partition.convergenceMs!).toBeLessThanOrEqual(boundMs);
    // Each side hears the other again within a period of the heal.
    expect(heal.detectionMs!).toBeLessThanOrEqual(periodMs + delay);
    expect(heal.convergenceMs!).toBeLessThanOrEqual(boundMs);
    expect(events(result, 'partition healed').length).toBeGreaterThan(0);
    expect(events(result, 'rejoining: dropping connections').length).toBeGreaterThan(0);
  });

  it('loss (5% of heartbeats): a crash is still detected within tolerance periods, no invariant breaks', () => {
    const result = run('loss', { hosts: 6 });
    expect(result.violations).toEqual([]);
    expect(result.quietAtMs).toBeUndefined(); // Loss never heals: I3 does not apply.
    expect(result.stats.copiesLost).toBeGreaterThan(0);
    const crash = only(result, 'crash');
    // Loss can only make detection earlier (the last heartbeat heard was older), never later.
    expect(crash.detectionMs!).toBeLessThanOrEqual(tolerance * periodMs + result.maxOneWayDelayMs);
    expect(crash.bucketsMoved).toBe(crash.bucketsMovedMin);
  });

  it('restart with a new incarnation before detection: peers see the restart, nobody is declared dead', () => {
    const result = run('restart');
    expect(result.violations).toEqual([]);
    const restart = only(result, 'restart');
    const restarted = events(result, 'host restarted').filter(
      (e) => e.fields.host === restart.hostId,
    );
    expect(new Set(restarted.map((e) => e.hostId)).size).toBe(hosts - 1);
    expect(events(result, 'host declared dead')).toEqual([]);
    // The new incarnation hears its peers within its first period and takes its buckets back.
    expect(restart.convergenceMs!).toBeLessThanOrEqual(periodMs + 4 * result.maxOneWayDelayMs);
    expect(result.convergedAfterQuietMs!).toBeLessThanOrEqual(boundMs);
  });

  it('duplicate host id: the newcomer is kept out and both sides log why', () => {
    const result = run('duplicate-id');
    expect(result.violations).toEqual([]);
    const intruder = only(result, 'intruder');
    const logged = events(result, 'duplicate host id');
    const newest = Math.max(...logged.map((e) => e.incarnation));
    // The newcomer (the newest incarnation) logs that it keeps itself out...
    expect(logged.some((e) => e.incarnation === newest && e.fields.keptOut === newest)).toBe(true);
    // ...and the host that owns the id, and its peers, log it too.
    expect(logged.some((e) => e.incarnation !== newest && e.hostId === intruder.hostId)).toBe(true);
    // The cluster stays converged without it: it never owned a bucket (I3 checks kept-out
    // hosts own nothing; I1 that nobody shared a bucket with it).
    expect(intruder.convergenceMs).toBe(0);
    expect(result.convergedAfterQuietMs).toBe(0);
  });

  it('config mismatch: the newcomer is kept out and both sides log why', () => {
    const result = run('config-mismatch');
    expect(result.violations).toEqual([]);
    const intruder = only(result, 'intruder');
    expect(events(result, 'kept out').map((e) => e.hostId)).toEqual([intruder.hostId]);
    const mismatch = events(result, 'config mismatch');
    expect(mismatch.some((e) => e.hostId === intruder.hostId)).toBe(true);
    const cluster = new Set(
      mismatch.filter((e) => e.fields.host === intruder.hostId).map((e) => e.hostId),
    );
    expect(cluster.size).toBe(hosts);
    expect(result.convergedAfterQuietMs).toBe(0);
  });
});

describe('simulator machinery', () => {
  it('is deterministic: one seed, one run', () => {
    const a = runSimulation({ seed: 99, scenario: 'random' });
    const b = runSimulation({ seed: 99, scenario: 'random' });
    expect(b.transcript).toEqual(a.transcript);
    expect(b.changes).toEqual(a.changes);
    expect(b.stats).toEqual(a.stats);
  });

  it('prints the seed first', () => {
    const lines: string[] = [];
    runSimulation({ seed: 12345, scenario: 'crash', hosts: 2, log: (line) => lines.push(line) });
    expect(lines[0]).toMatch(/^nlb simulate: seed=12345 /);
  });

  it('drives any implementation of the host contract (the fake passes the same stories)', () => {
    for (const scenario of [
      'crash',
      'join',
      'leave',
      'drainstop',
      'partition',
      'restart',
    ] as const) {
      const result = run(scenario, { hostFactory: fakeHostFactory });
      expect(result.violations, scenario).toEqual([]);
      expect(result.changes.length, scenario).toBeGreaterThan(0);
    }
  });

  it('catches a host that takes buckets without asking, and reports seed, invariant and transcript', () => {
    // A host whose data plane takes every bucket of every rule whatever the protocol says: the
    // first time two of them hear each other, I1 (or I1b) must fire.
    class GreedyHost {
      private readonly inner: HostMachine;
      private claimed = false;
      constructor(private readonly opts: HostMachineOptions) {
        this.inner = new HostMachine(opts);
      }
      step(input: Input): Ready {
        const ready = this.inner.step(input);
        if (this.claimed && ready.ownership === undefined) return ready;
        this.claimed = true;
        const rules = this.opts.config.cluster.portRules.map((rule) => ({
          owned: Array.from({ length: rule.buckets }, (_, b) => b),
          orphan: [],
          disabled: false,
        }));
        return {
          ...ready,
          ownership: { rules, isDefault: false, active: true, dropEstablished: false },
        };
      }
      status(): HostStatus {
        return this.inner.status();
      }
    }
    const lines: string[] = [];
    const result = runSimulation({
      seed: 3,
      scenario: 'crash',
      hosts: 3,
      hostFactory: (opts) => new GreedyHost(opts),
      log: (line) => lines.push(line),
    });
    expect(result.violations[0]?.invariant).toMatch(/^I1b?$/);
    const failure = lines.join('\n');
    expect(failure).toContain('FAILED seed=3');
    expect(failure).toMatch(/I1b?: at|I1b? at/);
    expect(failure).toContain('transcript lines');
  });
});
