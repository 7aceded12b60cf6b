// One probe of a local service (issue 14): connect (tcp), GET (http) or run a command (exec),
// each bounded by its timeout and by the output it may read. A probe never throws: every way a
// service can fail (refused, reset, wrong status, wrong body, slow, a hung or chatty command)
// is a result with a one-line detail, which the events and `nlb query` show.
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Probe } from '../core/config.js';

/** What a probe reads at most (a body, a command's output): more is cut off and fails. */
export const probeOutputBytesMax = 64 * 1024;

export interface ProbeResult {
  readonly ok: boolean;
  /** `200 OK`, `exit 0`, `connected`, or why not: `ECONNREFUSED`, `timed out after 500 ms`. */
  readonly detail: string;
  readonly latencyMs: number;
  /** The body or the command's standard output (at most probeOutputBytesMax), for agents. */
  readonly output: string;
}

function tcpProbe(probe: Extract<Probe, { type: 'tcp' }>, timeoutMs: number): Promise<ProbeResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = net.connect({ host: probe.address, port: probe.port });
    const done = (ok: boolean, detail: string): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok, detail, latencyMs: performance.now() - started, output: '' });
    };
    const timer = setTimeout(() => done(false, `timed out after ${timeoutMs} ms`), timeoutMs);
    socket.once('connect', () => done(true, 'connected'));
    socket.once('error', (error: NodeJS.ErrnoException) =>
      done(false, error.code ?? error.message),
    );
  });
}

function httpProbe(
  probe: Extract<Probe, { type: 'http' }>,
  timeoutMs: number,
): Promise<ProbeResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    const done = (ok: boolean, detail: string, output = ''): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      request.destroy();
      resolve({ ok, detail, latencyMs: performance.now() - started, output });
    };
    const request = http.get(
      {
        host: probe.address,
        port: probe.port,
        path: probe.path,
        headers: { 'user-agent': 'nlbd-health', connection: 'close' },
        agent: false,
      },
      (response) => {
        const status = response.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let bytes = 0;
        response.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > probeOutputBytesMax) {
            done(false, `${status}: body over ${probeOutputBytesMax} bytes`);
            return;
          }
          chunks.push(chunk);
        });
        response.on('error', (error) => done(false, error.message));
        response.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          const line = `${status} ${response.statusMessage ?? ''}`.trim();
          if (status < probe.statusMin || status > probe.statusMax) {
            done(false, `${line} (expected ${probe.statusMin}-${probe.statusMax})`, body);
          } else if (probe.body !== undefined && !body.includes(probe.body)) {
            done(false, `${line}, but the body lacks '${probe.body}'`, body);
          } else {
            done(true, line, body);
          }
        });
      },
    );
    const timer = setTimeout(() => done(false, `timed out after ${timeoutMs} ms`), timeoutMs);
    request.on('error', (error: NodeJS.ErrnoException) => done(false, error.code ?? error.message));
  });
}

function execProbe(
  probe: Extract<Probe, { type: 'exec' }>,
  timeoutMs: number,
): Promise<ProbeResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    let output = '';
    let outputBytes = 0;
    const child = spawn(probe.command[0]!, probe.command.slice(1), {
      stdio: ['ignore', 'pipe', 'ignore'],
      detached: true,
    });
    const done = (ok: boolean, detail: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // The whole process group: a check script's children die with it.
      if (child.pid !== undefined && child.exitCode === null) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      resolve({ ok, detail, latencyMs: performance.now() - started, output });
    };
    const timer = setTimeout(() => done(false, `timed out after ${timeoutMs} ms`), timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => {
      outputBytes += chunk.length;
      if (outputBytes > probeOutputBytesMax) {
        done(false, `output over ${probeOutputBytesMax} bytes`);
        return;
      }
      output += chunk.toString('utf8');
    });
    child.on('error', (error: NodeJS.ErrnoException) => done(false, error.code ?? error.message));
    child.on('close', (code, signal) => {
      if (signal !== null) done(false, `killed by ${signal}`);
      else done(code === 0, `exit ${code}`);
    });
  });
}

/** Runs one probe; resolves (never rejects) within about `timeoutMs`. */
export function runProbe(probe: Probe, timeoutMs: number): Promise<ProbeResult> {
  switch (probe.type) {
    case 'tcp':
      return tcpProbe(probe, timeoutMs);
    case 'http':
      return httpProbe(probe, timeoutMs);
    case 'exec':
      return execProbe(probe, timeoutMs);
  }
}

/**
 * The weight an agent's answer reports: the first number in it, 0..100 (`75`, `75%`,
 * `weight=75`), or undefined when it holds none or one out of range.
 */
export function parseReportedWeight(text: string): number | undefined {
  const match = /(\d{1,3})(?:\.\d+)?\s*%?/.exec(text);
  if (match === null) return undefined;
  const weight = Number(match[1]);
  return weight <= 100 ? weight : undefined;
}
