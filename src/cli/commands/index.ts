// The verbs of `nlb`, in the order `nlb --help` lists them. A module of its own (main.ts runs
// the program when imported) so tests can build the same program in-process.
//
// To add a verb: create src/cli/commands/<verb>.ts exporting `register(program, ctx)` (see
// ip2mac.ts for the pattern), import it here, and add it to one of the lists below.
import type { CliCommand } from '../program.js';
import * as dashboard from './dashboard.js';
import * as demo from './demo.js';
import * as frrConfig from './frr-config.js';
import * as hostState from './host-state.js';
import * as inspect from './inspect.js';
import * as ip2mac from './ip2mac.js';
import * as lab from './lab.js';
import * as map from './map.js';
import * as portRules from './port-rules.js';
import * as query from './query.js';
import * as reload from './reload.js';
import * as simulate from './simulate.js';

/**
 * The verbs that ask nlbd (through src/control): one per control verb but `identity`. (`map`
 * predicts from scratch too, with --hosts.)
 */
// prettier-ignore
export const daemonCommands: readonly CliCommand[] = [
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
];

/** Every verb: the pure ones first, then the daemon's, then the tools. */
export const commands: readonly CliCommand[] = [
  ip2mac,
  frrConfig,
  ...daemonCommands,
  dashboard,
  lab,
  simulate,
  demo,
];
