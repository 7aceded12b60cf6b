// What nlbd says when FRR cannot announce its marker routes (src/daemon/frr-status.ts): bgpd not
// running in the namespace, or a configured BGP peer whose session is not established, each with
// the fix; nothing when all is well. bgpd is found by its pid file, in FRR's path space for the
// namespace (`-N <ns>`) or Debian's default one.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { CommandResult, Runner } from '../src/dataplane/exec.js';
import { bgpdPathSpace, frrProblems } from '../src/daemon/frr-status.js';
import { StartRefused, checkFrrInstalled } from '../src/daemon/start-checks.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function runRoot(pidFileIn?: string): string {
  const root = mkdtempSync(path.join(tmpdir(), 'nlb-frr-'));
  dirs.push(root);
  if (pidFileIn !== undefined) {
    const dir = path.join(root, pidFileIn);
    mkdirSync(dir, { recursive: true });
    // This test's own process stands in for a running bgpd.
    writeFileSync(path.join(dir, 'bgpd.pid'), `${process.pid}\n`);
  }
  return root;
}

function vtysh(summary: object): Runner & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    run(file: string, args: readonly string[]): Promise<CommandResult> {
      calls.push([file, ...args]);
      return Promise.resolve({ code: 0, stdout: JSON.stringify(summary), stderr: '' });
    },
  };
}

describe('FRR status in routed mode', () => {
  it('finds bgpd in the namespace’s path space, else in the default one', () => {
    expect(bgpdPathSpace('nlb-x-h1', runRoot('nlb-x-h1'))).toEqual({ namespace: 'nlb-x-h1' });
    expect(bgpdPathSpace('nlb-x-h1', runRoot(''))).toEqual({});
    expect(bgpdPathSpace(undefined, runRoot())).toBeUndefined();
  });

  it('says bgpd is not running, with the fix', async () => {
    const runner = vtysh({});
    const problems = await frrProblems(runner, 'nlb-x-h1', ['198.18.1.1'], runRoot());
    expect(problems).toEqual([
      'bgpd is not running here: nothing announces the cluster IPs to the routers; write its files with `nlb frr-config --config <this config> --dir /etc/frr` and start FRR',
    ]);
    expect(runner.calls).toEqual([]);
  });

  it('names each peer whose session is not established, and nothing when all are', async () => {
    const root = runRoot('nlb-x-h1');
    const runner = vtysh({
      ipv4Unicast: {
        peers: { '198.18.1.1': { state: 'Established' }, '198.18.9.1': { state: 'Active' } },
      },
    });
    const problems = await frrProblems(
      runner,
      'nlb-x-h1',
      ['198.18.1.1', '198.18.9.1', '198.18.8.1'],
      root,
    );
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^the BGP session with 198\.18\.9\.1 is Active: /);
    expect(problems[1]).toMatch(/^the BGP session with 198\.18\.8\.1 is not configured: /);
    expect(runner.calls[0]).toEqual([
      'vtysh',
      '-N',
      'nlb-x-h1',
      '--config_dir',
      root,
      '-c',
      'show bgp summary json',
    ]);
    expect(await frrProblems(runner, 'nlb-x-h1', ['198.18.1.1'], root)).toEqual([]);
  });

  it('refuses to start routed mode without FRR installed, naming what is missing and the fix', () => {
    const bin = runRoot();
    writeFileSync(path.join(bin, 'zebra'), '');
    let refusal: unknown;
    try {
      checkFrrInstalled(bin);
    } catch (error) {
      refusal = error;
    }
    expect(refusal).toBeInstanceOf(StartRefused);
    expect((refusal as StartRefused).message).toBe(
      `routed mode needs FRR, and ${path.join(bin, 'bgpd')} is missing`,
    );
    expect((refusal as StartRefused).hint).toMatch(/^install FRR \(`apt-get install frr`\)/);
    writeFileSync(path.join(bin, 'bgpd'), '');
    expect(() => checkFrrInstalled(bin)).not.toThrow();
  });
});
