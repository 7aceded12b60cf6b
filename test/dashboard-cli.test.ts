// `nlb dashboard`'s arguments, in process: a bad --listen or a lab with one host named is a
// usage error (exit 2) that says what to write instead, before anything is started.
import { describe, expect, it } from 'vitest';
import { parseListen } from '../src/cli/commands/dashboard.js';
import { runNlbInProcess } from './cli-helpers.js';

describe('nlb dashboard arguments', () => {
  it('parses --listen as an address and an optional port (8505 by default)', () => {
    expect(parseListen('127.0.0.1:9000')).toEqual({ address: '127.0.0.1', port: 9000 });
    expect(parseListen('127.0.0.1')).toEqual({ address: '127.0.0.1', port: 8505 });
    expect(parseListen('[::1]:0')).toEqual({ address: '::1', port: 0 });
  });

  it('refuses a --listen that is not an address and port, naming the flag', async () => {
    for (const listen of ['localhost:8505', '127.0.0.1:99999', 'nonsense']) {
      const run = await runNlbInProcess(['dashboard', '--lab', 'none', '--listen', listen]);
      expect(run.code, listen).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr).toMatch(/^nlb: --listen: /);
      expect(run.stderr).toContain('hint: give an address and port, e.g. --listen 127.0.0.1:8505');
    }
  });

  it('shows a whole lab: --host with --lab is refused', async () => {
    const run = await runNlbInProcess(['dashboard', '--lab', 'demo', '--host', '2']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--host: the dashboard shows every host of lab demo');
    expect(run.stderr).toContain('drop --host: nlb dashboard --lab demo');
  });

  it('refuses a --dashboard of the demo that is not an address, before building a lab', async () => {
    const run = await runNlbInProcess(['demo', '--dashboard', 'here']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^nlb: --dashboard: /);
  });
});
