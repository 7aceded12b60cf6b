// `nlb map`'s model source: the hosts given with --hosts and their load weights (--weights),
// as the planner (src/core/predict.ts) takes them.
import { type Config, type HostRuleSettings, equalLoadWeight } from '../../core/config.js';
import type { PlannedHost } from '../../core/predict.js';
import { parseHostIdArgument } from '../arguments.js';
import { badArgument } from '../errors.js';

/** `1=50,2=equal` → host id → load weight (0..100). */
export function parseWeights(value: string): Map<number, number> {
  const weights = new Map<number, number>();
  for (const part of value.split(',')) {
    const match = /^\s*([^=\s]+)\s*=\s*(\S+)\s*$/.exec(part);
    if (match === null) {
      throw badArgument(
        '--weights',
        `'${part}' is not host=weight`,
        'write host=weight pairs separated by commas, e.g. --weights 1=50,2=30,3=equal',
      );
    }
    const id = parseHostIdArgument('--weights', match[1]!);
    const weightText = match[2]!;
    const weight =
      weightText === 'equal'
        ? equalLoadWeight
        : /^\d{1,3}$/.test(weightText) && Number(weightText) <= 100
          ? Number(weightText)
          : undefined;
    if (weight === undefined) {
      throw badArgument(
        '--weights',
        `host ${id}'s weight '${weightText}' is not a load weight`,
        "a load weight is 0..100 or 'equal' (50); 0 takes no new flows",
      );
    }
    if (weights.has(id)) {
      throw badArgument('--weights', `host ${id} is given twice`, 'give each host one weight');
    }
    weights.set(id, weight);
  }
  return weights;
}

/**
 * The live hosts: the config's own host keeps its per-rule settings; any other host gets load
 * weight 'equal' (50) and its host id as handling priority, which is what a host config that
 * sets neither would give. --weights replaces a host's load weight on every rule.
 */
export function plannedHosts(
  config: Config,
  hostIds: readonly number[],
  weights: ReadonlyMap<number, number>,
): PlannedHost[] {
  return [...hostIds]
    .sort((a, b) => a - b)
    .map((id) => {
      const own = id === config.host.id;
      const weight = weights.get(id);
      const rules: HostRuleSettings[] = config.cluster.portRules.map((_, i) => ({
        loadWeight: weight ?? (own ? config.host.rules[i]!.loadWeight : equalLoadWeight),
        handlingPriority: own ? config.host.rules[i]!.handlingPriority : id,
      }));
      return { id, rules };
    });
}
