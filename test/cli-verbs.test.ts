// Every control verb of `nlb` against a control socket served in this process (a real
// HostMachine behind a fake target, see control-target.ts): what it prints, its JSON, and its
// exit code for each kind of answer (0 ok, 3 already, 1 suspended, 4 port in no rule, 2 bad
// usage or rejected config). `nlb` runs in-process through runCli (test/cli-helpers.ts), but for
// `events --follow`, which ends on SIGINT. The real daemons are in cli-verbs-lab.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { answerControl } from '../src/daemon/control.js';
import { ControlServer } from '../src/daemon/control-server.js';
import { runNlbInProcess } from './cli-helpers.js';
import { type TestTarget, makeTestTarget } from './control-target.js';

describe('nlb control verbs against a control socket', () => {
  let dir: string;
  let socket: string;
  let server: ControlServer;
  let t: TestTarget;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'nlb-verbs-'));
    socket = path.join(dir, 'nlbd.sock');
    t = makeTestTarget();
    server = new ControlServer((request) => answerControl(request, t.context));
    await server.listen(socket);
  });

  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const nlb = (...args: string[]) => runNlbInProcess([...args, '--socket', socket]);

  it('stop, stop again (3), drainstop when stopped (3), start (0)', async () => {
    const stop = await nlb('stop');
    expect(stop).toMatchObject({
      code: 0,
      stdout: 'stop: stopped: existing connections were dropped\n',
    });
    const again = await nlb('stop', '--json');
    expect(again.code).toBe(3);
    expect(JSON.parse(again.stdout)).toEqual({
      verb: 'stop',
      code: 'already',
      message: 'already stopped',
    });
    expect((await nlb('drainstop', '--timeout', '5')).code).toBe(3);
    expect((await nlb('start')).code).toBe(0);
  });

  it('suspend: every command but resume fails with exit 1 and says why; resume (0)', async () => {
    expect((await nlb('suspend')).code).toBe(0);
    const start = await nlb('start');
    expect(start.code).toBe(1);
    expect(start.stderr).toContain('nlb: start: the host is suspended');
    expect(start.stderr).toContain('hint: run `nlb resume` first');
    const disable = await nlb('disable', 'all:all', '--json');
    expect(disable.code).toBe(1);
    expect(JSON.parse(disable.stdout)).toMatchObject({ error: { code: 'failed', exitCode: 1 } });
    expect((await nlb('resume')).code).toBe(0);
    expect((await nlb('resume')).code).toBe(3);
    expect((await nlb('start')).code).toBe(0);
  });

  it('drain/disable/enable by spec: rules named, 3 when already, 4 for no rule, 2 for bad syntax', async () => {
    const drain = await nlb('drain', '198.18.0.100:80');
    expect(drain).toMatchObject({
      code: 0,
      stdout: 'drain 198.18.0.100:80 (rules 0, 1): rule(s) 0, 1 draining\n',
    });
    expect((await nlb('drain', 'all:80')).code).toBe(3);
    const none = await nlb('disable', 'all:8080');
    expect(none.code).toBe(4);
    expect(none.stderr).toContain('no port rule covers all:8080');
    const bad = await nlb('enable', '198.18.0.100');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('<vip:port>:');
    const enable = await nlb('enable', 'all:all', '--json');
    expect(JSON.parse(enable.stdout)).toMatchObject({ code: 'ok', rules: [0, 1, 2, 3] });
  });

  it('queryport: the rule, its owners and per-bucket connections; 4 for no rule', async () => {
    const shown = await nlb('queryport', '198.18.0.101:443');
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain(
      'rule         3: 198.18.0.101:443 tcp, multiple, affinity network',
    );
    expect(shown.stdout).toContain('connections  5');
    expect(shown.stdout).toMatch(/BUCKET\s+OWNER\s+HERE\s+CLAIMED BY\s+CONNECTIONS/);
    // The fake host has not converged: its target is its own, claimed by nobody yet.
    expect(shown.stdout).toContain('claims       60 bucket(s) in flight (converging): 0-59');
    expect(shown.stdout).toMatch(/^\s+0\s+2\s+-\s+nobody \(in flight\)\s+5$/m);
    const json = JSON.parse((await nlb('queryport', '198.18.0.101:443', '--json')).stdout);
    expect(json.rules[0].buckets).toHaveLength(60);
    expect(json.rules[0].buckets[0]).toMatchObject({ bucket: 0, connections: 5 });
    const none = await nlb('queryport', '198.18.0.101:8080');
    expect(none.code).toBe(4);
  });

  it('params, display, events, metrics print their views', async () => {
    const params = await nlb('params');
    expect(params.code).toBe(0);
    expect(params.stdout).toMatch(/heartbeats {7}sent \d+, received 1, rejected 1 unproven/);
    expect(params.stdout).toMatch(/RULE\s+CLUSTER IP\s+PORTS/);
    expect(params.stdout).toContain('103 pkts 10003 B');
    const display = await nlb('display');
    expect(display.stdout).toContain(
      'addresses    198.18.0.12/24, 198.18.0.100/32, 198.18.0.101/32',
    );
    expect(display.stdout).toContain('configuration:');
    expect(display.stdout).toContain('recent events:');
    const events = await nlb('events', '--limit', '3', '--json');
    const data = JSON.parse(events.stdout) as { events: { event: string }[] };
    // The last three: rules 0 and 1 drained, then enabled again by the test above.
    expect(data.events.map((e) => e.event)).toEqual([
      'rule drained',
      'rule enabled',
      'rule enabled',
    ]);
    const metrics = await nlb('metrics');
    expect(metrics.stdout).toContain('# TYPE nlb_rule_packets_total counter');
  });

  it('reload: 0 with the changes, 3 when nothing changed, 2 listing the errors of a bad file', async () => {
    const ok = await nlb('reload');
    expect(ok).toMatchObject({ code: 0 });
    expect(ok.stdout).toContain('host.rules[0].loadWeight: 50 -> 20');
    t.reloadReply = {
      code: 'already',
      message: 'nothing to reload',
      errors: [],
      changes: [],
      clusterChanged: false,
    };
    expect((await nlb('reload')).code).toBe(3);
    t.reloadReply = {
      code: 'invalid',
      message:
        "config file '/etc/nlb/host2.yaml' is invalid; the running config stays:\n  cluster.portRules[0].ports: bad",
      errors: ['cluster.portRules[0].ports: bad'],
      changes: [],
      clusterChanged: false,
    };
    const bad = await nlb('reload', '--json');
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stdout)).toMatchObject({ error: { code: 'bad-config', exitCode: 2 } });
    expect(bad.stderr).toContain('cluster.portRules[0].ports: bad');
  });

  it('events --follow prints the recent events, then new ones as they come, until SIGINT (exit 0)', async () => {
    const { spawn } = await import('node:child_process');
    const { nlbMain } = await import('./cli-helpers.js');
    const child = spawn(process.execPath, [
      nlbMain,
      'events',
      '--follow',
      '--json',
      '--limit',
      '1',
      '--socket',
      socket,
    ]);
    const lines: string[] = [];
    let buffered = '';
    child.stdout.setEncoding('utf8');
    const got = (count: number) =>
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (lines.length >= count) resolve();
          else setTimeout(check, 20);
        };
        check();
      });
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk;
      const parts = buffered.split('\n');
      buffered = parts.pop()!;
      lines.push(...parts);
    });
    await got(1);
    await t.target.command({ verb: 'stop' });
    await t.target.command({ verb: 'start' });
    await got(3);
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    expect(code).toBe(0);
    const events = lines.map((line) => JSON.parse(line) as { event: string; seq: number });
    expect(events.slice(1).map((e) => e.event)).toEqual(['stopped', 'started']);
    expect(events[2]!.seq).toBe(events[1]!.seq + 1);
    expect(t.journal.followerCount).toBe(0);
  });
});
