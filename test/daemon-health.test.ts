// The probes and the checks nlbd runs (issue 14), against a service on loopback whose behaviour
// the test sets: tcp, http (status, body) and exec probes, each bounded by its timeout and its
// output limit; the fall/rise verdict and the agent's weight filter (pure, core/health-verdict.ts);
// and HealthChecks reporting only changes, one probe in flight, a reload that removes a check
// putting the rule back to healthy at the config's weight.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../src/core/config.js';
import {
  filterWeight,
  initialVerdict,
  initialWeightFilter,
  nextVerdict,
} from '../src/core/health-verdict.js';
import { type HealthCommand, HealthChecks } from '../src/daemon/health.js';
import { parseReportedWeight, probeOutputBytesMax, runProbe } from '../src/daemon/probes.js';
import { hostConfig } from './support/mini-net.js';

/** How the test service answers now. */
const service = {
  mode: 'ok' as 'ok' | '503' | 'slow' | 'huge',
  weight: '80',
  requests: 0,
  inFlight: 0,
  inFlightMax: 0,
};

/** Waits until `done` holds (checked every 10 ms), failing after 10 s. */
async function until(done: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error('condition not met in 10 s');
    await sleep(10);
  }
}
let server: http.Server;
let port: number;

beforeAll(async () => {
  server = http.createServer((request, response) => {
    service.requests++;
    service.inFlight++;
    service.inFlightMax = Math.max(service.inFlightMax, service.inFlight);
    response.on('close', () => service.inFlight--);
    if (request.url === '/weight') {
      response.end(service.weight);
      return;
    }
    switch (service.mode) {
      case 'ok':
        response.end('all good');
        break;
      case '503':
        response.statusCode = 503;
        response.end('down');
        break;
      case 'slow':
        setTimeout(() => response.end('late'), 400);
        break;
      case 'huge':
        response.end(Buffer.alloc(probeOutputBytesMax + 10, 97));
        break;
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const httpProbe = (path = '/', body?: string) => ({
  type: 'http' as const,
  address: '127.0.0.1',
  port,
  path,
  statusMin: 200,
  statusMax: 399,
  body,
});

describe('probes', () => {
  it('http: status range, body substring, timeout, output limit', async () => {
    service.mode = 'ok';
    expect(await runProbe(httpProbe(), 300)).toMatchObject({ ok: true, detail: '200 OK' });
    expect(await runProbe(httpProbe('/', 'good'), 300)).toMatchObject({ ok: true });
    expect((await runProbe(httpProbe('/', 'bad'), 300)).detail).toMatch(/body lacks 'bad'/);
    service.mode = '503';
    expect(await runProbe(httpProbe(), 300)).toMatchObject({
      ok: false,
      detail: '503 Service Unavailable (expected 200-399)',
    });
    service.mode = 'slow';
    const slow = await runProbe(httpProbe(), 100);
    expect(slow).toMatchObject({ ok: false, detail: 'timed out after 100 ms' });
    expect(slow.latencyMs).toBeLessThan(300);
    service.mode = 'huge';
    expect((await runProbe(httpProbe(), 1000)).detail).toMatch(/body over 65536 bytes/);
  });

  it('tcp: connected or refused', async () => {
    expect(await runProbe({ type: 'tcp', address: '127.0.0.1', port }, 300)).toMatchObject({
      ok: true,
      detail: 'connected',
    });
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    expect(
      await runProbe({ type: 'tcp', address: '127.0.0.1', port: closedPort }, 300),
    ).toMatchObject({ ok: false, detail: 'ECONNREFUSED' });
  });

  it('exec: exit 0, other exits, a hang cut at the timeout with its children, a flood cut at the limit', async () => {
    expect(await runProbe({ type: 'exec', command: ['sh', '-c', 'echo 42'] }, 2000)).toMatchObject({
      ok: true,
      detail: 'exit 0',
      output: '42\n',
    });
    expect(await runProbe({ type: 'exec', command: ['sh', '-c', 'exit 3'] }, 2000)).toMatchObject({
      ok: false,
      detail: 'exit 3',
    });
    const hang = await runProbe({ type: 'exec', command: ['sh', '-c', 'sleep 30 & wait'] }, 150);
    expect(hang).toMatchObject({ ok: false, detail: 'timed out after 150 ms' });
    expect(hang.latencyMs).toBeLessThan(1000);
    const flood = await runProbe({ type: 'exec', command: ['yes'] }, 5000);
    expect(flood).toMatchObject({ ok: false, detail: 'output over 65536 bytes' });
    expect(await runProbe({ type: 'exec', command: ['/no/such/check'] }, 500)).toMatchObject({
      ok: false,
      detail: 'ENOENT',
    });
  });

  it('reads a weight from an agent answer', () => {
    expect(parseReportedWeight('75')).toBe(75);
    expect(parseReportedWeight('weight=30%\n')).toBe(30);
    expect(parseReportedWeight('ready 100')).toBe(100);
    expect(parseReportedWeight('250')).toBeUndefined();
    expect(parseReportedWeight('up')).toBeUndefined();
  });
});

describe('verdicts and the weight filter', () => {
  it('fall failures in a row make it unhealthy, rise successes healthy; one blip changes nothing', () => {
    let v = initialVerdict;
    const feed = (...results: boolean[]) => {
      for (const ok of results) v = nextVerdict(v, ok, 2, 3);
      return v.healthy;
    };
    expect(feed(false)).toBe(true);
    expect(feed(true, false)).toBe(true);
    expect(feed(false)).toBe(false);
    expect(feed(true, true)).toBe(false);
    expect(feed(false, true, true)).toBe(false);
    expect(feed(true)).toBe(true);
  });

  it('ignores readings within the hysteresis, holds each weight holdMs, takes 0 at once', () => {
    let f = initialWeightFilter;
    const read = (weight: number, at: number) => {
      const next = filterWeight(f, weight, at, 10, 5_000);
      f = next.filter;
      return next.changed ? f.inForce : undefined;
    };
    expect(read(80, 0)).toBe(80);
    expect(read(85, 6_000)).toBeUndefined();
    expect(read(50, 7_000)).toBe(50);
    expect(read(20, 8_000)).toBeUndefined();
    expect(read(20, 12_000)).toBe(20);
    expect(read(0, 12_500)).toBe(0);
    expect(read(100, 20_000)).toBe(100);
  });
});

function configWith(health: object | undefined, agent?: object): Config {
  const rule = {
    vip: '198.18.0.100',
    ports: port,
    protocol: 'tcp',
    ...(health === undefined ? {} : { health }),
    ...(agent === undefined ? {} : { agent }),
  };
  return hostConfig(1, { cluster: { clusterIps: ['198.18.0.100'], portRules: [rule] } });
}

describe('HealthChecks', () => {
  it('reports a change of verdict once, the weight the filter puts in force, and removes cleanly', async () => {
    service.mode = 'ok';
    service.weight = '80';
    const reports: HealthCommand[] = [];
    const checks = new HealthChecks((command) => {
      reports.push(command);
      return Promise.resolve({ code: 'ok', message: '' });
    });
    checks.start(
      configWith(
        { path: '/', intervalMs: 50, timeoutMs: 40, fall: 2, rise: 2 },
        { path: '/weight', intervalMs: 50, timeoutMs: 40, hysteresis: 10, holdMs: 0 },
      ),
    );
    await until(() => reports.length > 0);
    expect(reports).toEqual([{ verb: 'weight', rule: 0, weight: 80 }]);
    service.mode = '503';
    await until(() => reports.some((r) => r.verb === 'health'));
    expect(reports.filter((r) => r.verb === 'health')).toEqual([
      {
        verb: 'health',
        rule: 0,
        healthy: false,
        detail: '503 Service Unavailable (expected 200-399)',
      },
    ]);
    expect(checks.views()[0]).toMatchObject({ healthy: false, last: { ok: false } });
    service.mode = 'ok';
    service.weight = '30';
    await until(() => reports.filter((r) => r.verb === 'health').length === 2);
    await until(() => reports.filter((r) => r.verb === 'weight').length === 2);
    expect(
      reports.filter((r) => r.verb === 'health').map((r) => r.verb === 'health' && r.healthy),
    ).toEqual([false, true]);
    expect(
      reports.filter((r) => r.verb === 'weight').map((r) => r.verb === 'weight' && r.weight),
    ).toEqual([80, 30]);
    // A reload without the checks: the rule's weight goes back to the config's.
    checks.reload(configWith(undefined));
    await until(() => reports.length === 5);
    expect(reports.at(-1)).toEqual({ verb: 'weight', rule: 0, weight: null });
    expect(checks.views()[0]).toMatchObject({ check: null, agent: null, healthy: true });
    const count = reports.length;
    await sleep(150);
    expect(reports).toHaveLength(count);
    checks.stop();
  });

  it('runs one probe per rule at a time, however slow the service', async () => {
    service.mode = 'slow';
    service.requests = 0;
    service.inFlightMax = 0;
    const checks = new HealthChecks(() => Promise.resolve({ code: 'ok', message: '' }));
    // 400 ms answers, a probe every 500 ms from the start of the last: never two at once.
    checks.start(configWith({ path: '/', intervalMs: 500, timeoutMs: 450, fall: 9, rise: 2 }));
    await until(() => service.requests >= 3);
    checks.stop();
    expect(service.inFlightMax).toBeLessThanOrEqual(1);
  });
});
