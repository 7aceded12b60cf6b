import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runNlb } from './cli-helpers.js';

describe('nlb usage', () => {
  it('prints the version from package.json', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const run = await runNlb(['--version']);
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe(version);
  });

  it('describes every verb and the exit codes in --help', async () => {
    const run = await runNlb(['--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^ {2}ip2mac <cluster-ip>\s+\S/m);
    expect(run.stdout).toMatch(/^ {2}map \[options\]\s+\S/m);
    expect(run.stdout).toMatch(/--json/);
    expect(run.stdout).toMatch(/Exit codes:\n {2}0 {2}ok\n {2}1 .*\n {2}2 .*\n {2}3 .*\n {2}4 /);
    const mapHelp = await runNlb(['map', '--help']);
    expect(mapHelp.code).toBe(0);
    for (const option of ['--config', '--client', '--clients-file', '--vip', '--port']) {
      expect(mapHelp.stdout).toContain(option);
    }
    for (const option of ['--protocol', '--hosts', '--weights', '--json']) {
      expect(mapHelp.stdout).toContain(option);
    }
  });

  it('exits 2 on an unknown option, naming it, with nothing on stdout', async () => {
    const run = await runNlb(['map', '--config', 'examples/minimal.yaml', '--bogus']);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain("unknown option '--bogus'");
    expect(run.stderr).toContain("hint: run 'nlb map --help' for usage");
  });

  it('exits 2 on an unknown verb, on no verb, and on a missing required option', async () => {
    expect((await runNlb(['frobnicate'])).code).toBe(2);
    expect((await runNlb([])).code).toBe(2);
    const run = await runNlb(['map', '--client', '198.18.0.1:1']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("required option '--config <file>' not specified");
  });

  it('keeps stdout one JSON document for usage errors under --json', async () => {
    const run = await runNlb(['--json', 'map', '--config', 'examples/minimal.yaml', '--bogus']);
    expect(run.code).toBe(2);
    const { error } = JSON.parse(run.stdout) as { error: Record<string, unknown> };
    expect(error).toMatchObject({ code: 'bad-usage', exitCode: 2 });
    expect(error.message).toContain('--bogus');
  });
});
