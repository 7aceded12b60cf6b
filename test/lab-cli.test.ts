// `nlb lab` as a user runs it (the built dist/cli/main.js): up --json, status, exec with the
// command's own exit code, down with and without --name, and the root check. Needs root;
// skipped visibly otherwise, failing instead when NLB_REQUIRE_LAB=1.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsList } from '../src/lab/netns.js';
import { labDown } from '../src/lab/lab.js';
import { acquireLabTestLock } from '../src/lab/lock.js';
import { namespacePrefix } from '../src/lab/naming.js';
import { nlbMain, runNlb } from './cli-helpers.js';
import { declareRootRequirement, isRoot } from './support/root.js';

declareRootRequirement('lab-cli', 'the lab tests need root for network namespaces');

function hasNobody(): boolean {
  try {
    execFileSync('runuser', ['-u', 'nobody', '--', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe.runIf(isRoot)('nlb lab (CLI)', () => {
  const name = `cli${randomBytes(3).toString('hex')}`;
  let releaseLock: (() => void) | undefined;

  beforeAll(async () => {
    releaseLock = await acquireLabTestLock();
  });

  afterAll(async () => {
    try {
      await labDown(name);
    } finally {
      releaseLock?.();
    }
  });

  it('up --json describes the lab it built', async () => {
    const run = await runNlb([
      'lab',
      'up',
      '--hosts',
      '2',
      '--clients',
      '1',
      '--name',
      name,
      '--json',
    ]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const data = JSON.parse(run.stdout) as {
      name: string;
      vip: string;
      hosts: Array<{ id: number; namespace: string; ip: string; config: string }>;
      clients: Array<{ namespace: string; ip: string }>;
    };
    expect(data.name).toBe(name);
    expect(data.vip).toBe('198.18.0.100');
    expect(data.hosts.map((h) => [h.id, h.namespace, h.ip])).toEqual([
      [1, `nlb-${name}-h1`, '198.18.0.11'],
      [2, `nlb-${name}-h2`, '198.18.0.12'],
    ]);
    expect(data.hosts[0]?.config).toMatch(/h1\.yaml$/);
    expect(data.clients).toEqual([
      { namespace: `nlb-${name}-c1`, ip: '198.18.0.201', extraIps: [] },
    ]);
  });

  it('status --json lists it as up', async () => {
    const run = await runNlb(['--json', 'lab', 'status']);
    expect(run.code).toBe(0);
    const { labs } = JSON.parse(run.stdout) as { labs: Array<{ name: string; healthy: boolean }> };
    expect(labs.find((l) => l.name === name)?.healthy).toBe(true);
  });

  it('exec runs inside the namespace and passes the exit code through', async () => {
    const curl = await runNlb([
      'lab',
      'exec',
      'c1',
      '--name',
      name,
      '--',
      process.execPath,
      '-e',
      "require('node:http').get('http://198.18.0.12/', (r) => r.pipe(process.stdout))",
    ]);
    expect(curl.stdout).toBe('host 2\n');
    expect(curl.code).toBe(0);
    const failing = await runNlb(['lab', 'exec', 'h1', '--name', name, '--', 'sh', '-c', 'exit 7']);
    expect(failing.code).toBe(7);
    const unknown = await runNlb(['lab', 'exec', 'h9', '--name', name, '--', 'true']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no target 'h9'[\s\S]*targets: sw, h1, h2, c1/);
  });

  it('refuses a name in use with exit code 2', async () => {
    const run = await runNlb(['lab', 'up', '--hosts', '1', '--name', name]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/in use/);
  });

  it.runIf(hasNobody())('exits 1 with what to do when not root', () => {
    let status = 0;
    let stderr = '';
    try {
      // As nobody, but able to read the clone wherever CI put it (a 0700 temp dir, say).
      const asNobody = [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        '--inh-caps=+dac_read_search',
        '--ambient-caps=+dac_read_search',
      ];
      execFileSync('setpriv', [...asNobody, process.execPath, nlbMain, 'lab', 'status'], {
        encoding: 'utf8',
        stdio: 'pipe',
      });
    } catch (error) {
      status = (error as { status: number }).status;
      stderr = (error as { stderr: string }).stderr;
    }
    expect(status).toBe(1);
    expect(stderr).toMatch(/needs root[\s\S]*hint: run it as root/);
  });

  it('down --name removes it all', async () => {
    const run = await runNlb(['lab', 'down', '--name', name]);
    expect(run.code).toBe(0);
    expect((await netnsList()).filter((ns) => ns.startsWith(namespacePrefix(name)))).toEqual([]);
    const again = await runNlb(['lab', 'down', '--name', name]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/no lab named/);
  });
});
