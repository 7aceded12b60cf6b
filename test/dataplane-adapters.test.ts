// The adapters without a kernel: the exact commands they run (through a fake runner), how they
// read tool output, and the Dataplane facade's choices (sets or whole table, counters kept
// across replacements, flush commands), driven through the fake nft.
import { describe, expect, it } from 'vitest';
import { ConntrackCli, parseConntrackList } from '../src/dataplane/conntrack.js';
import { Dataplane } from '../src/dataplane/dataplane.js';
import {
  attachInterface,
  cleanupStale,
  detachInterface,
} from '../src/dataplane/interface-setup.js';
import { CommandError, FakeRunner } from '../src/dataplane/exec.js';
import { IpRoute, macGuardBytecode, macGuardPref } from '../src/dataplane/iproute.js';
import { ctMark, decodeCtMark } from '../src/dataplane/mark.js';
import { NftError, parseCounters } from '../src/dataplane/nft.js';
import { NftCli } from '../src/dataplane/nft-cli.js';
import { FakeNft } from '../src/dataplane/nft-fake.js';
import type { DataplaneSpec } from '../src/dataplane/dataplane-spec.js';
import {
  renderLeaseRefresh,
  renderOwnershipUpdate,
  renderRemoval,
  renderTable,
} from '../src/dataplane/render.js';
import { labSpec, owner, vip, vip6 } from './dataplane-fixtures.js';
import { nftContract } from './dataplane-nft-contract.js';

describe('ct mark layout', () => {
  it('puts the nlb bit, the rule and the bucket where mark.ts says', () => {
    expect(ctMark(1, 5)).toBe(0x80010005);
    expect(ctMark('uncovered', 0)).toBe(0x80ff0000);
    expect(decodeCtMark(0x80010005)).toEqual({ rule: 1, bucket: 5 });
    expect(decodeCtMark(0x80ff0000)).toEqual({ rule: 'uncovered', bucket: 0 });
    expect(decodeCtMark(5)).toBeUndefined();
    expect(() => ctMark(32, 0)).toThrow(/rule index 32/);
    expect(() => ctMark(0, 1024)).toThrow(/bucket 1024/);
  });
});

describe('FakeNft passes the Nft contract', () => {
  const fake = new FakeNft();
  nftContract(
    () => fake,
    (script) => fake.foreign(script),
  );
});

describe('NftCli without a long-lived process', () => {
  it('applies a script through nft -f - and reports nft errors', async () => {
    const runner = new FakeRunner((argv, input) =>
      input?.includes('broken') ? { code: 1, stderr: 'Error: syntax error\n' } : {},
    );
    const nft = new NftCli({ runner });
    await nft.apply('add table inet nlb\n');
    await nft.applyQuick('nlb', renderLeaseRefresh(labSpec));
    await expect(nft.apply('broken\n')).rejects.toThrow(
      'nft rejected the transaction, nothing was changed: Error: syntax error',
    );
    expect(runner.commands).toEqual([
      { argv: ['nft', '-f', '-'], input: 'add table inet nlb\n' },
      { argv: ['nft', '-f', '-'], input: renderLeaseRefresh(labSpec) },
      { argv: ['nft', '-f', '-'], input: 'broken\n' },
    ]);
  });

  it('insists that a quick transaction is one line on a named table', async () => {
    const nft = new NftCli({ runner: new FakeRunner() });
    expect(() => nft.applyQuick('nlb', 'add element inet nlb lease { 1 }\nx')).toThrow(/one/);
    expect(() => nft.applyQuick('nlb x', 'flush set inet nlb rule0_owned')).toThrow(/table name/);
  });

  it('parses counters from nft -j', async () => {
    const stdout = JSON.stringify({
      nftables: [
        { metainfo: { version: '1.0.6' } },
        {
          counter: { family: 'inet', name: 'rule0_accepted', table: 'nlb', packets: 3, bytes: 180 },
        },
      ],
    });
    const runner = new FakeRunner(() => ({ stdout }));
    const json = await new NftCli({ runner }).listJson([
      'list',
      'counters',
      'table',
      'inet',
      'nlb',
    ]);
    expect(parseCounters(json)).toEqual(new Map([['rule0_accepted', { packets: 3, bytes: 180 }]]));
    expect(runner.commands[0]!.argv).toEqual([
      'nft',
      '-j',
      'list',
      'counters',
      'table',
      'inet',
      'nlb',
    ]);
  });
});

describe('ConntrackCli', () => {
  const listing = [
    'tcp      6 431999 ESTABLISHED src=198.18.0.2 dst=198.18.0.100 sport=40003 dport=80 src=198.18.0.100 dst=198.18.0.2 sport=80 dport=40003 [ASSURED] mark=2147549202 use=1',
    'tcp      6 431999 ESTABLISHED src=198.18.0.2 dst=198.18.0.100 sport=40004 dport=80 src=198.18.0.100 dst=198.18.0.2 sport=80 dport=40004 [ASSURED] mark=2147549202 use=1',
    'tcp      6 102 TIME_WAIT src=198.18.0.2 dst=198.18.0.100 sport=40002 dport=80 src=198.18.0.100 dst=198.18.0.2 sport=80 dport=40002 [ASSURED] mark=2147549230 use=1',
    'udp      17 29 src=198.18.0.2 dst=198.18.0.100 sport=5353 dport=53 [UNREPLIED] src=198.18.0.100 dst=198.18.0.2 sport=53 dport=5353 mark=2147483655 use=1',
    'tcp      6 299 ESTABLISHED src=198.18.0.2 dst=198.18.0.100 sport=1 dport=81 src=198.18.0.100 dst=198.18.0.2 sport=81 dport=1 [ASSURED] mark=2164195328 use=1',
    'tcp      6 299 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=22 src=10.0.0.2 dst=10.0.0.1 sport=22 dport=1 [ASSURED] mark=0 use=1',
    '',
  ].join('\n');

  it('counts live connections per rule and bucket from the marks', () => {
    expect(parseConntrackList(listing)).toEqual([
      { rule: 0, bucket: 7, connections: 1 },
      { rule: 1, bucket: 18, connections: 2 },
      { rule: 'uncovered', bucket: 0, connections: 1 },
    ]);
  });

  it('lists only nlb flows, and reads the deleted count (exit 1 means none)', async () => {
    const runner = new FakeRunner((argv) => {
      if (argv[1] === '-L') return { stdout: listing };
      if (argv.includes('0x80010005')) {
        return {
          stderr: 'conntrack v1.4.7 (conntrack-tools): 2 flow entries have been deleted.\n',
        };
      }
      if (argv.includes('--orig-dst')) {
        return {
          code: 1,
          stderr: 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n',
        };
      }
      return {
        code: 1,
        stderr: 'conntrack v1.4.7 (conntrack-tools): Operation failed: invalid parameters\n',
      };
    });
    const conntrack = new ConntrackCli(runner);
    expect(await conntrack.connectionsByBucket()).toHaveLength(3);
    expect(await conntrack.deleteByMark(0x80010005)).toBe(2);
    expect(await conntrack.deleteByDestination(vip6)).toBe(0);
    await expect(conntrack.deleteByMark(1, 2)).rejects.toBeInstanceOf(CommandError);
    expect(runner.commands.map((c) => c.argv)).toEqual([
      ['conntrack', '-L', '--mark', '0x80000000/0x80000000'],
      ['conntrack', '-D', '--mark', '0x80010005'],
      ['conntrack', '-D', '-f', 'ipv6', '--orig-dst', '2001:db8::100'],
      ['conntrack', '-D', '--mark', '0x00000001/0x00000002'],
    ]);
  });
});

describe('IpRoute', () => {
  const linkJson = (mac: string, permaddr?: string) =>
    JSON.stringify([
      {
        ifname: 'eth0',
        flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
        mtu: 1500,
        operstate: 'UP',
        address: mac,
        ...(permaddr === undefined ? {} : { permaddr }),
        addr_info: [
          { family: 'inet', local: '198.18.0.12', prefixlen: 24 },
          { family: 'inet', local: '198.18.0.100', prefixlen: 32 },
        ],
      },
    ]);

  it('reads link state and addresses from ip -j', async () => {
    const ip = new IpRoute(new FakeRunner(() => ({ stdout: linkJson('AE:A0:42:58:A5:D6') })));
    expect(await ip.link('eth0')).toEqual({
      name: 'eth0',
      mac: 'ae:a0:42:58:a5:d6',
      permanentMac: undefined,
      up: true,
      operState: 'UP',
      mtu: 1500,
      multicast: true,
    });
    expect((await ip.allAddresses()).map((a) => `${a.interface} ${a.prefix.address.text}`)).toEqual(
      ['eth0 198.18.0.12', 'eth0 198.18.0.100'],
    );
    expect((await ip.addresses('eth0')).map((p) => `${p.address.text}/${p.length}`)).toEqual([
      '198.18.0.12/24',
      '198.18.0.100/32',
    ]);
  });

  it('adds cluster IPs (IPv6 without DAD) and treats "already there" and "not there" as no-ops', async () => {
    const runner = new FakeRunner((argv) => {
      if (argv[2] === 'add' && argv[3] === '198.18.0.100/32') {
        return { code: 2, stderr: 'Error: ipv4: Address already assigned.\n' };
      }
      if (argv[2] === 'del') return { code: 2, stderr: 'Error: ipv4: Address not found.\n' };
      return {};
    });
    const ip = new IpRoute(runner);
    expect(await ip.addAddress('eth0', { address: vip, length: 32 })).toBe(false);
    expect(await ip.addAddress('eth0', { address: vip6, length: 128 })).toBe(true);
    expect(await ip.deleteAddress('eth0', { address: vip, length: 32 })).toBe(false);
    expect(runner.commands.map((c) => c.argv)).toEqual([
      ['ip', 'addr', 'add', '198.18.0.100/32', 'dev', 'eth0'],
      ['ip', 'addr', 'add', '2001:db8::100/128', 'dev', 'eth0', 'nodad'],
      ['ip', 'addr', 'del', '198.18.0.100/32', 'dev', 'eth0'],
    ]);
  });

  it('says which interface is missing', async () => {
    const ip = new IpRoute(
      new FakeRunner(() => ({ code: 1, stderr: 'Device "eth9" does not exist.\n' })),
    );
    await expect(ip.link('eth9')).rejects.toThrow(/interface 'eth9' exists/);
  });

  it('attaches MAC then cluster IPs, and detaches in the reverse order', async () => {
    let mac = 'ae:a0:42:58:a5:d6';
    const runner = new FakeRunner((argv) => {
      if (argv[1] === '-j') return { stdout: linkJson(mac) };
      if (argv[1] === 'link' && argv[5] === 'address') mac = argv[6]!;
      return {};
    });
    const ip = new IpRoute(runner);
    const setup = {
      interface: 'eth0',
      clusterIps: [vip],
      mode: 'unicast' as const,
      clusterMac: '02:bf:c6:12:00:64',
    };
    const attached = await attachInterface(ip, setup);
    expect(attached).toEqual({
      originalMac: 'ae:a0:42:58:a5:d6',
      added: [{ address: vip, length: 32 }],
    });
    await detachInterface(ip, setup, attached);
    const guard = `tc filter replace dev eth0 egress pref ${macGuardPref} handle 1 protocol all bpf da bytecode ${macGuardBytecode('02:bf:c6:12:00:64')}`;
    expect(runner.commands.map((c) => c.argv.join(' '))).toEqual([
      'ip -j link show dev eth0',
      'tc qdisc add dev eth0 clsact',
      guard,
      'ip link set dev eth0 address 02:bf:c6:12:00:64',
      'ip addr add 198.18.0.100/32 dev eth0',
      'ip addr del 198.18.0.100/32 dev eth0',
      'ip -j link show dev eth0',
      'ip link set dev eth0 address ae:a0:42:58:a5:d6',
      `tc filter del dev eth0 egress pref ${macGuardPref}`,
    ]);
  });

  it('guards the cluster MAC with classic BPF that drops only frames still sent from it', () => {
    // ld [6]; jeq 0x02bfc612; ldh [10]; jeq 0x0064; ret SHOT; ret UNSPEC.
    expect(macGuardBytecode('02:bf:c6:12:00:64')).toBe(
      '6,32 0 0 6,21 0 3 46122514,40 0 0 10,21 0 1 100,6 0 0 2,6 0 0 4294967295',
    );
    expect(macGuardBytecode('ff:ff:ff:ff:ff:ff')).toContain('21 0 3 4294967295,');
    expect(() => macGuardBytecode('02:BF:C6:12:00:64')).toThrow(/lower-case MAC/);
  });

  it('attaches without the MAC guard on a kernel that has no BPF classifier, and says so', async () => {
    const runner = new FakeRunner((argv) => {
      if (argv[1] === '-j') return { stdout: linkJson('ae:a0:42:58:a5:d6') };
      if (argv[0] === 'tc' && argv[2] === 'replace') {
        return { code: 2, stderr: 'Error: TC classifier not found.\n' };
      }
      return {};
    });
    const attached = await attachInterface(new IpRoute(runner), {
      interface: 'eth0',
      clusterIps: [vip],
      mode: 'unicast',
      clusterMac: '02:bf:c6:12:00:64',
    });
    expect(attached.warning).toMatch(/^no MAC guard on eth0: .*TC classifier not found/);
    expect(runner.commands.map((c) => c.argv.join(' '))).toContain(
      'ip addr add 198.18.0.100/32 dev eth0',
    );
  });

  it('cleans up after a crashed predecessor: cluster IPs, cluster MAC, tables', async () => {
    const runner = new FakeRunner((argv) =>
      argv[1] === '-j' ? { stdout: linkJson('02:bf:c6:12:00:64', '52:54:00:12:34:56') } : {},
    );
    const nft = new FakeNft();
    const report = await cleanupStale(nft, new IpRoute(runner), {
      tableName: 'nlb',
      interface: 'eth0',
      clusterIps: [vip],
      mode: 'unicast',
      clusterMac: '02:bf:c6:12:00:64',
    });
    expect(report).toEqual({
      removedAddresses: ['198.18.0.100/32'],
      restoredMac: '52:54:00:12:34:56',
      warning: undefined,
    });
    expect(runner.commands.map((c) => c.argv.join(' '))).toEqual([
      'ip -j addr show dev eth0',
      'ip addr del 198.18.0.100/32 dev eth0',
      'ip -j link show dev eth0',
      'ip link set dev eth0 address 52:54:00:12:34:56',
      `tc filter del dev eth0 egress pref ${macGuardPref}`,
    ]);
    expect(nft.scripts).toEqual([{ kind: 'apply', script: renderRemoval('nlb') }]);
  });
});

describe('Dataplane', () => {
  function setup() {
    const nft = new FakeNft();
    const runner = new FakeRunner(() => ({
      stderr: 'conntrack v1.4.7 (conntrack-tools): 1 flow entries have been deleted.\n',
    }));
    return { nft, runner, dataplane: new Dataplane(nft, new ConntrackCli(runner)) };
  }
  const moved: DataplaneSpec = {
    ...labSpec,
    ownership: { ...labSpec.ownership, rules: [owner([0, 6, 7])] },
  };
  const notDefault: DataplaneSpec = {
    ...moved,
    ownership: { ...moved.ownership, isDefault: false },
  };
  /** A configuration change: only a whole-table apply gets the kernel there. */
  const reseeded: DataplaneSpec = { ...notDefault, hashSeed: 0x1234 };

  it('applies the whole table first, then set changes on the quick path', async () => {
    const { nft, dataplane } = setup();
    expect(await dataplane.program(labSpec)).toBe('table');
    expect(await dataplane.program(labSpec)).toBe('unchanged');
    expect(await dataplane.program(moved)).toBe('sets');
    expect(nft.elements('nlb', 'rule0_owned')).toEqual([0, 6, 7]);
    expect(nft.elements('nlb', 'rule0_orphan')).toEqual([]);
    // A new default host elsewhere is an ownership change too: set elements only.
    expect(await dataplane.program(notDefault)).toBe('sets');
    expect(nft.elements('nlb', 'new_flows')).toEqual([0]);
    expect(await dataplane.program(reseeded)).toBe('table');
    // A heartbeat refreshes the lease in the kernel: no nft call.
    expect(dataplane.heartbeatSent()).toEqual({ restored: [] });
    expect(nft.scripts).toEqual([
      { kind: 'apply', script: renderTable(labSpec) },
      { kind: 'quick', script: renderOwnershipUpdate(labSpec, moved) },
      { kind: 'quick', script: renderOwnershipUpdate(moved, notDefault) },
      { kind: 'apply', script: renderTable(reseeded) },
    ]);
  });

  it('keeps the previous configuration when nft refuses the new one', async () => {
    const { nft, dataplane } = setup();
    await dataplane.program(labSpec);
    nft.failNext('Error: Could not process rule: Device or resource busy');
    await expect(dataplane.program(reseeded)).rejects.toBeInstanceOf(NftError);
    expect(dataplane.current).toBe(labSpec);
    // The same on the quick path, and the next try sends the whole change again.
    nft.failNext('Error: Could not process rule: Device or resource busy');
    await expect(dataplane.program(notDefault)).rejects.toBeInstanceOf(NftError);
    expect(dataplane.current).toBe(labSpec);
    expect(nft.elements('nlb', 'new_flows')).toEqual([0, 0xff]);
    expect(await dataplane.program(notDefault)).toBe('sets');
    expect(nft.elements('nlb', 'new_flows')).toEqual([0]);
  });

  it('adds up counters across whole-table replacements', async () => {
    const { nft, dataplane } = setup();
    await dataplane.program(labSpec);
    nft.setCounter('nlb', 'rule0_accepted', { packets: 10, bytes: 600 });
    expect(await dataplane.program(reseeded)).toBe('table');
    nft.setCounter('nlb', 'rule0_accepted', { packets: 1, bytes: 60 });
    nft.setCounter('nlb', 'lease_expired', { packets: 2, bytes: 120 });
    const counters = await dataplane.counters();
    expect(counters.rules[0]!.accepted).toEqual({ packets: 11, bytes: 660 });
    expect(counters.leaseExpired).toEqual({ packets: 2, bytes: 120 });
    expect(counters.uncovered.dropped).toEqual({ packets: 0, bytes: 0 });
  });

  it('flushes a whole rule with one mark/mask, a few buckets one by one', async () => {
    const { runner, dataplane } = setup();
    await dataplane.program(labSpec);
    const all = Array.from({ length: 60 }, (_, i) => i);
    expect(await dataplane.flush(0, all)).toBe(1);
    expect(await dataplane.flush(0, [3, 7])).toBe(2);
    expect(await dataplane.flushClusterIps([vip])).toBe(1);
    expect(runner.commands.map((c) => c.argv.join(' '))).toEqual([
      'conntrack -D --mark 0x80000000/0x80ff0000',
      'conntrack -D --mark 0x80000003',
      'conntrack -D --mark 0x80000007',
      'conntrack -D -f ipv4 --orig-dst 198.18.0.100',
    ]);
  });
});
