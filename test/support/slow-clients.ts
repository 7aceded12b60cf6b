// Slow clients against a real nlbd's remote control and metrics listeners, for
// test/lab-faults-2.test.ts (issue 9, items 6 and 7). A standalone script (node builtins only),
// run inside a lab client namespace by `runScriptIn` of support/lab-faults.ts:
//
//   --control IP:PORT --metrics IP:PORT --sources A,B,... --operator IP --token-file F
//   --control-per-source N --metrics-per-source M --attack-ms T --operator-after-ms O
//
// From every address in --sources it opens N connections to the control listener that send a
// request one byte every 50 ms and never end it (tricklers), and M to the metrics listener that
// do the same with an HTTP request; together more than either listener admits. O ms into the
// attack an operator, from an address of its own, sends `query` with the token and then scrapes
// /metrics; the script reports how long each answer took. At T ms every socket is closed and one
// JSON line summarises: per listener, connections opened, closed by the server (and when), and
// the operator's results. Bounded: at most `socketsMax` sockets, T at most `attackMsMax`, and
// only lab addresses (198.18.0.0/15) are accepted.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';

const socketsMax = 400;
const attackMsMax = 10_000;
const trickleMs = 50;
/** An operator answer slower than this is a lock-out; the test asserts a tighter bound. */
const operatorTimeoutMs = 5_000;

function fail(message: string): never {
  process.stderr.write(`slow-clients: ${message}\n`);
  process.exit(2);
}

const options = new Map<string, string>();
const argv = process.argv.slice(2);
for (let i = 0; i + 1 < argv.length; i += 2) options.set(argv[i]!, argv[i + 1]!);
const get = (name: string): string => options.get(name) ?? fail(`${name} is missing`);
const labAddress = (text: string): string =>
  /^198\.1[89]\.\d+\.\d+$/.test(text) ? text : fail(`not a lab address: ${text}`);
const endpoint = (text: string): { host: string; port: number } => {
  const [host, port] = text.split(':');
  return { host: labAddress(host ?? ''), port: Number(port) };
};

const control = endpoint(get('--control'));
const metrics = endpoint(get('--metrics'));
const sources = get('--sources').split(',').map(labAddress);
const operator = labAddress(get('--operator'));
const token = readFileSync(get('--token-file'), 'utf8').trim();
const controlPerSource = Number(get('--control-per-source'));
const metricsPerSource = Number(get('--metrics-per-source'));
const attackMs = Number(get('--attack-ms'));
const operatorAfterMs = Number(get('--operator-after-ms'));
if (sources.includes(operator)) fail('the operator needs an address of its own');
if (sources.length * (controlPerSource + metricsPerSource) > socketsMax) fail('too many sockets');
if (!(attackMs > 0 && attackMs <= attackMsMax)) fail(`--attack-ms must be 1..${attackMsMax}`);
if (!(operatorAfterMs >= 0 && operatorAfterMs < attackMs)) fail('bad --operator-after-ms');

interface ListenerTally {
  opened: number;
  failedToOpen: number;
  /** Closed by the server, with ms since the attack began. */
  closedAtMs: number[];
}

const started = Date.now();
const sockets: net.Socket[] = [];
const timers: NodeJS.Timeout[] = [];
let ending = false;

function trickler(
  target: { host: string; port: number },
  source: string,
  first: string,
  tally: ListenerTally,
): void {
  const socket = net.connect({ host: target.host, port: target.port, localAddress: source });
  sockets.push(socket);
  let connected = false;
  socket.on('error', () => undefined);
  socket.on('data', () => undefined);
  socket.once('connect', () => {
    connected = true;
    tally.opened++;
    socket.write(first);
    const timer = setInterval(() => {
      if (socket.destroyed || !socket.writable) clearInterval(timer);
      else socket.write('x');
    }, trickleMs);
    timers.push(timer);
  });
  socket.once('close', () => {
    if (ending) return;
    if (connected) tally.closedAtMs.push(Date.now() - started);
    else tally.failedToOpen++;
  });
}

function operatorQuery(): Promise<{ ms: number; ok: boolean; error?: string }> {
  const begin = Date.now();
  return new Promise((resolve) => {
    const socket = net.connect({ host: control.host, port: control.port, localAddress: operator });
    let text = '';
    const done = (ok: boolean, error?: string): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ms: Date.now() - begin, ok, ...(error === undefined ? {} : { error }) });
    };
    const timer = setTimeout(() => done(false, 'timeout'), operatorTimeoutMs);
    socket.setEncoding('utf8');
    socket.on('error', (error: NodeJS.ErrnoException) => done(false, error.code ?? error.message));
    socket.once('connect', () => socket.write(`${JSON.stringify({ verb: 'query', token })}\n`));
    socket.on('data', (chunk: string) => {
      text += chunk;
      const newline = text.indexOf('\n');
      if (newline < 0) return;
      try {
        const answer = JSON.parse(text.slice(0, newline)) as { ok?: boolean; error?: unknown };
        done(answer.ok === true, answer.ok === true ? undefined : JSON.stringify(answer.error));
      } catch {
        done(false, 'not JSON');
      }
    });
    socket.on('close', () => done(false, 'closed without answer'));
  });
}

function operatorScrape(): Promise<{ ms: number; status: number; metricLines: number }> {
  const begin = Date.now();
  return new Promise((resolve) => {
    const request = http.get(
      {
        host: metrics.host,
        port: metrics.port,
        path: '/metrics',
        localAddress: operator,
        timeout: operatorTimeoutMs,
        agent: false,
      },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body += chunk));
        response.on('end', () =>
          resolve({
            ms: Date.now() - begin,
            status: response.statusCode ?? 0,
            metricLines: body.split('\n').filter((l) => l.startsWith('nlb')).length,
          }),
        );
      },
    );
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', () => resolve({ ms: Date.now() - begin, status: 0, metricLines: 0 }));
  });
}

const controlTally: ListenerTally = { opened: 0, failedToOpen: 0, closedAtMs: [] };
const metricsTally: ListenerTally = { opened: 0, failedToOpen: 0, closedAtMs: [] };
for (const source of sources) {
  for (let i = 0; i < controlPerSource; i++) trickler(control, source, '{', controlTally);
  for (let i = 0; i < metricsPerSource; i++) {
    trickler(metrics, source, 'GET /metrics HTTP/1.1\r\nX-Slow: ', metricsTally);
  }
}
await new Promise((resolve) => setTimeout(resolve, operatorAfterMs));
const query = await operatorQuery();
const scrape = await operatorScrape();
await new Promise((resolve) => setTimeout(resolve, Math.max(0, attackMs - (Date.now() - started))));
ending = true;
for (const timer of timers) clearInterval(timer);
for (const socket of sockets) socket.destroy();
const summary = (t: ListenerTally) => ({
  opened: t.opened,
  failedToOpen: t.failedToOpen,
  closedByServer: t.closedAtMs.length,
  firstClosedMs: t.closedAtMs.length === 0 ? null : Math.min(...t.closedAtMs),
  lastClosedMs: t.closedAtMs.length === 0 ? null : Math.max(...t.closedAtMs),
});
process.stdout.write(
  `${JSON.stringify({ control: summary(controlTally), metrics: summary(metricsTally), query, scrape })}\n`,
);
