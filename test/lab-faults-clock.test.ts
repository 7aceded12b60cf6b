// Fault injection in a real three-host lab (issue 9, "Hardening"), the wall clock: nlbd started
// a day in the past (libfaketime, monotonic time left alone) still takes a larger incarnation
// and rejoins at once; the wall clock stepped by days while it runs changes nothing. Each fault
// runs under a steady client load (support/lab-faults.ts `runFault`). Needs root; skipped
// visibly otherwise, failing instead when NLB_REQUIRE_LAB=1.
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { daemonMainPath, loadLab } from '../src/lab/lab.js';
import { signalProcess } from '../src/lab/process.js';
import {
  captureLab,
  convergedOn,
  declareLabRequirement,
  isRoot,
  query,
} from './support/lab-cluster.js';
import {
  bucketsEach,
  clusterHosts,
  eventMarks,
  events,
  eventsSince,
  restartDaemon,
  reviveDaemons,
  runFault,
  sampleHosts,
} from './support/lab-faults.js';

declareLabRequirement('lab-faults-clock');

/** libfaketime's multithreaded preload (Debian `faketime`, installed by scripts/setup.sh). */
const fakeTimeLibrary =
  ['/usr/lib', ...readdirSync('/usr/lib').map((d) => path.join('/usr/lib', d))]
    .map((dir) => path.join(dir, 'faketime', 'libfaketimeMT.so.1'))
    .find((file) => existsSync(file)) ?? 'libfaketimeMT.so.1 (not installed)';
const dayMs = 86_400_000;

describe.runIf(isRoot)('lab faults: the wall clock', () => {
  const labOf = captureLab('lfc');
  afterEach(() => reviveDaemons(labOf()));

  const stepFile = (): string => path.join(labOf().state.dir, 'faketime');
  /** nlbd of host 3 under libfaketime: the wall clock offset read from `stepFile`. */
  const fakeClockCommand = (): string[] => [
    'env',
    `LD_PRELOAD=${fakeTimeLibrary}`,
    // Only the wall clock moves: nlbd's timers and the protocol run on the monotonic clock.
    'FAKETIME_DONT_FAKE_MONOTONIC=1',
    `FAKETIME_TIMESTAMP_FILE=${stepFile()}`,
    // Read the file on every call, so a step takes effect at once.
    'FAKETIME_NO_CACHE=1',
    process.execPath,
    daemonMainPath,
    '--config',
    '{config}',
  ];
  /** How far nlbd's wall clock is from ours: its newest journal entry against Date.now(). */
  async function clockOffsetMs(): Promise<number> {
    const newest = (await events(labOf().sockets.get(3)!)).at(-1)!;
    return Date.parse(newest.time) - Date.now();
  }
  function hup(): void {
    const daemon = loadLab(labOf().state.name).hosts.find((h) => h.id === 3)!.daemon!;
    expect(signalProcess(daemon, 'SIGHUP')).toBe(true);
  }

  it('libfaketime is installed (scripts/setup.sh)', () => {
    expect(existsSync(fakeTimeLibrary), `${fakeTimeLibrary}: run scripts/setup.sh`).toBe(true);
  });

  it('nlbd started with its wall clock a day behind takes a larger incarnation and rejoins at once', async () => {
    let incarnationBefore = 0;
    const report = await runFault(labOf(), {
      name: 'nlbd restarted with the wall clock a day back',
      host: 3,
      inject: async () => {
        incarnationBefore = (await query(labOf().sockets.get(3)!))!.incarnation;
        writeFileSync(stepFile(), '-1d\n');
        await restartDaemon(labOf(), 3, fakeClockCommand());
      },
      heal: async () => undefined,
      expect: { failuresMax: 5, rejoinMsMax: 2_000 },
    });
    const incarnation = report.rejoined.answers.get(3)!.incarnation;
    const offset = await clockOffsetMs();
    console.log(
      `lab-faults: wall clock a day back: nlbd's clock ${Math.round(offset / 3_600_000)} h off, incarnation ${incarnationBefore} -> ${incarnation}`,
    );
    // The fake clock is really in effect, and the incarnation still grew.
    expect(Math.abs(offset + dayMs)).toBeLessThan(3_600_000);
    expect(incarnation).toBeGreaterThan(incarnationBefore);
  });

  it('the wall clock stepped by days while nlbd runs changes nothing', async () => {
    let marks = new Map<number, number>();
    const offsets: number[] = [];
    await runFault(labOf(), {
      name: 'wall clock stepped 2 days forward, then 3 days back',
      host: 3,
      inject: async ({ note }) => {
        marks = await eventMarks(labOf(), clusterHosts);
        const watch = sampleHosts(
          labOf(),
          clusterHosts,
          convergedOn([...clusterHosts], bucketsEach),
        );
        for (const step of ['+1d', '-2d']) {
          writeFileSync(stepFile(), `${step}\n`);
          // Longer than the detection time, so a timer on the wall clock would have fired.
          await sleep(1_500);
          // A reload with nothing changed logs an event stamped with nlbd's wall clock.
          hup();
          await sleep(100);
          offsets.push(Math.round((await clockOffsetMs()) / 3_600_000));
        }
        const watched = await watch.stop();
        note('nlbdClockOffsetsHours', offsets);
        note('querySamples', watched.samples);
        expect(watched.bad).toEqual([]);
      },
      heal: async () => undefined,
      expect: { failuresMax: 0, rejoinMsMax: 500 },
    });
    expect(offsets).toEqual([24, -48]);
    const since = await eventsSince(labOf(), marks);
    expect(since.map((e) => `${e.event} ${e.code ?? ''}`.trim())).toEqual([
      'reload on SIGHUP already',
      'reload on SIGHUP already',
    ]);
  });
});
