// The config model: every example validates; each kind of mistake comes back as an error naming
// the path, the value found and what is expected; defaults; the cluster digest.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  type ConfigError,
  type ConfigResult,
  bucketsDefault,
  clusterDigestHex,
  equalLoadWeight,
  formatConfigErrors,
  hashSeedDefault,
  parseConfig,
} from '../src/core/config.js';
import { loadConfigFile } from '../src/node/config-file.js';

function exampleFiles(dir = 'examples'): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? exampleFiles(join(dir, entry.name))
      : entry.name.endsWith('.yaml')
        ? [join(dir, entry.name)]
        : [],
  );
}

function valid(text: string) {
  const result = parseConfig(text);
  if (!result.ok) throw new Error(formatConfigErrors(result.errors));
  return result.config;
}

function errorsOf(result: ConfigResult): ConfigError[] {
  expect(result.ok).toBe(false);
  return result.ok ? [] : result.errors;
}

const base = readFileSync('examples/web/host1.yaml', 'utf8');

/** The web example's host 1 with `from` replaced by `to` (which must occur exactly once). */
function edited(from: string, to: string): string {
  expect(base.split(from)).toHaveLength(2);
  return base.replace(from, to);
}

describe('config examples', () => {
  const files = exampleFiles();

  it('include the 3-host web cluster, an IPv6 cluster and a minimal config', () => {
    expect(files).toEqual(
      expect.arrayContaining([
        'examples/web/host1.yaml',
        'examples/web/host2.yaml',
        'examples/web/host3.yaml',
        'examples/ipv6.yaml',
        'examples/minimal.yaml',
      ]),
    );
  });

  it.each(files)('%s validates', async (file) => {
    const result = await loadConfigFile(file);
    expect(result.ok ? 'ok' : result.message).toBe('ok');
  });

  it('web: port 80 tcp multiple/none and 443 multiple/single on 198.18.0.100, unicast', () => {
    const { cluster } = valid(base);
    expect(cluster.mode).toBe('unicast');
    expect(cluster.clusterIps.map((ip) => ip.text)).toEqual(['198.18.0.100']);
    expect(
      cluster.portRules.map((r) => [
        r.vip === 'all' ? 'all' : r.vip.text,
        r.portStart,
        r.portEnd,
        r.protocol,
        r.mode,
        r.affinity,
      ]),
    ).toEqual([
      ['198.18.0.100', 80, 80, 'tcp', 'multiple', 'none'],
      ['198.18.0.100', 443, 443, 'tcp', 'multiple', 'single'],
    ]);
  });

  it('ipv6: has an IPv6 cluster IP and a rule for it', () => {
    const { cluster } = valid(readFileSync('examples/ipv6.yaml', 'utf8'));
    expect(cluster.clusterIps.some((ip) => ip.family === 6)).toBe(true);
    expect(cluster.portRules.some((r) => r.vip !== 'all' && r.vip.family === 6)).toBe(true);
  });
});

describe('config defaults', () => {
  const minimal = valid(readFileSync('examples/minimal.yaml', 'utf8'));

  it("applies NLB's default port rule when none is given", () => {
    expect(minimal.cluster.portRules).toEqual([
      {
        vip: 'all',
        portStart: 0,
        portEnd: 65535,
        protocol: 'both',
        mode: 'multiple',
        affinity: 'single',
        buckets: 60,
      },
    ]);
  });

  it('heartbeat 200 ms x 5, 60 buckets, the documented seed, unicast, weight equal', () => {
    expect(minimal.cluster.heartbeat.periodMs).toBe(200);
    expect(minimal.cluster.heartbeat.tolerance).toBe(5);
    expect(minimal.cluster.buckets).toBe(60);
    expect(bucketsDefault).toBe(60);
    expect(minimal.cluster.hashSeed).toBe(hashSeedDefault);
    expect(minimal.cluster.mode).toBe('unicast');
    expect(minimal.host.initialState).toBe('started');
    expect(minimal.host.rules).toEqual([{ loadWeight: equalLoadWeight, handlingPriority: 1 }]);
    expect(minimal.host.dedicatedIp.length).toBe(24);
  });

  it("a rule's buckets default to the cluster's", () => {
    const config = valid(edited('  buckets: 60\n', '  buckets: 32\n'));
    expect(config.cluster.portRules.map((r) => r.buckets)).toEqual([32, 32]);
  });
});

describe('config errors name the path, the value and what is expected', () => {
  it('bad cluster mode', () => {
    const [error, ...rest] = errorsOf(parseConfig(edited('mode: unicast', 'mode: broadcast')));
    expect(rest).toEqual([]);
    expect(error!.path).toBe('cluster.mode');
    expect(error!.value).toBe('broadcast');
    expect(error!.message).toMatch(/unicast.*multicast.*igmp/);
  });

  it('port range reversed', () => {
    const errors = errorsOf(parseConfig(edited('ports: 443', 'ports: 443-80')));
    expect(errors).toEqual([
      {
        path: 'cluster.portRules[1].ports',
        value: '443-80',
        message: expect.stringMatching(/low <= high/),
      },
    ]);
  });

  it('overlapping rules', () => {
    const errors = errorsOf(parseConfig(edited('ports: 443', 'ports: 70-90')));
    expect(errors).toEqual([
      {
        path: 'cluster.portRules[1].ports',
        value: '70-90',
        message: expect.stringMatching(/overlaps cluster\.portRules\[0\] \(80-80\)/),
      },
    ]);
  });

  it('rules on different protocols or cluster IPs may share ports', () => {
    valid(edited('ports: 443\n      protocol: tcp', 'ports: 80\n      protocol: udp'));
  });

  it('a rule vip that is not a cluster IP', () => {
    const errors = errorsOf(
      parseConfig(
        edited('    - vip: 198.18.0.100 # a cluster IP', '    - vip: 198.18.0.101 # a cluster IP'),
      ),
    );
    expect(errors).toEqual([
      {
        path: 'cluster.portRules[0].vip',
        value: '198.18.0.101',
        message: expect.stringMatching(/one of cluster\.clusterIps/),
      },
    ]);
  });

  it('an unknown key, naming the key', () => {
    const errors = errorsOf(
      parseConfig(edited('  buckets: 60\n', '  buckets: 60\n  bukets: 60\n')),
    );
    expect(errors).toEqual([
      {
        path: 'cluster',
        value: expect.anything(),
        message: expect.stringMatching(/unknown key\(s\) 'bukets'/),
      },
    ]);
  });

  it('host.rules longer than the port rules', () => {
    const errors = errorsOf(
      parseConfig(
        edited(
          '    - loadWeight: equal # port 443\n',
          '    - loadWeight: equal # port 443\n    - loadWeight: 10\n',
        ),
      ),
    );
    expect(errors).toEqual([
      { path: 'host.rules', value: 3, message: expect.stringMatching(/2 port rule\(s\)/) },
    ]);
  });

  it('bad YAML', () => {
    const errors = errorsOf(parseConfig('cluster: [unclosed\n'));
    expect(errors).toHaveLength(1);
    expect(errors[0]!.path).toBe('(yaml)');
    expect(errors[0]!.message).not.toBe('');
    expect(errorsOf(parseConfig(`${base}\ncluster: {}\n`))[0]!.path).toBe('(yaml)');
  });

  it('a missing key and several errors at once', () => {
    const errors = errorsOf(
      parseConfig(edited('  keyFile: /etc/nlb/web.key\n', '').replace('  id: 1\n', '  id: 33\n')),
    );
    const byPath = new Map(errors.map((e) => [e.path, e]));
    expect(byPath.get('cluster.keyFile')?.message).toMatch(/^missing/);
    expect(byPath.get('host.id')?.value).toBe(33);
  });

  it('the file loader names the file and every error on its own line', async () => {
    const result = await loadConfigFile('examples/does-not-exist.yaml');
    expect(result).toMatchObject({ ok: false, reason: 'unreadable' });
    expect(result.ok || result.message).toMatch(/no such file/);
    const dir = await loadConfigFile('examples');
    expect(dir.ok || dir.message).toMatch(/not a regular file/);
  });
});

describe('cluster digest', () => {
  const digestOf = (text: string): string => clusterDigestHex(valid(text).cluster);
  const hostFiles = [1, 2, 3].map((n) => readFileSync(`examples/web/host${n}.yaml`, 'utf8'));

  it("is the same for every host's file of one cluster", () => {
    const digests = hostFiles.map(digestOf);
    expect(new Set(digests).size).toBe(1);
    expect(digests[0]).toMatch(/^[0-9a-f]{64}$/);
  });

  it('changes when a port rule changes', () => {
    const original = digestOf(base);
    expect(digestOf(edited('affinity: single', 'affinity: network'))).not.toBe(original);
    expect(digestOf(edited('ports: 443', 'ports: 8443'))).not.toBe(original);
    expect(digestOf(edited('  buckets: 60\n', '  buckets: 61\n'))).not.toBe(original);
  });

  it('ignores the local interface name and key file path', () => {
    const original = digestOf(base);
    expect(digestOf(edited('interface: eth0', 'interface: ens3'))).toBe(original);
    expect(digestOf(edited('keyFile: /etc/nlb/web.key', 'keyFile: /srv/k'))).toBe(original);
  });
});

describe('addresses: cluster IPs, the dedicated IP and the heartbeat group', () => {
  /** The web example with its cluster IP list, dedicated IP or group replaced. */
  const withClusterIps = (list: string): string =>
    edited('clusterIps: [198.18.0.100]', `clusterIps: [${list}]`);
  const withDedicatedIp = (value: string): string =>
    edited('dedicatedIp: 198.18.0.11/24', `dedicatedIp: '${value}'`);
  const withGroup = (value: string): string => edited('group: 239.255.78.76', `group: '${value}'`);

  /** [cluster IP, what the message must say]: the first cluster IP is the one refused. */
  const badClusterIps: [string, RegExp][] = [
    ['0.0.0.0', /unspecified/],
    ['0.1.2.3', /0\.0\.0\.0\/8/],
    ['127.0.0.1', /loopback address \(127\.0\.0\.0\/8\)/],
    ['127.8.9.10', /loopback/],
    ['224.0.0.1', /multicast address \(224\.0\.0\.0\/4\)/],
    ['239.255.78.76', /multicast/],
    ['255.255.255.255', /limited broadcast/],
    ['240.0.0.1', /240\.0\.0\.0\/4, reserved/],
    ['169.254.10.10', /link-local \(169\.254\.0\.0\/16\)/],
    ['::', /unspecified address \(::\)/],
    ['::1', /loopback address \(::1\)/],
    ['ff02::1', /multicast address \(ff00::\/8\)/],
    ['fe80::10', /link-local \(fe80::\/10\).*zone/],
  ];

  it.each(badClusterIps)(
    'refuses the cluster IP %s, saying why and what is expected',
    (ip, why) => {
      const errors = errorsOf(parseConfig(withClusterIps(`'${ip}', 198.18.0.100`)));
      expect(errors).toEqual([
        {
          path: 'cluster.clusterIps[0]',
          value: expect.any(String),
          message: expect.stringMatching(why),
        },
      ]);
      expect(errors[0]!.message).toMatch(/expected a unicast address clients can reach/);
    },
  );

  it('refuses an IPv4-mapped IPv6 cluster IP with the IPv4 form to write instead', () => {
    expect(errorsOf(parseConfig(withClusterIps("'::ffff:198.18.0.100'")))).toEqual([
      {
        path: 'cluster.clusterIps[0]',
        value: '::ffff:198.18.0.100',
        message: 'an IPv4-mapped IPv6 address: write the IPv4 form, 198.18.0.100',
      },
    ]);
  });

  it('refuses a zone, and IPv4 that is not four decimal parts', () => {
    expect(errorsOf(parseConfig(withClusterIps("'fe80::1%eth0', 198.18.0.100")))).toEqual([
      {
        path: 'cluster.clusterIps[0]',
        value: 'fe80::1%eth0',
        message: expect.stringMatching(/zones are not accepted/),
      },
    ]);
    expect(errorsOf(parseConfig(withClusterIps("'0xc6120064', 198.18.0.100")))).toEqual([
      {
        path: 'cluster.clusterIps[0]',
        value: '0xc6120064',
        message: 'expected an IPv4 address as four decimal parts, e.g. 198.18.0.100',
      },
    ]);
  });

  it('refuses a cluster IP listed twice, in any spelling', () => {
    expect(
      errorsOf(parseConfig(withClusterIps("198.18.0.100, '2001:2::100', '2001:2:0::0100'"))),
    ).toEqual([
      {
        path: 'cluster.clusterIps[2]',
        value: '2001:2::100',
        message: 'duplicate of cluster.clusterIps[1]; list each cluster IP once',
      },
    ]);
  });

  it('accepts private, unique local, benchmarking and global cluster IPs', () => {
    const config = valid(
      withClusterIps("198.18.0.100, 10.1.2.3, 192.168.1.10, 100.64.0.1, 'fd00::10', '2001:2::100'"),
    );
    expect(config.cluster.clusterIps).toHaveLength(6);
  });

  /** [dedicated IP, what the message must say]. */
  const badDedicatedIps: [string, RegExp][] = [
    ['0.0.0.0/0', /unspecified/],
    ['198.18.0.11/0', /a \/0 prefix is no LAN; expected .* \/8\.\.\/32/],
    ['198.18.0.11/7', /a \/7 prefix is no LAN/],
    ['198.18.0.11/33', /'33' is not a prefix length/],
    ['198.18.0.11/x', /'x' is not a prefix length/],
    ['127.0.0.1/8', /loopback/],
    ['224.0.0.5/24', /multicast/],
    ['255.255.255.255/32', /limited broadcast/],
    ['169.254.1.1/16', /link-local/],
    ['198.18.0.0/24', /network address of 198\.18\.0\.0\/24/],
    ['198.18.0.255/24', /broadcast address of 198\.18\.0\.0\/24/],
    ['198.18.0.0', /network address of 198\.18\.0\.0\/24/],
    ['198.18.3.255/22', /broadcast address of 198\.18\.0\.0\/22/],
    ['198.18.0.100/24', /must differ from every cluster IP/],
    ['2001:2::11/64', /IPv4 dedicated IP/],
    ['::ffff:198.18.0.11/24', /IPv4-mapped IPv6 address: write the IPv4 form, 198\.18\.0\.11/],
    ['web1/24', /expected an IPv4 or IPv6 address/],
  ];

  it.each(badDedicatedIps)('refuses the dedicated IP %s, saying why', (value, why) => {
    expect(errorsOf(parseConfig(withDedicatedIp(value)))).toEqual([
      { path: 'host.dedicatedIp', value, message: expect.stringMatching(why) },
    ]);
  });

  it.each(['198.18.0.11/24', '198.18.0.1/8', '198.18.0.0/31', '198.18.0.1/31', '198.18.0.11/32'])(
    'accepts the dedicated IP %s',
    (value) => {
      const { dedicatedIp } = valid(withDedicatedIp(value)).host;
      expect(`${dedicatedIp.address.text}/${dedicatedIp.length}`).toBe(value);
    },
  );

  /** [heartbeat group, what the message must say]. */
  const badGroups: [string, RegExp][] = [
    ['198.18.0.1', /expected an IPv4 multicast group/],
    ['255.255.255.255', /expected an IPv4 multicast group/],
    ['ff02::1', /expected an IPv4 multicast group/],
    ['224.0.0.1', /local network control block/],
    ['224.0.0.18', /224\.0\.0\.0\/24/],
  ];

  it.each(badGroups)('refuses the heartbeat group %s', (value, why) => {
    expect(errorsOf(parseConfig(withGroup(value)))).toEqual([
      { path: 'cluster.heartbeat.group', value, message: expect.stringMatching(why) },
    ]);
  });

  it.each(['239.255.78.76', '239.1.2.3', '224.0.1.200'])('accepts the heartbeat group %s', (g) => {
    expect(valid(withGroup(g)).cluster.heartbeat.group.text).toBe(g);
  });

  it('a file with several address errors is refused whole, listing each', () => {
    const text = withClusterIps("'127.0.0.1', 198.18.0.100, 198.18.0.100").replace(
      'dedicatedIp: 198.18.0.11/24',
      "dedicatedIp: '198.18.0.0/0'",
    );
    expect(errorsOf(parseConfig(text)).map((e) => e.path)).toEqual([
      'cluster.clusterIps[0]',
      'cluster.clusterIps[2]',
      'host.dedicatedIp',
    ]);
  });
});
