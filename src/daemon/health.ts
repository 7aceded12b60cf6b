// The health and agent checks of the port rules (issue 14), run inside nlbd beside the protocol
// and never in its way: each check is its own timer loop with one probe in flight at most, each
// probe bounded by its timeout (probes.ts); a verdict that changes (fall/rise, core/health-verdict.ts)
// or a weight the agent's filter puts in force is reported to the host machine as a command
// ('health', 'weight'), which carries it to every peer in the heartbeat. A reload restarts the
// checks whose settings changed; a check removed reports the rule healthy and its weight back
// to the config's, so nothing stale stays in the map.
import type { AgentCheck, Config, HealthCheck, Probe } from '../core/config.js';
import {
  type Verdict,
  type WeightFilter,
  filterWeight,
  initialVerdict,
  initialWeightFilter,
  nextVerdict,
} from '../core/health-verdict.js';
import type { Command, CommandReply } from '../core/protocol.js';
import type { ProbeView, RuleHealthView } from '../control/protocol.js';
import { type ProbeResult, parseReportedWeight, runProbe } from './probes.js';

export type HealthCommand = Extract<Command, { verb: 'health' | 'weight' }>;

export function probeText(probe: Probe): string {
  switch (probe.type) {
    case 'tcp':
      return `tcp ${probe.address}:${probe.port}`;
    case 'http':
      return `http ${probe.address}:${probe.port}${probe.path}`;
    case 'exec':
      return `exec ${probe.command.join(' ')}`;
  }
}

function viewOf(result: ProbeResult | undefined, at: number): ProbeView | null {
  if (result === undefined) return null;
  return {
    ok: result.ok,
    detail: result.detail,
    latencyMs: Math.round(result.latencyMs * 10) / 10,
    at: new Date(at).toISOString(),
  };
}

/** A timer loop that runs `probe` every intervalMs, one at a time, until stopped. */
class Loop {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  last: ProbeResult | undefined;
  lastAt = 0;

  constructor(
    private readonly probe: Probe,
    private readonly intervalMs: number,
    private readonly timeoutMs: number,
    private readonly onResult: (result: ProbeResult) => void,
  ) {}

  start(): void {
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.run(), delayMs);
    this.timer.unref();
  }

  private async run(): Promise<void> {
    const started = Date.now();
    const result = await runProbe(this.probe, this.timeoutMs);
    if (this.stopped) return;
    this.last = result;
    this.lastAt = Date.now();
    this.onResult(result);
    // Every intervalMs from the start of the last probe; never two at once.
    this.schedule(Math.max(0, started + this.intervalMs - Date.now()));
  }
}

interface RuleChecks {
  readonly key: string;
  readonly health: HealthCheck | undefined;
  readonly agent: AgentCheck | undefined;
  verdict: Verdict;
  filter: WeightFilter;
  reading: number | null;
  healthLoop: Loop | undefined;
  agentLoop: Loop | undefined;
}

export class HealthChecks {
  private rules: RuleChecks[] = [];
  private running = false;

  constructor(
    private readonly report: (command: HealthCommand) => Promise<CommandReply>,
    private readonly onError: (error: unknown) => void = () => undefined,
  ) {}

  /** Starts the checks of `config` (once nlbd serves). */
  start(config: Config): void {
    this.running = true;
    this.apply(config);
  }

  /** After a reload: restarts the checks whose settings changed (nothing before `start`). */
  reload(config: Config): void {
    if (this.running) this.apply(config);
  }

  private apply(config: Config): void {
    const next = config.cluster.portRules.map((rule, r): RuleChecks => {
      const key = JSON.stringify([rule.health ?? null, rule.agent ?? null]);
      const current = this.rules[r];
      if (current?.key === key) return current;
      this.stopRule(r, current);
      const checks: RuleChecks = {
        key,
        health: rule.health,
        agent: rule.agent,
        verdict: initialVerdict,
        filter: initialWeightFilter,
        reading: null,
        healthLoop: undefined,
        agentLoop: undefined,
      };
      this.startRule(r, checks);
      return checks;
    });
    for (let r = next.length; r < this.rules.length; r++) this.stopRule(r, this.rules[r]);
    this.rules = next;
  }

  stop(): void {
    this.running = false;
    for (const checks of this.rules) {
      checks.healthLoop?.stop();
      checks.agentLoop?.stop();
    }
    this.rules = [];
  }

  views(): RuleHealthView[] {
    return this.rules.map((c, rule) => ({
      rule,
      check:
        c.health === undefined
          ? null
          : `${probeText(c.health.probe)} every ${c.health.intervalMs} ms, timeout ${c.health.timeoutMs} ms, fall ${c.health.fall}, rise ${c.health.rise}`,
      healthy: c.verdict.healthy,
      successes: c.verdict.successes,
      failures: c.verdict.failures,
      last: viewOf(c.healthLoop?.last, c.healthLoop?.lastAt ?? 0),
      agent:
        c.agent === undefined
          ? null
          : {
              check: `${probeText(c.agent.probe)} every ${c.agent.intervalMs} ms, hysteresis ${c.agent.hysteresis}, hold ${c.agent.holdMs} ms`,
              reading: c.reading,
              inForce: c.filter.inForce ?? null,
              last: viewOf(c.agentLoop?.last, c.agentLoop?.lastAt ?? 0),
            },
    }));
  }

  private send(command: HealthCommand): void {
    this.report(command).catch(this.onError);
  }

  /** A rule whose checks go away (or change) is healthy at the config's weight again. */
  private stopRule(rule: number, checks: RuleChecks | undefined): void {
    if (checks === undefined) return;
    checks.healthLoop?.stop();
    checks.agentLoop?.stop();
    if (!checks.verdict.healthy) {
      this.send({ verb: 'health', rule, healthy: true, detail: 'health check changed or removed' });
    }
    if (checks.filter.inForce !== undefined) this.send({ verb: 'weight', rule, weight: null });
  }

  private startRule(rule: number, checks: RuleChecks): void {
    const health = checks.health;
    if (health !== undefined) {
      checks.healthLoop = new Loop(health.probe, health.intervalMs, health.timeoutMs, (result) => {
        const before = checks.verdict.healthy;
        checks.verdict = nextVerdict(checks.verdict, result.ok, health.fall, health.rise);
        if (checks.verdict.healthy !== before) {
          this.send({
            verb: 'health',
            rule,
            healthy: checks.verdict.healthy,
            detail: result.detail,
          });
        }
      });
      checks.healthLoop.start();
    }
    const agent = checks.agent;
    if (agent !== undefined) {
      checks.agentLoop = new Loop(agent.probe, agent.intervalMs, agent.timeoutMs, (result) => {
        const weight = result.ok ? parseReportedWeight(result.output) : undefined;
        checks.reading = weight ?? null;
        if (weight === undefined) return;
        const filtered = filterWeight(
          checks.filter,
          weight,
          Date.now(),
          agent.hysteresis,
          agent.holdMs,
        );
        checks.filter = filtered.filter;
        if (filtered.changed) this.send({ verb: 'weight', rule, weight });
      });
      checks.agentLoop.start();
    }
  }
}
