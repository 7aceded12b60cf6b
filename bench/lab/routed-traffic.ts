// The routed benchmark's traffic figures (issue item 6, parts 3 and 4):
//   - one bulk TCP stream (iperf3, 5 s) from client c1 to the cluster IP, once with the router's
//     first hop the owner of the stream's bucket (direct) and once with another host (forwarded
//     to the owner: over VXLAN, or as a plain frame in a segment lab). The lab has a second port rule on 5201 for it (routedLabUp's
//     extraRulePort), and an iperf3 server runs in every host. The router's own FIB lookup for
//     the stream's 5-tuple (`ip route get … sport S dport 5201`) gives the first hop and the
//     hosts' maps the owner, so the client's source ports are chosen to get each path. iperf3's
//     control connection (an ephemeral port: the client's range is narrowed to one port) must
//     reach the same server, so its bucket has the same owner.
//   - under ordinary new-connection load, the share of the packets arriving from the router
//     that take the extra hop, from the hosts' counters, and per connection from the router's
//     first hop beside the host that answered.
import type { LabState } from '../../src/lab/lab.js';
import { runLoadgenInClient } from '../../src/lab/loadgen-client.js';
import { labVip, routedClientIp } from '../../src/lab/naming.js';
import { abbaOrder } from './figures.js';
import { execNs, execNsChecked, spawnNs, stopChild, waitListening } from './ns-exec.js';
import { counterDelta, countersSum, firstHop, hostOfGateway, ruleOwners } from './routed-lab.js';
import { flowConfigOf, median, portsByBucket, round } from './support.js';

export const iperfPort = 5201;
/** The port rule covering iperfPort: the lab's second rule. */
const iperfRule = 1;
/** Candidate source ports tried per run before giving up on a path (each is one FIB lookup). */
const portTriesMax = 200;

export interface IperfRun {
  readonly round: number;
  readonly path: 'direct' | 'forwarded';
  readonly owner: number;
  readonly firstHop: number;
  readonly dataPort: number;
  readonly controlPort: number;
  readonly gbps: number;
  readonly retransmits: number | null;
  /** Packets the hosts forwarded to the stream's rule during the run (rule1_forwarded). */
  readonly forwardedPackets: number;
  /** Packets the hosts accepted for it (rule1_accepted). */
  readonly acceptedPackets: number;
}

export interface ThroughputResult {
  readonly seconds: number;
  readonly rounds: number;
  readonly runs: IperfRun[];
  readonly directGbps: number | null;
  readonly forwardedGbps: number | null;
  /** Median of forwarded / direct per round (adjacent runs, so drift cancels). */
  readonly ratio: number | null;
}

interface IperfJson {
  error?: string;
  end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } };
}

/** Source ports of c1 whose bucket of the iperf rule `owner` owns, lowest first. */
async function portsOwnedBy(lab: LabState): Promise<(owner: number) => number[]> {
  const owners = await ruleOwners(lab, iperfRule);
  const byBucket = portsByBucket(routedClientIp(1), await flowConfigOf(lab));
  return (owner) =>
    byBucket
      .flatMap((ports, bucket) => (owners[bucket] === owner ? ports : []))
      .sort((a, b) => a - b);
}

async function iperf(lab: LabState, dataPort: number, seconds: number): Promise<IperfJson> {
  const argv = ['iperf3', '-c', labVip, '-p', String(iperfPort), '-t', String(seconds), '-J'];
  argv.push('--cport', String(dataPort), '--connect-timeout', '3000');
  const out = await execNs(lab, 'c1', argv, (seconds + 20) * 1000);
  try {
    return JSON.parse(out.stdout) as IperfJson;
  } catch {
    throw new Error(`iperf3 printed no JSON (exit ${out.code}): ${out.stderr.trim()}`);
  }
}

/** Alternating direct and forwarded streams, the owner rotating over the hosts by round. */
export async function runThroughput(
  lab: LabState,
  seconds: number,
  rounds: number,
  log: (line: string) => void,
): Promise<ThroughputResult> {
  const ownedBy = await portsOwnedBy(lab);
  const used = new Set<number>();
  const servers = lab.hosts.map((h) =>
    spawnNs(lab, `h${h.id}`, ['iperf3', '-s', '-p', String(iperfPort)]),
  );
  const sysctl = 'net.ipv4.ip_local_port_range';
  const rangeBefore = (await execNsChecked(lab, 'c1', ['sysctl', '-n', sysctl], 5_000)).trim();
  const runs: IperfRun[] = [];
  try {
    for (const host of lab.hosts) await waitListening(lab, `h${host.id}`, iperfPort, 5_000);
    for (const [i, path] of abbaOrder(rounds, 'direct' as const, 'forwarded' as const).entries()) {
      const round_ = Math.floor(i / 2) + 1;
      const owner = lab.hosts[(round_ - 1) % lab.hosts.length]!.id;
      const candidates = ownedBy(owner).filter((port) => !used.has(port));
      const controlPort = candidates[0];
      let dataPort: number | undefined;
      let hop = 0;
      for (const port of candidates.slice(1, 1 + portTriesMax)) {
        hop = await firstHop(lab, port, iperfPort);
        if ((hop === owner) === (path === 'direct')) {
          dataPort = port;
          break;
        }
      }
      if (controlPort === undefined || dataPort === undefined) {
        throw new Error(`no source port of c1 gives a ${path} stream to host ${owner}`);
      }
      used.add(controlPort).add(dataPort);
      // The control connection takes the one ephemeral port left, in a bucket of the same owner.
      await execNsChecked(
        lab,
        'c1',
        ['sysctl', '-q', '-w', `${sysctl}=${controlPort} ${controlPort}`],
        5_000,
      );
      const before = await countersSum(lab);
      const parsed = await iperf(lab, dataPort, seconds);
      const delta = counterDelta(before, await countersSum(lab));
      const bps = parsed.end?.sum_received?.bits_per_second;
      if (parsed.error !== undefined || bps === undefined) {
        throw new Error(
          `iperf3 (${path}, port ${dataPort}) failed: ${parsed.error ?? 'no sum_received'}`,
        );
      }
      const run: IperfRun = {
        round: round_,
        path,
        owner,
        firstHop: hop,
        dataPort,
        controlPort,
        gbps: round(bps / 1e9, 3),
        retransmits: parsed.end?.sum_sent?.retransmits ?? null,
        forwardedPackets: delta[`rule${iperfRule}_forwarded`] ?? 0,
        acceptedPackets: delta[`rule${iperfRule}_accepted`] ?? 0,
      };
      runs.push(run);
      log(
        `  round ${run.round}: ${path} (first hop h${hop}, owner h${owner}): ${run.gbps} Gbit/s, ${run.forwardedPackets} packets forwarded`,
      );
    }
  } finally {
    await Promise.all(servers.map((server) => stopChild(server)));
    await execNs(
      lab,
      'c1',
      ['sysctl', '-q', '-w', `${sysctl}=${rangeBefore.replace(/\s+/, ' ')}`],
      5_000,
    );
  }
  const gbps = (path: IperfRun['path']) =>
    median(runs.filter((r) => r.path === path).map((r) => r.gbps));
  const ratios = Array.from({ length: rounds }, (_, r) => {
    const direct = runs.find((x) => x.round === r + 1 && x.path === 'direct');
    const forwarded = runs.find((x) => x.round === r + 1 && x.path === 'forwarded');
    return direct === undefined || forwarded === undefined ? NaN : forwarded.gbps / direct.gbps;
  }).filter((x) => Number.isFinite(x));
  const ratio = median(ratios);
  const direct = gbps('direct');
  const forwarded = gbps('forwarded');
  return {
    seconds,
    rounds,
    runs,
    directGbps: direct === null ? null : round(direct, 3),
    forwardedGbps: forwarded === null ? null : round(forwarded, 3),
    ratio: ratio === null ? null : round(ratio, 3),
  };
}

// ------------------------------------------------------------------ the share of the extra hop

export interface ShareResult {
  readonly ratePerSecond: number;
  readonly durationMs: number;
  readonly started: number;
  readonly failed: number;
  /** Rule 0's counters summed over the hosts, for the run. */
  readonly counters: Readonly<Record<string, number>>;
  /** Packets arriving from the router sent on to another host (forward + second chance). */
  readonly extraHopPackets: number;
  /** Packets arriving from the router accepted where they arrived. */
  readonly directPackets: number;
  /** extraHop / (extraHop + direct). */
  readonly packetShare: number | null;
  /** Packets that arrived over the overlay; ≈ extraHopPackets when none was lost. */
  readonly overlayInPackets: number;
  /** Per answered connection: the router's first hop for its 5-tuple ≠ the host that answered. */
  readonly connectionsForwarded: number;
  readonly connectionsAnswered: number;
  readonly connectionShare: number | null;
}

/** The router's first hop for each source port of c1 to the cluster IP :80, one `ip -batch`. */
async function firstHops(
  lab: LabState,
  sourcePorts: readonly number[],
): Promise<(number | undefined)[]> {
  const lines = sourcePorts.map(
    (port) =>
      `route get ${labVip} from ${routedClientIp(1)} iif br0 ipproto tcp sport ${port} dport 80`,
  );
  const out = await execNsChecked(
    lab,
    'rt',
    ['ip', '-j', '-batch', '-'],
    30_000,
    `${lines.join('\n')}\n`,
  );
  const answers = out.split('\n').filter((line) => line.trim() !== '');
  if (answers.length !== lines.length) {
    throw new Error(`ip -batch answered ${answers.length} of ${lines.length} route lookups`);
  }
  return answers.map((line) => {
    const [route] = JSON.parse(line) as { gateway?: string }[];
    return hostOfGateway(route?.gateway ?? '');
  });
}

export async function runShare(
  lab: LabState,
  ratePerSecond: number,
  durationMs: number,
): Promise<ShareResult> {
  const before = await countersSum(lab);
  const result = await runLoadgenInClient(lab, 1, {
    target: labVip,
    ratePerSecond,
    countMax: Math.ceil((ratePerSecond * durationMs) / 1000),
    durationMs,
    timeoutMs: 3_000,
  });
  const delta = counterDelta(before, await countersSum(lab));
  const c = (name: string) => delta[name] ?? 0;
  const extraHop = c('rule0_forwarded') + c('rule0_second_sent');
  const overlayIn = c('overlay_in_forwarded') + c('overlay_in_second');
  // rule0_accepted counts what arrived over the overlay too; what is left came from the router.
  const direct = c('rule0_accepted') - overlayIn;
  const answered = result.connections.filter((x) => x.host !== undefined && x.sourcePort > 0);
  const hops = await firstHops(
    lab,
    answered.map((x) => x.sourcePort),
  );
  const forwarded = answered.filter((x, i) => hops[i] !== undefined && hops[i] !== x.host).length;
  const rule0 = Object.fromEntries(
    Object.entries(delta).filter(([name]) => !name.startsWith('rule1_')),
  );
  return {
    ratePerSecond,
    durationMs,
    started: result.started,
    failed: result.failed,
    counters: rule0,
    extraHopPackets: extraHop,
    directPackets: direct,
    packetShare: extraHop + direct === 0 ? null : round(extraHop / (extraHop + direct), 3),
    overlayInPackets: overlayIn,
    connectionsForwarded: forwarded,
    connectionsAnswered: answered.length,
    connectionShare: answered.length === 0 ? null : round(forwarded / answered.length, 3),
  };
}
