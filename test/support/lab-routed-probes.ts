// The two probes of test/lab-routed.test.ts that need tables of their own in the router and the
// client, and a timed window: a bulk transfer over a forwarded connection with ICMP frag-needed
// dropped, and two hosts whose maps disagree on purpose. Each returns what it counted; the test
// says what must hold. Every table they add is removed again, whatever fails.
// Network safety: only lab namespaces (runIn checks), only 198.18.0.0/15 addresses.
import type { MapOutput } from '../../src/cli/commands/map.js';
import { forwardMark, peerOrder } from '../../src/dataplane/routed-marks.js';
import { labHttpPort } from '../../src/lab/naming.js';
import { type ProcessRef, signalProcess } from '../../src/lab/process.js';
import { type ClusterLab, bucketOf } from './lab-cluster.js';
import {
  ClientProgram,
  bulkEchoSource,
  connectBurstSource,
  counterDelta,
  firstHops,
  hostNamespaceOf,
  installCounterTable,
  kernelMap,
  namedCounters,
  removeTable,
  runIn,
  tableCounters,
} from './lab-routed.js';

const synOnly = 'tcp flags & (syn | ack) == syn';
const hostIds: readonly number[] = [1, 2, 3];

type Counters = Record<string, number>;

async function allCounters(lab: ClusterLab): Promise<Map<number, Counters>> {
  const entries = await Promise.all(
    hostIds.map(async (id) => [id, await tableCounters(lab, id)] as const),
  );
  return new Map(entries);
}

export interface BulkResult {
  readonly port: number;
  readonly owner: number;
  readonly hop: number;
  readonly overlayMtu: number | undefined;
  readonly answer: {
    host?: number;
    sent?: number;
    echoed?: number;
    ms?: number;
    error?: string;
  };
  /** The router's counters: `frag_needed` (dropped), `to_h<id>` (the connection's packets). */
  readonly router: Counters;
  /** The client's: `synack`, `synack_clamped` (MSS `mss`). */
  readonly client: Counters;
  /** The first hop's rule0_forwarded and the owner's overlay_in_forwarded, during the transfer. */
  readonly forwarded: number;
  readonly arrived: number;
}

/**
 * Sends `bytes` to the cluster IP and reads them back (the backend's HOLD echo) over a
 * connection whose first hop is not its bucket's owner: the first of `candidates` (source
 * ports) for which `rows` (nlb map) and the router's FIB disagree. The router drops every ICMP
 * frag-needed meanwhile, so a segment too big for the overlay would stall the transfer.
 */
export async function bulkThroughForwarder(
  lab: ClusterLab,
  candidates: readonly number[],
  rows: MapOutput['clients'],
  bytes: number,
  mss: number,
  timeoutMs: number,
): Promise<BulkResult> {
  const vip = lab.vip.text;
  const clientIp = lab.state.clients[0]!.ip;
  const clientNs = lab.state.clients[0]!.namespace;
  const hops = await firstHops(
    lab,
    candidates.map((port) => ({ ip: clientIp, port })),
  );
  const pick = candidates.findIndex((_, i) => rows[i]!.host !== null && rows[i]!.host !== hops[i]);
  if (pick < 0) throw new Error('no candidate port whose first hop is not its owner');
  const [port, owner, hop] = [candidates[pick]!, rows[pick]!.host!, hops[pick]!];
  const toHost = (id: number) =>
    `ip daddr ${vip} tcp sport ${port} oifname "h${id}" counter name to_h${id}`;
  await installCounterTable(
    lab.state.switchNamespace,
    'lrt_probe',
    'forward priority 0',
    ['frag_needed', ...hostIds.map((id) => `to_h${id}`)],
    ['icmp type destination-unreachable icmp code 4 counter name frag_needed drop'].concat(
      hostIds.map(toHost),
    ),
  );
  const synAck = `ip saddr ${vip} tcp sport ${labHttpPort} tcp dport ${port} tcp flags & (syn | ack) == syn | ack`;
  await installCounterTable(
    clientNs,
    'lrt_mss',
    'prerouting priority -300',
    ['synack', 'synack_clamped'],
    [
      `${synAck} counter name synack`,
      `${synAck} tcp option maxseg size ${mss} counter name synack_clamped`,
    ],
  );
  const args = [vip, labHttpPort, port, bytes, timeoutMs].map(String);
  const program = new ClientProgram(lab, bulkEchoSource, args);
  try {
    const link = JSON.parse(
      await runIn(hostNamespaceOf(lab, hop), ['ip', '-j', 'link', 'show', `nlbf${owner - 1}`]),
    ) as { mtu?: number }[];
    const before = await allCounters(lab);
    await program.next(10_000);
    program.send('go');
    const answer = await program.next<BulkResult['answer']>(timeoutMs + 5_000);
    const after = await allCounters(lab);
    const delta = (id: number, name: string) => after.get(id)![name]! - before.get(id)![name]!;
    return {
      port,
      owner,
      hop,
      overlayMtu: link[0]?.mtu,
      answer,
      router: await namedCounters(lab.state.switchNamespace, 'lrt_probe'),
      client: await namedCounters(clientNs, 'lrt_mss'),
      forwarded: delta(hop, 'rule0_forwarded'),
      arrived: delta(owner, 'overlay_in_forwarded'),
    };
  } finally {
    program.close();
    await removeTable(lab.state.switchNamespace, 'lrt_probe');
    await removeTable(clientNs, 'lrt_mss');
  }
}

export interface DisagreementResult {
  /** The bucket h1 and h2 forward to each other on hop 1 (owned by h3), SYNs. */
  readonly b: number;
  /** The bucket h1 and h2 send to each other on hop 2 (owned by h2), bare ACKs. */
  readonly c: number;
  readonly synPorts: readonly number[];
  /** SYNs and ACKs the router sent to each host first, indexed by host id (0 unused). */
  readonly syn: readonly number[];
  readonly ack: readonly number[];
  /** What the client sent: `syn_sent`, `ack_sent`. */
  readonly client: Counters;
  /** Each host's nlb table counters over the window. */
  readonly delta: ReadonlyMap<number, Counters>;
  /** The SYN ports whose connection was answered. */
  readonly connected: readonly number[];
  /** How long nlbd of h1 and h2 was stopped. */
  readonly windowMs: number;
  /** The maps of h1 and h2 before, and a reader of them now. */
  readonly mapsBefore: ReadonlyMap<number, unknown>;
  readonly readMaps: (id: number) => Promise<unknown>;
}

/**
 * Makes h1 and h2 disagree: bucket b (owned by h3) each forwards to the other on hop 1, and
 * bucket c (owned by h2, no second chance anywhere) each sends to the other on hop 2 while h3
 * forwards it to h2 as it should. The client then opens connections in b and sends bare ACKs
 * (its SYNs turned into ACKs: packets of no connection) in c, `perHop` from source ports whose
 * first hop is each host. nlbd puts its maps back within ms of a change (nft monitor), so nlbd
 * of h1 and h2 is stopped for the window, well under their lease (800 ms) and detection time
 * (1 s); `onStop` records the processes so a failed test can continue them.
 */
export async function disagreeingMaps(
  lab: ClusterLab,
  owners: readonly (number | null)[],
  ports: readonly number[],
  perHop: number,
  daemons: readonly [ProcessRef, ProcessRef],
  onStop: (stopped: boolean, ref: ProcessRef) => void,
): Promise<DisagreementResult> {
  const vip = lab.vip.text;
  const clientIp = lab.state.clients[0]!.ip;
  const clientNs = lab.state.clients[0]!.namespace;
  const peers = peerOrder(lab.state.hosts.map((h) => h.ip));
  const markTo = (hop: 1 | 2, id: number) =>
    forwardMark(hop, peers.indexOf(lab.state.hosts.find((h) => h.id === id)!.ip));
  const read = async (id: number) => ({
    forward: await kernelMap(lab, id, 'rule0_forward'),
    second: await kernelMap(lab, id, 'rule0_second'),
  });
  const maps = new Map(await Promise.all(hostIds.map(async (id) => [id, await read(id)] as const)));
  const b = owners.findIndex((o) => o === 3);
  const c = owners.findIndex(
    (o, bucket) => o === 2 && hostIds.every((id) => !maps.get(id)!.second.has(bucket)),
  );
  const forwardOf = (id: number, bucket: number) => maps.get(id)!.forward.get(bucket);
  if (b < 0 || c < 0 || forwardOf(1, b) !== markTo(1, 3) || forwardOf(2, b) !== markTo(1, 3)) {
    throw new Error(`no buckets to make disagree (b ${b}, c ${c}) or maps not as expected`);
  }
  const portsIn = async (bucket: number): Promise<number[]> => {
    const inBucket = ports.filter((p) => bucketOf(lab, clientIp, p) === bucket);
    const hops = await firstHops(
      lab,
      inBucket.map((port) => ({ ip: clientIp, port })),
    );
    return hostIds.flatMap((id) => inBucket.filter((_, i) => hops[i] === id).slice(0, perHop));
  };
  const [synPorts, ackPorts] = [await portsIn(b), await portsIn(c)];
  const set = (list: readonly number[]) => `{ ${list.join(', ')} }`;
  const toVip = `ip daddr ${vip} tcp dport ${labHttpPort}`;
  await installCounterTable(
    lab.state.switchNamespace,
    'lrt_probe',
    'forward priority 0',
    hostIds.flatMap((id) => [`syn_h${id}`, `ack_h${id}`]),
    hostIds.flatMap((id) => [
      `${toVip} tcp sport ${set(synPorts)} ${synOnly} oifname "h${id}" counter name syn_h${id}`,
      `${toVip} tcp sport ${set(ackPorts)} oifname "h${id}" counter name ack_h${id}`,
    ]),
  );
  await installCounterTable(
    clientNs,
    'lrt_mangle',
    'output priority -350',
    ['syn_sent', 'ack_sent'],
    [
      `${toVip} tcp sport ${set(ackPorts)} ${synOnly} tcp flags set ack`,
      `${toVip} tcp sport ${set(ackPorts)} counter name ack_sent`,
      `${toVip} tcp sport ${set(synPorts)} ${synOnly} counter name syn_sent`,
    ],
  );
  const T = `inet ${lab.tableName}`;
  const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;
  const forwardB = (mark: number) =>
    `delete element ${T} rule0_forward { ${b} }\nadd element ${T} rule0_forward { ${b} : ${hex(mark)} }\n`;
  const edit = (other: number) =>
    `${forwardB(markTo(1, other))}add element ${T} rule0_second { ${c} : ${hex(markTo(2, other))} }\n`;
  const restore = (id: number) =>
    `${forwardB(forwardOf(id, b)!)}delete element ${T} rule0_second { ${c} }\n`;
  const nftIn = (id: number, script: string) =>
    runIn(hostNamespaceOf(lab, id), ['nft', '-f', '-'], script);
  const program = new ClientProgram(lab, connectBurstSource, [vip, `${labHttpPort}`, '100']);
  try {
    await program.next(10_000);
    const before = await allCounters(lab);
    const windowStart = Date.now();
    for (const ref of daemons) {
      onStop(true, ref);
      signalProcess(ref, 'SIGSTOP');
    }
    let seen: [Map<number, Counters>, Counters, Counters];
    let answer: { connected: number[] };
    try {
      await Promise.all([nftIn(1, edit(2)), nftIn(2, edit(1))]);
      program.send(JSON.stringify([...synPorts, ...ackPorts]));
      answer = await program.next<{ connected: number[] }>(2_000);
      seen = await Promise.all([
        allCounters(lab),
        namedCounters(lab.state.switchNamespace, 'lrt_probe'),
        namedCounters(clientNs, 'lrt_mangle'),
      ]);
      await Promise.all([nftIn(1, restore(1)), nftIn(2, restore(2))]);
    } finally {
      for (const ref of daemons) {
        signalProcess(ref, 'SIGCONT');
        onStop(false, ref);
      }
    }
    const windowMs = Date.now() - windowStart;
    const [after, router, client] = seen;
    return {
      b,
      c,
      synPorts,
      syn: [0, ...hostIds.map((id) => router[`syn_h${id}`]!)],
      ack: [0, ...hostIds.map((id) => router[`ack_h${id}`]!)],
      client,
      delta: new Map(hostIds.map((id) => [id, counterDelta(before.get(id)!, after.get(id)!)])),
      connected: answer.connected,
      windowMs,
      mapsBefore: new Map([1, 2].map((id) => [id, maps.get(id)])),
      readMaps: read,
    };
  } finally {
    program.close();
    await removeTable(lab.state.switchNamespace, 'lrt_probe');
    await removeTable(clientNs, 'lrt_mangle');
  }
}
