import { defineConfig } from 'vitest/config';

/**
 * Test files that build a lab or touch the machine's kernel state under the lab test lock
 * (`acquireLabTestLock` in src/lab/lock.ts, directly or through test/support/lab-cluster.ts).
 * They share the kernel and measure wall-clock timing, so they run one at a time, each in a
 * process of its own. test/vitest-projects.test.ts checks that none is missing.
 */
export const labTestFiles = [
  'test/lab-*.test.ts',
  'test/cli-verbs-lab.test.ts',
  'test/daemon-lab.test.ts',
  'test/daemon-lifecycle-lab.test.ts',
  'test/dataplane-kernel.test.ts',
  'test/dataplane-kernel-nft.test.ts',
  'test/dataplane-heal-kernel.test.ts',
  'test/transport-contract.test.ts',
  'test/dataplane-render-routed.test.ts',
  'test/routed-net-netns.test.ts',
  'test/routed-segment-netns.test.ts',
];

/**
 * Files that need a process of their own although they build no lab: their code changes
 * process-wide state that a worker thread may not touch (`process.umask` in the control
 * server's listen). They run in the lab files' chain.
 */
export const ownProcessTestFiles = ['test/daemon-control.test.ts', 'test/cli-verbs.test.ts'];

const serialFiles = [...labTestFiles, ...ownProcessTestFiles];

export default defineConfig({
  test: {
    // Builds dist/ once, so the CLI's smoke tests and the lab run the real `nlb` and `nlbd`.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two pools that run side by side. The `serial` files run one after another, a child
    // process each (the lab test lock would serialise the lab files anyway, but a process
    // waiting for it would hold a worker that another file could use). The `parallel` files
    // are pure and run in worker threads beside that chain, one thread per core left over
    // (vitest's default, cores - 1: one on a 2-core machine, where the lab chain is the longest
    // path and a second CPU-bound thread would only slow the lab down). `--maxWorkers` raises
    // it, as `npm run test:long` does for the simulator's seeds.
    poolOptions: { forks: { maxForks: 1, minForks: 1 } },
    projects: [
      {
        extends: true,
        test: { name: 'serial', include: serialFiles, pool: 'forks' },
      },
      {
        extends: true,
        test: {
          name: 'parallel',
          include: ['test/**/*.test.ts'],
          exclude: serialFiles,
          pool: 'threads',
        },
      },
    ],
  },
});
