// A capture of the SYN-ACKs the cluster answers, from the client namespace: which host answered
// each connection (by its source MAC: the masked one in unicast mode, the host's own in multicast
// and IGMP modes), so a lab test sees double answers and misses.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { execIn } from '../../src/lab/netns.js';
import type { ConnectionRecord } from '../../src/lab/loadgen.js';
import { labHttpPort } from '../../src/lab/naming.js';
import type { ClusterLab } from './lab-cluster.js';

const captureTable = 'nlbtest_synack';
const captureSet = 'synacks';
/** One element per (connection, answering host); a test run opens a few thousand connections. */
const captureElementsMax = 65_535;

/**
 * Installs the SYN-ACK capture in client c1's namespace. Before conntrack (priority raw), every
 * SYN-ACK from the VIP adds one element (client address, client port, the ack number = the
 * client's ISN + 1, source MAC) to a set: a retransmitted SYN-ACK adds nothing new, a SYN-ACK
 * from a second host adds a second element for the same connection. The ack number keeps two
 * connections that reuse a port apart. The packet mark carries it into the key (a `typeof` key
 * with raw TCP fields makes nft 1.0.6 abort when listing the set) and is cleared again.
 */
export async function installSynAckCapture(lab: ClusterLab): Promise<void> {
  const client = lab.state.clients[0]!;
  // The cluster IP the lab's clients use: its family decides the set's address type.
  const ip = lab.vip.family === 6 ? 'ip6' : 'ip';
  const script = [
    `table inet ${captureTable} {`,
    `  set ${captureSet} {`,
    `    type ${lab.vip.family === 6 ? 'ipv6_addr' : 'ipv4_addr'} . inet_service . mark . ether_addr`,
    '    flags dynamic',
    `    size ${captureElementsMax}`,
    '  }',
    '  chain pre {',
    '    type filter hook prerouting priority raw; policy accept;',
    `    ${ip} saddr ${lab.vip.text} tcp sport ${labHttpPort} tcp flags & (syn | ack) == syn | ack meta mark set tcp ackseq add @${captureSet} { ${ip} daddr . tcp dport . meta mark . ether saddr } counter meta mark set 0`,
    '  }',
    '}',
    '',
  ].join('\n');
  const file = path.join(lab.state.dir, 'synack-capture.nft');
  writeFileSync(file, script, { mode: 0o600 });
  await execIn(client.namespace, ['nft', '-f', file]);
}

export async function clearSynAcks(lab: ClusterLab): Promise<void> {
  await execIn(lab.state.clients[0]!.namespace, [
    'nft',
    'flush',
    'set',
    'inet',
    captureTable,
    captureSet,
  ]);
}

export interface SynAckCapture {
  /** SYN-ACK packets seen (retransmissions included). */
  readonly packets: number;
  /** Per connection (`ip:port:ackseq`), the hosts that answered it, from their masked MACs. */
  readonly answers: Map<string, number[]>;
  /** Per client `ip:port`, every host that answered any connection from it. */
  readonly answersByEndpoint: Map<string, Set<number>>;
  /** Connections answered by more than one host. */
  readonly doubles: { connection: string; hosts: number[] }[];
}

/** The host id in a masked MAC 02:<id>:<VIP bytes> (unicast mode), or undefined. */
export function hostOfMaskedMac(mac: string, vip: string): number | undefined {
  const octets = mac.toLowerCase().split(':');
  const vipOctets = vip.split('.').map((b) => Number(b).toString(16).padStart(2, '0'));
  if (octets.length !== 6 || octets[0] !== '02' || octets.slice(2).join() !== vipOctets.join()) {
    return undefined;
  }
  const id = parseInt(octets[1]!, 16);
  return id >= 1 && id <= 32 ? id : undefined;
}

/**
 * The client end of a capture key `ip:port:ackseq` (an IPv6 address holds ':' too): its
 * address, port, and `ip:port` as `answersByEndpoint` keys it.
 */
export function endpointOf(connection: string): { ip: string; port: number; endpoint: string } {
  const parts = connection.split(':');
  const ip = parts.slice(0, -2).join(':');
  const port = Number(parts.at(-2));
  return { ip, port, endpoint: `${ip}:${port}` };
}

/** The own MAC of each host's cluster interface, read once per lab (multicast and IGMP modes). */
const ownMacsOfLab = new WeakMap<ClusterLab, Map<string, number>>();

async function ownMacs(lab: ClusterLab): Promise<Map<string, number>> {
  let macs = ownMacsOfLab.get(lab);
  if (macs === undefined) {
    macs = new Map();
    for (const host of lab.state.hosts) {
      const { stdout } = await execIn(host.namespace, [
        'cat',
        `/sys/class/net/${host.interface}/address`,
      ]);
      macs.set(stdout.trim().toLowerCase(), host.id);
    }
    ownMacsOfLab.set(lab, macs);
  }
  return macs;
}

/**
 * Tells which host sent a frame from `mac`: the masked MAC names it in unicast mode; in the
 * other modes every host sends from its own MAC.
 */
export async function hostOfSourceMacIn(
  lab: ClusterLab,
): Promise<(mac: string) => number | undefined> {
  if (lab.config.cluster.mode === 'unicast') {
    return (mac) => hostOfMaskedMac(mac, lab.state.vip);
  }
  const macs = await ownMacs(lab);
  return (mac) => macs.get(mac.toLowerCase());
}

export async function readSynAcks(lab: ClusterLab): Promise<SynAckCapture> {
  const hostOf = await hostOfSourceMacIn(lab);
  const namespace = lab.state.clients[0]!.namespace;
  const { stdout } = await execIn(namespace, ['nft', '-j', 'list', 'table', 'inet', captureTable]);
  const items = (JSON.parse(stdout) as { nftables: Record<string, unknown>[] }).nftables;
  let packets = 0;
  const answers = new Map<string, number[]>();
  const answersByEndpoint = new Map<string, Set<number>>();
  for (const item of items) {
    const set = item.set as { name: string; elem?: { concat: unknown[] }[] } | undefined;
    if (set?.name === captureSet) {
      if ((set.elem?.length ?? 0) >= captureElementsMax) {
        throw new Error('the SYN-ACK capture set is full: flush it between phases');
      }
      for (const element of set.elem ?? []) {
        const [ip, port, ackseq, mac] = element.concat as [string, number, number, string];
        const host = hostOf(mac);
        if (host === undefined) throw new Error(`SYN-ACK from an unexpected MAC ${mac}`);
        const key = `${ip}:${port}:${ackseq}`;
        answers.set(
          key,
          [...(answers.get(key) ?? []), host].sort((a, b) => a - b),
        );
        const endpoint = `${ip}:${port}`;
        if (!answersByEndpoint.has(endpoint)) answersByEndpoint.set(endpoint, new Set());
        answersByEndpoint.get(endpoint)!.add(host);
      }
    }
    const rule = item.rule as { expr?: { counter?: { packets: number } }[] } | undefined;
    for (const expr of rule?.expr ?? []) {
      if (expr.counter !== undefined) packets += expr.counter.packets;
    }
  }
  const doubles = [...answers]
    .filter(([, hosts]) => hosts.length > 1)
    .map(([connection, hosts]) => ({ connection, hosts }));
  return { packets, answers, answersByEndpoint, doubles };
}

/**
 * Checks the capture against the loadgen's own records: every answered connection has a SYN-ACK
 * from the host whose backend answered it. This is what shows the capture counts answers right.
 */
export function captureMisses(
  capture: SynAckCapture,
  connections: readonly ConnectionRecord[],
): string[] {
  const misses: string[] = [];
  for (const c of connections) {
    if (c.host === undefined) continue;
    const hosts = capture.answersByEndpoint.get(`${c.sourceIp}:${c.sourcePort}`);
    if (hosts === undefined || !hosts.has(c.host)) {
      misses.push(
        `${c.sourceIp}:${c.sourcePort} answered by host ${c.host}, SYN-ACKs seen from ${hosts === undefined ? 'nobody' : [...hosts].join(',')}`,
      );
    }
  }
  return misses;
}
