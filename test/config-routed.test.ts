// Routed mode's BGP settings in the config (cluster.routed, host.routed; docs/routed.md) and
// `nlb frr-config`, which writes a host's FRR files from them. The cluster part (the AS and the
// timers) is the same on every host, the peers are this host's routers; both sections or neither,
// each bad value refused with its path and the fix; the cluster's identity does not change.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { clusterDigestHex, parseConfig } from '../src/core/config.js';
import { renderHostFrr } from '../src/routed/frr-config.js';
import { hostFrrSettingsOf } from '../src/routed/host-settings.js';
import { runNlbInProcess } from './cli-helpers.js';

const example = 'examples/routed/host1.yaml';
const text = readFileSync(example, 'utf8');
const clusterRouted = `  routed:
    as: 65001
    timers: { keepaliveS: 1, holdS: 3 }
    bfd: { intervalMs: 100, multiplier: 3 }
    # How a host sends a packet to its bucket's owner: VXLAN on UDP 4789 (the defaults). A
    # connection that moved keeps its previous owner for up to secondChanceMs (default 2 min).
    forward: vxlan
    vxlanPort: 4789
    secondChanceMs: 120000
`;
const routedMode = '  mode: routed\n';
const hostRouted = `  routed:
    peers:
      - { address: 198.18.1.1, as: 65000 }
`;

function errorsOf(document: string): string[] {
  const result = parseConfig(document);
  expect(result.ok).toBe(false);
  return result.ok ? [] : result.errors.map((e) => `${e.path}: ${e.message}`);
}

describe('config: routed mode settings', () => {
  it('takes the example, fills in the defaults; the BGP timers are not in the identity', () => {
    expect(text).toContain(clusterRouted);
    expect(text).toContain(hostRouted);
    const result = parseConfig(text);
    if (!result.ok) expect.fail(JSON.stringify(result.errors));
    expect(result.config.cluster.routed).toEqual({
      as: 65001,
      timers: { keepaliveS: 1, holdS: 3 },
      bfd: { intervalMs: 100, multiplier: 3 },
      forward: 'vxlan',
      vxlanPort: 4789,
      secondChanceMs: 120_000,
    });
    expect(result.config.cluster.mode).toBe('routed');
    expect(result.config.host.routed).toEqual({ peers: [{ address: '198.18.1.1', as: 65000 }] });
    const defaults = parseConfig(text.replace(clusterRouted, '  routed: { as: 65001 }\n'));
    expect(defaults.ok && defaults.config.cluster.routed).toEqual(result.config.cluster.routed);
    // Hosts may move to new BGP timers one at a time, or keep a second chance of their own...
    const timers = parseConfig(
      text.replace(
        clusterRouted,
        '  routed: { as: 65001, timers: { keepaliveS: 2, holdS: 6 }, secondChanceMs: 1000 }\n',
      ),
    );
    if (!timers.ok) expect.fail(JSON.stringify(timers.errors));
    expect(clusterDigestHex(timers.config.cluster)).toBe(clusterDigestHex(result.config.cluster));
    // ...but every host must forward on the same VXLAN port.
    const port = parseConfig(text.replace('vxlanPort: 4789', 'vxlanPort: 4790'));
    if (!port.ok) expect.fail(JSON.stringify(port.errors));
    expect(clusterDigestHex(port.config.cluster)).not.toBe(clusterDigestHex(result.config.cluster));
    // The FRR settings alone (another mode) are accepted too: `nlb frr-config` takes them.
    const unicast = parseConfig(text.replace(routedMode, ''));
    if (!unicast.ok) expect.fail(JSON.stringify(unicast.errors));
    const plain = parseConfig(
      text.replace(clusterRouted, '').replace(hostRouted, '').replace(routedMode, ''),
    );
    if (!plain.ok) expect.fail(JSON.stringify(plain.errors));
    expect(plain.config.cluster.routed).toBeUndefined();
    expect(clusterDigestHex(plain.config.cluster)).toBe(clusterDigestHex(unicast.config.cluster));
  });

  it('refuses one section without the other, and every bad value, with its path', () => {
    expect(errorsOf(text.replace(hostRouted, ''))).toEqual([
      "host.routed: missing; cluster.routed needs this host's BGP peers, e.g. host.routed.peers: [{ address: 198.18.1.1, as: 65000 }] (its router on its own link)",
    ]);
    expect(errorsOf(text.replace(clusterRouted, ''))[0]).toMatch(
      /^cluster\.routed: missing; host\.routed needs the cluster's BGP settings/,
    );
    const withCluster = (routed: string) => text.replace(clusterRouted, `  routed: ${routed}\n`);
    expect(errorsOf(withCluster('{ as: 0 }'))[0]).toMatch(
      /^cluster\.routed\.as: an AS number is an integer from 1 to 4294967295 \(0 is reserved\)/,
    );
    expect(errorsOf(withCluster('{ as: 4294967296 }'))[0]).toMatch(/^cluster\.routed\.as: /);
    expect(errorsOf(withCluster('{ as: 65001, bfd: { intervalMs: 0 } }'))).toEqual([
      "cluster.routed.bfd.intervalMs: expected whole milliseconds from 10 to 60000 (bfdd's range), e.g. 100",
    ]);
    expect(errorsOf(withCluster('{ as: 65001, timers: { keepaliveS: 3 } }'))[0]).toMatch(
      /^cluster\.routed\.timers\.keepaliveS: expected whole seconds from 1 to a third of the hold time \(1\)/,
    );
    expect(errorsOf(withCluster('{ as: 65001, asn: 1 }'))[0]).toMatch(
      /^cluster\.routed: unknown key\(s\) 'asn'/,
    );
    const withPeer = (peer: string) =>
      text.replace(hostRouted, `  routed:\n    peers:\n      - ${peer}\n`);
    expect(errorsOf(withPeer('{ address: 224.0.0.5, as: 65000 }'))).toEqual([
      'host.routed.peers[0].address: a multicast address (224.0.0.0/4): it names a group of receivers, not a host',
    ]);
    expect(errorsOf(withPeer('{ address: 2001:db8::1, as: 65000 }'))[0]).toMatch(
      /^host\.routed\.peers\[0\]\.address: expected an IPv4 unicast address/,
    );
    expect(errorsOf(text.replace('    peers:\n      - ', '    peers: []\n      # '))).toEqual([
      'host.routed.peers: expected 1 to 64 BGP peers',
    ]);
    expect(
      errorsOf(
        text.replace('clusterIps: [198.18.0.100]', 'clusterIps: [198.18.0.100, 2001:db8::100]'),
      ),
    ).toContain(
      'cluster.routed: routed mode announces IPv4 cluster IPs only for now: remove the IPv6 cluster IPs, or cluster.routed',
    );
  });

  it('refuses routed mode without what it needs, with the fix', () => {
    expect(errorsOf(text.replace(clusterRouted, '').replace(hostRouted, ''))).toEqual([
      "cluster.routed: missing; cluster.mode routed announces the cluster IPs over BGP: add cluster.routed: { as: 65001 } and this host's routers as host.routed.peers",
    ]);
    expect(
      errorsOf(
        text.replace('    peers: [198.18.1.2, 198.18.2.2, 198.18.3.2]\n', '    port: 2504\n'),
      ),
    ).toEqual([
      "cluster.heartbeat.peers: missing; in routed mode heartbeats go by unicast (multicast does not cross routers): list every host's dedicated IP, the same list on every host",
    ]);
    // Hosts on one segment forward without encapsulation (routed-segment.ts): accepted when
    // every peer is on this host's subnet, refused with the fix when one is not.
    const oneSegment = text
      .replace('forward: vxlan', 'forward: segment')
      .replace('[198.18.1.2, 198.18.2.2, 198.18.3.2]', '[198.18.1.2, 198.18.1.3, 198.18.1.4]');
    const segment = parseConfig(oneSegment);
    expect(segment.ok && segment.config.cluster.routed?.forward).toBe('segment');
    expect(errorsOf(text.replace('forward: vxlan', 'forward: segment'))).toEqual([
      "cluster.heartbeat.peers: forward: segment sends a forwarded packet straight to its peer's MAC on this host's link, but 198.18.2.2, 198.18.3.2 are outside this host's subnet (host.dedicatedIp 198.18.1.2/24): use forward: vxlan for hosts in different subnets, or fix the dedicated IP's prefix length",
    ]);
    expect(
      parseConfig(oneSegment.replace('dedicatedIp: 198.18.1.2/24', 'dedicatedIp: 198.18.1.2/30'))
        .ok,
    ).toBe(false);
    expect(errorsOf(text.replace('forward: vxlan', 'forward: gre'))[0]).toMatch(
      /^cluster\.routed\.forward: /,
    );
    expect(
      errorsOf(text.replace('clusterIps: [198.18.0.100]', 'clusterIps: [2001:db8::100]')),
    ).toContain(
      'cluster.routed: routed mode announces IPv4 cluster IPs only for now: remove the IPv6 cluster IPs, or cluster.routed',
    );
  });

  it('counts the held bitmap in the heartbeat size: rules that fit one datagram elsewhere may not', () => {
    const rules = `  portRules:
${[1, 2, 3, 4].map((i) => `    - { vip: 198.18.0.100, ports: ${8000 + i}, protocol: tcp, buckets: 1024 }`).join('\n')}
`;
    const big = text.replace(/ {2}portRules:\n( {4}.*\n)+/, rules);
    expect(big).toContain('buckets: 1024');
    expect(errorsOf(big)).toEqual([
      'cluster.portRules: the heartbeat would be 1582 bytes, over the 1400-byte datagram limit (each rule costs 9 bytes plus two bits per bucket in routed mode); use fewer buckets or fewer port rules',
    ]);
    // The same rules without routed mode carry one bitmap each: 1,070 bytes.
    const unicast = big.replace(routedMode, '').replace(clusterRouted, '').replace(hostRouted, '');
    const result = parseConfig(unicast);
    if (!result.ok) expect.fail(JSON.stringify(result.errors));
    expect(result.config.cluster.portRules).toHaveLength(4);
  });
});

describe('nlb frr-config', () => {
  it("prints the host's files, the same as renderHostFrr from the config", async () => {
    const parsed = parseConfig(text);
    if (!parsed.ok) expect.fail('the example does not parse');
    const expected = renderHostFrr(hostFrrSettingsOf(parsed.config)!);
    if (!expected.ok) expect.fail('the example does not render');
    const run = await runNlbInProcess(['frr-config', '--config', example, '--json']);
    expect(run.code).toBe(0);
    const data = JSON.parse(run.stdout) as {
      dir: null;
      files: { name: string; path: null; text: string }[];
      markerRoute: string;
    };
    expect(data.dir).toBeNull();
    expect(data.markerRoute).toBe('<cluster-ip>/32 dev lo proto 250');
    expect(data.files).toEqual([
      { name: 'zebra.conf', path: null, text: expected.files.zebra },
      { name: 'bfdd.conf', path: null, text: expected.files.bfdd },
      { name: 'bgpd.conf', path: null, text: expected.files.bgpd },
    ]);
    expect(expected.files.bgpd).toContain(' bgp router-id 198.18.1.2\n');
    expect(expected.files.bgpd).toContain('hostname routed-h1\n');
    const human = await runNlbInProcess(['frr-config', '--config', example]);
    expect(human.stdout).toContain(`! ---- bgpd.conf ----\n${expected.files.bgpd}`);
  });

  it('writes them to --dir, readable by the frr user FRR drops to', async () => {
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'nlb-frr-')), 'frr');
    try {
      const run = await runNlbInProcess(['frr-config', '--config', example, '--dir', dir]);
      expect(run.code).toBe(0);
      for (const name of ['zebra.conf', 'bfdd.conf', 'bgpd.conf']) {
        expect(run.stdout).toContain(path.join(dir, name));
        expect(statSync(path.join(dir, name)).mode & 0o777).toBe(0o644);
      }
      expect(readFileSync(path.join(dir, 'bfdd.conf'), 'utf8')).toContain(
        '  receive-interval 100\n',
      );
    } finally {
      rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  });

  it('refuses a config without routed settings, with exit code 2 and the fix', async () => {
    const run = await runNlbInProcess(['frr-config', '--config', 'examples/minimal.yaml']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/has no routed mode settings \(cluster\.routed, host\.routed\)/);
    expect(run.stderr).toMatch(/hint: add cluster\.routed/);
  });
});
