// Builds dist/ once before any test file runs (tsc, then nlbd's and the dashboard's bundles), so the CLI's smoke tests and the lab run the real
// `nlb` and `nlbd` as a user would (node dist/cli/main.js). tsc still writes its output when
// some file has type errors; those are reported by `npm run typecheck`, so here they only warn,
// and a test that needs the broken code fails on its own.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * Each vitest project (serial, parallel: see vitest.config.ts) runs its global setup, one after the
 * other in the main process; the first one builds and the others find it done.
 */
const builtKey = Symbol.for('nlb.test.distBuilt');

export default function setup(): void {
  const main = globalThis as { [builtKey]?: boolean };
  if (main[builtKey] === true) return;
  main[builtKey] = true;
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
  // nlbd in one file (dist/daemon/main.js) and the dashboard's page (dist/web/dashboard.js), as
  // `npm run build` makes them after tsc.
  execFileSync(process.execPath, ['scripts/build-daemon.mjs'], { stdio: 'pipe', encoding: 'utf8' });
  execFileSync(process.execPath, ['scripts/build-web.mjs'], { stdio: 'pipe', encoding: 'utf8' });
}
