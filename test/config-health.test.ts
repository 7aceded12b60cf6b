// The port rules' health and agent checks in the config (issue 14): the defaults that fit a web
// service, each probe type's fields, and bad input refused with the path and the fix: a port no
// rule serves, a timeout longer than the interval, fields of another probe type, an exec
// command that cannot run (checked where the file is loaded). The checks are not part of the
// cluster's identity: hosts may differ in them, and a reload may change them.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { clusterDigestHex, parseConfig } from '../src/core/config.js';
import { loadConfigFile } from '../src/node/config-file.js';

const base = readFileSync('examples/web/host1.yaml', 'utf8');
const firstRule = '      affinity: none # none: client IP + port;';

/** The web example with `lines` (YAML at the first rule's indent) added to rule 0. */
function withRule0(lines: string): string {
  const at = base.indexOf(firstRule);
  const end = base.indexOf('\n', at);
  return base.slice(0, end + 1) + lines + base.slice(end + 1);
}

function errors(text: string): { path: string; value: unknown; message: string }[] {
  const result = parseConfig(text);
  return result.ok ? [] : result.errors;
}

const dir = mkdtempSync(join(tmpdir(), 'nlb-config-health-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('config: health and agent checks', () => {
  it('defaults: an http check of the rule port every second, timeout 500 ms, fall 2, rise 2', () => {
    const result = parseConfig(withRule0('      health: {}\n'));
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.config.cluster.portRules[0]!.health).toEqual({
      probe: {
        type: 'http',
        address: '127.0.0.1',
        port: 80,
        path: '/',
        statusMin: 200,
        statusMax: 399,
        body: undefined,
      },
      intervalMs: 1000,
      timeoutMs: 500,
      fall: 2,
      rise: 2,
    });
    expect(result.config.cluster.portRules[1]!.health).toBeUndefined();
  });

  it('tcp, http with path, status and body, exec, and an agent', () => {
    const result = parseConfig(
      withRule0(
        '      health: { type: http, path: /health, status: "200", body: ok, intervalMs: 500, timeoutMs: 200, fall: 3, rise: 1 }\n' +
          '      agent: { type: http, path: /weight, hysteresis: 5, holdMs: 2000 }\n',
      ),
    );
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const rule = result.config.cluster.portRules[0]!;
    expect(rule.health).toMatchObject({
      probe: { type: 'http', path: '/health', statusMin: 200, statusMax: 200, body: 'ok' },
      intervalMs: 500,
      timeoutMs: 200,
      fall: 3,
      rise: 1,
    });
    expect(rule.agent).toEqual({
      probe: {
        type: 'http',
        address: '127.0.0.1',
        port: 80,
        path: '/weight',
        statusMin: 200,
        statusMax: 399,
        body: undefined,
      },
      intervalMs: 2000,
      timeoutMs: 500,
      hysteresis: 5,
      holdMs: 2000,
    });
    const tcp = parseConfig(withRule0('      health: { type: tcp, port: 443 }\n'));
    expect(tcp.ok && tcp.config.cluster.portRules[0]!.health!.probe).toEqual({
      type: 'tcp',
      address: '127.0.0.1',
      port: 443,
    });
    const exec = parseConfig(withRule0('      health: { type: exec, command: [/bin/true] }\n'));
    expect(exec.ok && exec.config.cluster.portRules[0]!.health!.probe).toEqual({
      type: 'exec',
      command: ['/bin/true'],
    });
  });

  it('is not part of the cluster identity', () => {
    const plain = parseConfig(base);
    const checked = parseConfig(withRule0('      health: { type: tcp }\n'));
    expect(plain.ok && checked.ok).toBe(true);
    if (!plain.ok || !checked.ok) return;
    expect(clusterDigestHex(checked.config.cluster)).toBe(clusterDigestHex(plain.config.cluster));
  });

  it('refuses a port no rule serves, a timeout over the interval, and fields of another type', () => {
    expect(errors(withRule0('      health: { type: tcp, port: 8080 }\n'))).toEqual([
      {
        path: 'cluster.portRules[0].health.port',
        value: 8080,
        message: expect.stringMatching(/no port rule serves port 8080/),
      },
    ]);
    expect(errors(withRule0('      health: { intervalMs: 200, timeoutMs: 300 }\n'))).toEqual([
      {
        path: 'cluster.portRules[0].health.timeoutMs',
        value: 300,
        message: expect.stringMatching(/longer than intervalMs \(200\).*lower timeoutMs/),
      },
    ]);
    expect(errors(withRule0('      health: { type: tcp, path: /x }\n'))).toEqual([
      {
        path: 'cluster.portRules[0].health.path',
        value: '/x',
        message: expect.stringMatching(/a tcp check takes no path/),
      },
    ]);
    expect(errors(withRule0('      health: { type: exec }\n'))[0]).toMatchObject({
      path: 'cluster.portRules[0].health.command',
    });
    expect(errors(withRule0('      health: { status: "399-200" }\n'))[0]).toMatchObject({
      path: 'cluster.portRules[0].health.status',
      message: expect.stringMatching(/backwards/),
    });
    expect(errors(withRule0('      health: { type: ping }\n'))[0]).toMatchObject({
      path: 'cluster.portRules[0].health.type',
    });
    expect(errors(withRule0('      agent: { type: tcp }\n'))[0]).toMatchObject({
      path: 'cluster.portRules[0].agent.type',
    });
  });

  it('an all-ports rule needs the port to check', () => {
    const text = base
      .replace('      ports: 80 #', '      ports: all #')
      .replace('    - vip: 198.18.0.100\n      ports: 443', '    - vip: all\n      ports: 443');
    expect(errors(withRuleAt(text, '      health: { type: tcp }\n'))[0]).toMatchObject({
      path: 'cluster.portRules[0].health.port',
      message: expect.stringMatching(/say which port/),
    });
  });

  it('refuses an exec command that cannot run, where the file is loaded', async () => {
    const script = join(dir, 'check.sh');
    writeFileSync(script, '#!/bin/sh\nexit 0\n');
    const file = join(dir, 'host1.yaml');
    writeFileSync(file, withRule0(`      health: { type: exec, command: [${script}] }\n`));
    const notExecutable = await loadConfigFile(file);
    expect(notExecutable.ok).toBe(false);
    expect(notExecutable.ok ? '' : notExecutable.message).toMatch(
      /cluster\.portRules\[0\]\.health\.command\[0\].*not an executable file.*chmod \+x/,
    );
    chmodSync(script, 0o755);
    expect((await loadConfigFile(file)).ok).toBe(true);
    writeFileSync(file, withRule0('      health: { type: exec, command: [no-such-check] }\n'));
    const missing = await loadConfigFile(file);
    expect(missing.ok ? '' : missing.message).toMatch(/not an executable in PATH/);
    writeFileSync(file, withRule0('      health: { type: exec, command: [sh, -c, "exit 0"] }\n'));
    expect((await loadConfigFile(file)).ok).toBe(true);
  });
});

function withRuleAt(text: string, lines: string): string {
  const at = text.indexOf(firstRule);
  const end = text.indexOf('\n', at);
  return text.slice(0, end + 1) + lines + text.slice(end + 1);
}
