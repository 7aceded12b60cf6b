// Two ways to run `nlb` in a test. `runNlbInProcess` calls `runCli` in this process with captured
// streams: the same parsing, handlers, rendering and exit codes as the binary, without starting a
// node process per call (a start costs about as much as a whole verb). `runNlb` runs the built
// binary (dist/cli/main.js, built by test/global-setup.ts) as a user would; the CLI's smoke tests
// use it, and so do the verbs that end on a signal (`events --follow`) or install signal handlers
// (`lab up`).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { commands } from '../src/cli/commands/index.js';
import { runCli } from '../src/cli/program.js';

export const nlbMain = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
export const repoRoot = fileURLToPath(new URL('..', import.meta.url));

export interface NlbRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly elapsedMs: number;
}

const version = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

/** A stream that keeps what is written to it, as the pipe to a spawned `nlb` would. */
class Capture extends Writable {
  private readonly chunks: Buffer[] = [];

  override _write(chunk: Buffer | string, _encoding: string, done: () => void): void {
    this.chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    done();
  }

  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

/**
 * Runs `nlb ...args` in this process through `runCli`, with `stdin` (a pipe, not a terminal)
 * holding the given text or nothing, as `runNlb` would. Relative paths resolve against the
 * working directory, which vitest sets to the repository root, as `runNlb` does.
 */
export async function runNlbInProcess(args: readonly string[], stdin?: string): Promise<NlbRun> {
  if (withoutSlash(process.cwd()) !== withoutSlash(repoRoot)) {
    throw new Error(
      `runNlbInProcess resolves paths from the repository root, not ${process.cwd()}`,
    );
  }
  const started = performance.now();
  const stdout = new Capture();
  const stderr = new Capture();
  const input = Readable.from(stdin === undefined ? [] : [Buffer.from(stdin)]);
  const code = await runCli(commands, args, { stdout, stderr, stdin: input }, version);
  return {
    code,
    stdout: stdout.text(),
    stderr: stderr.text(),
    elapsedMs: performance.now() - started,
  };
}

function withoutSlash(dir: string): string {
  return dir.endsWith('/') ? dir.slice(0, -1) : dir;
}

/** Runs the built `nlb ...args` from the repository root, feeding `stdin` if given; 30 s at most. */
export function runNlb(args: readonly string[], stdin?: string): Promise<NlbRun> {
  return runBuilt([process.execPath, nlbMain, ...args], stdin);
}

/** Runs the built `nlb ...args` inside a lab's network namespace (e.g. the client's, for remote control). */
export function runNlbIn(namespace: string, args: readonly string[]): Promise<NlbRun> {
  return runBuilt(['ip', 'netns', 'exec', namespace, process.execPath, nlbMain, ...args]);
}

function runBuilt(command: readonly string[], stdin?: string): Promise<NlbRun> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command[0]!, command.slice(1), {
      cwd: repoRoot,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 30_000,
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({
        code,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
        elapsedMs: performance.now() - started,
      }),
    );
    child.stdin.end(stdin ?? '');
  });
}
