// `nlb dashboard` and `nlb demo --dashboard` start the dashboard through here: the aggregator
// that follows the cluster, the HTTP server that shows it, and the control token the page's
// actions need. One object owns them and releases them in reverse order of their start
// (`close`), from any point a start failed at.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { runDirDefault } from '../control/paths.js';
import { writeFileAtomic } from '../node/atomic-file.js';
import { ActionGate } from './actions.js';
import { Aggregator } from './aggregator.js';
import type { DashboardHost } from './hosts.js';
import { createDashboardApp } from './server.js';

/** 8505: beside nlbd's remote control (2504) and metrics (9505) ports, easy to remember. */
export const dashboardPortDefault = 8505;

/** A failure to start the dashboard, with what to do about it. */
export class DashboardError extends Error {
  override readonly name = 'DashboardError';
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}

/**
 * The page's bundle: dist/web/dashboard.js beside this file's folder in a build or an installed
 * package, or the clone's dist/ when this runs from src/ (tests).
 */
export function loadBundle(): string {
  const candidates = ['../web/dashboard.js', '../../dist/web/dashboard.js'].map((relative) =>
    fileURLToPath(new URL(relative, import.meta.url)),
  );
  const found = candidates.find((file) => existsSync(file));
  if (found === undefined) {
    throw new DashboardError(
      `the dashboard's page is not built (no ${candidates[0]})`,
      'build it with `npm run build` (it bundles src/web into dist/web/dashboard.js)',
    );
  }
  return readFileSync(found, 'utf8');
}

/** The control token the page must give: a file's (the operators'), or one made for this run. */
export type TokenSource =
  | { readonly kind: 'given'; readonly token: string; readonly file: string }
  | { readonly kind: 'generate'; readonly cluster: string; readonly runDir?: string };

export interface DashboardStart {
  readonly cluster: string;
  readonly hosts: readonly DashboardHost[];
  readonly discover?: () => Promise<readonly DashboardHost[]>;
  /** Where to listen: an IP address (127.0.0.1 unless the operator says otherwise) and a port (0: any). */
  readonly address: string;
  readonly port: number;
  readonly token: TokenSource;
}

export interface RunningDashboard {
  readonly url: string;
  /** The file that holds the control token. */
  readonly tokenFile: string;
  readonly aggregator: Aggregator;
  close(): Promise<void>;
}

function generatedToken(cluster: string, runDir = runDirDefault): { token: string; file: string } {
  const token = randomBytes(32).toString('hex');
  const file = path.join(runDir, `dashboard-${cluster}.token`);
  try {
    writeFileAtomic(file, `${token}\n`, { mode: 0o600, dirMode: 0o755 });
  } catch (error) {
    throw new DashboardError(
      `cannot write the dashboard's control token to ${file}: ${(error as Error).message}`,
      'run as root, or give a token with --token-file FILE',
    );
  }
  return { token, file };
}

function listenOn(
  fetch: (request: Request) => Response | Promise<Response>,
  address: string,
  port: number,
): Promise<ReturnType<typeof serve>> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, hostname: address, port }, () => resolve(server));
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new DashboardError(
          `cannot listen on ${address}:${port}: ${error.code ?? error.message}`,
          error.code === 'EADDRINUSE'
            ? 'another program (another dashboard?) listens there: pick another port with --listen ADDR:PORT'
            : 'give an address of this host with --listen ADDR:PORT, e.g. 127.0.0.1:8505',
        ),
      ),
    );
  });
}

/** Starts the dashboard; resolves once it serves the first view of the cluster. */
export async function startDashboard(start: DashboardStart): Promise<RunningDashboard> {
  const releases: (() => Promise<void> | void)[] = [];
  const close = async (): Promise<void> => {
    for (const release of releases.splice(0).reverse()) await release();
  };
  try {
    const script = loadBundle();
    const { token, file } =
      start.token.kind === 'given'
        ? start.token
        : generatedToken(start.token.cluster, start.token.runDir);
    if (start.token.kind === 'generate') releases.push(() => rmSync(file, { force: true }));
    const tokenHint = `the control token is in ${file}`;
    const aggregator = new Aggregator({
      cluster: start.cluster,
      hosts: start.hosts,
      discover: start.discover,
      tokenHint,
    });
    releases.push(() => aggregator.stop());
    await aggregator.start();
    // Known once the server listens (port 0 picks one). A dashboard on every address answers
    // to any name; one on an address of its own only to that address (and localhost's name).
    const allowedHosts: string[] = [];
    const anyAddress = start.address === '0.0.0.0' || start.address === '::';
    const { app, close: closeStreams } = createDashboardApp({
      aggregator,
      gate: new ActionGate(token, tokenHint),
      script,
      acceptsHost: (host) => anyAddress || allowedHosts.includes(host),
      cluster: start.cluster,
    });
    const server = await listenOn(app.fetch, start.address, start.port);
    releases.push(
      () =>
        new Promise<void>((resolve) => {
          closeStreams();
          server.close(() => resolve());
          if ('closeAllConnections' in server) server.closeAllConnections();
        }),
    );
    const port = (server.address() as AddressInfo).port;
    const hostPart = start.address.includes(':') ? `[${start.address}]` : start.address;
    allowedHosts.push(`${hostPart}:${port}`);
    if (start.address === '127.0.0.1' || start.address === '::1')
      allowedHosts.push(`localhost:${port}`);
    return { url: `http://${hostPart}:${port}/`, tokenFile: file, aggregator, close };
  } catch (error) {
    await close();
    throw error;
  }
}
