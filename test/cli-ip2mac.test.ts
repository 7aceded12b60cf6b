import { describe, expect, it } from 'vitest';
// In-process through runCli (test/cli-helpers.ts), but for the first case, which runs the built
// binary as the smoke test of one verb end to end.
import { runNlb, runNlbInProcess } from './cli-helpers.js';

describe('nlb ip2mac', () => {
  it('prints the MACs and IGMP group of 198.18.0.100 as a table (the built binary)', async () => {
    const run = await runNlb(['ip2mac', '198.18.0.100']);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/^cluster IP\s+198\.18\.0\.100$/m);
    expect(run.stdout).toMatch(/^unicast MAC\s+02:bf:c6:12:00:64$/m);
    expect(run.stdout).toMatch(/^multicast MAC\s+03:bf:c6:12:00:64$/m);
    expect(run.stdout).toMatch(/^IGMP MAC\s+01:00:5e:7f:00:64$/m);
    expect(run.stdout).toMatch(/^IGMP group\s+239\.255\.0\.100$/m);
    expect(run.stdout).not.toMatch(/note/);
  });

  it('prints exactly one JSON document with --json (before or after the verb)', async () => {
    for (const args of [
      ['ip2mac', '10.0.0.1', '--json'],
      ['--json', 'ip2mac', '10.0.0.1'],
    ]) {
      const run = await runNlbInProcess(args);
      expect(run.code).toBe(0);
      expect(JSON.parse(run.stdout)).toEqual({
        clusterIp: '10.0.0.1',
        unicast: '02:bf:0a:00:00:01',
        multicast: '03:bf:0a:00:00:01',
        igmp: '01:00:5e:7f:00:01',
        igmpGroup: '239.255.0.1',
        note: null,
      });
    }
  });

  it('uses the last four bytes of an IPv6 cluster IP and says so', async () => {
    const run = await runNlbInProcess(['ip2mac', '--json', '2001:2::c612:64']);
    expect(run.code).toBe(0);
    const data = JSON.parse(run.stdout) as Record<string, string>;
    expect(data.unicast).toBe('02:bf:c6:12:00:64');
    expect(data.igmpGroup).toBe('239.255.0.100');
    expect(data.note).toMatch(/last four bytes \(198\.18\.0\.100\)/);
    const human = await runNlbInProcess(['ip2mac', '2001:2::c612:64']);
    expect(human.stdout).toMatch(/^note: .*IPv6.*last four bytes/m);
  });

  it('rejects a bad cluster IP with exit code 2, naming the argument and the fix', async () => {
    const run = await runNlbInProcess(['ip2mac', '198.18.0.256']);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain("<cluster-ip>: '198.18.0.256' is not an IPv4 or IPv6 address");
    expect(run.stderr).toMatch(/^hint: .*e\.g\. 198\.18\.0\.100/m);
  });

  it('reports a bad argument as a JSON error document under --json', async () => {
    const run = await runNlbInProcess(['--json', 'ip2mac', 'not-an-ip']);
    expect(run.code).toBe(2);
    const { error } = JSON.parse(run.stdout) as { error: Record<string, unknown> };
    expect(error).toMatchObject({ code: 'bad-argument', exitCode: 2 });
    expect(error.message).toContain('<cluster-ip>');
    expect(error.hint).not.toBe('');
  });

  it('requires the cluster IP (usage error, exit code 2)', async () => {
    const run = await runNlbInProcess(['ip2mac']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("missing required argument 'cluster-ip'");
    expect(run.stderr).toContain("hint: run 'nlb ip2mac --help' for usage");
  });
});
