import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Builds dist/ once, so CLI tests run the real `nlb` binary.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Lab tests share the machine's kernel; they serialise themselves through a lock,
    // the rest are pure and run in parallel.
    pool: 'forks',
  },
});
