#!/usr/bin/env node
// The `nlb` command. Everything but the list of verbs lives in program.ts.
import { readFileSync } from 'node:fs';
import { runCli, type CliCommand } from './program.js';
import * as demo from './commands/demo.js';
import * as hostState from './commands/host-state.js';
import * as inspect from './commands/inspect.js';
import * as ip2mac from './commands/ip2mac.js';
import * as lab from './commands/lab.js';
import * as map from './commands/map.js';
import * as portRules from './commands/port-rules.js';
import * as query from './commands/query.js';
import * as reload from './commands/reload.js';
import * as simulate from './commands/simulate.js';

// ─── The verbs ─────────────────────────────────────────────────────────────────────────────
// To add a verb: create src/cli/commands/<verb>.ts exporting `register(program, ctx)` (see
// ip2mac.ts for the pattern), import it above, and add it here. `nlb --help` lists the verbs
// in this order.
// prettier-ignore
const commands: readonly CliCommand[] = [
  ip2mac,
  map,
  query,
  hostState.start,
  hostState.stop,
  hostState.drainstopVerb,
  hostState.suspend,
  hostState.resume,
  portRules.enable,
  portRules.disable,
  portRules.drain,
  portRules.queryportVerb,
  inspect.paramsVerb,
  inspect.displayVerb,
  inspect.eventsVerb,
  inspect.metricsVerb,
  reload.reloadVerb,
  lab,
  simulate,
  demo,
];
// ────────────────────────────────────────────────────────────────────────────────────────────

function packageVersion(): string {
  // dist/cli/main.js and src/cli/main.ts both sit two levels below package.json.
  const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

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
