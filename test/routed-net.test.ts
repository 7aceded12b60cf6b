// Routed mode's kernel set-up without a kernel (src/dataplane/routed-net.ts): the marks, names,
// VNIs and MACs both ends of a pair agree on, the exact `ip -batch` lines for a fresh host, what
// a re-run over a left-over set-up keeps and changes, the teardown, and the refusals. Then the
// marker route announcer (route-announcer.ts) with a fake process, and its bash script with a
// stand-in `ip` that records what it is given (no root needed). routed-net-netns.test.ts runs the
// real thing.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { CommandError, FakeRunner, type Runner } from '../src/dataplane/exec.js';
import {
  RouteAnnouncer,
  type RoutedKernelState,
  RoutedNetError,
  type RoutedNetSetup,
  forwardMark,
  mssClampFor,
  overlayDevices,
  planSetUp,
  planTeardown,
  setUpRouted,
  tearDownRouted,
  vxlanDeviceName,
  vxlanDevicePattern,
  vxlanMac,
  vxlanVni,
} from '../src/dataplane/routed-net.js';
import { defaultRules, fresh, runnerFor, uplink } from './support/routed-kernel.js';
import { announcerScript, markerRouteLines } from '../src/dataplane/route-announcer.js';

const peers = ['198.18.1.2', '198.18.2.2', '198.18.3.2'];
const vip = '198.18.200.1';
const setupOf = (index: number): RoutedNetSetup => ({
  interface: 'eth0',
  localAddress: peers[index]!,
  peers,
  clusterIps: [vip],
});

describe('routed marks, names, VNIs and MACs', () => {
  it('marks per hop and peer, and names devices per hop and peer', () => {
    expect(forwardMark(1, 3)).toBe(0x4e4c0103);
    expect(forwardMark(2, 0)).toBe(0x4e4c0200);
    expect(vxlanDeviceName(1, 3)).toBe('nlbf3');
    expect(vxlanDeviceName(2, 3)).toBe('nlbs3');
    expect(vxlanDevicePattern(1)).toBe('nlbf*');
    expect(vxlanDevicePattern(2)).toBe('nlbs*');
    expect(() => forwardMark(1, 256)).toThrow(/0\.\.255/);
  });

  it('gives both ends of a pair the same VNI, and each end the MAC the other expects', () => {
    const many = Array.from({ length: 5 }, (_, i) => `198.18.${i + 1}.2`);
    const devicesOf = (i: number) =>
      overlayDevices({ interface: 'eth0', localAddress: many[i]!, peers: many, clusterIps: [] }, i);
    const vnis = new Set<number>();
    for (let i = 0; i < many.length; i++) {
      for (const device of devicesOf(i)) {
        const k = device.peerIndex;
        const other = devicesOf(k).find((d) => d.peerIndex === i && d.hop === device.hop)!;
        expect(other.vni).toBe(device.vni);
        expect(other.mac).toBe(device.peerMac);
        expect(device.mac).toBe(other.peerMac);
        expect(device.remote).toBe(many[k]);
        expect(device.mark).toBe(forwardMark(device.hop, k));
        vnis.add(device.vni);
      }
    }
    // 10 pairs × 2 hops, every VNI within 24 bits.
    expect(vnis.size).toBe(20);
    expect(Math.max(...vnis)).toBeLessThan(2 ** 24);
    expect(vxlanVni(2, 3, 1)).toBe(0x020103);
    expect(vxlanMac(1, 0, 2)).toBe('02:4e:4c:01:00:02');
    expect(() => vxlanVni(1, 2, 2)).toThrow(/itself/);
  });

  it('clamps the MSS to the uplink MTU less VXLAN, IPv4 and TCP', () => {
    expect(mssClampFor(1500)).toBe(1410);
    expect(mssClampFor(9000)).toBe(8910);
    expect(() => mssClampFor(600)).toThrow(/626/);
  });
});

describe('setUpRouted with a fake runner', () => {
  it('sets up a fresh host with one listing, one batch and one sysctl', async () => {
    const runner = runnerFor(fresh);
    const report = await setUpRouted(runner, setupOf(1));
    expect(report).toEqual({
      localIndex: 1,
      devices: ['nlbf0', 'nlbf2', 'nlbs0', 'nlbs2'],
      created: ['nlbf0', 'nlbf2', 'nlbs0', 'nlbs2'],
      uplinkMtu: 1500,
      overlayMtu: 1450,
      mssClamp: 1410,
    });
    expect(runner.commands.map((c) => c.argv.join(' '))).toEqual([
      'ip -d -j -batch -',
      'ip -force -batch -',
      expect.stringMatching(/^sysctl -q -w /),
    ]);
    const lines = runner.commands[1]!.input!.trim().split('\n');
    const dev = (name: string, mac: string, vni: number, remote: string) => [
      `link add ${name} address ${mac} type vxlan id ${vni} local 198.18.2.2 remote ${remote} dstport 4789 nolearning dev eth0`,
      `link set dev ${name} mtu 1450 addrgenmode none`,
      `link set dev ${name} up`,
    ];
    const table = (name: string, mark: number, peerMac: string) => [
      `route replace ${vip}/32 dev ${name} table ${mark} proto 251`,
      `neigh replace ${vip} lladdr ${peerMac} dev ${name} nud permanent`,
    ];
    expect(lines).toEqual([
      ...dev('nlbf0', '02:4e:4c:01:01:00', 0x010001, '198.18.1.2'),
      ...dev('nlbf2', '02:4e:4c:01:01:02', 0x010102, '198.18.3.2'),
      ...dev('nlbs0', '02:4e:4c:02:01:00', 0x020001, '198.18.1.2'),
      ...dev('nlbs2', '02:4e:4c:02:01:02', 0x020102, '198.18.3.2'),
      ...table('nlbf0', 0x4e4c0100, '02:4e:4c:01:00:01'),
      ...table('nlbf2', 0x4e4c0102, '02:4e:4c:01:02:01'),
      ...table('nlbs0', 0x4e4c0200, '02:4e:4c:02:00:01'),
      ...table('nlbs2', 0x4e4c0202, '02:4e:4c:02:02:01'),
      'rule add pref 1100 fwmark 0x4e4c0100 lookup 1313603840 protocol 251',
      'rule add pref 1100 fwmark 0x4e4c0102 lookup 1313603842 protocol 251',
      'rule add pref 1100 fwmark 0x4e4c0200 lookup 1313604096 protocol 251',
      'rule add pref 1100 fwmark 0x4e4c0202 lookup 1313604098 protocol 251',
      `route replace local ${vip}/32 dev lo table local proto 251`,
      'rule add pref 1200 lookup local protocol 251',
      'rule del pref 0 lookup local',
    ]);
    expect(runner.commands[2]!.argv.slice(3)).toEqual([
      'net/ipv4/ip_forward=1',
      'net/ipv4/tcp_early_demux=0',
      'net/ipv4/udp_early_demux=0',
      'net/ipv4/conf/all/rp_filter=0',
      'net/ipv4/conf/default/rp_filter=0',
      'net/ipv4/conf/eth0/rp_filter=0',
      'net/ipv4/conf/nlbf0/rp_filter=0',
      'net/ipv4/conf/nlbf2/rp_filter=0',
      'net/ipv4/conf/nlbs0/rp_filter=0',
      'net/ipv4/conf/nlbs2/rp_filter=0',
    ]);
  });

  /** The state a set-up of host `index` with `clusterIps` leaves, as `ip -j` shows it. */
  function stateAfter(index: number, clusterIps = [vip]): RoutedKernelState {
    const setup = { ...setupOf(index), clusterIps };
    const devices = overlayDevices(setup, index);
    return {
      links: [
        uplink,
        ...devices.map((d) => ({
          ifname: d.name,
          mtu: 1450,
          address: d.mac,
          inet6_addr_gen_mode: 'none',
          linkinfo: {
            info_kind: 'vxlan',
            info_data: {
              ...{ id: d.vni, local: peers[index], remote: d.remote, port: 4789 },
              ...{ learning: false, link: 'eth0' },
            },
          },
        })),
      ],
      rules: [
        ...devices.map((d) => ({
          priority: 1100,
          fwmark: `0x${d.mark.toString(16)}`,
          table: String(d.mark),
        })),
        { priority: 1200, table: 'local' },
        ...defaultRules.slice(1),
      ],
      routes: [
        ...devices.flatMap((d) =>
          clusterIps.map((ip) => ({ dst: ip, dev: d.name, table: String(d.mark) })),
        ),
        ...clusterIps.map((ip) => ({ type: 'local', dst: ip, dev: 'lo', table: 'local' })),
      ],
      markers: [{ dst: vip, dev: 'lo', table: 'main' }],
    };
  }

  it('keeps everything of an identical earlier set-up: no device made, no rule added or moved', () => {
    const plan = planSetUp(setupOf(1), stateAfter(1));
    expect(plan.report.created).toEqual([]);
    expect(plan.lines.filter((l) => !/^(route|neigh) replace /.test(l))).toEqual([
      'link set dev nlbf0 mtu 1450 up',
      'link set dev nlbf2 mtu 1450 up',
      'link set dev nlbs0 mtu 1450 up',
      'link set dev nlbs2 mtu 1450 up',
    ]);
  });

  it('replaces what differs and removes what a different earlier set-up left', () => {
    // Host 1 was host 0 of a cluster with another cluster IP: its devices point elsewhere.
    const left = stateAfter(0, ['198.18.200.9']);
    const lines = planSetUp(setupOf(0), {
      ...left,
      links: left.links.map((l) =>
        l.ifname === 'nlbf2' ? { ...l, address: '02:00:00:00:00:01' } : l,
      ),
    }).lines;
    expect(lines.filter((l) => /^link (add|del)/.test(l))).toEqual([
      'link del dev nlbf2',
      expect.stringMatching(/^link add nlbf2 /),
    ]);
    expect(lines.filter((l) => /^(route|rule) del/.test(l))).toEqual([
      'route del 198.18.200.9/32 table 1313603841 proto 251',
      'route del 198.18.200.9/32 table 1313604097 proto 251',
      'route del 198.18.200.9/32 table 1313604098 proto 251',
      'route del local 198.18.200.9/32 table local proto 251',
    ]);
    // Host 1's fwmark rules stay; one of another peer set is removed.
    const extra = {
      ...fresh,
      rules: [{ priority: 1100, fwmark: '0x4e4c0107', table: '1313603847' }, ...defaultRules],
    };
    expect(planSetUp(setupOf(0), extra).lines).toContain(
      'rule del pref 1100 fwmark 0x4e4c0107 lookup 1313603847',
    );
  });

  it('tears down everything, markers too, restoring the local rule first', async () => {
    expect(planTeardown(stateAfter(2))).toEqual([
      'rule del pref 1100 fwmark 0x4e4c0100 lookup 1313603840',
      'rule del pref 1100 fwmark 0x4e4c0101 lookup 1313603841',
      'rule del pref 1100 fwmark 0x4e4c0200 lookup 1313604096',
      'rule del pref 1100 fwmark 0x4e4c0201 lookup 1313604097',
      'rule add pref 0 lookup local',
      'rule del pref 1200 lookup local',
      `route del local ${vip}/32 table local proto 251`,
      `route del ${vip}/32 table main dev lo proto 250`,
      'link del dev nlbf0',
      'link del dev nlbf1',
      'link del dev nlbs0',
      'link del dev nlbs1',
    ]);
    const runner = runnerFor(fresh);
    await tearDownRouted(runner);
    expect(runner.commands.map((c) => c.argv.join(' '))).toEqual(['ip -d -j -batch -']);
  });

  it('refuses what the host cannot take, and names a failed line', async () => {
    const noUplink = { ...fresh, links: [] };
    await expect(setUpRouted(runnerFor(noUplink), setupOf(0))).rejects.toThrow(RoutedNetError);
    const smallMtu = { ...fresh, links: [{ ...uplink, mtu: 600 }] };
    await expect(setUpRouted(runnerFor(smallMtu), setupOf(0))).rejects.toThrow(/MTU 600/);
    const moved = {
      ...fresh,
      rules: [{ priority: 100, table: 'local' }, ...defaultRules.slice(1)],
    };
    await expect(setUpRouted(runnerFor(moved), setupOf(0))).rejects.toThrow(/pref 100/);
    const stranger = { ...setupOf(0), localAddress: '198.18.9.9' };
    await expect(setUpRouted(runnerFor(fresh), stranger)).rejects.toThrow(/not one of the peers/);
    expect(() => planSetUp({ ...setupOf(0), clusterIps: ['2001:db8::1'] }, fresh)).toThrow(/IPv4/);
    expect(() => planSetUp({ ...setupOf(0), interface: 'eth0; rm' }, fresh)).toThrow(/interface/);
    const failing = runnerFor(fresh, 'RTNETLINK answers: File exists');
    const error = await setUpRouted(failing, setupOf(0)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommandError);
    expect(String(error)).toMatch(
      /File exists.*Command failed -:2 \(link set dev nlbf1 mtu 1450 addrgenmode none\)/s,
    );
  });
});

/** A child process stand-in: records stdin, lets the test write stderr and end it. */
class FakeChild extends EventEmitter {
  readonly stdin = new PassThrough();
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  written = '';
  stdinEnded = false;
  constructor() {
    super();
    this.stdin.on('data', (chunk: Buffer) => (this.written += chunk.toString()));
    this.stdin.on('end', () => (this.stdinEnded = true));
  }
  exit(code: number): void {
    this.emit('close', code, null);
  }
  kill(): boolean {
    this.exit(137);
    return true;
  }
}

describe('RouteAnnouncer with a fake process', () => {
  function announcerWithFakes(ips = [vip, '198.18.200.2']) {
    const children: FakeChild[] = [];
    const argvs: string[][] = [];
    const problems: string[] = [];
    let now = 0;
    const runner: Runner = {
      run: () => Promise.resolve({ code: 0, stdout: '', stderr: '' }),
      spawn: (file, args) => {
        argvs.push([file, ...args]);
        children.push(new FakeChild());
        return children.at(-1) as unknown as ChildProcessWithoutNullStreams;
      },
    };
    const announcer = new RouteAnnouncer({
      runner,
      clusterIps: ips,
      guardMs: 300,
      onProblem: (text) => problems.push(text),
      nowMs: () => now,
    });
    return { announcer, runner, children, argvs, problems, advance: (ms: number) => (now += ms) };
  }
  const flush = () => sleep(5);

  it('writes route lines and keepalives to one process, and reports its errors by line', async () => {
    const { announcer, children, argvs, problems } = announcerWithFakes();
    announcer.start();
    announcer.announce();
    announcer.keepalive();
    announcer.withdraw();
    await flush();
    expect(children).toHaveLength(1);
    expect(argvs[0]!.slice(0, 2)).toEqual(['bash', '-c']);
    expect(argvs[0]!.slice(3)).toEqual(['nlb-announcer', '0.3', '250', vip, '198.18.200.2']);
    expect(children[0]!.written).toBe(
      [
        ...markerRouteLines('replace', [vip, '198.18.200.2']),
        '.',
        ...markerRouteLines('del', [vip, '198.18.200.2']),
        '',
      ].join('\n'),
    );
    expect(announcer.announced).toBe(false);
    children[0]!.stderr.write('RTNETLINK answers: No such process\nCommand failed -:3\n');
    children[0]!.stderr.write('RTNETLINK answers: Invalid argument\nCommand failed -:2\n');
    await flush();
    expect(problems).toEqual([
      `'route replace 198.18.200.2/32 dev lo proto 250': RTNETLINK answers: Invalid argument`,
    ]);
  });

  it('starts a new process after the old one ended, carrying the wish, at most once a second', async () => {
    const { announcer, children, problems, advance } = announcerWithFakes([vip]);
    announcer.announce();
    advance(400);
    children[0]!.stderr.write(
      'nlb-announcer: no line within 0.3 s: withdrawing the marker routes\n',
    );
    children[0]!.exit(0);
    await flush();
    // The guard said why it ends: the exit is not reported again.
    expect(problems).toEqual([
      'nlb-announcer: no line within 0.3 s: withdrawing the marker routes',
    ]);
    announcer.keepalive();
    expect(children).toHaveLength(1);
    advance(600);
    announcer.keepalive();
    expect(children).toHaveLength(2);
    await flush();
    expect(children[1]!.written).toBe(`route replace ${vip}/32 dev lo proto 250\n.\n`);
  });

  it('refuses a runner that cannot spawn, a guard out of bounds and an IPv6 cluster IP', () => {
    const { runner } = announcerWithFakes();
    const options = { runner, clusterIps: [vip], guardMs: 300, onProblem: () => {} };
    expect(() => new RouteAnnouncer({ ...options, runner: new FakeRunner() })).toThrow(
      /long-lived/,
    );
    expect(() => new RouteAnnouncer({ ...options, guardMs: 5 })).toThrow(/guardMs 5/);
    expect(() => new RouteAnnouncer({ ...options, clusterIps: ['2001:db8::1'] })).toThrow(/IPv4/);
  });

  it('closes by ending stdin (withdraw) or by the detach line (keep the routes)', async () => {
    const a = announcerWithFakes([vip]);
    a.announcer.announce();
    const closed = a.announcer.close({ withdraw: true });
    await flush();
    expect(a.children[0]!.stdinEnded).toBe(true);
    a.children[0]!.exit(0);
    await closed;
    expect(a.announcer.announced).toBe(false);
    expect(a.problems).toEqual([]);
    a.announcer.announce();
    expect(a.children).toHaveLength(1);

    const b = announcerWithFakes([vip]);
    b.announcer.announce();
    const kept = b.announcer.close({ withdraw: false });
    await flush();
    expect(b.children[0]!.written.endsWith('-\n')).toBe(true);
    b.children[0]!.exit(0);
    await kept;
    expect(b.announcer.announced).toBe(true);
  });
});

describe('the announcer script with a stand-in ip', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'nlbt-rn-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const fakeIp = path.join(dir, 'ip');
  writeFileSync(
    fakeIp,
    '#!/bin/sh\nwhile IFS= read -r line; do printf "%s\\n" "$line" >> "$NLBT_OUT"; done\n',
  );
  chmodSync(fakeIp, 0o755);

  function run(name: string, guardSeconds: string) {
    const out = path.join(dir, `${name}.out`);
    writeFileSync(out, '');
    const child = spawn(
      'bash',
      ['-c', announcerScript, 'nlb-announcer', guardSeconds, '250', vip],
      {
        env: { ...process.env, PATH: `${dir}:${process.env.PATH ?? ''}`, NLBT_OUT: out },
      },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    return { child, exited, lines: () => readFileSync(out, 'utf8'), stderr: () => stderr };
  }
  const replace = `route replace ${vip}/32 dev lo proto 250\n`;
  const del = `route del ${vip}/32 dev lo proto 250\n`;

  it('passes lines on as they come, drops keepalives, and withdraws at EOF', async () => {
    const p = run('eof', '5');
    p.child.stdin.write(`${replace}.\n`);
    await expect.poll(p.lines, { timeout: 2000 }).toBe(replace);
    p.child.stdin.end();
    expect(await p.exited).toBe(0);
    expect(p.lines()).toBe(replace + del);
    expect(p.stderr()).toBe('');
  });

  it('withdraws when no line comes within the guard time, and says so', async () => {
    const p = run('guard', '0.2');
    p.child.stdin.write(replace);
    for (let i = 0; i < 4; i++) {
      await sleep(100);
      p.child.stdin.write('.\n');
    }
    expect(p.lines()).toBe(replace);
    expect(await p.exited).toBe(0);
    expect(p.lines()).toBe(replace + del);
    expect(p.stderr()).toMatch(/no line within 0.2 s/);
  });

  it('leaves the routes at the detach line, and ignores SIGTERM', async () => {
    const p = run('detach', '5');
    p.child.stdin.write(replace);
    await expect.poll(p.lines, { timeout: 2000 }).toBe(replace);
    p.child.kill('SIGTERM');
    await sleep(100);
    expect(p.child.exitCode).toBeNull();
    p.child.stdin.end('-\n');
    expect(await p.exited).toBe(0);
    expect(p.lines()).toBe(replace);
  });
});
