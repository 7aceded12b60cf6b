#!/usr/bin/env node
// The `nlb` command. Everything but the list of verbs lives in program.ts.
import { packageVersion } from '../node/package-info.js';
import { commands } from './commands/index.js';
import { runCli } from './program.js';

// `nlb map ... | head` closes stdout early; that is the reader's choice, not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') {
    process.exit(0);
  }
  throw error;
});

process.exitCode = await runCli(
  commands,
  process.argv.slice(2),
  { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin },
  packageVersion(),
);
