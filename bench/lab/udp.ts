// What the filter costs UDP: packets/s through the filter and without it (issue 11 item 8).
//
// The lab gets a second port rule, TCP and UDP on `udpPort` (LabUpOptions.extraRulePort): iperf3
// sends its datagrams there and keeps its control connection on the same port over TCP. The
// iperf3 server runs in host 1; the client in the client namespace sends small datagrams as fast
// as it can (-b 0, 64-byte payloads, so the count of packets, not bytes, is what the path
// limits) for a fixed time, once to host 1's dedicated IP (the filter leaves it alone) and once
// to the VIP (flooded to every host in unicast mode; each host's filter hashes the source and
// only host 1's takes it), alternately, in one lab. As in the TCP filter overhead, the control
// connection's ephemeral port and the data's --cport are both picked from host 1's buckets of
// that rule. iperf3 reports what it sent and what the server received; packets/s received is the
// figure, the ratio VIP / dedicated IP per round the verdict.
//
// What the ratio includes. Both paths are flooded to the three hosts (unicast mode), but hosts 2
// and 3 drop a datagram to host 1's dedicated IP as soon as routing sees it is not theirs, while
// a datagram to the VIP goes through their filter (hash, bucket lookup, drop). In the lab all
// three hosts, the sender and the receiver share the machine's cores, so that extra work of the
// other hosts slows the sender too; on real hosts it runs on their own CPUs. The ratio is
// therefore an upper bound of what the filter costs one host, and is reported as a diagnostic.
import { abbaOrder } from './figures.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LabState } from '../../src/lab/lab.js';
import { assertLabSafeAddress, labVip } from '../../src/lab/naming.js';
import type { Target } from './report.js';
import { execNs, execNsChecked, spawnNs, stopChild, waitListening } from './ns-exec.js';
import {
  flowConfigOf,
  fmt,
  median,
  pairedRatios,
  portsByBucket,
  query,
  round,
  waitConverged,
} from './support.js';

/** The port of the lab's second rule; iperf3's own default, far from the HTTP rule's 80. */
export const udpPort = 5201;
/** Payload bytes per datagram: small, so the packet rate is what the path limits. */
const datagramBytes = 64;
const convergeTimeoutMs = 20_000;
/** A run is `seconds` long; iperf3 gets this much more to connect and report before it is killed. */
const runSlackMs = 20_000;

export interface UdpRun {
  readonly round: number;
  readonly path: 'dedicated' | 'vip';
  readonly target: string;
  readonly packetsSent: number;
  readonly packetsReceived: number;
  readonly sentPerSecond: number;
  readonly receivedPerSecond: number;
  readonly lostPercent: number;
}

export interface UdpResult {
  readonly seconds: number;
  readonly rounds: number;
  readonly port: number;
  readonly datagramBytes: number;
  readonly runs: UdpRun[];
  /** Per round, packets/s received through the VIP / through the dedicated IP. */
  readonly roundRatios: number[];
  readonly dedicatedPerSecond: number | null;
  readonly vipPerSecond: number | null;
  /** The verdict: the median of the per-round ratios. */
  readonly ratio: number | null;
}

interface IperfUdpSum {
  readonly seconds?: number;
  readonly packets?: number;
  readonly lost_packets?: number;
}

interface IperfUdpJson {
  error?: string;
  end?: { sum_sent?: IperfUdpSum; sum_received?: IperfUdpSum };
}

/** Source ports of the client, in buckets host `hostId` owns of rule `ruleIndex`. */
async function hostPortsOf(
  lab: LabState,
  hostId: number,
  ruleIndex: number,
  clientIp: string,
): Promise<number[]> {
  const flow = await flowConfigOf(lab);
  const owned = new Set((await query(lab, hostId))?.rules[ruleIndex]?.owned ?? []);
  if (owned.size === 0) throw new Error(`host ${hostId} owns no bucket of rule ${ruleIndex}`);
  return portsByBucket(clientIp, flow)
    .flatMap((list, bucket) => (owned.has(bucket) ? list : []))
    .sort((a, b) => a - b);
}

async function oneRun(
  lab: LabState,
  target: string,
  seconds: number,
  controlPort: number,
  dataPort: number,
): Promise<{ sent: IperfUdpSum; received: IperfUdpSum }> {
  await execNsChecked(
    lab,
    'c1',
    ['sysctl', '-q', '-w', `net.ipv4.ip_local_port_range=${controlPort} ${controlPort}`],
    5_000,
  );
  const argv = ['iperf3', '-u', '-b', '0', '-l', String(datagramBytes), '-c', target];
  argv.push('-p', String(udpPort), '-t', String(seconds), '-J', '--cport', String(dataPort));
  const out = await execNs(
    lab,
    'c1',
    [...argv, '--connect-timeout', '3000'],
    seconds * 1000 + runSlackMs,
  );
  let parsed: IperfUdpJson;
  try {
    parsed = JSON.parse(out.stdout) as IperfUdpJson;
  } catch {
    throw new Error(
      `iperf3 -u to ${target} printed no JSON (exit ${out.code}): ${out.stderr.trim()}`,
    );
  }
  const sent = parsed.end?.sum_sent;
  const received = parsed.end?.sum_received;
  if (parsed.error !== undefined || sent === undefined || received === undefined) {
    throw new Error(`iperf3 -u to ${target} failed: ${parsed.error ?? 'no sums'}`);
  }
  return { sent, received };
}

function toRun(
  index: number,
  kind: 'dedicated' | 'vip',
  target: string,
  seconds: number,
  sums: { sent: IperfUdpSum; received: IperfUdpSum },
): UdpRun {
  const sent = sums.sent.packets ?? 0;
  // iperf3 counts as "packets" what the server expected (the highest sequence number seen).
  const received = Math.max(0, (sums.received.packets ?? 0) - (sums.received.lost_packets ?? 0));
  const span = sums.received.seconds ?? seconds;
  return {
    round: Math.floor(index / 2) + 1,
    path: kind,
    target,
    packetsSent: sent,
    packetsReceived: received,
    sentPerSecond: Math.round(sent / (sums.sent.seconds ?? seconds)),
    receivedPerSecond: Math.round(received / span),
    lostPercent: sent === 0 ? 0 : round((100 * (sent - received)) / sent, 1),
  };
}

export async function runUdpOverhead(
  lab: LabState,
  seconds: number,
  rounds: number,
  log: (line: string) => void,
  signal: AbortSignal,
): Promise<UdpResult> {
  const order = abbaOrder(rounds, 'dedicated' as const, 'vip' as const);
  await waitConverged(
    lab,
    lab.hosts.map((h) => h.id),
    convergeTimeoutMs,
    signal,
  );
  const host = lab.hosts[0]!;
  assertLabSafeAddress(host.ip, 'iperf3 -u target');
  const hostPorts = await hostPortsOf(lab, host.id, 1, lab.clients[0]!.ip);
  if (hostPorts.length < 2 * order.length)
    throw new Error('too few source ports in host 1 buckets');
  // One server per address, each bound to it: a server bound to the wildcard address would
  // answer iperf3's UDP hello from the address routing picks (the dedicated IP), not from the VIP
  // the hello went to, and the client's connected socket would never see the answer.
  const servers = [labVip, host.ip].map((ip) =>
    spawnNs(lab, 'h1', ['iperf3', '-s', '-B', ip, '-p', String(udpPort)]),
  );
  const runs: UdpRun[] = [];
  try {
    await waitListening(lab, 'h1', udpPort, 5_000, 2);
    for (const [i, kind] of order.entries()) {
      signal.throwIfAborted();
      const target = kind === 'vip' ? labVip : host.ip;
      // A fresh pair of ports per run: the control connection stays in TIME_WAIT.
      const sums = await oneRun(lab, target, seconds, hostPorts[2 * i]!, hostPorts[2 * i + 1]!);
      const run = toRun(i, kind, target, seconds, sums);
      runs.push(run);
      log(
        `  round ${run.round}: iperf3 -u ${seconds} s to ${kind === 'vip' ? 'the VIP (filter)' : 'the dedicated IP (no filter)'}: ${run.receivedPerSecond} packets/s received of ${run.sentPerSecond} sent`,
      );
      await sleep(500, undefined, { signal });
    }
  } finally {
    for (const server of servers) await stopChild(server);
    await execNs(
      lab,
      'c1',
      ['sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=32768 60999'],
      5_000,
    );
  }
  const perSecond = (kind: UdpRun['path']): number | null =>
    median(runs.filter((r) => r.path === kind).map((r) => r.receivedPerSecond));
  const { roundRatios, ratio } = pairedRatios(runs, rounds, (run) => run.receivedPerSecond);
  return {
    seconds,
    rounds,
    port: udpPort,
    datagramBytes,
    runs,
    roundRatios,
    dedicatedPerSecond: perSecond('dedicated'),
    vipPerSecond: perSecond('vip'),
    ratio: ratio === null ? null : round(ratio, 3),
  };
}

/** UDP through the filter / without it; measured for insight, against the TCP filter's bound. */
export function judgeUdp(
  udp: UdpResult | null,
  ratioMin: number,
  failure: string | undefined,
): Target[] {
  return [
    {
      id: 'udp-filter-overhead',
      target: `UDP through the filter: packets/s received via the VIP / via the dedicated IP ≥ ${ratioMin} (iperf3 -u, median of the rounds)`,
      pass: udp !== null && udp.ratio !== null && udp.ratio >= ratioMin,
      measured:
        udp === null
          ? `not measured: ${failure ?? 'no run'}`
          : `${fmt(udp.ratio, 3)} (rounds ${udp.roundRatios.map((r) => fmt(r, 2)).join(', ')}; medians received VIP ${fmt(udp.vipPerSecond, 0)}/s, dedicated IP ${fmt(udp.dedicatedPerSecond, 0)}/s)`,
      diagnostic: true,
    },
  ];
}
