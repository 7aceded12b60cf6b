// The metrics endpoint under load: scrapes in a burst share one collection (one read of the
// nft counters and one of conntrack, counted on a fake target), the text is served again for a
// second, and slow-header clients (a header byte every 50 ms, never the blank line) cannot
// stop a normal scrape. Real HTTP on 127.0.0.1; the slow clients come from other loopback
// source addresses (127.0.0.2...), each a peer of its own. Loops bounded in count and time.
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { GateLimits } from '../src/daemon/connection-gate.js';
import type { ControlTarget } from '../src/daemon/control.js';
import { createMetrics, listenMetrics, metricsLimitsDefault } from '../src/daemon/metrics.js';
import { makeTestTarget } from './control-target.js';

/** How long a normal scrape may take while slow clients hold connections. */
const scrapeBoundMs = 500;
// The listener's defaults (metricsLimitsDefault), written out so that each test fails on its
// behaviour alone against a listener without them.
const connectionsMax = 32;
const perPeerMax = 4;
const requestDeadlineMs = 2_000;

interface Counted {
  readonly target: ControlTarget;
  readonly calls: { counters: number; connections: number };
}

/** The test target, counting its reads of nft counters and conntrack, each taking `delayMs`. */
function countedTarget(delayMs = 30): Counted {
  const base = makeTestTarget().target;
  const calls = { counters: 0, connections: 0 };
  const later = <T>(value: Promise<T>): Promise<T> =>
    new Promise((resolve) => setTimeout(() => resolve(value), delayMs));
  const target: ControlTarget = {
    ...base,
    counters: () => {
      calls.counters++;
      return later(base.counters());
    },
    connections: () => {
      calls.connections++;
      return later(base.connections!());
    },
  };
  return { target, calls };
}

const sockets: net.Socket[] = [];
const timers: NodeJS.Timeout[] = [];
const servers: http.Server[] = [];

afterEach(async () => {
  for (const timer of timers.splice(0)) clearInterval(timer);
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

async function serve(counted: Counted, limits?: GateLimits): Promise<number> {
  const server = await listenMetrics(createMetrics(counted.target), '127.0.0.1', 0, limits);
  servers.push(server);
  return (server.address() as net.AddressInfo).port;
}

/** GET /metrics from `from`; resolves with the status, the body and how long it took. */
function scrape(
  port: number,
  from = '127.0.0.1',
): Promise<{ status: number; body: string; ms: number }> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const request = http.get(
      { host: '127.0.0.1', port, path: '/metrics', localAddress: from, agent: false },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body += chunk));
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, body, ms: performance.now() - start }),
        );
      },
    );
    request.setTimeout(scrapeBoundMs * 2, () => request.destroy(new Error('scrape timed out')));
    request.on('error', reject);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A client that sends the start of a request and then one header byte every 50 ms. */
function slowHeaders(port: number, from: string): Promise<net.Socket> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => resolve(socket));
    socket.once('connect', () => {
      socket.write('GET /metrics HTTP/1.1\r\nHost: nlbd\r\nX-Slow: ');
      const timer = setInterval(() => {
        if (socket.destroyed) clearInterval(timer);
        else socket.write('a');
      }, 50);
      timers.push(timer);
      socket.once('close', () => clearInterval(timer));
      resolve(socket);
    });
  });
}

/** Milliseconds from now until `socket` closes, or Infinity when still open at `limitMs`. */
function closesWithin(socket: net.Socket, limitMs: number): Promise<number> {
  const start = performance.now();
  return new Promise((resolve) => {
    if (socket.destroyed) resolve(0);
    const timer = setTimeout(() => resolve(Infinity), limitMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(performance.now() - start);
    });
  });
}

describe('metrics collection', () => {
  it('scrapes in a burst share one collection: one nft read and one conntrack read', async () => {
    const counted = countedTarget();
    let now = 0;
    const metrics = createMetrics(counted.target, { nowMs: () => now });
    const texts = await Promise.all(Array.from({ length: 20 }, () => metrics.text()));
    expect(new Set(texts).size).toBe(1);
    expect(texts[0]).toContain('nlb_rule_packets_total');
    expect(counted.calls).toEqual({ counters: 1, connections: 1 });
    // Within the second the text is served again; after it, the next scrape collects anew.
    now += 999;
    await metrics.text();
    expect(counted.calls).toEqual({ counters: 1, connections: 1 });
    now += 1;
    await metrics.text();
    expect(counted.calls).toEqual({ counters: 2, connections: 2 });
  });

  it('does not keep a failed collection: the next scrape tries again', async () => {
    const counted = countedTarget(0);
    let failing = true;
    const target: ControlTarget = {
      ...counted.target,
      details: () => {
        if (failing) throw new Error('details unavailable');
        return counted.target.details();
      },
    };
    const metrics = createMetrics(target, { nowMs: () => 0 });
    await expect(metrics.text()).rejects.toThrow('details unavailable');
    failing = false;
    await expect(metrics.text()).resolves.toContain('nlb_members');
  });
});

describe('metrics listener on 127.0.0.1', () => {
  it('answers 20 scrapes from 5 addresses at once with one collection', async () => {
    const counted = countedTarget();
    const port = await serve(counted);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => scrape(port, `127.0.0.${2 + (i % 5)}`)),
    );
    expect(results.map((r) => r.status)).toEqual(Array(20).fill(200));
    expect(counted.calls).toEqual({ counters: 1, connections: 1 });
  });

  it(`answers a normal scrape within ${scrapeBoundMs} ms past slow-header clients from many addresses`, async () => {
    const port = await serve(countedTarget());
    // 12 addresses with 4 slow clients each: 48, more than the 32 the listener holds.
    for (let i = 2; i < 14; i++) {
      await Promise.all(
        Array.from({ length: perPeerMax }, () => slowHeaders(port, `127.0.0.${i}`)),
      );
    }
    await sleep(50);
    for (let n = 0; n < 3; n++) {
      const { status, body, ms } = await scrape(port);
      expect(status).toBe(200);
      expect(body).toContain('nlb_host_state');
      expect(ms).toBeLessThan(scrapeBoundMs);
    }
    expect(connectionsMax).toBeLessThan(12 * perPeerMax);
  });

  it('refuses a connection over its peer cap at once, keeping the others', async () => {
    const port = await serve(countedTarget());
    const first = await Promise.all(
      Array.from({ length: perPeerMax }, () => slowHeaders(port, '127.0.0.2')),
    );
    await sleep(20);
    const over = await slowHeaders(port, '127.0.0.2');
    expect(await closesWithin(over, 200)).toBeLessThan(200);
    expect(first.every((s) => !s.destroyed)).toBe(true);
  });

  it('closes a slow-header client at the request deadline, counted from accept', async () => {
    const port = await serve(countedTarget());
    const slow = await slowHeaders(port, '127.0.0.2');
    const ms = await closesWithin(slow, requestDeadlineMs + 1_000);
    expect(ms).toBeGreaterThan(requestDeadlineMs - 400);
    expect(ms).toBeLessThan(requestDeadlineMs + 300);
  });

  it('closes a scrape that is not answered within the busy deadline', async () => {
    const limits = { ...metricsLimitsDefault, busyDeadlineMs: 300 };
    const port = await serve(countedTarget(3_000), limits);
    const socket = net.connect({ host: '127.0.0.1', port });
    sockets.push(socket);
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET /metrics HTTP/1.1\r\nHost: nlbd\r\n\r\n');
    const ms = await closesWithin(socket, 2_000);
    expect(ms).toBeGreaterThan(250);
    expect(ms).toBeLessThan(600);
  });

  it('closes the connection after the answer', async () => {
    const port = await serve(countedTarget(0));
    const socket = net.connect({ host: '127.0.0.1', port });
    sockets.push(socket);
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET /metrics HTTP/1.1\r\nHost: nlbd\r\n\r\n');
    expect(await closesWithin(socket, 1_000)).toBeLessThan(1_000);
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text.toLowerCase()).toContain('connection: close');
  });
});
