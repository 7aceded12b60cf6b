// Runs the load generator where it must run: inside a client namespace of a lab, as its own
// process (`ip netns exec nlb-<lab>-c<J> node dist/lab/loadgen-main.js …`), and reads its JSON
// lines back into the same records `runLoadgen` returns in-process.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { LabError, type LabRef, loadLab, loadgenMainPath, targetNamespace } from './lab.js';
import type {
  ConnectionRecord,
  HoldRecord,
  LoadgenHooks,
  LoadgenOptions,
  LoadgenSummary,
} from './loadgen.js';

/** The loadgen stops by itself; this margin only catches a process that hangs after its bound. */
const exitMarginMs = 10_000;

export type ClientLoadgenOptions = Omit<LoadgenOptions, 'keepConnections'>;

function argvFor(options: ClientLoadgenOptions): string[] {
  const argv = [
    '--rate',
    String(options.ratePerSecond),
    '--count',
    String(options.countMax),
    '--duration-ms',
    String(options.durationMs),
    '--connections',
  ];
  const optional: Array<[string, number | string | undefined]> = [
    ['--target', options.target],
    ['--port', options.port],
    ['--timeout-ms', options.timeoutMs],
    ['--concurrency', options.concurrencyMax],
    ['--holds', options.holds],
    ['--ping-interval-ms', options.holdPingIntervalMs],
    ['--ping-timeout-ms', options.holdPingTimeoutMs],
    ['--progress-ms', options.progressIntervalMs],
    ['--source', options.sources?.join(',')],
  ];
  for (const [flag, value] of optional) {
    if (value !== undefined && value !== '') {
      argv.push(flag, String(value));
    }
  }
  return argv;
}

/**
 * Runs one loadgen in client `client` ('c1', or its index) of the lab and returns its summary
 * with every connection record. `options.signal` stops it early (SIGTERM; it still summarises).
 */
export async function runLoadgenInClient(
  lab: LabRef,
  client: string | number,
  options: ClientLoadgenOptions,
  hooks: LoadgenHooks = {},
): Promise<LoadgenSummary & { connections: ConnectionRecord[] }> {
  if (!existsSync(loadgenMainPath)) {
    throw new LabError(
      'not-built',
      `${loadgenMainPath} does not exist`,
      'build first: `npm run build`',
    );
  }
  const state = loadLab(lab);
  const namespace = targetNamespace(state, typeof client === 'number' ? `c${client}` : client);
  const child = spawn(
    'ip',
    ['netns', 'exec', namespace, process.execPath, loadgenMainPath, ...argvFor(options)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const onAbort = (): void => {
    child.kill('SIGTERM');
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const hardStop = setTimeout(
    () => child.kill('SIGKILL'),
    options.durationMs + (options.timeoutMs ?? 3_000) + exitMarginMs,
  );

  const connections: ConnectionRecord[] = [];
  let summary: LoadgenSummary | undefined;
  let failure: string | undefined;
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4096);
  });
  const lines = createInterface({ input: child.stdout });
  lines.on('line', (line) => {
    let record: { type?: string; message?: string };
    try {
      record = JSON.parse(line) as { type?: string };
    } catch {
      return;
    }
    switch (record.type) {
      case 'connection':
        connections.push(record as ConnectionRecord);
        hooks.onConnection?.(record as ConnectionRecord);
        break;
      case 'progress':
        hooks.onProgress?.(record as never);
        break;
      case 'hold-break':
        hooks.onHoldBreak?.(record as unknown as HoldRecord);
        break;
      case 'summary':
        summary = record as LoadgenSummary;
        break;
      case 'error':
        failure = record.message;
        break;
    }
  });
  const exitCode = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  clearTimeout(hardStop);
  options.signal?.removeEventListener('abort', onAbort);
  if (summary === undefined) {
    throw new LabError(
      'process-failed',
      `loadgen in ${namespace} ended without a summary (exit ${String(exitCode)}): ${failure ?? stderr.trim()}`,
    );
  }
  return { ...summary, connections };
}
