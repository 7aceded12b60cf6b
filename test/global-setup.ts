// Builds dist/ once before any test file runs, so the CLI tests run the real `nlb` binary as a
// user would (node dist/cli/main.js). tsc still writes its output when some file has type
// errors; those are reported by `npm run typecheck`, so here they only warn, and a test that
// needs the broken code fails on its own.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

export default function setup(): void {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], {
      stdio: 'pipe',
      encoding: 'utf8',
    });
  } catch (error) {
    const output = (error as { stdout?: string }).stdout ?? String(error);
    if (!existsSync('dist/cli/main.js')) {
      throw new Error(`npm run build failed and produced no dist/cli/main.js:\n${output}`, {
        cause: error,
      });
    }
    console.warn(`global-setup: tsc reported errors (dist/ was still written):\n${output}`);
  }
}
