// The simulator's entry point: `runSimulation(options)` builds the plan the seed and scenario
// describe and runs it. See src/sim/README.md for the invariants and the bounds.
import { buildPlan, type PlanOptions } from './scenarios.js';
import { runPlan, type RunOptions } from './simulator.js';
import type { SimResult } from './types.js';

export type SimulationOptions = PlanOptions & RunOptions;

export function runSimulation(options: SimulationOptions): SimResult {
  return runPlan(buildPlan(options), options);
}

export { convergenceBoundPeriods, convergenceSlackPeriods } from './bounds.js';
export { fakeHostFactory } from './fake-host.js';
export { defaultHostFactory } from './default-host.js';
export {
  buildPlan,
  drawHosts,
  faultProfiles,
  namedOnlyProfiles,
  randomPlan,
  scenarioKinds,
} from './scenarios.js';
export type { FaultProfile, PlanOptions, ScenarioKind } from './scenarios.js';
export { formatFailure, runPlan } from './simulator.js';
export type { RunOptions } from './simulator.js';
export type * from './types.js';
