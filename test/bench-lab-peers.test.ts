// The lab benchmark's peers (issue 11 item 8): the kernel directors' nftables text, the ratios
// of the cluster to each peer, and the lab's opt-in second port rule for the UDP comparison.
import { describe, expect, it } from 'vitest';
import { directorNftScript } from '../bench/lab/ipvs.js';
import { type ProxyRun, summarize } from '../bench/lab/throughput.js';
import { renderHostConfig } from '../src/lab/host-config.js';

const backends = ['198.18.0.11', '198.18.0.12', '198.18.0.13'];

function run(
  round: number,
  kind: ProxyRun['kind'],
  requestsPerSecond: number,
  p99: number,
): ProxyRun {
  return {
    round,
    kind,
    target: 'x',
    requestsPerSecond,
    completed: requestsPerSecond,
    failed: 0,
    failures: {},
    perHost: {},
    latencyP50Ms: p99 / 2,
    latencyP99Ms: p99,
  };
}

describe('kernel directors', () => {
  it('renders the DNAT round robin and the masquerade toward the backends', () => {
    expect(directorNftScript('198.18.0.203', backends, true)).toBe(
      [
        'table ip nlb_bench_director {',
        '  chain balance {',
        '    type nat hook prerouting priority dstnat; policy accept;',
        '    ip daddr 198.18.0.203 tcp dport 81 dnat to numgen inc mod 3 map { 0 : 198.18.0.11, 1 : 198.18.0.12, 2 : 198.18.0.13 }:80',
        '  }',
        '  chain masquerade_to_backends {',
        '    type nat hook postrouting priority srcnat; policy accept;',
        '    ip daddr { 198.18.0.11, 198.18.0.12, 198.18.0.13 } tcp dport 80 masquerade',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    expect(directorNftScript('198.18.0.203', backends, false)).not.toContain('dnat');
  });

  it('gives the cluster ratio to each peer per round, and the median of the rounds', () => {
    const runs = [
      run(1, 'cluster', 1000, 10),
      run(1, 'haproxy-tcp', 800, 20),
      run(1, 'haproxy-http', 500, 30),
      run(1, 'ipvs', 1250, 8),
      run(2, 'cluster', 1100, 12),
      run(2, 'haproxy-tcp', 1000, 22),
      run(2, 'ipvs', 1000, 9),
    ];
    const s = summarize(runs, 2);
    expect(s.roundRatios).toEqual([1.25, 1.1]);
    expect(s.ratio).toBe(1.175);
    expect(s.roundRatiosIpvs).toEqual([0.8, 1.1]);
    expect(s.ratioIpvs).toBe(0.95);
    expect(s.roundRatiosNft).toEqual([]);
    expect(s.ratioNft).toBeNull();
    expect(s.medianRequestsPerSecond.ipvs).toBe(1125);
    expect(s.medianLatencyP99Ms.cluster).toBe(11);
  });
});

describe('the lab config for the UDP comparison', () => {
  const settings = {
    labName: 'udp',
    keyFile: '/tmp/k',
    mode: 'unicast',
    affinity: 'none',
  } as const;

  it('has one port rule unless a second is asked for', () => {
    expect(renderHostConfig(settings, 1).config.cluster.portRules).toHaveLength(1);
  });

  it('adds a TCP and UDP rule on the asked port, after the HTTP rule', () => {
    const rules = renderHostConfig({ ...settings, extraRulePort: 5201 }, 1).config.cluster
      .portRules;
    expect(rules).toHaveLength(2);
    expect(rules[1]).toMatchObject({
      portStart: 5201,
      portEnd: 5201,
      protocol: 'both',
      affinity: 'none',
    });
  });
});
