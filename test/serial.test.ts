// The one serialising queue (src/core/serial.ts) the nft adapter and the Dataplane share: tasks
// run one at a time in call order, a failure reaches its caller only, and idle waits for tasks
// queued while it waited.
import { describe, expect, it } from 'vitest';
import { Serial } from '../src/core/serial.js';

describe('Serial', () => {
  it('runs tasks one at a time, in the order they were asked for', async () => {
    const serial = new Serial();
    const journal: string[] = [];
    const task = (name: string, ticks: number) => async () => {
      journal.push(`${name} start`);
      for (let i = 0; i < ticks; i++) await Promise.resolve();
      journal.push(`${name} end`);
      return name;
    };
    const results = await Promise.all([
      serial.run(task('a', 5)),
      serial.run(task('b', 0)),
      serial.run(task('c', 2)),
    ]);
    expect(results).toEqual(['a', 'b', 'c']);
    expect(journal).toEqual(['a start', 'a end', 'b start', 'b end', 'c start', 'c end']);
  });

  it('gives a failure to its caller and goes on with the next task', async () => {
    const serial = new Serial();
    const failed = serial.run(() => Promise.reject(new Error('nft said no')));
    const next = serial.run(() => Promise.resolve('next'));
    await expect(failed).rejects.toThrow('nft said no');
    await expect(next).resolves.toBe('next');
  });

  it('idle waits for tasks that running tasks queued', async () => {
    const serial = new Serial();
    const journal: string[] = [];
    void serial.run(async () => {
      journal.push('first');
      void serial.run(async () => {
        await Promise.resolve();
        journal.push('queued by first');
      });
    });
    await serial.idle();
    expect(journal).toEqual(['first', 'queued by first']);
  });
});
