// The dashboard's server in process (Hono's app.request, no socket) over an aggregator that
// follows fake hosts answering with the daemon's own handlers: the page and its bundle, the
// stream of views, actions behind the control token (missing or wrong: 401 and nothing runs),
// a host that stops answering, and the real listener with a generated token file.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ActionGate, badTokensMax, tokensEqual } from '../src/dashboard/actions.js';
import { Aggregator } from '../src/dashboard/aggregator.js';
import { startDashboard } from '../src/dashboard/run.js';
import { createDashboardApp } from '../src/dashboard/server.js';
import type { ActionAnswer, DashboardView } from '../src/dashboard/view.js';
import { type FakeHost, fakeHost } from './dashboard-fakes.js';

const token = 'dashboard-test-token-0123456789abcdef';
const hint = 'the control token is in /tmp/test.token';

interface Setup {
  readonly hosts: FakeHost[];
  readonly aggregator: Aggregator;
  readonly request: (path: string, init?: RequestInit, origin?: string) => Promise<Response>;
  readonly close: () => void;
}

let setups: Setup[] = [];
afterEach(async () => {
  for (const s of setups) {
    s.close();
    await s.aggregator.stop();
  }
  setups = [];
});

async function setup(ids: readonly number[] = [2, 3]): Promise<Setup> {
  const hosts = ids.map((id) => fakeHost(id));
  const aggregator = new Aggregator({
    cluster: 'test',
    hosts: hosts.map((h) => h.host),
    tokenHint: hint,
  });
  await aggregator.start();
  const { app, close } = createDashboardApp({
    aggregator,
    gate: new ActionGate(token, hint),
    script: 'console.log("bundle")',
    acceptsHost: (host) => host === '127.0.0.1:8505',
    cluster: 'test',
  });
  const request = async (p: string, init?: RequestInit, origin = 'http://127.0.0.1:8505') =>
    app.request(`${origin}${p}`, init);
  const s = { hosts, aggregator, request, close };
  setups.push(s);
  return s;
}

function action(body: unknown, bearer?: string): RequestInit {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (bearer !== undefined) headers.authorization = `Bearer ${bearer}`;
  return { method: 'POST', headers, body: JSON.stringify(body) };
}

/** Resolves with the first view the aggregator pushes that `accept` takes. */
function nextView(
  aggregator: Aggregator,
  accept: (v: DashboardView) => boolean,
): Promise<DashboardView> {
  return new Promise((resolve) => {
    const current = aggregator.current();
    if (current !== undefined && accept(current)) return resolve(current);
    const stop = aggregator.subscribe((v) => {
      if (accept(v)) {
        stop();
        resolve(v);
      }
    });
  });
}

describe('the dashboard server', () => {
  it('serves the page, its bundle and the view, with headers that keep it to itself', async () => {
    const { request } = await setup();
    const page = await request('/');
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('<script type="module" src="/assets/dashboard.js"></script>');
    expect(html).toContain('<title>nlb dashboard: test</title>');
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    const bundle = await request('/assets/dashboard.js');
    expect(bundle.headers.get('content-type')).toContain('text/javascript');
    expect(await bundle.text()).toBe('console.log("bundle")');
    const view = (await (await request('/api/view')).json()) as DashboardView;
    expect(view.hosts.map((h) => h.hostId)).toEqual([1, 2, 3]);
    expect(view.tokenHint).toBe(hint);
    // Another name for the same address (DNS rebinding) gets nothing.
    const elsewhere = await request('/api/view', undefined, 'http://attacker.example:8505');
    expect(elsewhere.status).toBe(421);
  });

  it('refuses an action without the token or with a wrong one, and runs nothing', async () => {
    const { request, hosts } = await setup();
    const drainstop = { action: 'drainstop', host: 2 };
    for (const bearer of [undefined, '', 'wrong-token-0123456789abcdef', `${token}x`]) {
      const response = await request('/api/action', action(drainstop, bearer));
      expect(response.status).toBe(401);
      const answer = (await response.json()) as ActionAnswer;
      expect(answer).toMatchObject({ ok: false, hint });
      if (!answer.ok)
        expect(answer.error).toMatch(
          /^(no|wrong) control token given|^wrong control token: nothing was done/,
        );
    }
    // Nothing reached any host, and host 2 still takes part.
    expect(hosts.flatMap((h) => h.target.commands)).toEqual([]);
    expect(hosts[0]!.target.machine.status().state).not.toBe('draining');
  });

  it('runs an action with the token and pushes the change', async () => {
    const { request, hosts, aggregator } = await setup();
    const response = await request('/api/action', action({ action: 'drainstop', host: 2 }, token));
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      ok: true,
      results: [{ hostId: 2, ok: true, code: 'ok', message: expect.any(String) }],
    });
    expect(hosts[0]!.target.commands).toEqual([{ verb: 'drainstop' }]);
    expect(hosts[1]!.target.commands).toEqual([]);
    // The 'drain started' event comes through host 2's stream, and the view shows it.
    const view = await nextView(aggregator, (v) =>
      v.events.some((e) => e.event === 'drain started'),
    );
    expect(view.events.find((e) => e.event === 'drain started')?.hostId).toBe(2);

    const drain = await request(
      '/api/action',
      action({ action: 'drain', host: 2, rule: 1, everyHost: true }, token),
    );
    expect(drain.status).toBe(200);
    expect(hosts.map((h) => h.target.commands.at(-1))).toEqual([
      { verb: 'drain', rules: [1] },
      { verb: 'drain', rules: [1] },
    ]);
  });

  it('refuses a malformed action or an unknown host after the token, and limits wrong tokens', async () => {
    const { request, hosts } = await setup();
    for (const body of [
      { action: 'reboot', host: 2 },
      { action: 'drain', host: 2 },
      { action: 'stop', host: 2, rule: 0 },
      'stop',
    ]) {
      expect((await request('/api/action', action(body, token))).status).toBe(400);
    }
    expect((await request('/api/action', action({ action: 'stop', host: 9 }, token))).status).toBe(
      404,
    );
    expect(hosts.flatMap((h) => h.target.commands)).toEqual([]);
    for (let i = 0; i < badTokensMax; i++) {
      expect((await request('/api/action', action({ action: 'stop', host: 2 }, 'x'))).status).toBe(
        401,
      );
    }
    // Past the limit even the right token waits: guessing costs a minute per ten tries.
    const limited = await request('/api/action', action({ action: 'stop', host: 2 }, token));
    expect(limited.status).toBe(429);
    expect(hosts.flatMap((h) => h.target.commands)).toEqual([]);
    expect(tokensEqual(token, token)).toBe(true);
    expect(tokensEqual(token, token.slice(1))).toBe(false);
  });

  it('streams the view at once and each change after it', async () => {
    const { request, hosts } = await setup();
    const abort = new AbortController();
    const response = await request('/api/stream', { signal: abort.signal });
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    const views = async (count: number): Promise<DashboardView[]> => {
      for (;;) {
        const found = [...text.matchAll(/event: snapshot\ndata: (.*)\nid: \d+\n\n/g)].map(
          (m) => JSON.parse(m[1]!) as DashboardView,
        );
        if (found.length >= count) return found;
        const { value, done } = await reader.read();
        if (done) throw new Error(`the stream ended after ${found.length} views`);
        text += value;
      }
    };
    const [first] = await views(1);
    expect(first!.hosts.find((h) => h.hostId === 3)?.reachable).toBe(true);
    // Host 3 stops answering: the next view says so, and still shows host 2.
    hosts[1]!.down = true;
    await setups[0]!.aggregator.refresh();
    const latest = (await views(2)).at(-1)!;
    expect(latest.hosts.find((h) => h.hostId === 3)).toMatchObject({
      reachable: false,
      health: 'unreachable',
    });
    expect(latest.hosts.find((h) => h.hostId === 3)?.error).toContain('ECONNREFUSED');
    expect(latest.hosts.find((h) => h.hostId === 2)?.reachable).toBe(true);
    await reader.cancel();
    abort.abort();
  });
});

describe('the dashboard listener', () => {
  it('serves on a port of its own with a token file it writes 0600 and removes', async () => {
    const runDir = await mkdtemp(path.join(tmpdir(), 'nlb-dashboard-'));
    const fake = fakeHost(2);
    try {
      const running = await startDashboard({
        cluster: 'test',
        hosts: [fake.host],
        address: '127.0.0.1',
        port: 0,
        token: { kind: 'generate', cluster: 'test', runDir },
      });
      try {
        expect(running.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
        expect(running.tokenFile).toBe(path.join(runDir, 'dashboard-test.token'));
        expect((await stat(running.tokenFile)).mode & 0o777).toBe(0o600);
        const generated = (await readFile(running.tokenFile, 'utf8')).trim();
        expect(generated).toMatch(/^[0-9a-f]{64}$/);
        const page = await fetch(running.url);
        expect(await page.text()).toContain('/assets/dashboard.js');
        expect((await fetch(`${running.url}assets/dashboard.js`)).status).toBe(200);
        const post = (bearer: string) =>
          fetch(`${running.url}api/action`, action({ action: 'start', host: 2 }, bearer));
        expect((await post('nope')).status).toBe(401);
        expect(fake.target.commands).toEqual([]);
        expect((await post(generated)).status).toBe(200);
        expect(fake.target.commands).toEqual([{ verb: 'start' }]);
      } finally {
        await running.close();
      }
      expect(existsSync(running.tokenFile)).toBe(false);
    } finally {
      await rm(runDir, { recursive: true, force: true });
    }
  });
});
