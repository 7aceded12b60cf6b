// Remote control cannot be locked out without the token: real TCP sockets on 127.0.0.1, the
// attackers connecting from other loopback source addresses (127.0.0.2...) so that each is a
// peer of its own, the operator from 127.0.0.1. Tricklers (a byte every 50 ms, never a
// newline) and idle half-open connections fill the listener; an operator with the token is
// still answered at once. A peer over its cap is refused, a trickler is closed at its absolute
// deadline, and `events --follow` (authenticated first) outlives every deadline. Every loop is
// bounded in count and time; every socket is closed after each test.
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { answerControl } from '../src/daemon/control.js';
import { controlFollow, controlRequest } from '../src/control/client.js';
import { ControlServer } from '../src/daemon/control-server.js';
import type { GateLimits } from '../src/daemon/connection-gate.js';
import { remoteHandler, tokenDigest } from '../src/daemon/remote.js';
import { type TestTarget, makeTestTarget } from './control-target.js';

const token = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';
// The listener's defaults (controlLimitsDefault), written out so that each test fails on its
// behaviour alone against a server without them.
const connectionsMax = 64;
const perPeerMax = 8;
const requestDeadlineMs = 2_000;
/** How long an operator may wait for an answer while the attack goes on. */
const answerBoundMs = 500;

let server: ControlServer;
let t: TestTarget;
let port: number;
const sockets: net.Socket[] = [];
const timers: NodeJS.Timeout[] = [];

async function serve(limits?: GateLimits): Promise<void> {
  t = makeTestTarget();
  server = new ControlServer(
    remoteHandler(
      tokenDigest(token),
      (request) => answerControl(request, t.context),
      () => undefined,
      () => Date.now(),
    ),
    limits,
  );
  await server.listenTcp('127.0.0.1', 0);
  port = server.tcpAddress!.port;
}

beforeEach(() => serve());

afterEach(async () => {
  for (const timer of timers.splice(0)) clearInterval(timer);
  for (const socket of sockets.splice(0)) socket.destroy();
  await server.close();
});

/** A connection from `from` (a loopback address) that is open once this resolves. */
function connectFrom(from: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve(socket));
    socket.once('close', () => reject(new Error(`closed before connecting from ${from}`)));
  });
}

/** Sends a byte of a request that never ends every 50 ms, until the socket closes. */
function trickle(socket: net.Socket): void {
  socket.write('{');
  const timer = setInterval(() => {
    if (socket.destroyed) clearInterval(timer);
    else socket.write('"');
  }, 50);
  timers.push(timer);
  socket.once('close', () => clearInterval(timer));
}

/** Milliseconds from now until `socket` closes, or Infinity when it is still open at `limitMs`. */
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitUntil(condition: () => boolean, limitMs: number): Promise<void> {
  const end = performance.now() + limitMs;
  while (!condition()) {
    if (performance.now() > end) throw new Error(`condition not met within ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The operator: a query with the token from 127.0.0.1; resolves with the answer and its time. */
async function operatorQuery(): Promise<{ ms: number; answer: unknown }> {
  const start = performance.now();
  const answer = await controlRequest(
    { host: '127.0.0.1', port },
    { verb: 'query', token },
    answerBoundMs,
  );
  return { ms: performance.now() - start, answer };
}

/** Opens `count` connections from `from`, settled whether admitted or not. */
async function flood(from: string, count: number): Promise<net.Socket[]> {
  const opened = await Promise.allSettled(Array.from({ length: count }, () => connectFrom(from)));
  return opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
}

describe('remote control under a connection flood without the token', () => {
  it(`answers the operator within ${answerBoundMs} ms past tricklers and idle connections from many addresses`, async () => {
    // 10 peers x 8 tricklers and 10 peers x 4 idle connections: 120 > the 64 the listener
    // holds, and each peer at or near its cap of 8.
    for (let i = 2; i < 12; i++) {
      for (const socket of await flood(`127.0.0.${i}`, 8)) trickle(socket);
    }
    for (let i = 12; i < 22; i++) {
      await flood(`127.0.0.${i}`, 4);
    }
    // The attackers keep reconnecting whatever is closed (at most 200 more, from their own
    // addresses) while the operator asks five times in a row.
    let reconnects = 0;
    const churn = setInterval(() => {
      for (let i = 2; i < 22 && reconnects < 200; i++) {
        reconnects++;
        void connectFrom(`127.0.0.${i}`).then(trickle, () => undefined);
      }
    }, 20);
    timers.push(churn);
    for (let n = 0; n < 5; n++) {
      const { ms, answer } = await operatorQuery();
      expect(answer).toMatchObject({ ok: true, data: { hostId: 2 } });
      expect(ms).toBeLessThan(answerBoundMs);
    }
    clearInterval(churn);
    expect(server.connections.open).toBeLessThanOrEqual(connectionsMax);
    expect(server.connections.evicted + server.connections.refused).toBeGreaterThan(0);
  });

  it('answers the operator past 40 tricklers from one address: its peer gets 8, the rest are refused', async () => {
    const attackers = await flood('127.0.0.2', 40);
    attackers.forEach(trickle);
    await sleep(50);
    const { ms, answer } = await operatorQuery();
    expect(answer).toMatchObject({ ok: true, data: { hostId: 2 } });
    expect(ms).toBeLessThan(answerBoundMs);
    expect(server.connections.refused).toBe(40 - perPeerMax);
  });

  it('refuses a connection over its peer cap, saying why, and admits other peers', async () => {
    const cap = perPeerMax;
    await flood('127.0.0.3', cap);
    await sleep(50);
    const over = await new Promise<string>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.3' });
      sockets.push(socket);
      let text = '';
      socket.setEncoding('utf8');
      socket.on('connect', () => socket.write(`${JSON.stringify({ verb: 'query', token })}\n`));
      socket.on('data', (chunk: string) => (text += chunk));
      socket.on('close', () => resolve(text));
      socket.on('error', () => undefined);
    });
    expect(JSON.parse(over)).toEqual({
      ok: false,
      error: {
        code: 'failed',
        message: `too many connections from 127.0.0.3: at most ${cap} at once`,
        hint: 'wait for the other requests from this address to finish, then try again',
      },
    });
    expect(t.commands).toEqual([]);
    expect((await operatorQuery()).answer).toMatchObject({ ok: true });
  });

  it('closes a trickler and an idle connection at the request deadline, counted from accept', async () => {
    const deadline = requestDeadlineMs;
    const trickler = await connectFrom('127.0.0.4');
    trickle(trickler);
    const idle = await connectFrom('127.0.0.4');
    const [trickled, silent] = await Promise.all([
      closesWithin(trickler, deadline + 1_000),
      closesWithin(idle, deadline + 1_000),
    ]);
    for (const ms of [trickled, silent]) {
      expect(ms).toBeGreaterThan(deadline - 100);
      expect(ms).toBeLessThan(deadline + 300);
    }
  });

  it('keeps an authenticated events --follow past every deadline', async () => {
    const lines: unknown[] = [];
    const abort = new AbortController();
    const followed = controlFollow(
      { host: '127.0.0.1', port },
      { verb: 'events', follow: true, limit: 1, token },
      { onResponse: (response) => response.ok, onLine: (line) => lines.push(line) },
      abort.signal,
    );
    await sleep(requestDeadlineMs + 500);
    await t.target.command({ verb: 'stop' });
    await waitUntil(() => lines.length >= 1, 1_000);
    expect(lines.at(-1)).toMatchObject({ event: 'stopped' });
    abort.abort();
    expect(await followed).toBe('aborted');
  });
});

describe('connection gate with small limits', () => {
  const small: GateLimits = {
    connectionsMax: 6,
    perPeerMax: 3,
    requestDeadlineMs: 3_000,
    answerDeadlineMs: 300,
  };

  it('when full, evicts the oldest waiting connection of the peer that holds the most', async () => {
    await server.close();
    await serve(small);
    // Pauses between the groups, so that the server accepts them in this order.
    const a = await flood('127.0.0.2', 3);
    await sleep(20);
    const b = await flood('127.0.0.3', 2);
    await sleep(20);
    const operator = await connectFrom('127.0.0.1');
    await sleep(20);
    // Full. A newcomer from a fourth address takes the place of 127.0.0.2's oldest.
    await connectFrom('127.0.0.5');
    expect(await closesWithin(a[0]!, 1_000)).toBeLessThan(1_000);
    expect(a[1]!.destroyed).toBe(false);
    // Then 127.0.0.2 and .3 hold two each: the oldest of those goes, .2's second.
    await connectFrom('127.0.0.6');
    expect(await closesWithin(a[1]!, 1_000)).toBeLessThan(1_000);
    expect(b.every((s) => !s.destroyed) && !operator.destroyed).toBe(true);
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      operator.setEncoding('utf8');
      operator.on('data', (chunk: string) => (text += chunk));
      operator.on('end', () => resolve(text));
      operator.write(`${JSON.stringify({ verb: 'query', token })}\n`);
    });
    expect(JSON.parse(answer)).toMatchObject({ ok: true, data: { hostId: 2 } });
    expect(server.connections.evicted).toBe(2);
  });

  it('answers a request that came in time while the event loop was stalled past the deadline', async () => {
    await server.close();
    await serve({ ...small, requestDeadlineMs: 200 });
    const client = await connectFrom('127.0.0.1');
    let answer = '';
    client.setEncoding('utf8');
    client.on('data', (chunk: string) => (answer += chunk));
    await sleep(20);
    // The request reaches the server's kernel buffer at once; then this process (the server's
    // too) is busy for 400 ms, past the deadline, before it reads a byte.
    client.write(`${JSON.stringify({ verb: 'query', token })}\n`);
    const until = performance.now() + 400;
    while (performance.now() < until) {
      // Busy: no event loop turn.
    }
    await waitUntil(() => answer.endsWith('\n') || client.destroyed, 1_000);
    expect(JSON.parse(answer)).toMatchObject({ ok: true, data: { hostId: 2 } });
  });

  it('closes an answered connection whose client keeps its end open, at the answer deadline', async () => {
    await server.close();
    await serve(small);
    // allowHalfOpen: the client does not end its side when the server ends its own.
    const client = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    sockets.push(client);
    let answer = '';
    let failed = false;
    client.setEncoding('utf8');
    client.on('data', (chunk: string) => (answer += chunk));
    client.on('error', () => (failed = true));
    client.on('close', () => (failed = true));
    await new Promise((resolve) => client.once('connect', resolve));
    client.write(`${JSON.stringify({ verb: 'query', token })}\n`);
    await sleep(small.answerDeadlineMs + 200);
    expect(JSON.parse(answer)).toMatchObject({ ok: true });
    // The server closed its socket: what the client sends now is answered with a reset.
    client.write('x');
    await sleep(50);
    client.write('x');
    await waitUntil(() => failed, 1_000);
  });
});
