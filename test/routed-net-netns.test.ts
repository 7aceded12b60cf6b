// Routed mode's kernel set-up on a real kernel (src/dataplane/routed-net.ts, route-announcer.ts),
// in network namespaces this file makes and always deletes (prefix nlbt-rn-<pid>-<random>-):
//
//   rt  (the router, and the client): h1 198.18.1.1/24, h2 198.18.2.1/24, ip_forward;
//       198.18.200.1 via h1, 198.18.200.2 via h2 (one host each, so a test picks the first hop)
//   h1  eth0 198.18.1.2/24, peers[0]        h2  eth0 198.18.2.2/24, peers[1]
//
// A packet to a cluster IP that h1's nft marks forwardMark(hop, 1) reaches h2's listener over
// nlbf0 (hop 1) or nlbs0 (hop 2), and h2 answers rt straight over its own link. Nothing is
// configured in the root namespace. Needs root; skipped visibly otherwise (failing instead when
// NLB_REQUIRE_LAB=1).
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsRunner, type Runner } from '../src/dataplane/exec.js';
import { announcerScript } from '../src/dataplane/route-announcer.js';
import {
  RouteAnnouncer,
  type RoutedNetSetup,
  forwardMark,
  setUpRouted,
  tearDownRouted,
} from '../src/dataplane/routed-net.js';
import { Namespaces, waitForLine } from './dataplane-netns.js';
import { declareRootRequirement, isRoot } from './support/root.js';

declareRootRequirement('routed-net-netns', 'the routed set-up test needs network namespaces');

const vip = '198.18.200.1';
const vip2 = '198.18.200.2';
const peers = ['198.18.1.2', '198.18.2.2'];
const port = 8080;
/** How long a withdrawal may take: a pipe's EOF or the 300 ms guard, then one netlink call. */
const withdrawnWithinMs = 1_000;

describe.runIf(isRoot)('routed set-up on a real kernel (network namespaces)', () => {
  const ns = new Namespaces('rn');
  let rt = '';
  let h1 = '';
  let h2 = '';
  let initialRules = '';
  const setupOf = (index: number): RoutedNetSetup => ({
    interface: 'eth0',
    localAddress: peers[index]!,
    peers,
    clusterIps: [vip, vip2],
  });

  const ask = (address: string, localPort?: number): Promise<string> =>
    ns.ask(rt, address, port, localPort);
  const packets = (namespace: string, device: string) => ns.packets(namespace, device);
  /** h1's or h2's only nft table: marks packets to `address` (none: no table). */
  const markIn = (namespace: string, address?: string, mark?: number) =>
    ns.markIn(namespace, 'nlbt_rn', address, mark);
  const snapshot = (namespace: string) => ns.snapshot(namespace);

  beforeAll(async () => {
    rt = ns.add('rt');
    h1 = ns.add('h1');
    h2 = ns.add('h2');
    for (const [i, host] of [h1, h2].entries()) {
      const link = `h${i + 1}`;
      ns.ip(rt, ['link', 'add', link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host]);
      ns.ip(rt, ['addr', 'add', `198.18.${i + 1}.1/24`, 'dev', link]);
      ns.ip(rt, ['link', 'set', link, 'up']);
      await ns.routedHost(host, peers[i]!, `198.18.${i + 1}.1`, `h${i + 1}`, port);
    }
    // The replies come back from a cluster IP on the other host's link: no strict rp_filter here.
    const loose = ['all', 'default', 'h1', 'h2'].map((d) => `net.ipv4.conf.${d}.rp_filter=0`);
    ns.exec(rt, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1', ...loose]);
    ns.ip(rt, ['route', 'add', `${vip}/32`, 'via', peers[0]!]);
    ns.ip(rt, ['route', 'add', `${vip2}/32`, 'via', peers[1]!]);
    initialRules = ns.ip(h1, ['rule', 'show']);
    for (const [i, host] of [h1, h2].entries()) {
      const report = await setUpRouted(netnsRunner(host), setupOf(i));
      expect(report).toMatchObject({
        localIndex: i,
        uplinkMtu: 1500,
        overlayMtu: 1450,
        mssClamp: 1410,
      });
    }
  }, 30_000);

  afterAll(() => ns.removeAll());

  it('makes the devices, tables, rules and sysctls', () => {
    const [link] = JSON.parse(ns.ip(h1, ['-d', '-j', 'link', 'show', 'dev', 'nlbf1'])) as {
      address: string;
      mtu: number;
      linkinfo: { info_data: { id: number; remote: string; local: string; port: number } };
    }[];
    expect(link).toMatchObject({ address: '02:4e:4c:01:00:01', mtu: 1450 });
    expect(link!.linkinfo.info_data).toMatchObject({
      id: 0x010001,
      remote: peers[1],
      local: peers[0],
      port: 4789,
    });
    expect(ns.ip(h1, ['rule', 'show'])).toMatch(
      /^1100:\tfrom all fwmark 0x4e4c0101 lookup 1313603841 proto 251\n1100:\tfrom all fwmark 0x4e4c0201 lookup 1313604097 proto 251\n1200:\tfrom all lookup local proto 251\n32766:/,
    );
    expect(ns.ip(h1, ['route', 'show', 'table', String(forwardMark(1, 1))])).toBe(
      `${vip} dev nlbf1 proto 251 scope link \n${vip2} dev nlbf1 proto 251 scope link \n`,
    );
    expect(ns.ip(h1, ['neigh', 'show', 'dev', 'nlbf1'])).toContain(
      `${vip} lladdr 02:4e:4c:01:01:00 PERMANENT`,
    );
    const sysctl = (key: string) => ns.exec(h2, ['sysctl', '-n', key]).trim();
    expect(
      [
        'net.ipv4.ip_forward',
        'net.ipv4.conf.all.rp_filter',
        'net.ipv4.conf.eth0.rp_filter',
        'net.ipv4.conf.nlbs0.rp_filter',
      ].map(sysctl),
    ).toEqual(['1', '0', '0', '0']);
  });

  it('delivers a cluster IP locally while nothing marks its packets', async () => {
    markIn(h1);
    expect(await ask(vip)).toBe(`h1 ${vip} 198.18.1.1`);
    expect(await ask(vip2)).toBe(`h2 ${vip2} 198.18.2.1`);
  });

  it('forwards a hop-1 packet to the peer over nlbf, and the reply goes back directly', async () => {
    markIn(h1, vip, forwardMark(1, 1));
    const before = {
      sent: packets(h1, 'nlbf1'),
      arrived: packets(h2, 'nlbf0'),
      second: packets(h2, 'nlbs0'),
    };
    expect(await ask(vip)).toBe(`h2 ${vip} 198.18.1.1`);
    const after = {
      sent: packets(h1, 'nlbf1'),
      arrived: packets(h2, 'nlbf0'),
      second: packets(h2, 'nlbs0'),
    };
    // SYN, ACK, FIN, ACK at least; nothing back through the tunnel, nothing on the hop-2 device.
    expect(after.sent.tx - before.sent.tx).toBeGreaterThanOrEqual(4);
    expect(after.arrived.rx - before.arrived.rx).toBe(after.sent.tx - before.sent.tx);
    expect(after.arrived.tx).toBe(before.arrived.tx);
    expect(after.second).toEqual(before.second);
  });

  it('forwards a client port that this host served before (its TIME_WAIT socket is still here)', async () => {
    // h1 answers from port 40123 itself, and closes first: its socket waits in TIME_WAIT (60 s).
    markIn(h1);
    const clientPort = 40123;
    expect(await ask(vip, clientPort)).toBe(`h1 ${vip} 198.18.1.1`);
    const waiting = ns.exec(h1, ['ss', '-Htn', 'state', 'time-wait', `( dport = :${clientPort} )`]);
    expect(waiting).toContain(`198.18.1.1:${clientPort}`);
    // The bucket moves to h2. With early demux on, the SYN got the TIME_WAIT socket before
    // routing and ip_forward dropped it silently (every retransmission too): a timeout.
    markIn(h1, vip, forwardMark(1, 1));
    expect(await ask(vip, clientPort)).toBe(`h2 ${vip} 198.18.1.1`);
    expect(ns.exec(h1, ['sysctl', '-n', 'net.ipv4.tcp_early_demux']).trim()).toBe('0');
    markIn(h1);
  });

  it('forwards a hop-2 packet over nlbs, and the other way round (h2 to h1)', async () => {
    markIn(h1, vip, forwardMark(2, 1));
    const before = packets(h2, 'nlbs0');
    expect(await ask(vip)).toBe(`h2 ${vip} 198.18.1.1`);
    expect(packets(h2, 'nlbs0').rx - before.rx).toBeGreaterThanOrEqual(4);
    markIn(h1);
    markIn(h2, vip2, forwardMark(1, 0));
    const back = packets(h1, 'nlbf1');
    expect(await ask(vip2)).toBe(`h1 ${vip2} 198.18.2.1`);
    expect(packets(h1, 'nlbf1').rx - back.rx).toBeGreaterThanOrEqual(4);
    markIn(h2);
  });

  it('changes nothing when run again over its own set-up', async () => {
    const before = snapshot(h1);
    const report = await setUpRouted(netnsRunner(h1), setupOf(0));
    expect(report.created).toEqual([]);
    expect(snapshot(h1)).toBe(before);
  });

  describe('the marker route announcer', () => {
    const markers = () => ns.ip(h1, ['route', 'show', 'proto', '250']);
    const both = `${vip} dev lo scope link \n${vip2} dev lo scope link \n`;
    /** Milliseconds until `markers()` is `want`; fails after `waitMs`. */
    async function until(want: string, waitMs: number): Promise<number> {
      const start = Date.now();
      while (markers() !== want) {
        if (Date.now() - start > waitMs)
          throw new Error(`markers still '${markers()}' after ${waitMs} ms`);
        await sleep(10);
      }
      return Date.now() - start;
    }
    /** netnsRunner(h1) that hands the test the spawned pipeline's process. */
    function recording(children: ChildProcessWithoutNullStreams[]): Runner {
      const inner = netnsRunner(h1);
      return {
        run: inner.run,
        spawn: (file, args) => children[children.push(inner.spawn!(file, args)) - 1]!,
      };
    }

    it('announces, withdraws, and withdraws when its process loses nlbd (EOF)', async () => {
      const children: ChildProcessWithoutNullStreams[] = [];
      const problems: string[] = [];
      const announcer = new RouteAnnouncer({
        runner: recording(children),
        clusterIps: [vip, vip2],
        guardMs: 5_000,
        onProblem: (t) => problems.push(t),
      });
      announcer.announce();
      await until(both, withdrawnWithinMs);
      announcer.withdraw();
      await until('', withdrawnWithinMs);
      announcer.withdraw();
      announcer.announce();
      await until(both, withdrawnWithinMs);
      children[0]!.stdin.destroy();
      const ms = await until('', withdrawnWithinMs);
      console.log(`routed-net-netns: marker routes gone ${ms} ms after the pipe closed`);
      await expect
        .poll(() => problems)
        .toEqual([expect.stringMatching(/pipeline ended \(exit \d+\)/)]);
      await announcer.close({ withdraw: true });
    });

    it('withdraws when nlbd hangs (no keepalive within the guard), and comes back after', async () => {
      const problems: string[] = [];
      const announcer = new RouteAnnouncer({
        runner: netnsRunner(h1),
        clusterIps: [vip, vip2],
        guardMs: 300,
        onProblem: (t) => problems.push(t),
      });
      const alive = setInterval(() => announcer.keepalive(), 100);
      try {
        announcer.announce();
        await until(both, withdrawnWithinMs);
        await sleep(700);
        expect(markers()).toBe(both);
      } finally {
        clearInterval(alive);
      }
      const ms = await until('', withdrawnWithinMs);
      console.log(
        `routed-net-netns: marker routes gone ${ms} ms after the last keepalive (guard 300 ms)`,
      );
      await expect.poll(() => problems[0]).toMatch(/no line within 0.3 s/);
      const again = setInterval(() => announcer.keepalive(), 100);
      try {
        await until(both, 2_000);
      } finally {
        clearInterval(again);
      }
      await announcer.close({ withdraw: true });
      await until('', withdrawnWithinMs);
    });

    it('withdraws when the process that runs it is killed (SIGKILL)', async () => {
      const owner = `const c = require('node:child_process').spawn('bash', ['-c', process.env.SCRIPT, 'nlb-announcer', '30', '250', '${vip}'], { stdio: ['pipe', 'inherit', 'inherit'] });
        c.stdin.write('route replace ${vip}/32 dev lo proto 250\\n'); console.log('ready'); setInterval(() => {}, 1000);`;
      const child = ns.spawn(h1, [process.execPath, '-e', owner], { SCRIPT: announcerScript });
      await waitForLine(child, /ready/, 5_000);
      await until(`${vip} dev lo scope link \n`, withdrawnWithinMs);
      child.kill('SIGKILL');
      const ms = await until('', withdrawnWithinMs);
      console.log(`routed-net-netns: marker route gone ${ms} ms after SIGKILL of its owner`);
    });
  });

  it('tears everything down, the local rule back at pref 0, and again without error', async () => {
    ns.ip(h1, ['route', 'add', `${vip}/32`, 'dev', 'lo', 'proto', '250']);
    await tearDownRouted(netnsRunner(h1));
    expect(ns.ip(h1, ['rule', 'show'])).toBe(initialRules);
    expect(ns.ip(h1, ['-d', 'link', 'show', 'type', 'vxlan'])).toBe('');
    expect(ns.ip(h1, ['route', 'show', 'table', 'all', 'proto', '251'])).toBe('');
    expect(ns.ip(h1, ['route', 'show', 'proto', '250'])).toBe('');
    await tearDownRouted(netnsRunner(h1));
    expect(await ask(vip)).toMatch(/^(timeout|error)/);
  });
});
