// Takes docs/dashboard.png: runs the demo with its dashboard (`nlb demo --dashboard`, as root),
// opens the page in Debian's chromium and takes a picture a few seconds into the crash phase,
// when host 2 is dead, its buckets recoloured to hosts 1 and 3, and the load's connections show
// in the grid. Then stops the demo (which tears its lab down).
//
//   npm run build && npx vite-node scripts/dashboard-screenshot.ts [out.png]
//
// It holds the lab test lock while it runs, so it never shares the machine with a lab test.
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { acquireLabTestLock } from '../src/lab/lock.js';
import { buildPage, openDashboard, startDashboardProcess } from '../test/support/dashboard-page.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const out = path.resolve(process.argv[2] ?? path.join(repoRoot, 'docs/dashboard.png'));
/** Into the crash phase: detection (1 s), the takeover, then a few seconds of load. */
const afterCrashMs = 3_500;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo needs root to build its lab');
  const release = await acquireLabTestLock();
  buildPage();
  let crashedAt: number | undefined;
  const demo = await startDashboardProcess(
    ['demo', '--dashboard', '127.0.0.1:0', '--phase-seconds', '10'],
    (line) => {
      process.stderr.write(`demo: ${line}\n`);
      if (line.includes('phase 2:')) crashedAt = Date.now();
    },
  );
  try {
    const open = await openDashboard(demo.url, 1400, 1250);
    try {
      while (crashedAt === undefined || Date.now() - crashedAt < afterCrashMs) {
        if (demo.child.exitCode !== null) throw new Error('the demo ended before the crash phase');
        await sleep(100);
      }
      await open.page.screenshot({ path: out });
      process.stderr.write(`screenshot: ${out}\n`);
      if (open.errors.length > 0)
        throw new Error(`the page logged errors: ${open.errors.join('; ')}`);
    } finally {
      await open.close();
    }
  } finally {
    await demo.stop();
    release();
  }
}

await main();
