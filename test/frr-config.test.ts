// The FRR files nlb writes for routed mode (src/routed/frr-config.ts): exact text for a small
// host and router, and every bad setting refused with the setting's path and the fix.
import { describe, expect, it } from 'vitest';
import {
  type HostFrrSettings,
  type RouterFrrSettings,
  bfdTimersDefault,
  bgpTimersDefault,
  describeFrrErrors,
  renderHostFrr,
  renderRouterFrr,
} from '../src/routed/frr-config.js';

const host: HostFrrSettings = {
  hostname: 'h1',
  localAs: 65001,
  routerId: '198.18.1.2',
  peers: [{ address: '198.18.1.1', as: 65000 }],
  timers: bgpTimersDefault,
  bfd: bfdTimersDefault,
  // Out of order on purpose: the text is in address order.
  clusterIps: ['198.18.0.100', '198.18.0.99'],
};

const router: RouterFrrSettings = {
  hostname: 'rt',
  localAs: 65000,
  routerId: '198.18.1.1',
  peers: [
    { address: '198.18.10.2', as: 65001 },
    { address: '198.18.2.2', as: 65001 },
  ],
  timers: bgpTimersDefault,
  bfd: bfdTimersDefault,
  maximumPaths: 32,
};

const head = (file: string, name: string, role: string) =>
  `! ${file} of ${name} (${role}), written by nlb: do not edit by hand;\n` +
  '! change the nlb settings and write the files again.\n';

const bfdd = (name: string, role: string) =>
  head('bfdd.conf', name, role) +
  `hostname ${name}
!
bfd
 profile nlb
  detect-multiplier 3
  receive-interval 100
  transmit-interval 100
 exit
exit
`;

describe('FRR configuration', () => {
  it("renders a host's zebra, bfdd and bgpd files", () => {
    const result = renderHostFrr(host);
    if (!result.ok) expect.fail(describeFrrErrors(result.errors));
    expect(result.files.zebra).toBe(`${head('zebra.conf', 'h1', 'cluster host')}hostname h1\n`);
    expect(result.files.bfdd).toBe(bfdd('h1', 'cluster host'));
    expect(result.files.bgpd).toBe(
      head('bgpd.conf', 'h1', 'cluster host') +
        `frr defaults datacenter
hostname h1
!
! The cluster IPs: FRR announces one while nlbd holds its marker route (VIP/32 dev lo).
ip prefix-list nlb-cluster-ips seq 10 permit 198.18.0.99/32
ip prefix-list nlb-cluster-ips seq 20 permit 198.18.0.100/32
!
route-map nlb-announce permit 10
 match ip address prefix-list nlb-cluster-ips
exit
!
! A host announces and never routes by BGP: it takes no route from its peers.
route-map nlb-learn-none deny 10
exit
!
router bgp 65001
 bgp router-id 198.18.1.2
 neighbor 198.18.1.1 remote-as 65000
 neighbor 198.18.1.1 timers 1 3
 neighbor 198.18.1.1 advertisement-interval 0
 neighbor 198.18.1.1 bfd profile nlb
 !
 address-family ipv4 unicast
  redistribute kernel route-map nlb-announce
  neighbor 198.18.1.1 route-map nlb-learn-none in
 exit-address-family
exit
`,
    );
  });

  it("renders a router's files: every host a neighbor with BFD, ECMP over them", () => {
    const result = renderRouterFrr(router);
    if (!result.ok) expect.fail(describeFrrErrors(result.errors));
    expect(result.files.zebra).toBe(`${head('zebra.conf', 'rt', 'router')}hostname rt\n`);
    expect(result.files.bfdd).toBe(bfdd('rt', 'router'));
    expect(result.files.bgpd).toBe(
      head('bgpd.conf', 'rt', 'router') +
        `frr defaults datacenter
hostname rt
!
router bgp 65000
 bgp router-id 198.18.1.1
 bgp bestpath as-path multipath-relax
 neighbor 198.18.2.2 remote-as 65001
 neighbor 198.18.2.2 timers 1 3
 neighbor 198.18.2.2 advertisement-interval 0
 neighbor 198.18.2.2 bfd profile nlb
 neighbor 198.18.10.2 remote-as 65001
 neighbor 198.18.10.2 timers 1 3
 neighbor 198.18.10.2 advertisement-interval 0
 neighbor 198.18.10.2 bfd profile nlb
 !
 address-family ipv4 unicast
  maximum-paths 32
 exit-address-family
exit
`,
    );
  });

  it('renders the same text whatever the order of peers and cluster IPs', () => {
    const a = renderRouterFrr(router);
    const b = renderRouterFrr({ ...router, peers: [...router.peers].reverse() });
    expect(a).toEqual(b);
    const c = renderHostFrr({ ...host, clusterIps: [...host.clusterIps].reverse() });
    expect(c).toEqual(renderHostFrr(host));
  });

  it('refuses a bad AS, peer, timer or cluster IP, naming the setting and the fix', () => {
    const refused = (changes: Partial<HostFrrSettings>) => {
      const result = renderHostFrr({ ...host, ...changes });
      expect(result.ok).toBe(false);
      return result.ok ? [] : result.errors.map((e) => `${e.path}: ${e.message}`);
    };
    expect(refused({ localAs: 0 })).toEqual([
      'localAs: an AS number is an integer from 1 to 4294967295 (0 is reserved); private ASes are 64512-65534 and 4200000000-4294967294',
    ]);
    expect(refused({ localAs: 4_294_967_296 })[0]).toMatch(/^localAs: an AS number is an integer/);
    expect(refused({ localAs: 1.5 })[0]).toMatch(/^localAs: an AS number is an integer/);
    expect(refused({ localAs: 23_456 })[0]).toMatch(/^localAs: 23456 is AS_TRANS/);
    expect(refused({ peers: [{ address: '198.18.1.1', as: 0 }] })[0]).toMatch(
      /^peers\[0\]\.as: an AS number is an integer from 1/,
    );
    expect(refused({ peers: [{ address: '224.0.0.5', as: 65000 }] })).toEqual([
      'peers[0].address: a multicast address (224.0.0.0/4): it names a group of receivers, not a host',
    ]);
    expect(refused({ peers: [{ address: '2001:db8::1', as: 65000 }] })).toEqual([
      'peers[0].address: expected an IPv4 unicast address, e.g. 198.18.1.1 (routed mode peers and announces over IPv4)',
    ]);
    expect(refused({ peers: [{ address: 'router', as: 65000 }] })[0]).toMatch(
      /^peers\[0\]\.address: expected an IPv4 unicast address/,
    );
    expect(
      refused({
        peers: [
          { address: '198.18.1.1', as: 65000 },
          { address: '198.18.1.1', as: 65000 },
        ],
      }),
    ).toEqual(['peers[1].address: listed twice: list each peer once']);
    expect(refused({ peers: [] })).toEqual(['peers: expected 1 to 64 BGP peers']);
    expect(refused({ bfd: { intervalMs: 0, multiplier: 3 } })).toEqual([
      "bfd.intervalMs: expected whole milliseconds from 10 to 60000 (bfdd's range), e.g. 100",
    ]);
    expect(refused({ bfd: { intervalMs: 100, multiplier: 1 } })).toEqual([
      'bfd.multiplier: expected an integer from 2 to 255, e.g. 3',
    ]);
    expect(refused({ timers: { keepaliveS: 2, holdS: 3 } })).toEqual([
      'timers.keepaliveS: expected whole seconds from 1 to a third of the hold time (1), so that one lost keepalive does not drop the session',
    ]);
    expect(refused({ timers: { keepaliveS: 1, holdS: 2 } })).toEqual([
      'timers.holdS: expected whole seconds from 3 to 65535',
    ]);
    expect(refused({ routerId: '0.0.0.0' })[0]).toMatch(/^routerId: in 0\.0\.0\.0\/8/);
    expect(refused({ clusterIps: ['198.18.0.100', '198.18.0.100'] })).toEqual([
      'clusterIps[1]: listed twice: list each cluster IP once',
    ]);
    expect(refused({ clusterIps: ['2001:db8:18::100'] })[0]).toMatch(
      /^clusterIps\[0\]: expected an IPv4 unicast address/,
    );
    expect(refused({ hostname: 'h 1' })).toEqual([
      'hostname: expected one DNS label: 1-63 letters, digits, - or _',
    ]);
    // Every problem at once, not only the first.
    expect(refused({ localAs: 0, bfd: { intervalMs: 0, multiplier: 3 } })).toHaveLength(2);
  });

  it('refuses a router whose maximum-paths is out of range', () => {
    const result = renderRouterFrr({ ...router, maximumPaths: 0 });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(describeFrrErrors(result.errors)).toBe(
      'maximumPaths: 0: expected an integer from 1 to 256: at least the number of hosts, for ECMP over all of them',
    );
  });
});
