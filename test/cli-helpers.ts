// Runs the built `nlb` (dist/cli/main.js, built by test/global-setup.ts) as a child process.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const nlbMain = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
export const repoRoot = fileURLToPath(new URL('..', import.meta.url));

export interface NlbRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly elapsedMs: number;
}

/** Runs `nlb ...args` from the repository root, feeding `stdin` if given; 30 s at most. */
export function runNlb(args: readonly string[], stdin?: string): Promise<NlbRun> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [nlbMain, ...args], {
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
