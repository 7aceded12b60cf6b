// The control API: the pure handler from request to response (every verb, every refusal),
// then the unix socket that frames it (mode 0600, one request per connection, a stale socket
// replaced, a live one refused), then the `nlb query` rendering of its answer.
import { spawn } from 'node:child_process';
import { lstatSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bucketRanges, renderQuery } from '../src/cli/commands/query.js';
import { renderHuman } from '../src/cli/render.js';
import { type QueryData } from '../src/control/protocol.js';
import { type ControlContext, handleControl } from '../src/daemon/control.js';
import { ControlUnreachable, controlRequest } from '../src/control/client.js';
import {
  ControlServer,
  ControlSocketError,
  defaultSocketPath,
} from '../src/daemon/control-server.js';
import { runNlb } from './cli-helpers.js';
import { type TestTarget, makeTestTarget } from './control-target.js';
import { hostConfig } from './support/mini-net.js';

function makeTarget(): TestTarget {
  const config = hostConfig(2, {
    cluster: {
      portRules: [
        { vip: 'all', ports: 80, protocol: 'tcp', mode: 'multiple', affinity: 'none' },
        { vip: 'all', ports: '1000-2000', protocol: 'udp', mode: 'single', affinity: 'single' },
      ],
    },
  });
  return makeTestTarget({ config, counters: () => Promise.reject(new Error('no table (test)')) });
}

describe('control handler (no socket)', () => {
  it('answers query with state, members, rules with owned buckets, and peers', async () => {
    const { context } = makeTarget();
    const response = await handleControl({ verb: 'query' }, context);
    expect(response.ok).toBe(true);
    const data = (response as { data: QueryData }).data;
    expect(data).toMatchObject({
      cluster: 'test',
      hostId: 2,
      incarnation: 5,
      state: 'converging',
      converged: false,
      members: [2],
      keptOut: null,
      dataplaneInSync: true,
    });
    expect(data.rules).toEqual([
      {
        rule: 0,
        vip: 'all',
        ports: '80',
        protocol: 'tcp',
        mode: 'multiple',
        affinity: 'none',
        buckets: 60,
        state: 'enabled',
        owned: [],
        orphan: [],
        loadWeight: 50,
        handlingPriority: 2,
        health: {
          check: null,
          healthy: true,
          successes: 0,
          failures: 0,
          last: null,
          agent: null,
          failingOpen: false,
          reportedWeight: null,
        },
      },
      expect.objectContaining({ rule: 1, ports: '1000-2000', protocol: 'udp', mode: 'single' }),
    ]);
    expect(data.peers).toHaveLength(1);
    expect(data.peers[0]).toMatchObject({ id: 1, announced: 'stopped', lastHeardAgoMs: 100 });
    expect(data.peers[0]!.view).toBe('stopped');
  });

  it('maps each command verb 1:1 to a core command and returns its reply', async () => {
    const { context, commands } = makeTarget();
    expect(await handleControl({ verb: 'drainstop' }, context)).toEqual({
      ok: true,
      data: { code: 'ok', message: expect.stringContaining('draining') },
    });
    expect(await handleControl({ verb: 'drainstop' }, context)).toMatchObject({
      ok: true,
      data: { code: 'already' },
    });
    await handleControl({ verb: 'disable', rules: 'all' }, context);
    await handleControl({ verb: 'enable', rules: [1, 0, 1] }, context);
    await handleControl({ verb: 'drain', rules: [7] }, context);
    await handleControl({ verb: 'suspend' }, context);
    expect(await handleControl({ verb: 'start' }, context)).toMatchObject({
      ok: true,
      data: { code: 'suspended' },
    });
    await handleControl({ verb: 'resume' }, context);
    await handleControl({ verb: 'stop' }, context);
    expect(commands).toEqual([
      { verb: 'drainstop' },
      { verb: 'drainstop' },
      { verb: 'disable', rules: [0, 1] },
      { verb: 'enable', rules: [0, 1] },
      { verb: 'drain', rules: [7] },
      { verb: 'suspend' },
      { verb: 'start' },
      { verb: 'resume' },
      { verb: 'stop' },
    ]);
  });

  it('answers params with config, counters (or why not), protocol details and identity', async () => {
    const { context } = makeTarget();
    const response = await handleControl({ verb: 'params' }, context);
    expect(response.ok).toBe(true);
    const data = (response as { data: Record<string, unknown> }).data;
    expect(data.counters).toBeNull();
    expect(data.countersError).toBe('no table (test)');
    expect(data.config).toMatchObject({
      cluster: {
        name: 'test',
        clusterIps: ['198.18.0.100'],
        heartbeat: { group: '239.255.78.76' },
      },
      host: { id: 2, dedicatedIp: '198.18.0.12/24' },
    });
    expect(data.identity).toMatchObject({ pid: 1234, netns: 'net:[1]' });
    expect(JSON.parse(JSON.stringify(data))).toEqual(data);
  });

  it('refuses what is not a request, naming the problem and the fix', async () => {
    const { context } = makeTarget();
    expect(await handleControl(undefined, context)).toMatchObject({
      ok: false,
      error: { code: 'bad-request', hint: expect.stringContaining('{"verb":"query"}') },
    });
    expect(await handleControl([1], context)).toMatchObject({
      ok: false,
      error: { code: 'bad-request' },
    });
    expect(await handleControl({ verb: 'reboot' }, context)).toMatchObject({
      ok: false,
      error: { code: 'unknown-verb', hint: expect.stringContaining('query') },
    });
    expect(await handleControl({ verb: 'query', extra: 1 }, context)).toMatchObject({
      ok: false,
      error: { code: 'bad-request' },
    });
    expect(await handleControl({ verb: 'disable' }, context)).toMatchObject({
      ok: false,
      error: { code: 'bad-request', hint: expect.stringContaining('"rules":"all"') },
    });
    expect(await handleControl({ verb: 'disable', rules: [-1] }, context)).toMatchObject({
      ok: false,
    });
  });

  it('turns a failing target into a failed response, never a throw', async () => {
    const { context } = makeTarget();
    const broken: ControlContext = {
      ...context,
      target: { ...context.target, command: () => Promise.reject(new Error('shutting down')) },
    };
    expect(await handleControl({ verb: 'stop' }, broken)).toMatchObject({
      ok: false,
      error: { code: 'failed', message: 'shutting down' },
    });
  });
});

describe('control socket', () => {
  let dir: string;
  let servers: ControlServer[];

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'nlbd-control-'));
    servers = [];
  });

  afterEach(async () => {
    await Promise.all(servers.map((s) => s.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  async function serve(socketPath: string): Promise<ControlServer> {
    const { context } = makeTarget();
    const server = new ControlServer((request) => handleControl(request, context));
    servers.push(server);
    await server.listen(socketPath);
    return server;
  }

  it('names the socket after the cluster and the host id', () => {
    expect(defaultSocketPath('web', 3)).toBe('/run/nlb/nlbd-web-3.sock');
  });

  it('answers one request per connection on a 0600 socket, and removes it on close', async () => {
    const socketPath = path.join(dir, 'nlbd.sock');
    const server = await serve(socketPath);
    expect(statSync(socketPath).mode & 0o777).toBe(0o600);
    const answer = await controlRequest(socketPath, { verb: 'query' });
    expect(answer).toMatchObject({ ok: true, data: { hostId: 2 } });
    expect(await controlRequest(socketPath, 'nonsense')).toMatchObject({ ok: false });
    await server.close();
    await expect(controlRequest(socketPath, { verb: 'query' })).rejects.toBeInstanceOf(
      ControlUnreachable,
    );
  });

  it('answers a line that is not JSON, and a line over the limit, with bad-request', async () => {
    const socketPath = path.join(dir, 'nlbd.sock');
    await serve(socketPath);
    const raw = (payload: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const socket = net.connect(socketPath);
        let text = '';
        socket.setEncoding('utf8');
        socket.on('data', (chunk: string) => (text += chunk));
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
        socket.write(payload);
      });
    expect(JSON.parse(await raw('{not json\n'))).toMatchObject({
      ok: false,
      error: { code: 'bad-request' },
    });
    expect(JSON.parse(await raw('x'.repeat(70 * 1024)))).toMatchObject({
      ok: false,
      error: { code: 'bad-request', message: expect.stringContaining('at most') },
    });
  });

  it('replaces a stale socket file but refuses to take over a live daemon', async () => {
    const socketPath = path.join(dir, 'nlbd.sock');
    // A stale socket: the file of a process killed while listening, as after a crash.
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`,
    ]);
    await new Promise((resolve) => child.stdout.once('data', resolve));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    expect(lstatSync(socketPath).isSocket()).toBe(true);
    await serve(socketPath);
    expect(await controlRequest(socketPath, { verb: 'identity' })).toMatchObject({ ok: true });
    await expect(serve(socketPath)).rejects.toBeInstanceOf(ControlSocketError);
    expect(await controlRequest(socketPath, { verb: 'identity' })).toMatchObject({ ok: true });
    const notSocket = path.join(dir, 'plain');
    writeFileSync(notSocket, '');
    await expect(serve(notSocket)).rejects.toThrow(/not a socket/);
  });

  it('nlb query --socket prints the view, or exits 1 saying no nlbd answers', async () => {
    const socketPath = path.join(dir, 'nlbd.sock');
    await serve(socketPath);
    const shown = await runNlb(['query', '--socket', socketPath]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain('host          2 (cluster test)');
    const json = await runNlb(['query', '--socket', socketPath, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ hostId: 2, socket: socketPath });
    const none = await runNlb(['query', '--socket', path.join(dir, 'none.sock')]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(
      `nlb: no nlbd answers on ${path.join(dir, 'none.sock')} (no such socket)`,
    );
    expect(none.stderr).toContain('hint: is nlbd running on this host?');
    const half = await runNlb(['query', '--lab', 'x']);
    expect(half.code).toBe(2);
    expect(half.stderr).toContain('nlb: --lab: needs --host too');
  });

  it('reports a missing socket as unreachable with its errno', async () => {
    const error = await controlRequest(path.join(dir, 'none.sock'), { verb: 'query' }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ControlUnreachable);
    expect((error as ControlUnreachable).reason).toBe('ENOENT');
  });
});

describe('nlb query rendering', () => {
  it('writes bucket lists as ranges', () => {
    expect(bucketRanges([])).toBe('-');
    expect(bucketRanges([0, 1, 2, 5, 7, 8])).toBe('0-2, 5, 7-8');
  });

  it('shows the state, members, owned buckets and peers', async () => {
    const { context } = makeTarget();
    const response = await handleControl({ verb: 'query' }, context);
    const data = (response as { data: QueryData }).data;
    const text = renderHuman(renderQuery({ ...data, socket: '/run/nlb/x.sock' }).human);
    expect(text).toContain('host          2 (cluster test)');
    expect(text).toContain('state         converging');
    expect(text).toMatch(/RULE\s+CLUSTER IP\s+PORTS/);
    expect(text).toMatch(/0\s+all\s+80\s+tcp\s+multiple\s+enabled\s+50\s+-\s+0\/60/);
    expect(text).toMatch(/PEER\s+VIEW\s+ANNOUNCED/);
    // Only routed mode has a `routed` line: whether FRR announces the cluster IPs.
    expect((data as { announced?: boolean }).announced).toBeUndefined();
    expect(text).not.toContain('routed');
  });

  it('says in routed mode whether the cluster IPs are announced', async () => {
    const { context } = makeTarget();
    for (const announced of [true, false]) {
      const response = await handleControl(
        { verb: 'query' },
        { ...context, announced: () => announced },
      );
      const data = (response as { data: QueryData }).data;
      expect(data.announced).toBe(announced);
      const text = renderHuman(renderQuery({ ...data, socket: '/run/nlb/x.sock' }).human);
      expect(text).toContain(
        announced
          ? 'routed        announced: FRR advertises the cluster IPs to the routers'
          : 'routed        withdrawn: the routers send this host nothing new',
      );
    }
  });
});
