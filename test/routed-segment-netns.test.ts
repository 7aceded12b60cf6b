// Routed mode's `forward: segment` on a real kernel (src/dataplane/routed-segment.ts, carried out
// by routed-net.ts), in network namespaces this file makes and always deletes (prefix
// nlbt-rs-<pid>-<random>-):
//
//   rt  (the router, and the client): bridge br0 198.18.1.1/24 with ports p1, p2, ip_forward;
//       198.18.200.1 via h1, 198.18.200.2 via h2 (one host each, so a test picks the first hop)
//   h1  eth0 198.18.1.11/24, peers[0]        h2  eth0 198.18.1.12/24, peers[1]
//
// One segment, no encapsulation: a packet to a cluster IP that h1's nft marks forwardMark(hop, 1)
// leaves h1 by its own macvlan of that hop as a plain frame to h2's MAC of that hop, arrives on
// h2's nlbf (hop 1) or nlbs (hop 2), and h2 answers rt straight from its eth0. Nothing is
// configured in the root namespace; 169.254.x.y are only neighbour keys, never put on the wire.
// Needs root; skipped visibly otherwise (failing instead when NLB_REQUIRE_LAB=1).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsRunner } from '../src/dataplane/exec.js';
import {
  type RoutedNetSetup,
  forwardMark,
  segmentMac,
  setUpRouted,
  tearDownRouted,
} from '../src/dataplane/routed-net.js';
import { Namespaces } from './dataplane-netns.js';
import { declareRootRequirement, isRoot } from './support/root.js';

declareRootRequirement(
  'routed-segment-netns',
  'the segment forwarding test needs network namespaces',
);

const vip = '198.18.200.1';
const vip2 = '198.18.200.2';
const peers = ['198.18.1.11', '198.18.1.12'];
const routerIp = '198.18.1.1';
const port = 8080;

describe.runIf(isRoot)('forward: segment on a real kernel (network namespaces)', () => {
  const ns = new Namespaces('rs');
  let rt = '';
  let h1 = '';
  let h2 = '';
  let initialRules = '';
  const setupOf = (index: number): RoutedNetSetup => ({
    interface: 'eth0',
    localAddress: peers[index]!,
    peers,
    clusterIps: [vip, vip2],
    forward: 'segment',
  });

  const ask = (address: string, localPort?: number): Promise<string> =>
    ns.ask(rt, address, port, localPort);
  const packets = (namespace: string, device: string) => ns.packets(namespace, device);
  /** h1's or h2's only nft table: marks packets to `address` (none: no table). */
  const markIn = (namespace: string, address?: string, mark?: number) =>
    ns.markIn(namespace, 'nlbt_rs', address, mark);
  /** rt's bridge counts, per port, the frames that reach rt from a cluster IP. */
  const replies = () => {
    const out = ns.exec(rt, ['nft', '-j', 'list', 'counters', 'table', 'bridge', 'nlbt_rs']);
    const items = (
      JSON.parse(out) as { nftables: { counter?: { name: string; packets: number } }[] }
    ).nftables;
    return Object.fromEntries(
      items.flatMap((i) => (i.counter === undefined ? [] : [[i.counter.name, i.counter.packets]])),
    ) as Record<string, number>;
  };
  const snapshot = (namespace: string) => ns.snapshot(namespace);

  beforeAll(async () => {
    rt = ns.add('rt');
    h1 = ns.add('h1');
    h2 = ns.add('h2');
    ns.ip(rt, ['link', 'add', 'br0', 'type', 'bridge']);
    ns.ip(rt, ['addr', 'add', `${routerIp}/24`, 'dev', 'br0']);
    ns.ip(rt, ['link', 'set', 'br0', 'up']);
    for (const [i, host] of [h1, h2].entries()) {
      const bridgePort = `p${i + 1}`;
      ns.ip(rt, ['link', 'add', bridgePort, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host]);
      ns.ip(rt, ['link', 'set', bridgePort, 'master', 'br0', 'up']);
      await ns.routedHost(host, peers[i]!, routerIp, `h${i + 1}`, port);
    }
    ns.exec(rt, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    ns.ip(rt, ['route', 'add', `${vip}/32`, 'via', peers[0]!]);
    ns.ip(rt, ['route', 'add', `${vip2}/32`, 'via', peers[1]!]);
    const counted = [1, 2].map(
      (i) => `\t\tiifname "p${i}" ip saddr { ${vip}, ${vip2} } counter name from_p${i}`,
    );
    ns.exec(
      rt,
      ['nft', '-f', '-'],
      [
        'table bridge nlbt_rs {',
        '\tcounter from_p1 {}',
        '\tcounter from_p2 {}',
        '\tchain in {',
        '\t\ttype filter hook input priority 0; policy accept;',
        ...counted,
        '\t}',
        '}',
        '',
      ].join('\n'),
    );
    initialRules = ns.ip(h1, ['rule', 'show']);
    for (const [i, host] of [h1, h2].entries()) {
      const report = await setUpRouted(netnsRunner(host), setupOf(i));
      expect(report).toMatchObject({
        localIndex: i,
        uplinkMtu: 1500,
        overlayMtu: 1500,
        mssClamp: 1460,
      });
    }
  }, 30_000);

  afterAll(() => ns.removeAll());

  it('makes the macvlan devices, tables, neighbours, rules and sysctls', () => {
    const [link] = JSON.parse(ns.ip(h1, ['-d', '-j', 'link', 'show', 'dev', 'nlbs'])) as {
      address: string;
      link: string;
      flags: string[];
      linkinfo: { info_kind: string; info_data: { mode: string } };
    }[];
    expect(link).toMatchObject({ address: '02:4e:4d:02:00:00', link: 'eth0' });
    expect(link!.flags).toContain('NOARP');
    expect(link!.linkinfo).toMatchObject({ info_kind: 'macvlan', info_data: { mode: 'bridge' } });
    expect(ns.ip(h1, ['-4', 'addr', 'show', 'dev', 'nlbf'])).toBe('');
    expect(ns.ip(h1, ['-6', 'addr', 'show', 'dev', 'nlbf'])).toBe('');
    expect(ns.ip(h1, ['rule', 'show'])).toMatch(
      /^1100:\tfrom all fwmark 0x4e4c0101 lookup 1313603841 proto 251\n1100:\tfrom all fwmark 0x4e4c0201 lookup 1313604097 proto 251\n1200:\tfrom all lookup local proto 251\n32766:/,
    );
    expect(ns.ip(h1, ['route', 'show', 'table', String(forwardMark(2, 1))])).toBe(
      `${vip} via 169.254.2.2 dev nlbs proto 251 onlink \n${vip2} via 169.254.2.2 dev nlbs proto 251 onlink \n`,
    );
    expect(ns.ip(h1, ['neigh', 'show', 'dev', 'nlbs'])).toBe(
      `169.254.2.2 lladdr ${segmentMac(2, 1)} PERMANENT \n`,
    );
    const sysctl = (key: string) => ns.exec(h2, ['sysctl', '-n', key]).trim();
    expect(
      [
        'ip_forward',
        'conf.all.rp_filter',
        'conf.eth0.rp_filter',
        'conf.nlbf.rp_filter',
        'tcp_early_demux',
      ].map((key) => sysctl(`net.ipv4.${key}`)),
    ).toEqual(['1', '0', '0', '0', '0']);
  });

  it('delivers a cluster IP locally while nothing marks its packets', async () => {
    markIn(h1);
    expect(await ask(vip)).toBe(`h1 ${vip} ${routerIp}`);
    expect(await ask(vip2)).toBe(`h2 ${vip2} ${routerIp}`);
  });

  it('forwards a hop-1 packet to the peer as a frame to its nlbf MAC, and the reply goes back directly', async () => {
    markIn(h1, vip, forwardMark(1, 1));
    const before = {
      sent: packets(h1, 'nlbf'),
      arrived: packets(h2, 'nlbf'),
      second: packets(h2, 'nlbs'),
      replies: replies(),
    };
    expect(await ask(vip)).toBe(`h2 ${vip} ${routerIp}`);
    const after = {
      sent: packets(h1, 'nlbf'),
      arrived: packets(h2, 'nlbf'),
      second: packets(h2, 'nlbs'),
      replies: replies(),
    };
    const sent = after.sent.tx - before.sent.tx;
    // SYN, ACK, FIN, ACK at least, each sent once by h1's nlbf and received once by h2's.
    expect(sent).toBeGreaterThanOrEqual(4);
    expect(after.arrived.rx - before.arrived.rx).toBe(sent);
    expect(after.arrived.tx).toBe(before.arrived.tx);
    expect(after.second.rx).toBe(before.second.rx);
    // The replies reach rt from h2's port (SYN-ACK, data, FIN at least), none from h1's.
    expect(after.replies.from_p2! - before.replies.from_p2!).toBeGreaterThanOrEqual(3);
    expect(after.replies.from_p1).toBe(before.replies.from_p1);
    // The frames left h1 from its nlbf MAC: rt's bridge learnt it on h1's port.
    const fdb = ns.exec(rt, ['bridge', 'fdb', 'show', 'br', 'br0']);
    expect(fdb).toContain(`${segmentMac(1, 0)} dev p1 master br0`);
  });

  it('forwards a client port that this host served before (its TIME_WAIT socket is still here)', async () => {
    markIn(h1);
    const clientPort = 40124;
    expect(await ask(vip, clientPort)).toBe(`h1 ${vip} ${routerIp}`);
    const waiting = ns.exec(h1, ['ss', '-Htn', 'state', 'time-wait', `( dport = :${clientPort} )`]);
    expect(waiting).toContain(`${routerIp}:${clientPort}`);
    // The bucket moves to h2: with early demux on, the SYN got the TIME_WAIT socket before
    // routing and ip_forward dropped it silently.
    markIn(h1, vip, forwardMark(1, 1));
    expect(await ask(vip, clientPort)).toBe(`h2 ${vip} ${routerIp}`);
    markIn(h1);
  });

  it('forwards a hop-2 packet to the nlbs MAC, and the other way round (h2 to h1)', async () => {
    markIn(h1, vip, forwardMark(2, 1));
    const before = { second: packets(h2, 'nlbs'), first: packets(h2, 'nlbf') };
    expect(await ask(vip)).toBe(`h2 ${vip} ${routerIp}`);
    expect(packets(h2, 'nlbs').rx - before.second.rx).toBeGreaterThanOrEqual(4);
    expect(packets(h2, 'nlbf').rx).toBe(before.first.rx);
    markIn(h1);
    markIn(h2, vip2, forwardMark(1, 0));
    const back = packets(h1, 'nlbf');
    expect(await ask(vip2)).toBe(`h1 ${vip2} ${routerIp}`);
    expect(packets(h1, 'nlbf').rx - back.rx).toBeGreaterThanOrEqual(4);
    markIn(h2);
  });

  it('changes nothing when run again over its own set-up', async () => {
    const before = snapshot(h1);
    const report = await setUpRouted(netnsRunner(h1), setupOf(0));
    expect(report.created).toEqual([]);
    expect(snapshot(h1)).toBe(before);
  });

  it('switches to VXLAN and back, then tears everything down, and again without error', async () => {
    await setUpRouted(netnsRunner(h1), { ...setupOf(0), forward: 'vxlan' });
    expect(ns.ip(h1, ['-d', 'link', 'show', 'type', 'macvlan'])).toBe('');
    expect(ns.ip(h1, ['route', 'show', 'table', String(forwardMark(1, 1))])).toMatch(/dev nlbf1 /);
    const report = await setUpRouted(netnsRunner(h1), setupOf(0));
    expect(report.created).toEqual(['nlbf', 'nlbs']);
    expect(ns.ip(h1, ['-d', 'link', 'show', 'type', 'vxlan'])).toBe('');
    markIn(h1, vip, forwardMark(1, 1));
    expect(await ask(vip)).toBe(`h2 ${vip} ${routerIp}`);
    markIn(h1);
    await tearDownRouted(netnsRunner(h1));
    expect(ns.ip(h1, ['rule', 'show'])).toBe(initialRules);
    expect(ns.ip(h1, ['-d', 'link', 'show', 'type', 'macvlan'])).toBe('');
    expect(ns.ip(h1, ['route', 'show', 'table', 'all', 'proto', '251'])).toBe('');
    await tearDownRouted(netnsRunner(h1));
    expect(await ask(vip)).toMatch(/^(timeout|error)/);
  });
});
