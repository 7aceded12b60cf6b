// The random plan: the seed picks a fault profile, the cluster, and every fault and its timing.
// Each fault kind is planned by a module of its own (node-faults.ts, intruders.ts,
// network-faults.ts, flap.ts); a profile is a menu of fault kinds with weights. The order of the
// generator's draws is part of every seed's meaning: changing it changes every stored seed.
import { convergenceBoundPeriods } from '../bounds.js';
import {
  type ClusterShape,
  type HostSettings,
  type RuleSet,
  defaultHostSettings,
  randomHostSettings,
} from '../cluster-config.js';
import { type LinkConditions, labLink } from '../network.js';
import { Prng } from '../prng.js';
import type { ScheduledAction, SimPlan } from '../types.js';
import { checkDelay, checkRange, round, sortSchedule, validateShape, warmupMs } from './common.js';
import { type RandomDraft, type SlotState, startDraft } from './draft.js';
import { planFlaps } from './flap.js';
import { planServiceFaults } from './service.js';
import { planIntruder } from './intruders.js';
import { planConditions, planCut, planLink, planPartition } from './network-faults.js';
import {
  planCrash,
  planDrainstop,
  planJoin,
  planRestart,
  planStart,
  planStop,
} from './node-faults.js';
import {
  type FaultProfile,
  type PlanOptions,
  faultProfiles,
  hostsMaxSim,
  hostsMin,
} from './options.js';

/**
 * Mostly small clusters, where most bugs show and runs are cheap; now and then up to 32. The
 * protocol costs a host step per heartbeat copy, and a cluster's cold start sends O(N²)
 * heartbeats, so one 30-host run costs as much as a few hundred 3-host runs: the weights keep a
 * 1,000-seed run near a minute on two cores while every size still turns up (about 2 runs in
 * 1,000 have 17 hosts or more, 23 have 9 to 16; `npm run test:long` runs ten times as many).
 */
export function drawHosts(prng: Prng): number {
  const band = prng.weighted<[number, number]>([
    [[2, 4], 730],
    [[5, 8], 245],
    [[9, 16], 23],
    [[17, 32], 2],
  ]);
  return prng.int(band[0], band[1]);
}

const faultPlanners = {
  crash: planCrash,
  restart: planRestart,
  join: planJoin,
  stop: planStop,
  start: planStart,
  drainstop: planDrainstop,
  duplicate: (draft: RandomDraft, at: number) => planIntruder(draft, at, 'duplicate'),
  mismatch: (draft: RandomDraft, at: number) => planIntruder(draft, at, 'mismatch'),
  partition: planPartition,
  cut: planCut,
  link: planLink,
  conditions: planConditions,
} as const;
type FaultKind = keyof typeof faultPlanners;

const nodeEvents = ['crash', 'restart', 'join', 'stop', 'start', 'drainstop'] as const;
/** Each profile's faults and their weights; `flap` plans its bursts itself (flap.ts). */
const menu: Record<
  Exclude<FaultProfile, 'flap' | 'service'>,
  readonly (readonly [FaultKind, number])[]
> = {
  calm: nodeEvents.map((e) => [e, 1] as const),
  lossy: [['conditions', 4], ['link', 2], ...nodeEvents.map((e) => [e, 0.5] as const)],
  partitions: [
    ['partition', 4],
    ['cut', 2],
    ['link', 1],
    ...nodeEvents.map((e) => [e, 0.3] as const),
  ],
  churn: [...nodeEvents.map((e) => [e, 1] as const), ['duplicate', 0.7], ['mismatch', 0.7]],
  chaos: [
    ...nodeEvents.map((e) => [e, 1] as const),
    ['duplicate', 0.5],
    ['mismatch', 0.5],
    ['partition', 1.5],
    ['cut', 1],
    ['conditions', 2],
    ['link', 1],
  ],
};

/** The random plan: the seed picks the profile, the cluster, and every fault and its timing. */
export function randomPlan(options: PlanOptions): SimPlan {
  const prng = new Prng(options.seed);
  const profile: FaultProfile =
    options.profile ?? prng.weighted(faultProfiles.map((p) => [p, 1] as const));
  const hosts = options.hosts ?? drawHosts(prng);
  checkRange('hosts', hosts, hostsMin, hostsMaxSim, 'random');
  const ruleSet: RuleSet = options.ruleSet ?? (prng.chance(0.3) ? 'extended' : 'basic');
  const shape: ClusterShape = {
    periodMs: options.periodMs ?? prng.pick([50, 100, 200, 200, 1000]),
    tolerance: options.tolerance ?? prng.int(3, 6),
    ruleSet,
  };
  validateShape(shape);
  const P = shape.periodMs;
  const settings: HostSettings[] = prng.chance(0.5)
    ? randomHostSettings(hosts, ruleSet, prng)
    : Array.from({ length: hosts }, (_, i) => defaultHostSettings(i + 1, ruleSet));
  // Delays stay under a quarter period in total, whatever faults add (checked below).
  const budgetMs = P / 4;
  const base: LinkConditions = options.conditions ?? {
    ...labLink,
    delayMs: round(prng.float(0.05, Math.min(2, budgetMs / 8))),
    jitterMs: round(prng.float(0, Math.min(5, budgetMs / 8))),
  };
  const spares = profile === 'churn' || profile === 'chaos' ? 2 : 0;
  const boots = drawInitialBoots(prng, profile, hosts, P);
  // Chaos may strike while the cluster is still forming; the others start from a converged one.
  const start = profile === 'chaos' ? round(prng.float(0, warmupMs(shape))) : warmupMs(shape);
  // Large clusters get shorter fault windows: their cost is in forming and re-forming.
  const windowMs = (hosts > 8 ? prng.int(4, 10) : prng.int(6, 20)) * P;
  const end = start + windowMs;
  const eventCount = drawEventCount(prng, profile);
  const times = Array.from({ length: eventCount }, () => round(prng.float(start, end))).sort(
    (a, b) => a - b,
  );
  const draft = startDraft({
    prng,
    profile,
    hosts,
    spares,
    shape,
    base,
    budgetMs,
    end,
    ...boots,
  });
  if (profile === 'flap') {
    planFlaps(draft, times);
  } else if (profile === 'service') {
    planServiceFaults(draft, times);
  } else {
    for (const at of times) {
      faultPlanners[prng.weighted(menu[profile])](draft, at);
    }
  }
  return finishRandomPlan(draft, options, settings);
}

/** The first boots: every host, except that some join later (or never) in calm, churn, chaos. */
function drawInitialBoots(
  prng: Prng,
  profile: FaultProfile,
  hosts: number,
  periodMs: number,
): { schedule: ScheduledAction[]; state: SlotState[]; activeSince: number[] } {
  const schedule: ScheduledAction[] = [];
  const state: SlotState[] = Array.from({ length: hosts }, () => 'new');
  const activeSince: number[] = Array.from({ length: hosts }, () => Infinity);
  const bootLate = profile === 'calm' || profile === 'churn' || profile === 'chaos';
  for (let id = 1; id <= hosts; id++) {
    if (bootLate && hosts > 1 && prng.chance(0.15)) continue; // Joins later, or never.
    const atMs = round(prng.float(0, periodMs));
    schedule.push({ atMs, action: { do: 'boot', slot: id - 1, hostId: id, initial: true } });
    state[id - 1] = 'member';
    activeSince[id - 1] = atMs;
  }
  if (!state.includes('member')) {
    schedule.push({ atMs: 0, action: { do: 'boot', slot: 0, hostId: 1, initial: true } });
    state[0] = 'member';
    activeSince[0] = 0;
  }
  return { schedule, state, activeSince };
}

/** How many faults (flap: bursts) the window holds. */
function drawEventCount(prng: Prng, profile: FaultProfile): number {
  // Every profile's count is drawn, in this order, whichever profile applies: the seeds stored
  // in tests and notes depend on these six draws.
  const counts: Record<(typeof faultProfiles)[number], number> = {
    calm: prng.int(1, 3),
    lossy: prng.int(2, 5),
    partitions: prng.int(1, 4),
    churn: prng.int(3, 10),
    chaos: prng.int(3, 10),
    flap: prng.int(2, 5),
  };
  // Drawn after the six, so that they stay as they were.
  return profile === 'service' ? prng.int(3, 8) : counts[profile];
}

/** Everything heals at the end of the window: I3's clock starts at the last action. */
function finishRandomPlan(
  draft: RandomDraft,
  options: PlanOptions,
  settings: readonly HostSettings[],
): SimPlan {
  const { schedule, end, base, shape } = draft;
  const P = shape.periodMs;
  schedule.push({ atMs: end, action: { do: 'heal' } });
  for (const link of draft.modifiedLinks) {
    const [from, to] = link.split('>').map(Number) as [number, number];
    schedule.push({ atMs: end, action: { do: 'link', from, to, conditions: undefined } });
  }
  schedule.push({
    atMs: end,
    action: { do: 'conditions', conditions: base, label: 'link conditions restored' },
  });
  const sorted = sortSchedule(schedule);
  for (const { action } of sorted) {
    if (action.do === 'conditions') checkDelay(action.conditions, P);
    if (action.do === 'link' && action.conditions !== undefined) checkDelay(action.conditions, P);
  }
  const quiet = Math.max(...sorted.map((s) => s.atMs));
  const boundMs = convergenceBoundPeriods(shape.tolerance) * P;
  return {
    seed: options.seed,
    profile: draft.profile,
    hosts: draft.hosts,
    slots: draft.slots,
    shape,
    settings,
    conditions: base,
    schedule: sorted,
    durationMs: options.durationMs ?? quiet + boundMs + 3 * P,
    quietAtMs:
      options.durationMs !== undefined && options.durationMs < quiet + boundMs ? undefined : quiet,
  };
}
