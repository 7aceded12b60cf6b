// Operator commands (start, stop, drainstop, rule states, reload, suspend, resume) and the
// driver's link reports. Part of the host machine (host.ts).
import { type Config } from './config.js';
import { type RuleState, clusterIdOf, configDigestOf } from './heartbeat.js';
import { type Command, type CommandReply } from './protocol.js';
import {
  type MachineState,
  type DeadClaim,
  type AdminState,
  hex,
  ownLoadWeight,
  ruleDigestOf,
} from './host-state.js';
import { checkCompatible } from './host-keepout.js';
import { rejoin } from './host-peers.js';
import { connectionsCounted } from './routed-forward.js';

export function command(s: MachineState, now: number, command: Command): CommandReply {
  if (command.verb === 'link') return link(s, now, command.up, command.silentSinceMs);
  // The service's reports are facts about this host, not operator commands: taken in any state.
  if (command.verb === 'health')
    return setHealth(s, now, command.rule, command.healthy, command.detail);
  if (command.verb === 'weight') return setReportedWeight(s, now, command.rule, command.weight);
  if (s.adminState === 'suspended' && command.verb !== 'resume') {
    return {
      code: 'suspended',
      message: 'the host is suspended: only resume (and query) are accepted',
    };
  }
  switch (command.verb) {
    case 'start':
      if (s.adminState === 'started') return { code: 'already', message: 'already started' };
      setAdmin(s, now, 'started');
      return { code: 'ok', message: 'started' };
    case 'stop':
      if (s.adminState === 'stopped') return { code: 'already', message: 'already stopped' };
      setAdmin(s, now, 'stopped');
      return { code: 'ok', message: 'stopped: existing connections were dropped' };
    case 'drainstop':
      if (s.adminState === 'stopped') return { code: 'already', message: 'already stopped' };
      if (s.adminState === 'draining') return { code: 'already', message: 'already draining' };
      setAdmin(s, now, 'draining');
      return {
        code: 'ok',
        message: 'draining: no new connections; stops when the existing ones end',
      };
    case 'connectionsHeld':
      return connectionsCounted(s, command.countedAtMs, command.buckets);
    case 'connectionsEnded':
      if (s.adminState !== 'draining') return { code: 'already', message: 'not draining' };
      s.emit(now, 'drain completed', { host: s.hostId });
      setAdmin(s, now, 'stopped');
      return { code: 'ok', message: 'drain completed: stopped' };
    case 'suspend':
      setAdmin(s, now, 'suspended');
      return { code: 'ok', message: 'suspended: every command but resume is ignored' };
    case 'resume':
      if (s.adminState !== 'suspended') return { code: 'already', message: 'not suspended' };
      setAdmin(s, now, 'stopped');
      return { code: 'ok', message: 'resumed: the host is stopped; use start to take traffic' };
    case 'enable':
    case 'disable':
    case 'drain':
      return setRuleStates(s, now, command.verb, command.rules);
    case 'reload':
      return reload(s, now, command.config);
  }
}

/** A health check's verdict for one rule. */
function setHealth(
  s: MachineState,
  now: number,
  rule: number,
  healthy: boolean,
  detail: string,
): CommandReply {
  if (rule < 0 || rule >= s.ruleHealth.length) {
    return { code: 'not found', message: `no port rule ${rule}` };
  }
  if (s.ruleHealth[rule] === healthy) {
    return {
      code: 'already',
      message: `rule ${rule} already ${healthy ? 'healthy' : 'unhealthy'}`,
    };
  }
  s.ruleHealth[rule] = healthy;
  s.emit(now, healthy ? 'service healthy' : 'service unhealthy', { rule, detail });
  s.convergingReason = `rule ${rule} ${healthy ? 'healthy' : 'unhealthy'} on host ${s.hostId}`;
  return { code: 'ok', message: `rule ${rule} ${healthy ? 'healthy' : 'unhealthy'}` };
}

/** A load weight the rule's service reported (or null: the config's again). */
function setReportedWeight(
  s: MachineState,
  now: number,
  rule: number,
  weight: number | null,
): CommandReply {
  if (rule < 0 || rule >= s.reportedWeights.length) {
    return { code: 'not found', message: `no port rule ${rule}` };
  }
  if (weight !== null && !(Number.isInteger(weight) && weight >= 0 && weight <= 100)) {
    return { code: 'refused', message: `a load weight is 0..100, not ${weight}` };
  }
  const previous = ownLoadWeight(s, rule);
  s.reportedWeights[rule] = weight ?? undefined;
  const current = ownLoadWeight(s, rule);
  if (current === previous) {
    return { code: 'already', message: `rule ${rule} already weighs ${current}` };
  }
  s.emit(now, 'weight reported', { rule, weight: current, previous });
  s.convergingReason = `rule ${rule} weight ${previous} -> ${current} on host ${s.hostId}`;
  return { code: 'ok', message: `rule ${rule} weight ${current}` };
}

/** enable, disable or drain port rules (by index). */
export function setRuleStates(
  s: MachineState,
  now: number,
  verb: 'enable' | 'disable' | 'drain',
  rules: readonly number[],
): CommandReply {
  const wanted: RuleState =
    verb === 'enable' ? 'enabled' : verb === 'disable' ? 'disabled' : 'draining';
  const bad = rules.filter((r) => r < 0 || r >= s.ruleStates.length);
  if (bad.length > 0 || rules.length === 0) {
    return { code: 'not found', message: `no port rule ${bad.join(', ')}` };
  }
  const changing = rules.filter((r) => s.ruleStates[r] !== wanted);
  if (changing.length === 0) return { code: 'already', message: `already ${wanted}` };
  for (const r of changing) {
    s.ruleStates[r] = wanted;
    if (wanted === 'enabled') s.emit(now, 'rule enabled', { rule: r });
    else if (wanted === 'disabled') s.emit(now, 'rule disabled', { rule: r });
    else s.emit(now, 'rule drained', { rule: r });
    if (wanted === 'disabled') {
      // Disable drops the rule's existing connections too (drain does not).
      s.flush.push({
        rule: r,
        buckets: Array.from({ length: s.config.cluster.portRules[r]!.buckets }, (_, b) => b),
      });
    }
  }
  s.convergingReason = `rule(s) ${changing.join(', ')} ${wanted}`;
  return { code: 'ok', message: `rule(s) ${changing.join(', ')} ${wanted}` };
}

export function link(
  s: MachineState,
  now: number,
  up: boolean,
  silentSinceMs: number | undefined,
): CommandReply {
  if (!up) {
    if (s.linkDownSinceMs !== undefined) return { code: 'already', message: 'link already down' };
    s.linkDownSinceMs = Math.min(now, silentSinceMs ?? now);
    s.emit(now, 'link down', { interface: s.config.cluster.interface });
    for (const owned of s.owned) owned.clear();
    for (const orphans of s.orphans) orphans.clear();
    s.convergingReason = 'link down';
    return { code: 'ok', message: 'link down: taking no buckets until it is back' };
  }
  if (s.linkDownSinceMs === undefined) return { code: 'already', message: 'link already up' };
  const downMs = now - s.linkDownSinceMs;
  s.linkDownSinceMs = undefined;
  s.emit(now, 'link up', { interface: s.config.cluster.interface, downMs });
  s.convergingReason = 'link up';
  if (downMs >= s.deadAfterMs) {
    // The peers declared this host dead meanwhile and reset its clients: its old connections
    // are gone for them, so it drops them before it takes buckets again.
    rejoin(s, now, { afterLinkDownMs: downMs });
  }
  return { code: 'ok', message: 'link up: rejoining' };
}

export function reload(s: MachineState, now: number, config: Config): CommandReply {
  if (config.host.id !== s.hostId) {
    s.emit(now, 'config rejected', { reason: 'host.id cannot change on reload' });
    return {
      code: 'refused',
      message: 'host.id cannot change on reload; restart nlbd to change it',
    };
  }
  const digest = configDigestOf(config);
  const clusterChanged = hex(digest) !== hex(s.configDigest);
  const previousRuleCount = s.config.cluster.portRules.length;
  s.config = config;
  s.clusterId = clusterIdOf(config.cluster.name);
  s.configDigest = digest;
  s.ruleDigests = config.cluster.portRules.map(ruleDigestOf);
  const ruleCount = config.cluster.portRules.length;
  if (clusterChanged) {
    // Buckets of the old rules mean nothing under the new ones: start the rules afresh. The
    // kernel keeps established connections; new flows wait for the new map.
    if (ruleCount !== previousRuleCount) {
      s.ruleStates = Array.from({ length: ruleCount }, () => 'enabled' as RuleState);
      s.ruleHealth = Array.from({ length: ruleCount }, () => true);
      s.reportedWeights = Array.from({ length: ruleCount }, (): number | undefined => undefined);
      s.failingOpen = Array.from({ length: ruleCount }, () => false);
    }
    s.owned = Array.from({ length: ruleCount }, () => new Set<number>());
    s.orphans = Array.from({ length: ruleCount }, () => new Map<number, DeadClaim>());
    s.deadClaims = Array.from({ length: ruleCount }, () => new Map<number, DeadClaim>());
    s.releasedClaims = Array.from({ length: ruleCount }, () => new Map<number, DeadClaim>());
    s.held = Array.from({ length: ruleCount }, () => new Map<number, number>());
    s.heldBase = Array.from({ length: ruleCount }, () => new Set<number>());
    s.targets = [];
    // Targets announced under the old rules cannot be compared with new ones: reports made
    // before now must meet the strict acknowledgement rule.
    s.announced = [];
    s.announcedFromSequence = s.sequence + 1;
  }
  for (const peer of s.peers.values()) {
    checkCompatible(s, now, peer);
  }
  s.emit(now, 'config reloaded', { clusterChanged });
  s.convergingReason = 'config reloaded';
  return {
    code: 'ok',
    message: clusterChanged ? 'config reloaded (cluster part changed)' : 'config reloaded',
  };
}

export function setAdmin(s: MachineState, now: number, state: AdminState): void {
  const previous = s.adminState;
  s.adminState = state;
  if (state === 'draining') s.emit(now, 'drain started', { host: s.hostId });
  if (state === 'started') {
    if (previous === 'suspended') s.emit(now, 'resumed', { incarnation: s.incarnation });
    else s.emit(now, 'started', { incarnation: s.incarnation });
  }
  if (state === 'stopped') {
    if (previous === 'suspended') s.emit(now, 'resumed', {});
    else s.emit(now, 'stopped', {});
  }
  if (state === 'suspended') s.emit(now, 'suspended', {});
  if (state === 'stopped' || state === 'suspended') {
    for (const owned of s.owned) owned.clear();
    for (const orphans of s.orphans) orphans.clear();
  }
  s.convergingReason = `host ${s.hostId} ${state}`;
}

/** The state a host starts in, as the first event (raised before the first step). */
export function reportInitialState(s: MachineState, now: number): void {
  switch (s.adminState) {
    case 'started':
      s.emit(now, 'started', { incarnation: s.incarnation });
      break;
    case 'stopped':
      s.emit(now, 'stopped', { incarnation: s.incarnation });
      break;
    case 'suspended':
      s.emit(now, 'suspended', { incarnation: s.incarnation });
      break;
    // No host starts draining (host.initialState is started, stopped or suspended).
  }
}
