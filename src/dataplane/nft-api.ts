// The nftables adapter's contract: the `Nft` interface that the real adapter (nft-cli.ts) and
// the fake (nft-fake.ts) both implement and both pass the same tests for, the values it speaks
// in, its one error, and the checks both adapters apply to what they are given.
import { tableNamePattern } from './dataplane-spec.js';

/** The nftables address families, each of which has its own tables. */
export const nftFamilies = ['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev'] as const;
export type NftFamily = (typeof nftFamilies)[number];

/** A regular expression alternative that matches any family, as a capture group. */
export const familyPattern = `(${nftFamilies.join('|')})`;

/** A table as nft names it: `table <family> <name>`. */
export interface NftTable {
  readonly family: NftFamily;
  readonly name: string;
}

export interface CounterValue {
  readonly packets: number;
  readonly bytes: number;
}

/** For calls that must not wait the default 10 s for a stuck nft (restoring a lost table). */
export interface NftCallOptions {
  readonly timeoutMs?: number;
}

/**
 * What a ruleset watch reports. nft monitor prints every committed transaction; the watch
 * passes on those that touch the watched table and that this adapter did not make itself
 * through `applyQuick` (those carry its marker). Whole-table `apply` calls are not told apart
 * from anyone else's: they are rare, and a listener that compares the kernel with what it
 * expects finds nothing wrong after them.
 */
export interface RulesetChange {
  /** nft monitor's first few lines of the transaction. */
  readonly lines: readonly string[];
  /** The watched tables it deleted and did not add again. */
  readonly deleted: readonly NftTable[];
}

export interface RulesetListener {
  /** A committed transaction touched the table. */
  change(change: RulesetChange): void;
  /** The watch sees every change from now on but may have missed some before: compare now. */
  resync(reason: string): void;
  /** The watch sees no changes until the next `resync`: compare by other means meanwhile. */
  blind(reason: string): void;
}

export interface Nft {
  /** Runs `script` as one transaction (`nft -f -`): all of it takes effect, or none. */
  apply(script: string, options?: NftCallOptions): Promise<void>;
  /**
   * Runs a one-line transaction (commands separated by ';') on `table inet <tableName>`, which
   * must have the rendered `sync` set, like `renderLeaseRefresh` and `renderOwnershipUpdate`
   * produce. Resolves once the kernel has committed it; all of it or none takes effect. Cheap
   * (~2 ms) when a long-lived nft process is available.
   */
  applyQuick(tableName: string, line: string): Promise<void>;
  /** `nft -j <args>`, parsed; e.g. ['list', 'counters', 'table', 'inet', 'nlb']. */
  listJson(args: readonly string[], options?: NftCallOptions): Promise<unknown>;
  /**
   * Watches the ruleset for changes to the tables named `tableName` (every family). The
   * listener starts blind: its first `resync` says the watch is live. Returns a function that
   * stops watching.
   */
  watch(tableName: string, listener: RulesetListener): () => void;
  /** Stops the long-lived processes (the interactive nft, the watches), if any. */
  close(): Promise<void>;
}

/** nft refused a script or a command; `stderr` has nft's own message with the offending line. */
export class NftError extends Error {
  constructor(
    readonly stderr: string,
    readonly script: string,
  ) {
    super(
      `nft rejected the transaction, nothing was changed: ${stderr.trim() || 'no error output'}`,
    );
    this.name = 'NftError';
  }
}

export function assertTableName(what: string, tableName: string): void {
  if (!tableNamePattern.test(tableName)) {
    throw new Error(`${what}: '${tableName}' is not a table name`);
  }
}

export function assertQuickLine(tableName: string, line: string): void {
  if (line.includes('\n') || line.trim() === '') {
    throw new Error(`applyQuick: '${line.slice(0, 80)}' must be one non-empty line`);
  }
  assertTableName('applyQuick', tableName);
}
