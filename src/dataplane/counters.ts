// Counter totals since a Dataplane was created. The kernel's named counters start from 0 with
// every table nlbd applies, and with a table someone else made again behind its back, so the
// Dataplane keeps what each replaced table had counted (`base`) beside the current table's
// counts as last read (`last`): a total never goes down and never counts twice.
import { type CounterValue, NftError } from './nft-api.js';
import { parseCounters } from './nft.js';
import type { DataplaneSpec } from './dataplane-spec.js';
import { names } from './table-names.js';
import { routedNames } from './render-routed.js';

export interface RuleCounters {
  /** Packets and bytes let through: established TCP and new flows in owned buckets. */
  readonly accepted: CounterValue;
  /** Packets dropped: buckets not owned, non-SYN of unknown connections, disabled, expired lease. */
  readonly dropped: CounterValue;
  /** Non-SYN packets answered with a TCP reset in orphan buckets. */
  readonly reset: CounterValue;
  /** Routed mode: packets sent on to the bucket's owner (render-routed.ts). */
  readonly forwarded?: CounterValue;
  /** Routed mode: packets given a second chance at the bucket's previous owner. */
  readonly secondChance?: CounterValue;
}

export interface DataplaneCounters {
  /** One entry per port rule, in config order. */
  readonly rules: readonly RuleCounters[];
  readonly uncovered: { readonly accepted: CounterValue; readonly dropped: CounterValue };
  /** Packets dropped because the lease had run out (nlbd stopped refreshing it). */
  readonly leaseExpired: CounterValue;
}

/** One reading of the kernel's counters, and the handle of the table that holds them. */
export interface CounterReading {
  readonly tableHandle: number | undefined;
  readonly counters: Map<string, CounterValue>;
}

/** The counters of an `nft -j list table inet` listing, and the table's handle. */
export function counterReading(json: unknown): CounterReading {
  const items = (json as { nftables?: { table?: { handle?: unknown } }[] }).nftables ?? [];
  const handle = items.find((item) => item.table !== undefined)?.table?.handle;
  return {
    tableHandle: typeof handle === 'number' ? handle : undefined,
    counters: parseCounters(json),
  };
}

const zero: CounterValue = { packets: 0, bytes: 0 };

function add(a: CounterValue | undefined, b: CounterValue | undefined): CounterValue {
  return {
    packets: (a?.packets ?? 0) + (b?.packets ?? 0),
    bytes: (a?.bytes ?? 0) + (b?.bytes ?? 0),
  };
}

export class CounterTotals {
  /**
   * `listInet` lists `table inet <name>` whole rather than just its counters: the table's
   * handle says which table it is.
   */
  constructor(private readonly listInet: (tableName: string) => Promise<unknown>) {}

  /** Counter totals from tables already replaced: a whole-table apply resets the kernel's. */
  private readonly base = new Map<string, CounterValue>();
  /** The current table's counters as last read (not in `base` yet), and the table's handle. */
  private readonly last = new Map<string, CounterValue>();
  private lastTableHandle: number | undefined;

  /**
   * Takes a reading of the current table's counters. A table made again behind nlbd's back (a
   * new table handle), or a counter lower than last read, started counting from 0 again: what
   * the old one had counted goes to the totals, so they never go down nor count twice.
   */
  private observe(read: CounterReading): void {
    if (this.lastTableHandle !== undefined && read.tableHandle !== this.lastTableHandle) {
      this.retireLast();
    }
    this.lastTableHandle = read.tableHandle;
    for (const [name, value] of read.counters) {
      const last = this.last.get(name);
      if (last !== undefined && (value.packets < last.packets || value.bytes < last.bytes)) {
        this.base.set(name, add(this.base.get(name), last));
      }
      this.last.set(name, value);
    }
  }

  /** Takes the counters of an `nft -j list table inet` listing as a reading. */
  observeListing(json: unknown): void {
    this.observe(counterReading(json));
  }

  /** Reads the counters of `table inet <tableName>` now. */
  async read(tableName: string): Promise<void> {
    this.observe(counterReading(await this.listInet(tableName)));
  }

  /**
   * Before nlbd replaces the table: its counters go to the totals, as read now (unless
   * `alreadyRead`), or as last read when the table is gone (what it counted since that read is
   * lost with it).
   */
  async retire(tableName: string, alreadyRead: boolean): Promise<void> {
    try {
      if (!alreadyRead) await this.read(tableName);
    } catch (error) {
      // Losing a few counts is better than not applying; a missing table has nothing to read.
      if (!(error instanceof NftError)) {
        throw error;
      }
    }
    this.retireLast();
  }

  /** The current table's counts, as last read, go to the totals. */
  private retireLast(): void {
    for (const [name, value] of this.last) {
      this.base.set(name, add(this.base.get(name), value));
    }
    this.last.clear();
    this.lastTableHandle = undefined;
  }

  /** The totals of the counters `spec` renders, as of the last reading. */
  of(spec: DataplaneSpec): DataplaneCounters {
    const get = (name: string): CounterValue =>
      add(this.base.get(name), this.last.get(name) ?? zero);
    return {
      rules: spec.portRules.map((_, i) => ({
        accepted: get(names.accepted(i)),
        dropped: get(names.dropped(i)),
        reset: get(names.reset(i)),
        ...(spec.mode === 'routed'
          ? {
              forwarded: get(routedNames.forwarded(i)),
              secondChance: get(routedNames.secondSent(i)),
            }
          : {}),
      })),
      uncovered: { accepted: get(names.uncoveredAccepted), dropped: get(names.uncoveredDropped) },
      leaseExpired: get(names.leaseExpired),
    };
  }
}
