// Plans: what happens in a run, and when. The named scenarios (`nlb simulate --scenario ...`)
// change one thing in a converged cluster (plans/named.ts); `random` lets the seed choose a
// fault profile and draw a whole fault schedule from it (plans/random.ts). A plan is a pure
// function of its options and seed.
import { normaliseSeed } from './prng.js';
import { namedPlan } from './plans/named.js';
import type { PlanOptions } from './plans/options.js';
import { randomPlan } from './plans/random.js';
import { withReplays } from './plans/replays.js';
import type { SimPlan } from './types.js';

export {
  type FaultProfile,
  type PlanOptions,
  type ScenarioKind,
  faultProfiles,
  namedOnlyProfiles,
  hostsMaxSim,
  hostsMin,
  scenarioKinds,
} from './plans/options.js';
export { drawHosts, randomPlan } from './plans/random.js';
export { withReplays } from './plans/replays.js';

export function buildPlan(options: PlanOptions): SimPlan {
  const seed = normaliseSeed(options.seed);
  const plan =
    options.scenario === 'random'
      ? randomPlan({ ...options, seed })
      : namedPlan({ ...options, seed });
  return options.replays === undefined ? plan : withReplays(plan, options.replays);
}
