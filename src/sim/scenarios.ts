// Plans: what happens in a run, and when. The named scenarios (`nlb simulate --scenario ...`)
// change one thing in a converged cluster; `random` lets the seed choose a fault profile and
// draw a whole fault schedule from it. A plan is a pure function of its options and seed.
import { heartbeatPeriodMsDefault, heartbeatToleranceDefault } from '../core/config.js';
import {
  type ClusterShape,
  type HostSettings,
  type RuleSet,
  buildConfig,
  configDocument,
  defaultHostSettings,
  randomHostSettings,
  ruleCount,
} from './cluster-config.js';
import { type LinkConditions, labLink, maxOneWayDelayMs } from './network.js';
import { Prng, normaliseSeed } from './prng.js';
import { convergenceBoundPeriods } from './bounds.js';
import type { Command } from '../core/protocol.js';
import type { ScheduledAction, SimAction, SimPlan } from './types.js';

export const scenarioKinds = [
  'crash',
  'join',
  'leave',
  'drainstop',
  'partition',
  'loss',
  'restart',
  'duplicate-id',
  'config-mismatch',
  'steady',
  'random',
] as const;
export type ScenarioKind = (typeof scenarioKinds)[number];

export const faultProfiles = ['calm', 'lossy', 'partitions', 'churn', 'chaos', 'flap'] as const;
export type FaultProfile = (typeof faultProfiles)[number];

export interface PlanOptions {
  readonly seed: number;
  readonly scenario: ScenarioKind;
  /** 1..32; `random` draws it from the seed when absent (most runs small). */
  readonly hosts?: number;
  readonly periodMs?: number;
  readonly tolerance?: number;
  /** Run length; by default long enough for the scenario and I3's bound. */
  readonly durationMs?: number;
  /** Heartbeat loss for `loss` (default 5%); also added to any other named scenario. */
  readonly lossRate?: number;
  readonly ruleSet?: RuleSet;
  /** Link conditions without faults (default: the lab's measured path). */
  readonly conditions?: LinkConditions;
  /** Forces the fault profile of a `random` plan. */
  readonly profile?: FaultProfile;
  /**
   * Adds replayed heartbeats to the plan (see `withReplays`): `anytime`, or `settled`, only
   * outside the detection window after each boot of or command to the target (where a replay
   * may still make a host that just started wait, and nothing else).
   */
  readonly replays?: 'anytime' | 'settled';
}

export const hostsMin = 1;
export const hostsMaxSim = 32;

function checkRange(
  name: string,
  value: number,
  low: number,
  high: number,
  scenario: string,
): void {
  if (!(Number.isInteger(value) && value >= low && value <= high)) {
    throw new Error(`the ${scenario} scenario needs ${name} from ${low} to ${high}, got ${value}`);
  }
}

export function buildPlan(options: PlanOptions): SimPlan {
  const seed = normaliseSeed(options.seed);
  const plan =
    options.scenario === 'random'
      ? randomPlan({ ...options, seed })
      : namedPlan({ ...options, seed });
  return options.replays === undefined ? plan : withReplays(plan, options.replays);
}

/**
 * The plan with replayed heartbeats added: about one replay action per two periods, each of 1
 * to 8 recorded heartbeats to one slot. Drawn from a generator of its own, so the rest of the
 * plan is exactly the plan without replays (a run with and one without can be compared).
 * `settled` keeps each replay out of the window after a boot of or command to its target.
 */
export function withReplays(plan: SimPlan, when: 'anytime' | 'settled'): SimPlan {
  const prng = new Prng((plan.seed ^ 0x5eed_4e4c) >>> 0);
  const P = plan.shape.periodMs;
  const quietAfterMs = (plan.shape.tolerance + 2) * P;
  const busy = new Map<number, number[]>();
  for (const { atMs, action } of plan.schedule) {
    if (action.do === 'boot' || action.do === 'command') {
      busy.set(action.slot, [...(busy.get(action.slot) ?? []), atMs]);
    }
  }
  const replays: ScheduledAction[] = [];
  const count = Math.floor(plan.durationMs / (2 * P));
  for (let i = 0; i < count; i++) {
    const atMs = prng.float(0, plan.durationMs);
    const slot = prng.int(0, plan.slots - 1);
    if (
      when === 'settled' &&
      (busy.get(slot) ?? []).some((t) => atMs >= t && atMs < t + quietAfterMs)
    ) {
      continue;
    }
    replays.push({
      atMs,
      action: { do: 'replay', slot, count: prng.int(1, 8), pick: prng.nextU32() },
    });
  }
  const schedule = [...plan.schedule, ...replays].sort((a, b) => a.atMs - b.atMs);
  return { ...plan, schedule };
}

/** Time for a cold cluster to form: boot stagger, then I3's bound, then two periods of calm. */
function warmupMs(shape: ClusterShape): number {
  return (convergenceBoundPeriods(shape.tolerance) + 3) * shape.periodMs;
}

function namedPlan(options: PlanOptions): SimPlan {
  const prng = new Prng(options.seed);
  const hosts = options.hosts ?? 4;
  checkRange(
    'hosts',
    hosts,
    options.scenario === 'partition' ? 2 : hostsMin,
    options.scenario === 'config-mismatch' ? hostsMaxSim - 1 : hostsMaxSim,
    options.scenario,
  );
  const shape: ClusterShape = {
    periodMs: options.periodMs ?? heartbeatPeriodMsDefault,
    tolerance: options.tolerance ?? heartbeatToleranceDefault,
    ruleSet: options.ruleSet ?? 'basic',
  };
  validateShape(shape);
  const P = shape.periodMs;
  const boundMs = convergenceBoundPeriods(shape.tolerance) * P;
  const lossRate = options.lossRate ?? (options.scenario === 'loss' ? 0.05 : 0);
  const conditions: LinkConditions = { ...(options.conditions ?? labLink), lossRate };
  checkDelay(conditions, P);
  const settings = Array.from({ length: hosts }, (_, i) =>
    defaultHostSettings(i + 1, shape.ruleSet),
  );
  const schedule: ScheduledAction[] = [];
  const subject = prng.int(1, hosts);
  const late = options.scenario === 'join' ? subject : undefined;
  for (let id = 1; id <= hosts; id++) {
    if (id !== late) {
      schedule.push({
        atMs: prng.float(0, P / 2),
        action: { do: 'boot', slot: id - 1, hostId: id, initial: true },
      });
    }
  }
  const t0 = Math.round(warmupMs(shape));
  const slot = subject - 1;
  let quiet = t0;
  let slots = hosts;
  switch (options.scenario) {
    case 'crash':
    case 'loss':
      schedule.push({ atMs: t0, action: { do: 'crash', slot } });
      break;
    case 'join':
      schedule.push({ atMs: t0, action: { do: 'boot', slot, hostId: subject } });
      break;
    case 'leave':
      schedule.push({ atMs: t0, action: { do: 'command', slot, command: { verb: 'stop' } } });
      break;
    case 'drainstop': {
      schedule.push({ atMs: t0, action: { do: 'command', slot, command: { verb: 'drainstop' } } });
      // The last connection ends well after the buckets moved, so both steps are measured apart.
      quiet = t0 + boundMs;
      schedule.push({
        atMs: quiet,
        action: { do: 'command', slot, command: { verb: 'connectionsEnded' } },
      });
      break;
    }
    case 'partition': {
      const order = prng.shuffle(Array.from({ length: hosts }, (_, i) => i));
      const cut = prng.int(1, hosts - 1);
      schedule.push({
        atMs: t0,
        action: { do: 'partition', groups: [order.slice(0, cut), order.slice(cut)] },
      });
      quiet = t0 + boundMs + P;
      schedule.push({ atMs: quiet, action: { do: 'heal' } });
      break;
    }
    case 'restart':
      // Back with a new incarnation after two periods: before its peers declare it dead when
      // tolerance > 2, so they see the new incarnation replace the old one.
      schedule.push({ atMs: t0, action: { do: 'crash', slot } });
      quiet = t0 + 2 * P;
      schedule.push({ atMs: quiet, action: { do: 'boot', slot, hostId: subject } });
      break;
    case 'duplicate-id':
      // A second machine configured with a host id already in use; it stays to the end.
      slots = hosts + 1;
      schedule.push({
        atMs: t0,
        action: {
          do: 'boot',
          slot: hosts,
          hostId: subject,
          expect: 'out',
          reason: `duplicate of h${subject}`,
        },
      });
      break;
    case 'config-mismatch': {
      // A new host whose cluster part differs (tolerance); it stays to the end.
      slots = hosts + 1;
      const id = hosts + 1;
      const config = buildConfig(
        configDocument(
          { ...shape, tolerance: shape.tolerance + 1 },
          defaultHostSettings(id, shape.ruleSet),
        ),
      );
      schedule.push({
        atMs: t0,
        action: {
          do: 'boot',
          slot: hosts,
          hostId: id,
          config,
          expect: 'out',
          reason: 'different cluster config (tolerance)',
        },
      });
      break;
    }
    case 'steady':
      // Nothing happens: with loss, what is left to see is false detections.
      break;
    case 'random':
      throw new Error('unreachable');
  }
  const neededMs = quiet + boundMs + 3 * P;
  const durationMs = options.durationMs ?? neededMs;
  return {
    seed: options.seed,
    profile: options.scenario,
    hosts,
    slots,
    shape,
    settings,
    conditions,
    schedule: sortSchedule(schedule),
    durationMs,
    // I3 applies only when every fault heals and the run lasts past its bound.
    quietAtMs: lossRate > 0 || durationMs < quiet + boundMs ? undefined : quiet,
  };
}

function validateShape(shape: ClusterShape): void {
  // The config schema holds the real limits; building one config checks them with its messages.
  buildConfig(configDocument(shape, defaultHostSettings(1, shape.ruleSet)));
}

function checkDelay(conditions: LinkConditions, periodMs: number): void {
  const worst = maxOneWayDelayMs(conditions);
  if (worst > periodMs / 4) {
    throw new Error(
      `the largest one-way delay (${worst} ms) must stay under a quarter period (${periodMs / 4} ms): the timing bounds assume it`,
    );
  }
}

function sortSchedule(schedule: ScheduledAction[]): ScheduledAction[] {
  // Stable: actions at one instant keep the order they were planned in.
  return schedule
    .map((entry, i) => ({ entry, i }))
    .sort((a, b) => a.entry.atMs - b.entry.atMs || a.i - b.i)
    .map(({ entry }) => entry);
}

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

type SlotState = 'new' | 'down' | 'member' | 'off' | 'draining';

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
  const T = shape.tolerance;
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
  const slots = hosts + spares;
  const schedule: ScheduledAction[] = [];
  const state: SlotState[] = Array.from({ length: hosts }, () => 'new');
  /** When each slot's host last began to take part (boot or start), to pick settled anchors. */
  const activeSince: number[] = Array.from({ length: hosts }, () => Infinity);
  const bootLate = profile === 'calm' || profile === 'churn' || profile === 'chaos';
  for (let id = 1; id <= hosts; id++) {
    if (bootLate && hosts > 1 && prng.chance(0.15)) continue; // Joins later, or never.
    const atMs = round(prng.float(0, P));
    schedule.push({ atMs, action: { do: 'boot', slot: id - 1, hostId: id, initial: true } });
    state[id - 1] = 'member';
    activeSince[id - 1] = atMs;
  }
  if (!state.includes('member')) {
    schedule.push({ atMs: 0, action: { do: 'boot', slot: 0, hostId: 1, initial: true } });
    state[0] = 'member';
    activeSince[0] = 0;
  }
  // Chaos may strike while the cluster is still forming; the others start from a converged one.
  const start = profile === 'chaos' ? round(prng.float(0, warmupMs(shape))) : warmupMs(shape);
  // Large clusters get shorter fault windows: their cost is in forming and re-forming.
  const windowMs = (hosts > 8 ? prng.int(4, 10) : prng.int(6, 20)) * P;
  const end = start + windowMs;
  const eventCount = {
    calm: prng.int(1, 3),
    lossy: prng.int(2, 5),
    partitions: prng.int(1, 4),
    churn: prng.int(3, 10),
    chaos: prng.int(3, 10),
    flap: prng.int(2, 5),
  }[profile];
  const times = Array.from({ length: eventCount }, () => round(prng.float(start, end))).sort(
    (a, b) => a - b,
  );

  const nodeEvents = ['crash', 'restart', 'join', 'stop', 'start', 'drainstop'] as const;
  const menu: Record<FaultProfile, readonly (readonly [string, number])[]> = {
    calm: nodeEvents.map((e) => [e, 1] as const),
    lossy: [['conditions', 4], ['link', 2], ...nodeEvents.map((e) => [e, 0.5] as const)],
    partitions: [
      ['partition', 4],
      ['cut', 2],
      ['link', 1],
      ...nodeEvents.map((e) => [e, 0.3] as const),
    ],
    churn: [...nodeEvents.map((e) => [e, 1] as const), ['duplicate', 0.7], ['mismatch', 0.7]],
    flap: [],
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
  let partitionedUntil = -1;
  const modifiedLinks = new Set<string>();
  let sparesUsed = 0;
  const pinnedUntil = new Map<number, number>();
  // A slot is free for a fault once its host has booted (chaos strikes while the cluster forms,
  // before some initial boots: seed 7755 crashed a host before its boot, then "rejoined" it
  // while it ran) and no earlier fault pinned it.
  const free = (slot: number, at: number): boolean =>
    (pinnedUntil.get(slot) ?? -1) < at && activeSince[slot]! <= at;
  const slotsIn = (...wanted: SlotState[]): number[] =>
    state.flatMap((s, slot) => (wanted.includes(s) ? [slot] : []));

  if (profile === 'flap') {
    planFlaps(prng, { times, shape, base, hosts, state, schedule, end, ruleSet });
  }
  for (const at of profile === 'flap' ? [] : times) {
    const kind = prng.weighted(menu[profile]);
    const add = (atMs: number, action: SimAction): void => {
      schedule.push({ atMs: Math.min(atMs, end), action });
    };
    const members = slotsIn('member').filter((s) => free(s, at));
    switch (kind) {
      case 'crash': {
        const candidates = slotsIn('member', 'off', 'draining').filter((s) => free(s, at));
        if (candidates.length === 0 || slotsIn('member').length <= 1) break;
        const slot = prng.pick(candidates);
        add(at, { do: 'crash', slot });
        state[slot] = 'down';
        break;
      }
      case 'restart': {
        // A crash now and the same host back with a new incarnation, before or after its
        // peers declared it dead.
        const candidates = slotsIn('member').filter((s) => free(s, at));
        if (candidates.length === 0) break;
        const slot = prng.pick(candidates);
        const bootAt = at + round(prng.float(0.2, 2 * T) * P);
        add(at, { do: 'crash', slot });
        add(bootAt, { do: 'boot', slot, hostId: slot + 1 });
        pinnedUntil.set(slot, at + 2 * T * P);
        activeSince[slot] = bootAt;
        break;
      }
      case 'join': {
        const candidates = slotsIn('new', 'down');
        if (candidates.length === 0) break;
        const slot = prng.pick(candidates);
        add(at, { do: 'boot', slot, hostId: slot + 1 });
        state[slot] = 'member';
        activeSince[slot] = at;
        break;
      }
      case 'stop':
        if (members.length <= 1) break;
        {
          const slot = prng.pick(members);
          add(at, { do: 'command', slot, command: { verb: 'stop' } });
          state[slot] = 'off';
        }
        break;
      case 'start': {
        const candidates = slotsIn('off').filter((s) => free(s, at));
        if (candidates.length === 0) break;
        const slot = prng.pick(candidates);
        add(at, { do: 'command', slot, command: { verb: 'start' } });
        state[slot] = 'member';
        activeSince[slot] = at;
        break;
      }
      case 'drainstop': {
        if (members.length <= 1) break;
        const slot = prng.pick(members);
        add(at, { do: 'command', slot, command: { verb: 'drainstop' } });
        const endedAt = at + round(prng.float(0.5, 3 * T) * P);
        add(endedAt, { do: 'command', slot, command: { verb: 'connectionsEnded' } });
        pinnedUntil.set(slot, endedAt);
        state[slot] = 'off';
        break;
      }
      case 'duplicate':
      case 'mismatch': {
        // An intruder meets a running cluster: at least one genuine member that has taken part
        // for two periods (it has spoken), kept running (not crashed, stopped or drained) while
        // the intruder is there. Without one, the intruder would be the cluster (or the first
        // to claim the id), and keeping it out would be wrong.
        const anchors = members.filter((s) => activeSince[s]! + 2 * P <= at);
        if (sparesUsed >= spares || anchors.length === 0) break;
        const slot = hosts + sparesUsed;
        const until = at + round(prng.float(2, 3 * T) * P);
        const anchor = prng.pick(anchors);
        if (kind === 'duplicate') {
          add(at, {
            do: 'boot',
            slot,
            hostId: anchor + 1,
            expect: 'out',
            reason: `duplicate of h${anchor + 1}`,
          });
        } else {
          const id = hosts + sparesUsed + 1;
          if (id > hostsMaxSim) break;
          const differs = { ...shape, tolerance: shape.tolerance + 1 };
          const config = buildConfig(configDocument(differs, defaultHostSettings(id, ruleSet)));
          add(at, {
            do: 'boot',
            slot,
            hostId: id,
            config,
            expect: 'out',
            reason: 'different cluster config (tolerance)',
          });
        }
        sparesUsed += 1;
        pinnedUntil.set(anchor, Math.max(until, pinnedUntil.get(anchor) ?? -1));
        add(until, { do: 'crash', slot });
        break;
      }
      case 'partition': {
        if (at < partitionedUntil || hosts < 2) break;
        const order = prng.shuffle(Array.from({ length: slots }, (_, i) => i));
        const groups = prng.int(2, Math.min(3, slots));
        const cuts = prng
          .shuffle(Array.from({ length: slots - 1 }, (_, i) => i + 1))
          .slice(0, groups - 1)
          .sort((a, b) => a - b);
        const parts: number[][] = [];
        let from = 0;
        for (const c of [...cuts, slots]) {
          parts.push(order.slice(from, c));
          from = c;
        }
        partitionedUntil = at + round(prng.float(1, 3 * T) * P);
        add(at, { do: 'partition', groups: parts });
        add(partitionedUntil, { do: 'heal' });
        break;
      }
      case 'cut': {
        if (at < partitionedUntil || hosts < 2) break;
        const a = prng.int(0, slots - 1);
        let b = prng.int(0, slots - 2);
        if (b >= a) b += 1;
        partitionedUntil = at + round(prng.float(1, 3 * T) * P);
        add(at, { do: 'cut', from: a, to: b });
        add(partitionedUntil, { do: 'heal' });
        break;
      }
      case 'link': {
        // One slow, lossy cable: its own delay, jitter and loss, in one direction.
        if (slots < 2) break;
        const room = budgetMs - maxOneWayDelayMs(base);
        const a = prng.int(0, slots - 1);
        let b = prng.int(0, slots - 2);
        if (b >= a) b += 1;
        const slow: LinkConditions = {
          ...base,
          delayMs: round(base.delayMs + Math.max(0, room / 2)),
          jitterMs: round(base.jitterMs + Math.max(0, room / 4)),
          lossRate: round(prng.pick([0, 0.05, 0.2, 0.5])),
        };
        add(at, { do: 'link', from: a, to: b, conditions: slow });
        add(at + round(prng.float(1, 4 * T) * P), {
          do: 'link',
          from: a,
          to: b,
          conditions: undefined,
        });
        modifiedLinks.add(`${a}>${b}`);
        break;
      }
      case 'conditions': {
        const room = budgetMs - maxOneWayDelayMs(base);
        const lossy: LinkConditions = {
          ...base,
          lossRate: round(prng.pick([0.01, 0.05, 0.1, 0.2, 0.3])),
          duplicateRate: prng.chance(0.5) ? round(prng.float(0, 0.1)) : 0,
          reorderRate: prng.chance(0.5) ? round(prng.float(0, 0.2)) : 0,
          reorderMs: round(Math.max(0, room / 4)),
          jitterMs: round(base.jitterMs + Math.max(0, room / 4)),
          corruptRate: profile === 'chaos' ? round(prng.float(0, 0.02)) : 0,
        };
        add(at, { do: 'conditions', conditions: lossy, label: 'faulty link conditions' });
        add(at + round(prng.float(1, 4 * T) * P), {
          do: 'conditions',
          conditions: base,
          label: 'link conditions restored',
        });
        break;
      }
    }
  }
  // Everything heals at the end of the window: I3's clock starts at the last action.
  schedule.push({ atMs: end, action: { do: 'heal' } });
  for (const link of modifiedLinks) {
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
  const boundMs = convergenceBoundPeriods(T) * P;
  return {
    seed: options.seed,
    profile,
    hosts,
    slots,
    shape,
    settings,
    conditions: base,
    schedule: sorted,
    durationMs: options.durationMs ?? quiet + boundMs + 3 * P,
    quietAtMs:
      options.durationMs !== undefined && options.durationMs < quiet + boundMs ? undefined : quiet,
  };
}

/**
 * The `flap` profile: bursts of changes that undo or contradict each other within a few one-way
 * delays (a stop and a start, a rule drained and enabled again, drainstops, link cuts that end
 * around the detection time), so that heartbeats of one target cross those of the next in flight
 * and targets come back (A -> B -> A). That is where agreement rules earn their keep: the
 * acknowledgement rule, generations, and release before acquire.
 */
function planFlaps(
  prng: Prng,
  plan: {
    times: readonly number[];
    shape: ClusterShape;
    base: LinkConditions;
    hosts: number;
    state: SlotState[];
    schedule: ScheduledAction[];
    end: number;
    ruleSet: RuleSet;
  },
): void {
  const { shape, base, hosts, state, schedule, end } = plan;
  const P = shape.periodMs;
  const T = shape.tolerance;
  const delayMs = maxOneWayDelayMs(base);
  const rules = ruleCount(plan.ruleSet);
  const add = (atMs: number, action: SimAction): void => {
    schedule.push({ atMs: round(Math.min(atMs, end)), action });
  };
  const command = (atMs: number, slot: number, c: Command): void =>
    add(atMs, { do: 'command', slot, command: c });
  let cutUntil = -1;
  for (const burst of plan.times) {
    const steps = prng.int(2, 4);
    for (let i = 0; i < steps; i++) {
      const at = burst + prng.float(0, 3 * delayMs);
      const again = at + prng.float(0, 2 * delayMs);
      const members = state.flatMap((s, slot) => (s === 'member' ? [slot] : []));
      const kind = prng.weighted<string>([
        ['stop-start', 2],
        ['rule', 3],
        ['rule-flap', 3],
        ['drainstop', 1],
        ['cut', hosts > 1 ? 1.5 : 0],
      ]);
      if (members.length === 0) break;
      const slot = prng.pick(members);
      switch (kind) {
        case 'stop-start':
          command(at, slot, { verb: 'stop' });
          command(again, slot, { verb: 'start' });
          break;
        case 'rule':
        case 'rule-flap': {
          const rule = prng.int(0, rules - 1);
          const verb = prng.pick(['drain', 'disable', 'enable'] as const);
          command(at, slot, { verb, rules: [rule] });
          if (kind === 'rule-flap') command(again, slot, { verb: 'enable', rules: [rule] });
          break;
        }
        case 'drainstop': {
          if (members.length <= 1) break;
          command(at, slot, { verb: 'drainstop' });
          // Sometimes started again before the drain completes (the drain is cancelled).
          if (prng.chance(0.5)) {
            command(again, slot, { verb: 'start' });
          } else {
            command(at + prng.float(0.5, 2 * T) * P, slot, { verb: 'connectionsEnded' });
            command(at + prng.float(2 * T, 3 * T) * P, slot, { verb: 'start' });
          }
          break;
        }
        case 'cut': {
          if (at < cutUntil) break;
          const other = prng.pick(
            Array.from({ length: hosts }, (_, s) => s).filter((s) => s !== slot),
          );
          // Around the detection time: sometimes just short of it, sometimes just past it.
          cutUntil = at + prng.float(T - 1, T + 1) * P;
          add(at, { do: 'cut', from: slot, to: other });
          add(at, { do: 'cut', from: other, to: slot });
          add(cutUntil, { do: 'heal' });
          break;
        }
      }
    }
  }
}

/** Times to 0.01 ms keep transcripts readable; the clock itself is exact. */
function round(value: number): number {
  return Math.round(value * 100) / 100;
}
