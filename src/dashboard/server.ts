// The dashboard's HTTP side, as a Hono app: a function from request to response, tested in
// process (test/dashboard-server.test.ts) and served by @hono/node-server (run.ts).
//
//   GET  /                     the page (its script and style are the bundle, from this server)
//   GET  /assets/dashboard.js  the page's bundle (built by `npm run build`, nothing fetched)
//   GET  /api/view             the current view, one JSON document (for scripts and tests)
//   GET  /api/stream           server-sent events: the view at once, then each new one
//   POST /api/action           an action, with `Authorization: Bearer <control token>`
//
// The server answers only requests addressed to the name it listens on (a page of another site
// that rebinds its name to 127.0.0.1 gets nothing), frames nothing into other sites, and runs no
// action without the control token (actions.ts).
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { type SSEStreamingApi, streamSSE } from 'hono/streaming';
import type { ActionGate } from './actions.js';
import { bearerToken } from './actions.js';
import type { Aggregator } from './aggregator.js';
import { type DashboardView, snapshotEventName, tokenHeader } from './view.js';

/** Pages open at once; more is a runaway script, not people. */
export const streamsMax = 32;
/** A comment line this often keeps proxies and the browser from closing a quiet stream. */
export const keepAliveMs = 15_000;
/** An action is a few dozen bytes. */
export const actionBytesMax = 4_096;
/** How soon a page reconnects when its stream drops (the EventSource `retry`). */
const reconnectMs = 1_000;

export interface DashboardAppOptions {
  readonly aggregator: Pick<Aggregator, 'current' | 'subscribe' | 'refresh' | 'host' | 'allHosts'>;
  readonly gate: ActionGate;
  /** The page's bundle (dist/web/dashboard.js). */
  readonly script: string;
  /** Whether a request addressed to `host` (the Host header, `name:port`) is answered. */
  readonly acceptsHost: (host: string) => boolean;
  /** The cluster's name, for the page's title. */
  readonly cluster: string;
}

const securityHeaders: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function pageHtml(cluster: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nlb dashboard: ${escapeHtml(cluster)}</title>
<link rel="icon" href="data:,">
<script type="module" src="/assets/dashboard.js"></script>
</head>
<body>
<div id="app"><p class="loading">Loading the dashboard of ${escapeHtml(cluster)}...</p></div>
</body>
</html>
`;
}

/**
 * Writes the current view, then each new one, to one page's stream until the page goes or the
 * server stops; a comment line when nothing changed for `keepAliveMs`.
 */
async function streamViews(
  stream: SSEStreamingApi,
  aggregator: DashboardAppOptions['aggregator'],
  stopping: AbortSignal,
): Promise<void> {
  let dirty = true;
  let wake: () => void = () => undefined;
  const unsubscribe = aggregator.subscribe(() => {
    dirty = true;
    wake();
  });
  const end = (): void => {
    stream.abort();
    wake();
  };
  stream.onAbort(() => wake());
  stopping.addEventListener('abort', end, { once: true });
  try {
    let sent = 0;
    await stream.writeSSE({ event: 'hello', data: '', retry: reconnectMs });
    while (!stream.aborted && !stopping.aborted) {
      const view: DashboardView | undefined = aggregator.current();
      if (dirty && view !== undefined && view.version !== sent) {
        dirty = false;
        sent = view.version;
        await stream.writeSSE({
          event: snapshotEventName,
          data: JSON.stringify(view),
          id: String(view.version),
        });
        continue;
      }
      dirty = false;
      const woken = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), keepAliveMs);
        wake = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
      wake = () => undefined;
      if (!woken && !stream.aborted) await stream.write(': keep-alive\n\n');
    }
  } finally {
    unsubscribe();
    stopping.removeEventListener('abort', end);
  }
}

/** The app, and `close` to end every open stream (the server cannot close while they stay). */
export function createDashboardApp(options: DashboardAppOptions): {
  app: Hono;
  close: () => void;
} {
  const { aggregator, gate } = options;
  const stopping = new AbortController();
  let streams = 0;
  const app = new Hono();

  app.use('*', async (c, next) => {
    const host = new URL(c.req.url).host;
    if (!options.acceptsHost(host)) {
      return c.text(`this dashboard does not answer as ${host}; open it at its own address\n`, 421);
    }
    await next();
    for (const [name, value] of Object.entries(securityHeaders)) c.header(name, value);
  });

  app.get('/', (c) => c.html(pageHtml(options.cluster)));
  app.get('/assets/dashboard.js', (c) =>
    c.body(options.script, 200, { 'content-type': 'text/javascript; charset=utf-8' }),
  );
  app.get('/api/view', async (c) => c.json(aggregator.current() ?? (await aggregator.refresh())));

  app.get('/api/stream', (c) => {
    if (streams >= streamsMax) {
      return c.json({ error: `${streamsMax} pages already follow this dashboard` }, 503);
    }
    streams++;
    return streamSSE(c, (stream) =>
      streamViews(stream, aggregator, stopping.signal).finally(() => {
        streams--;
      }),
    );
  });

  app.post(
    '/api/action',
    bodyLimit({
      maxSize: actionBytesMax,
      onError: (c) =>
        c.json({ ok: false, error: 'an action is a small JSON object', hint: '' }, 413),
    }),
    async (c) => {
      // The token first: without the right one nothing else is looked at, let alone run.
      const refusal = gate.check(bearerToken(c.req.header(tokenHeader)));
      if (refusal !== null) return c.json(refusal.answer, refusal.status);
      let body: unknown;
      try {
        body = await c.req.json();
      } catch {
        body = undefined;
      }
      const outcome = await gate.run(body, (id) => aggregator.host(id), aggregator.allHosts());
      // The hosts' events will tell too; asking at once shows the change without waiting.
      if (outcome.status === 200) void aggregator.refresh();
      return c.json(outcome.answer, outcome.status);
    },
  );

  app.notFound((c) => c.text('not found\n', 404));
  app.onError((error, c) => c.json({ ok: false, error: error.message, hint: '' }, 500));
  return { app, close: () => stopping.abort() };
}
