// `nlb`'s usage: version, help and usage errors, in-process through runCli (test/cli-helpers.ts),
// and the built binary's smoke tests: it starts, prints the same help as the in-process program
// (so the in-process list of verbs is main.ts's), and exits 2 on a usage error.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runNlb, runNlbInProcess } from './cli-helpers.js';

describe('nlb usage', () => {
  it('prints the version from package.json', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const run = await runNlbInProcess(['--version']);
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe(version);
  });

  it('describes every verb and the exit codes in --help', async () => {
    const run = await runNlbInProcess(['--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^ {2}ip2mac <cluster-ip>\s+\S/m);
    expect(run.stdout).toMatch(/^ {2}map \[options\]\s+\S/m);
    expect(run.stdout).toMatch(/--json/);
    expect(run.stdout).toMatch(/Exit codes:\n {2}0 {2}ok\n {2}1 .*\n {2}2 .*\n {2}3 .*\n {2}4 /);
    const mapHelp = await runNlbInProcess(['map', '--help']);
    expect(mapHelp.code).toBe(0);
    for (const option of ['--config', '--client', '--clients-file', '--vip', '--port']) {
      expect(mapHelp.stdout).toContain(option);
    }
    for (const option of ['--protocol', '--hosts', '--weights', '--json']) {
      expect(mapHelp.stdout).toContain(option);
    }
  });

  it('exits 2 on an unknown option, naming it, with nothing on stdout', async () => {
    const run = await runNlbInProcess(['map', '--config', 'examples/minimal.yaml', '--bogus']);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain("unknown option '--bogus'");
    expect(run.stderr).toContain("hint: run 'nlb map --help' for usage");
  });

  it('exits 2 on an unknown verb, on no verb, and on a missing required option', async () => {
    expect((await runNlbInProcess(['frobnicate'])).code).toBe(2);
    expect((await runNlbInProcess([])).code).toBe(2);
    const run = await runNlbInProcess(['simulate']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("required option '--hosts <n>' not specified");
  });

  it('keeps stdout one JSON document for usage errors under --json', async () => {
    const run = await runNlbInProcess([
      '--json',
      'map',
      '--config',
      'examples/minimal.yaml',
      '--bogus',
    ]);
    expect(run.code).toBe(2);
    const { error } = JSON.parse(run.stdout) as { error: Record<string, unknown> };
    expect(error).toMatchObject({ code: 'bad-usage', exitCode: 2 });
    expect(error.message).toContain('--bogus');
  });
});

describe('the built nlb binary', () => {
  it('prints the version from package.json', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const run = await runNlb(['--version']);
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe(version);
  });

  it('prints the same --help as the in-process program, verbs in the same order', async () => {
    for (const args of [['--help'], ['map', '--help']]) {
      const [binary, inProcess] = await Promise.all([runNlb(args), runNlbInProcess(args)]);
      expect(binary.code).toBe(0);
      expect(binary.stdout).toBe(inProcess.stdout);
      expect(binary.stderr).toBe(inProcess.stderr);
    }
  });

  it('exits 2 on an unknown verb and on no verb, as in-process', async () => {
    for (const args of [['frobnicate'], []]) {
      const [binary, inProcess] = await Promise.all([runNlb(args), runNlbInProcess(args)]);
      expect(binary.code).toBe(2);
      expect(binary).toMatchObject({ stdout: inProcess.stdout, stderr: inProcess.stderr });
    }
  });
});
