// The lab's generated host configs (src/lab/host-config.ts): the backend checks, at the full
// rate in small labs and slower in proportion in large ones, whose hosts all share the
// machine's cores; every rendered config passes the real parser (renderHostConfig checks).
import { describe, expect, it } from 'vitest';
import {
  labAgentCheck,
  labChecksFor,
  labHealthCheck,
  renderHostConfig,
} from '../src/lab/host-config.js';

const settings = {
  labName: 'cfg',
  keyFile: '/run/nlb/labs/cfg/cluster.key',
  mode: 'unicast',
  affinity: 'none',
  health: true,
} as const;

function checksOf(hostCount: number | undefined, health = true) {
  const rule = renderHostConfig({ ...settings, health, hostCount }, 1).config.cluster.portRules[0]!;
  return { health: rule.health, agent: rule.agent };
}

describe('lab host config: backend checks', () => {
  it('checks at the full rate up to 8 hosts', () => {
    for (const hosts of [undefined, 1, 3, 8]) {
      const { health, agent } = checksOf(hosts);
      expect(health).toMatchObject({ intervalMs: 500, timeoutMs: 400, fall: 2, rise: 2 });
      expect(agent).toMatchObject({ intervalMs: 500, timeoutMs: 400, holdMs: 1_000 });
    }
    expect(labChecksFor(8)).toEqual({ health: labHealthCheck, agent: labAgentCheck });
  });

  it('slows the checks down in proportion in larger labs', () => {
    expect(checksOf(9).health).toMatchObject({ intervalMs: 1_000, timeoutMs: 800 });
    const { health, agent } = checksOf(32);
    expect(health).toMatchObject({ intervalMs: 2_000, timeoutMs: 1_600, fall: 2 });
    expect(health?.probe).toMatchObject({ path: '/health' });
    expect(agent).toMatchObject({ intervalMs: 2_000, timeoutMs: 1_600, holdMs: 4_000 });
    expect(agent?.probe).toMatchObject({ path: '/weight' });
  });

  it('has no checks when asked for none', () => {
    expect(checksOf(32, false)).toEqual({ health: undefined, agent: undefined });
  });
});
