// The named scenarios (`nlb simulate --scenario crash|join|…`): a converged cluster, then one
// change to one host chosen by the seed, then enough time for I3's bound to pass.
import { heartbeatPeriodMsDefault, heartbeatToleranceDefault } from '../../core/config.js';
import { convergenceBoundPeriods } from '../bounds.js';
import {
  type ClusterShape,
  buildConfig,
  configDocument,
  defaultHostSettings,
} from '../cluster-config.js';
import { type LinkConditions, labLink } from '../network.js';
import { Prng } from '../prng.js';
import type { ScheduledAction, SimPlan } from '../types.js';
import { checkDelay, checkRange, sortSchedule, validateShape, warmupMs } from './common.js';
import { type PlanOptions, type ScenarioKind, hostsMaxSim, hostsMin } from './options.js';

export function namedPlan(options: PlanOptions): SimPlan {
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
  const { quiet, slots } = scheduleChange(options.scenario, {
    prng,
    hosts,
    shape,
    subject,
    t0,
    boundMs,
    schedule,
  });
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

interface NamedChange {
  readonly prng: Prng;
  readonly hosts: number;
  readonly shape: ClusterShape;
  /** The host the scenario changes, drawn from the seed. */
  readonly subject: number;
  /** When the change happens: the cluster has formed by then. */
  readonly t0: number;
  readonly boundMs: number;
  readonly schedule: ScheduledAction[];
}

/**
 * Adds the scenario's change to the schedule; returns when the last of it happens (I3's clock
 * starts there) and how many machine slots the run needs (an intruder takes one more).
 */
function scheduleChange(
  scenario: ScenarioKind,
  change: NamedChange,
): { quiet: number; slots: number } {
  const { prng, hosts, shape, subject, t0, boundMs, schedule } = change;
  const P = shape.periodMs;
  const slot = subject - 1;
  let quiet = t0;
  let slots = hosts;
  switch (scenario) {
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
  return { quiet, slots };
}
