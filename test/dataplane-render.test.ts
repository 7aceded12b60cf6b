// The rendered nftables text is the data plane's contract: these tests pin it down exactly
// (docs/architecture.md#exact-rendering). When the rendering changes on purpose, update the expected text here and
// run test/dataplane-kernel.test.ts, which applies the same fixtures to a real kernel.
import { describe, expect, it } from 'vitest';
import type { Ownership } from '../src/core/protocol.js';
import { type DataplaneSpec } from '../src/dataplane/dataplane-spec.js';
import { renderTable } from '../src/dataplane/render.js';
import {
  address,
  labSpec,
  mixedInactiveSpec,
  mixedSpec,
  mixedStoppedSpec,
  owner,
  rule,
  vip,
} from './dataplane-fixtures.js';

/** The chains from `rule0` to the end of the inet table. */
function ruleChains(text: string): string {
  const start = text.indexOf('\tchain rule0 {');
  return text.slice(start, text.indexOf('\n}\n', start) + 1);
}

describe('renderTable', () => {
  it('renders the lab spec (unicast, one TCP rule, default host) exactly', () => {
    expect(renderTable(labSpec))
      .toBe(`# nlb data plane of host 2, rendered by nlbd: do not edit, the whole table is replaced on every change.
add table inet nlb
delete table inet nlb
table inet nlb {
	counter lease_expired {}
	counter rule0_accepted {}
	counter rule0_dropped {}
	counter rule0_reset {}
	counter uncovered_accepted {}
	counter uncovered_dropped {}

	set lease {
		type mark
		flags dynamic,timeout
		elements = { 0xffffffff timeout 800ms }
	}
	set sync {
		type mark
		flags timeout
	}
	set drop_all {
		type mark
	}
	set new_flows {
		type mark
		elements = { 0x00000000, 0x000000ff }
	}
	set rule0_owned {
		type mark
		elements = { 0, 3, 6 }
	}
	set rule0_orphan {
		type mark
		elements = { 3 }
	}

	chain prerouting {
		type filter hook prerouting priority -150; policy accept;
		ip daddr vmap { 198.18.0.100 : goto vip0 }
	}
	chain vip0 {
		# cluster IP 198.18.0.100
		meta l4proto != { tcp, udp } accept
		tcp dport 80 goto rule0
		goto uncovered
	}
	chain rule0 {
		# port rule 0: 198.18.0.100 tcp port 80, multiple, affinity none, 60 buckets
		meta mark set 0x00000000
		meta mark @drop_all counter name rule0_dropped drop
		meta l4proto tcp ct state established,related counter name rule0_accepted accept
		meta mark != @new_flows counter name rule0_dropped drop
		meta mark set 0xffffffff
		meta mark != @lease counter name lease_expired counter name rule0_dropped drop
		meta mark set jhash ip saddr . tcp sport mod 60 seed 0x4e4c4221
		tcp flags & (syn | ack) != syn meta mark @rule0_orphan counter name rule0_reset reject with tcp reset
		tcp flags & (syn | ack) != syn counter name rule0_dropped drop
		meta mark @rule0_owned ct mark set meta mark | 0x80000000 counter name rule0_accepted accept
		counter name rule0_dropped drop
	}
	chain uncovered {
		# VIP traffic no port rule covers: the default host takes it
		meta mark set 0x000000ff
		meta mark @drop_all counter name uncovered_dropped drop
		meta l4proto tcp ct state established,related counter name uncovered_accepted accept
		meta mark != @new_flows counter name uncovered_dropped drop
		meta mark set 0xffffffff
		meta mark != @lease counter name lease_expired counter name uncovered_dropped drop
		tcp flags & (syn | ack) != syn counter name uncovered_dropped drop
		ct mark set 0x80ff0000 counter name uncovered_accepted accept
	}
	chain lease_refresh {
		type filter hook output priority 0; policy accept;
		ip daddr 239.255.78.76 udp dport 2505 meta mark set 0xffffffff update @lease { meta mark timeout 800ms } meta mark set 0x00000000
	}
}
# unicast mode: frames leave with this host's masked source MAC
add table netdev nlb
delete table netdev nlb
table netdev nlb {
	chain egress {
		type filter hook egress device "eth0" priority 0; policy accept;
		ether saddr 02:bf:c6:12:00:64 ether saddr set 02:02:c6:12:00:64
	}
}
add table arp nlb
delete table arp nlb
`);
  });

  it('renders two families, rule precedence, every affinity and multicast mode exactly', () => {
    expect(renderTable(mixedSpec))
      .toBe(`# nlb data plane of host 3, rendered by nlbd: do not edit, the whole table is replaced on every change.
add table inet nlb
delete table inet nlb
table inet nlb {
	counter lease_expired {}
	counter rule0_accepted {}
	counter rule0_dropped {}
	counter rule0_reset {}
	counter rule1_accepted {}
	counter rule1_dropped {}
	counter rule1_reset {}
	counter rule2_accepted {}
	counter rule2_dropped {}
	counter rule2_reset {}
	counter uncovered_accepted {}
	counter uncovered_dropped {}

	set lease {
		type mark
		flags dynamic,timeout
		elements = { 0xffffffff timeout 1000ms }
	}
	set sync {
		type mark
		flags timeout
	}
	set drop_all {
		type mark
	}
	set new_flows {
		type mark
		elements = { 0x00000000, 0x00000001, 0x00000002 }
	}
	set rule0_owned {
		type mark
		elements = { 1, 2 }
	}
	set rule0_orphan {
		type mark
	}
	set rule1_owned {
		type mark
	}
	set rule1_orphan {
		type mark
	}
	set rule2_owned {
		type mark
		elements = { 15 }
	}
	set rule2_orphan {
		type mark
	}

	chain prerouting {
		type filter hook prerouting priority -150; policy accept;
		ip daddr vmap { 198.18.0.100 : goto vip0 }
		ip6 daddr vmap { 2001:db8::100 : goto vip1 }
	}
	chain vip0 {
		# cluster IP 198.18.0.100
		meta pkttype multicast meta pkttype set host
		meta l4proto != { tcp, udp } accept
		udp dport 53 goto rule2
		meta l4proto { tcp, udp } goto rule0
		goto uncovered
	}
	chain vip1 {
		# cluster IP 2001:db8::100
		meta pkttype multicast meta pkttype set host
		meta l4proto != { tcp, udp } accept
		meta l4proto { tcp, udp } th dport 1000-2000 goto rule1
		meta l4proto { tcp, udp } goto rule0
		goto uncovered
	}
	chain rule0 {
		# port rule 0: all cluster IPs both all ports, multiple, affinity network, 60 buckets
		meta mark set 0x00000000
		meta mark @drop_all counter name rule0_dropped drop
		meta l4proto tcp ct state established,related counter name rule0_accepted accept
		meta mark != @new_flows counter name rule0_dropped drop
		meta mark set 0xffffffff
		meta mark != @lease counter name lease_expired counter name rule0_dropped drop
		meta mark set jhash ip saddr & 255.255.255.0 mod 60 seed 0x00000007
		meta mark set jhash ip6 saddr & ffff:ffff:ffff:ffff:: mod 60 seed 0x00000007
		tcp flags & (syn | ack) != syn meta mark @rule0_orphan counter name rule0_reset reject with tcp reset
		tcp flags & (syn | ack) != syn counter name rule0_dropped drop
		meta mark @rule0_owned ct mark set meta mark | 0x80000000 counter name rule0_accepted accept
		counter name rule0_dropped drop
	}
	chain rule1 {
		# port rule 1: 2001:db8::100 both ports 1000-2000, single, affinity none, 8 buckets
		meta mark set 0x00000001
		meta mark @drop_all counter name rule1_dropped drop
		meta l4proto tcp ct state established,related counter name rule1_accepted accept
		meta mark != @new_flows counter name rule1_dropped drop
		meta mark set 0xffffffff
		meta mark != @lease counter name lease_expired counter name rule1_dropped drop
		meta mark set jhash ip6 saddr . th sport mod 8 seed 0x00000007
		tcp flags & (syn | ack) != syn meta mark @rule1_orphan counter name rule1_reset reject with tcp reset
		tcp flags & (syn | ack) != syn counter name rule1_dropped drop
		meta mark @rule1_owned ct mark set meta mark | 0x80010000 counter name rule1_accepted accept
		counter name rule1_dropped drop
	}
	chain rule2 {
		# port rule 2: 198.18.0.100 udp port 53, multiple, affinity single, 16 buckets
		meta mark set 0x00000002
		meta mark @drop_all counter name rule2_dropped drop
		meta mark != @new_flows counter name rule2_dropped drop
		meta mark set 0xffffffff
		meta mark != @lease counter name lease_expired counter name rule2_dropped drop
		meta mark set jhash ip saddr mod 16 seed 0x00000007
		meta mark @rule2_owned ct mark set meta mark | 0x80020000 counter name rule2_accepted accept
		counter name rule2_dropped drop
	}
	chain uncovered {
		# VIP traffic no port rule covers: the default host takes it
		meta mark set 0x000000ff
		meta mark @drop_all counter name uncovered_dropped drop
		meta l4proto tcp ct state established,related counter name uncovered_accepted accept
		meta mark != @new_flows counter name uncovered_dropped drop
		meta mark set 0xffffffff
		meta mark != @lease counter name lease_expired counter name uncovered_dropped drop
		tcp flags & (syn | ack) != syn counter name uncovered_dropped drop
		ct mark set 0x80ff0000 counter name uncovered_accepted accept
	}
	chain lease_refresh {
		type filter hook output priority 0; policy accept;
		ip daddr 239.1.2.3 udp dport 4000 meta mark set 0xffffffff update @lease { meta mark timeout 1000ms } meta mark set 0x00000000
	}
	chain nd_rewrite {
		type filter hook output priority 0; policy accept;
		icmpv6 type nd-neighbor-advert @th,64,128 0x20010db8000000000000000000000100 @th,192,16 0x0201 @th,208,48 0x525400123456 @th,48,16 0x0000 @th,208,48 set 0x03bfc6120064 @th,48,16 set 0xbc86
		icmpv6 type nd-neighbor-solicit ip6 saddr 2001:db8::100 @th,192,16 0x0101 @th,208,48 0x525400123456 @th,48,16 0x0000 @th,208,48 set 0x03bfc6120064 @th,48,16 set 0xbc86
	}
}
# multicast mode: no source MAC masking
add table netdev nlb
delete table netdev nlb
# multicast mode: ARP for the cluster IPs names the group MAC
add table arp nlb
delete table arp nlb
table arp nlb {
	chain output {
		type filter hook output priority 0; policy accept;
		arp saddr ip 198.18.0.100 arp saddr ether set 03:bf:c6:12:00:64
	}
}
`);
  });

  it('renders the same chains whatever the ownership: only set elements differ', () => {
    const variants: DataplaneSpec[] = [
      mixedInactiveSpec,
      mixedStoppedSpec,
      { ...mixedSpec, ownership: { ...mixedSpec.ownership, isDefault: true } },
      {
        ...mixedSpec,
        ownership: { ...mixedSpec.ownership, rules: [owner([]), owner([0, 1], [1]), owner([])] },
      },
    ];
    for (const spec of variants) {
      expect(ruleChains(renderTable(spec))).toBe(ruleChains(renderTable(mixedSpec)));
    }
  });

  it('puts the host state in drop_all and new_flows, keyed by rule (0xff: uncovered)', () => {
    const cases: [Ownership, string, string][] = [
      // Taking part, not the default host: new flows for every rule, none uncovered.
      [mixedSpec.ownership, '', '0x00000000, 0x00000001, 0x00000002'],
      // The default host also takes the uncovered traffic.
      [
        { ...mixedSpec.ownership, isDefault: true },
        '',
        '0x00000000, 0x00000001, 0x00000002, 0x000000ff',
      ],
      // Not taking part (drainstop done, suspended): established TCP only, nothing new.
      [mixedInactiveSpec.ownership, '', ''],
      [{ ...mixedInactiveSpec.ownership, isDefault: true }, '', ''],
      // Stopped: everything dropped, established included (rule 1 is disabled as well).
      [mixedStoppedSpec.ownership, '0x00000000, 0x00000001, 0x00000002, 0x000000ff', ''],
      // A disabled rule drops everything and takes nothing; the others go on.
      [
        {
          ...mixedSpec.ownership,
          isDefault: true,
          rules: [owner([1, 2]), owner([], [], true), owner([15])],
        },
        '0x00000001',
        '0x00000000, 0x00000002, 0x000000ff',
      ],
      // dropEstablished only means something for a host that does not take part.
      [{ ...mixedSpec.ownership, dropEstablished: true }, '', '0x00000000, 0x00000001, 0x00000002'],
    ];
    for (const [ownership, dropAll, newFlows] of cases) {
      const text = renderTable({ ...mixedSpec, ownership });
      const block = (name: string, elements: string): string =>
        `\tset ${name} {\n\t\ttype mark\n${elements === '' ? '' : `\t\telements = { ${elements} }\n`}\t}\n`;
      expect(text, JSON.stringify(ownership)).toContain(
        block('drop_all', dropAll) + block('new_flows', newFlows),
      );
    }
  });

  it('refreshes the lease from unicast heartbeats to the peers when cluster.heartbeat.peers is set', () => {
    const peers = ['198.18.0.11', '198.18.0.12', '198.18.0.13'].map((p) => address(p));
    const text = renderTable({ ...labSpec, heartbeat: { ...labSpec.heartbeat, peers } });
    expect(text).toContain(
      '\t\tip daddr { 198.18.0.11, 198.18.0.12, 198.18.0.13 } udp dport 2505 meta mark set 0xffffffff update @lease { meta mark timeout 800ms } meta mark set 0x00000000',
    );
    expect(text).not.toContain('ip daddr 239.255.78.76');
  });

  it('depends on values only, not on object identity', () => {
    const copy: DataplaneSpec = {
      ...labSpec,
      clusterIps: [address('198.18.0.100')],
      portRules: labSpec.portRules.map((r) => ({ ...r, vip: address('198.18.0.100') })),
      ownership: { ...labSpec.ownership, rules: [owner([0, 3, 6], [3])] },
    };
    expect(renderTable(copy)).toBe(renderTable(labSpec));
  });

  it('matches a port range, a whole protocol and a single port as nft expects them', () => {
    const spec: DataplaneSpec = {
      ...labSpec,
      portRules: [
        rule({ vip, protocol: 'tcp' }),
        rule({ vip, portStart: 8000, portEnd: 8999, protocol: 'udp' }),
        rule({ portStart: 443, portEnd: 443, protocol: 'both' }),
      ],
      ownership: { ...labSpec.ownership, rules: [owner([]), owner([]), owner([])] },
    };
    const text = renderTable(spec);
    expect(text).toContain(
      [
        '\t\tmeta l4proto tcp goto rule0',
        '\t\tudp dport 8000-8999 goto rule1',
        '\t\tmeta l4proto { tcp, udp } th dport 443 goto rule2',
        '\t\tgoto uncovered',
      ].join('\n'),
    );
  });
});
