// `nlb simulate` as a user runs it: the built binary, a timeline and summary, or one JSON
// document with --json; exit code 2 for bad arguments.
import { describe, expect, it } from 'vitest';
import { runNlb } from './cli-helpers.js';

describe('nlb simulate', () => {
  it('prints the seed first, then the timeline and a summary of the change', async () => {
    const run = await runNlb(['simulate', '--hosts', '3', '--scenario', 'crash', '--seed', '5']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const lines = run.stdout.split('\n');
    expect(lines[0]).toMatch(/^seed 5 \(replay: nlb simulate --scenario crash --hosts 3 --seed 5 /);
    expect(run.stdout).toMatch(/\] sim crash h\d incarnation=\d+/);
    expect(run.stdout).toMatch(/host declared dead/);
    expect(run.stdout).toMatch(/^ *\d+\.\d +crash +h\d +\d+\.\d +\d+\.\d +\d+\.\d +(\d+)\/\1/m);
    expect(run.stdout).toMatch(/invariants I1, I1b, I2, I3: held at every step/);
  });

  it('prints exactly one JSON document with --json', async () => {
    const run = await runNlb([
      'simulate',
      '--hosts',
      '4',
      '--scenario',
      'drainstop',
      '--seed',
      '9',
      '--json',
    ]);
    expect(run.code).toBe(0);
    const data = JSON.parse(run.stdout) as {
      seed: number;
      changes: {
        kind: string;
        detectionMs: number;
        convergenceMs: number;
        bucketsMoved: number;
        bucketsMovedMin: number;
      }[];
      violations: unknown[];
      timeline: string[];
    };
    expect(Object.keys(data)[0]).toBe('seed');
    expect(data.seed).toBe(9);
    expect(data.violations).toEqual([]);
    expect(data.changes.map((c) => c.kind)).toEqual(['drainstop', 'drained']);
    for (const change of data.changes) {
      expect(typeof change.detectionMs).toBe('number');
      expect(typeof change.convergenceMs).toBe('number');
      expect(change.bucketsMoved).toBe(change.bucketsMovedMin);
    }
    expect(data.timeline.length).toBeGreaterThan(10);
  });

  it('refuses a bad argument with exit code 2 and a hint', async () => {
    const run = await runNlb(['simulate', '--hosts', '40', '--scenario', 'crash']);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/--hosts: '40' is not a whole number from 1 to 32/);
    const partition = await runNlb(['simulate', '--hosts', '1', '--scenario', 'partition']);
    expect(partition.code).toBe(2);
    expect(partition.stderr).toMatch(/partition scenario needs hosts from 2 to 32/);
  });
});
