// cluster.heartbeat.peers: heartbeats by unicast to every host's dedicated IP (networks without
// multicast between the hosts; issue 15's routed clusters). The list is the same on every host,
// this host's address included; refused with the path and the fix otherwise. It is part of the
// cluster identity only when set, so clusters without it keep the digest they had.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { clusterDigestHex, parseConfig } from '../src/core/config.js';

const base = readFileSync('examples/web/host1.yaml', 'utf8');
const group = '    group: 239.255.78.76\n';

function withPeers(peers: string): string {
  expect(base.split(group)).toHaveLength(2);
  return base.replace(group, `${group}    peers: ${peers}\n`);
}

describe('config: unicast heartbeat peers', () => {
  it('takes every host dedicated IP, this one included, and changes the digest only when set', () => {
    const plain = parseConfig(base);
    const peered = parseConfig(withPeers('[198.18.0.11, 198.18.0.12, 198.18.0.13]'));
    expect(plain.ok && peered.ok).toBe(true);
    if (!plain.ok || !peered.ok) return;
    expect(peered.config.cluster.heartbeat.peers?.map((p) => p.text)).toEqual([
      '198.18.0.11',
      '198.18.0.12',
      '198.18.0.13',
    ]);
    expect(plain.config.cluster.heartbeat.peers).toBeUndefined();
    expect(clusterDigestHex(peered.config.cluster)).not.toBe(
      clusterDigestHex(plain.config.cluster),
    );
    // The order does not matter: every host may list them its own way.
    const reordered = parseConfig(withPeers('[198.18.0.13, 198.18.0.11, 198.18.0.12]'));
    expect(reordered.ok && clusterDigestHex(reordered.config.cluster)).toBe(
      clusterDigestHex(peered.config.cluster),
    );
  });

  it('refuses a list without this host, a peer twice, IPv6 or a non-unicast address', () => {
    const errors = (peers: string) => {
      const result = parseConfig(withPeers(peers));
      return result.ok ? [] : result.errors;
    };
    expect(errors('[198.18.0.12, 198.18.0.13]')).toEqual([
      {
        path: 'cluster.heartbeat.peers',
        value: ['198.18.0.12', '198.18.0.13'],
        message: expect.stringMatching(/does not list this host's dedicated IP 198\.18\.0\.11/),
      },
    ]);
    expect(errors('[198.18.0.11, 198.18.0.12, 198.18.0.12]')).toEqual([
      {
        path: 'cluster.heartbeat.peers[2]',
        value: '198.18.0.12',
        message: expect.stringMatching(/listed twice/),
      },
    ]);
    expect(errors('[198.18.0.11, "2001:db8::12"]')[0]).toMatchObject({
      path: 'cluster.heartbeat.peers[1]',
      message: expect.stringMatching(/IPv4/),
    });
    expect(errors('[198.18.0.11, 239.1.2.3]')[0]).toMatchObject({
      path: 'cluster.heartbeat.peers[1]',
    });
    expect(errors('[]')[0]).toMatchObject({ path: 'cluster.heartbeat.peers' });
  });
});
