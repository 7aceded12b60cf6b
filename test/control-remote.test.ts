// Remote control in-process: the token file rules, then a TCP listener on 127.0.0.1 (port
// chosen by the kernel) serving the control handler behind the token check, asked with a
// valid, a wrong and no token, raw and through `nlb --host ... --token-file ...`. A refused
// request is never executed. Against real daemons in a lab: cli-verbs-lab.test.ts.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { answerControl } from '../src/daemon/control.js';
import { controlRequest } from '../src/control/client.js';
import { ControlServer } from '../src/daemon/control-server.js';
import type { EventRecord } from '../src/daemon/event-names.js';
import { parseListenAddress, readTokenFile } from '../src/control/remote-target.js';
import { remoteHandler, tokenDigest, tokenMatches } from '../src/daemon/remote.js';
import { runNlb } from './cli-helpers.js';
import { type TestTarget, makeTestTarget } from './control-target.js';

const token = 'f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00';

describe('token files', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'nlb-token-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const file = (name: string, content: string | Buffer, mode = 0o600): string => {
    const p = path.join(dir, name);
    writeFileSync(p, content);
    chmodSync(p, mode);
    return p;
  };

  it('reads the token without its trailing newline; refuses it when others may read it', async () => {
    expect(await readTokenFile(file('good', `${token}\n`))).toEqual({
      ok: true,
      token,
    });
    // Every case of owner and mode: secret-file.test.ts.
    expect(await readTokenFile(file('open', token, 0o644))).toMatchObject({
      ok: false,
      message: expect.stringContaining('chmod 600'),
    });
  });

  it('refuses a missing, short or binary token file, saying how to make one', async () => {
    expect(await readTokenFile(path.join(dir, 'none'))).toMatchObject({
      ok: false,
      message: expect.stringContaining('no such file'),
      hint: expect.stringContaining('openssl rand -hex 32'),
    });
    expect(await readTokenFile(file('short', 'secret\n'))).toMatchObject({
      ok: false,
      message: expect.stringContaining('at least 16'),
    });
    expect(
      await readTokenFile(file('binary', Buffer.from([0, 1, 2, 200, ...Buffer.alloc(30, 7)]))),
    ).toMatchObject({ ok: false, message: expect.stringContaining('printable ASCII') });
  });

  it('compares digests: only the exact token matches, whatever the length given', () => {
    const digest = tokenDigest(token);
    expect(tokenMatches(digest, token)).toBe(true);
    expect(tokenMatches(digest, `${token}x`)).toBe(false);
    expect(tokenMatches(digest, token.slice(0, -1))).toBe(false);
    expect(tokenMatches(digest, '')).toBe(false);
    expect(tokenMatches(digest, undefined)).toBe(false);
    expect(tokenMatches(digest, 42)).toBe(false);
  });

  it('parses listen addresses: addr (port 2504), addr:port, [v6]:port', () => {
    expect(parseListenAddress('127.0.0.1', 2504)).toMatchObject({ port: 2504 });
    expect(parseListenAddress('127.0.0.1:9', 2504)).toMatchObject({ port: 9 });
    expect(parseListenAddress('[::1]:9', 2504)).toMatchObject({
      address: { text: '::1' },
      port: 9,
    });
    expect(parseListenAddress('::1', 2504)).toMatchObject({ port: 2504 });
    expect(parseListenAddress('example.org:80', 2504)).toHaveProperty('error');
  });
});

describe('remote control listener on 127.0.0.1', () => {
  let dir: string;
  let server: ControlServer;
  let t: TestTarget;
  let endpoint: { host: string; port: number };
  let goodFile: string;
  let badFile: string;
  const logged: EventRecord[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'nlb-remote-'));
    goodFile = path.join(dir, 'good.token');
    badFile = path.join(dir, 'bad.token');
    writeFileSync(goodFile, `${token}\n`, { mode: 0o600 });
    writeFileSync(badFile, `${'0'.repeat(64)}\n`, { mode: 0o600 });
    t = makeTestTarget();
    let nowMs = 0;
    server = new ControlServer(
      remoteHandler(
        tokenDigest(token),
        (request) => answerControl(request, t.context),
        (record) => logged.push(record),
        () => (nowMs += 1),
      ),
    );
    await server.listenTcp('127.0.0.1', 0);
    endpoint = { host: '127.0.0.1', port: server.tcpAddress!.port };
  });

  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers a request with the token; refuses a wrong or missing one without executing it', async () => {
    expect(await controlRequest(endpoint, { verb: 'query', token })).toMatchObject({
      ok: true,
      data: { hostId: 2 },
    });
    expect(await controlRequest(endpoint, { verb: 'stop', token: 'x'.repeat(64) })).toEqual({
      ok: false,
      error: {
        code: 'unauthorized',
        message: 'remote control refused: wrong token',
        hint: 'give nlb the token file nlbd was started with: --token-file <path>',
      },
    });
    expect(await controlRequest(endpoint, { verb: 'stop' })).toMatchObject({
      ok: false,
      error: { code: 'unauthorized', message: expect.stringContaining('carries none') },
    });
    expect(await controlRequest(endpoint, 'stop')).toMatchObject({
      ok: false,
      error: { code: 'unauthorized' },
    });
    expect(t.commands).toEqual([]);
    // Refusals are logged once per 5 s, with who asked; the rest are counted.
    const refused = logged.filter((r) => r.event === 'remote control refused');
    expect(refused).toEqual([
      {
        event: 'remote control refused',
        peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
        reason: 'wrong token',
      },
    ]);
    expect(await controlRequest(endpoint, { verb: 'stop', token })).toMatchObject({
      ok: true,
      data: { code: 'ok' },
    });
    expect(t.commands).toEqual([{ verb: 'stop' }]);
    expect(logged.at(-1)).toMatchObject({ event: 'remote command', verb: 'stop' });
  });

  it('nlb --host addr:port --token-file: 0 with the token, 1 with a wrong one, 2 without one', async () => {
    const where = `${endpoint.host}:${endpoint.port}`;
    const start = await runNlb(['start', '--host', where, '--token-file', goodFile]);
    expect(start).toMatchObject({ code: 0, stdout: expect.stringContaining('start: started') });
    const query = await runNlb(['query', '--json', '--host', where, '--token-file', goodFile]);
    expect(JSON.parse(query.stdout)).toMatchObject({ hostId: 2, socket: where });
    const wrong = await runNlb(['stop', '--host', where, '--token-file', badFile]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain(`nlb: nlbd at ${where}: remote control refused: wrong token`);
    const none = await runNlb(['stop', '--host', where]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('remote control needs --token-file');
    const mixed = await runNlb([
      'stop',
      '--host',
      where,
      '--token-file',
      goodFile,
      '--socket',
      '/x',
    ]);
    expect(mixed.code).toBe(2);
    expect(t.commands).toEqual([{ verb: 'stop' }, { verb: 'start' }]);
  });
});
