// Reading and pruning the kernel's connection table through conntrack-tools. Every flow the filter
// accepted carries the ct mark of mark.ts, so per-bucket connection counts and "drop the
// connections of these buckets" need no bookkeeping of our own (docs/data-plane.md#conntrack-marks:
// listing 1,000 connections takes ~5 ms).
import type { Address } from '../core/address.js';
import { type Runner, CommandError, localRunner } from './exec.js';
import {
  type MarkRule,
  ctMark,
  ctMarkBase,
  decodeCtMark,
  formatMark,
  nlbMarkBit,
  ruleFieldMask,
} from './mark.js';

export interface BucketConnections {
  readonly rule: MarkRule;
  readonly bucket: number;
  /** Entries still carrying traffic: TCP in any state but TIME_WAIT and CLOSE, and UDP. */
  readonly connections: number;
}

export interface Conntrack {
  /** Live connections nlb accepted, per rule and bucket; sorted, buckets without any left out. */
  connectionsByBucket(): Promise<BucketConnections[]>;
  /** Deletes the entries whose mark equals `mark` under `mask`; returns how many. */
  deleteByMark(mark: number, mask?: number): Promise<number>;
  /** Deletes every entry whose original destination is `address` (a cluster IP). */
  deleteByDestination(address: Address): Promise<number>;
}

/**
 * Drops the entries of `buckets` of port rule `rule`, which has `bucketCount` buckets: all of
 * them take one command (by the rule's mark); otherwise one per bucket. Returns how many went.
 */
export async function deleteBuckets(
  conntrack: Conntrack,
  rule: number,
  buckets: readonly number[],
  bucketCount: number | undefined,
): Promise<number> {
  if (bucketCount !== undefined && buckets.length === bucketCount) {
    return conntrack.deleteByMark(ctMarkBase(rule), (nlbMarkBit | ruleFieldMask) >>> 0);
  }
  let deleted = 0;
  for (const bucket of buckets) {
    deleted += await conntrack.deleteByMark(ctMark(rule, bucket));
  }
  return deleted;
}

/** TCP states of connections that are over but linger in the table. */
const finishedTcpStates = new Set(['TIME_WAIT', 'CLOSE']);

/**
 * Parses `conntrack -L` default output, one entry per line, e.g.
 * `tcp      6 431999 ESTABLISHED src=198.18.0.2 dst=198.18.0.100 ... [ASSURED] mark=2147549202 use=1`
 * `udp      17 29 src=198.18.0.2 dst=198.18.0.100 ... mark=2147549202 use=1`.
 */
export function parseConntrackList(text: string): BucketConnections[] {
  const counts = new Map<number, number>();
  for (const line of text.split('\n')) {
    const mark = /\bmark=(\d+)\b/.exec(line);
    if (mark === null) {
      continue;
    }
    const tcpState = /^tcp\s+6\s+\d+\s+([A-Z_]+)\s/.exec(line);
    if (tcpState !== null && finishedTcpStates.has(tcpState[1]!)) {
      continue;
    }
    const value = Number(mark[1]);
    if (decodeCtMark(value) !== undefined) {
      counts.set(value, (counts.get(value) ?? 0) + 1);
    }
  }
  return [...counts.entries()]
    .map(([mark, connections]) => ({ ...decodeCtMark(mark)!, connections }))
    .sort(
      (a, b) =>
        (a.rule === 'uncovered' ? 0x100 : a.rule) - (b.rule === 'uncovered' ? 0x100 : b.rule) ||
        a.bucket - b.bucket,
    );
}

/** The number in conntrack's "N flow entries have been deleted." summary. */
function deletedCount(argv: readonly string[], stderr: string, code: number): number {
  const match = /(\d+) flow entries have been deleted/.exec(stderr);
  if (match !== null) {
    // conntrack exits 1 when nothing matched; that is not a failure here.
    return Number(match[1]);
  }
  throw new CommandError(
    argv,
    `failed (exit ${code}): ${stderr.trim() || 'no error output'}`,
    'is the nf_conntrack module loaded, and are we root (CAP_NET_ADMIN)?',
  );
}

/** The real adapter: execs conntrack from conntrack-tools (1.4.7 lists both families by default). */
export class ConntrackCli implements Conntrack {
  constructor(private readonly runner: Runner = localRunner()) {}

  async connectionsByBucket(): Promise<BucketConnections[]> {
    // Only flows with nlb's bit set, so a busy host's other connections are not even printed.
    const argv = ['-L', '--mark', `${formatMark(nlbMarkBit)}/${formatMark(nlbMarkBit)}`];
    const result = await this.runner.run('conntrack', argv);
    if (result.code !== 0) {
      throw new CommandError(
        ['conntrack', ...argv],
        `failed (exit ${result.code}): ${result.stderr.trim()}`,
        'is the nf_conntrack module loaded, and are we root (CAP_NET_ADMIN)?',
      );
    }
    return parseConntrackList(result.stdout);
  }

  async deleteByMark(mark: number, mask?: number): Promise<number> {
    const value = mask === undefined ? formatMark(mark) : `${formatMark(mark)}/${formatMark(mask)}`;
    const argv = ['-D', '--mark', value];
    const result = await this.runner.run('conntrack', argv);
    return deletedCount(['conntrack', ...argv], result.stderr, result.code);
  }

  async deleteByDestination(address: Address): Promise<number> {
    const argv = ['-D', '-f', address.family === 4 ? 'ipv4' : 'ipv6', '--orig-dst', address.text];
    const result = await this.runner.run('conntrack', argv);
    return deletedCount(['conntrack', ...argv], result.stderr, result.code);
  }
}
