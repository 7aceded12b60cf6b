// The data plane as the daemon drives it: program an ownership (the cheapest way nft allows),
// refresh the lease every heartbeat, read counters and per-bucket connections, drop the
// connections of given buckets, and bring the cluster interface up and down in the safe order.
//
// Order that keeps the host from ever taking VIP traffic unfiltered:
//   start: cleanupStale -> program(spec) -> attachInterface (MAC, then cluster IPs)
//   stop:  detachInterface (cluster IPs, then MAC) -> remove
import type { Address, Prefix } from '../core/address.js';
import { addressesEqual } from '../core/address.js';
import type { ClusterMode } from '../core/config.js';
import type { Conntrack } from './conntrack.js';
import { type BucketConnections } from './conntrack.js';
import { type IpRoute, clusterIpPrefix } from './iproute.js';
import { ctMark, ctMarkBase, ruleFieldMask, nlbMarkBit } from './mark.js';
import { type CounterValue, type Nft, NftError, readCounters } from './nft.js';
import {
  type DataplaneSpec,
  names,
  renderLeaseRefresh,
  renderOwnershipUpdate,
  renderRemoval,
  renderTable,
} from './render.js';

export interface RuleCounters {
  /** Packets and bytes let through: established TCP and new flows in owned buckets. */
  readonly accepted: CounterValue;
  /** Packets dropped: buckets not owned, non-SYN of unknown connections, disabled, expired lease. */
  readonly dropped: CounterValue;
  /** Non-SYN packets answered with a TCP reset in orphan buckets. */
  readonly reset: CounterValue;
}

export interface DataplaneCounters {
  /** One entry per port rule, in config order. */
  readonly rules: readonly RuleCounters[];
  readonly uncovered: { readonly accepted: CounterValue; readonly dropped: CounterValue };
  /** Packets dropped because the lease had run out (nlbd stopped refreshing it). */
  readonly leaseExpired: CounterValue;
}

/** How `program` got the kernel there. */
export type ProgramResult = 'table' | 'sets' | 'unchanged';

const zero: CounterValue = { packets: 0, bytes: 0 };

function add(a: CounterValue | undefined, b: CounterValue | undefined): CounterValue {
  return {
    packets: (a?.packets ?? 0) + (b?.packets ?? 0),
    bytes: (a?.bytes ?? 0) + (b?.bytes ?? 0),
  };
}

export class Dataplane {
  private applied: DataplaneSpec | undefined;
  private appliedText: string | undefined;
  /** Counter totals from tables already replaced: a whole-table apply resets the kernel's. */
  private base = new Map<string, CounterValue>();

  constructor(
    private readonly nft: Nft,
    private readonly conntrack: Conntrack,
    private readonly ipRoute?: IpRoute,
  ) {}

  /** The spec the kernel holds, as of the last successful program. */
  get current(): DataplaneSpec | undefined {
    return this.applied;
  }

  /**
   * Makes the kernel filter `spec`. Every ownership change (buckets, orphans, default host,
   * active, drop established, disabled rules) is set elements only, so it goes through the
   * long-lived nft process (one transaction, ~2 ms); a configuration change replaces the whole
   * table (~17-45 ms). Either way the change is atomic and refreshes the lease; when this
   * resolves the kernel has it, so the caller may announce a released bucket (release before
   * acquire). On failure the kernel keeps the previous configuration and the error says why.
   */
  async program(spec: DataplaneSpec): Promise<ProgramResult> {
    const text = renderTable(spec);
    if (this.applied !== undefined && text === this.appliedText) {
      return 'unchanged';
    }
    const update =
      this.applied === undefined ? undefined : renderOwnershipUpdate(this.applied, spec);
    if (update !== undefined) {
      await this.nft.applyQuick(spec.tableName, update);
      this.applied = spec;
      this.appliedText = text;
      return 'sets';
    }
    if (this.applied !== undefined) {
      await this.keepCounters(this.applied.tableName);
    }
    await this.nft.apply(text);
    this.applied = spec;
    this.appliedText = text;
    return 'table';
  }

  private async keepCounters(tableName: string): Promise<void> {
    try {
      const counters = await readCounters(this.nft, tableName);
      for (const [name, value] of counters) {
        this.base.set(name, add(this.base.get(name), value));
      }
    } catch (error) {
      // Losing a few counts is better than not applying; a missing table has nothing to keep.
      if (!(error instanceof NftError)) {
        throw error;
      }
    }
  }

  /** Extends the lease by the spec's leaseTimeoutMs; call it before each heartbeat is sent. */
  async refreshLease(): Promise<void> {
    if (this.applied === undefined) {
      throw new Error('refreshLease: nothing programmed yet; call program(spec) first');
    }
    await this.nft.applyQuick(this.applied.tableName, renderLeaseRefresh(this.applied));
  }

  /** Counters since this Dataplane was created (totals survive whole-table replacements). */
  async counters(): Promise<DataplaneCounters> {
    const spec = this.applied;
    if (spec === undefined) {
      throw new Error('counters: nothing programmed yet; call program(spec) first');
    }
    const now = await readCounters(this.nft, spec.tableName);
    const get = (name: string): CounterValue => add(this.base.get(name), now.get(name) ?? zero);
    return {
      rules: spec.portRules.map((_, i) => ({
        accepted: get(names.accepted(i)),
        dropped: get(names.dropped(i)),
        reset: get(names.reset(i)),
      })),
      uncovered: { accepted: get(names.uncoveredAccepted), dropped: get(names.uncoveredDropped) },
      leaseExpired: get(names.leaseExpired),
    };
  }

  /** Live connections per rule and bucket, from the conntrack marks. */
  connections(): Promise<BucketConnections[]> {
    return this.conntrack.connectionsByBucket();
  }

  /**
   * Drops the established connections of `buckets` of port rule `rule` (Ready.flush): their
   * conntrack entries go, so the filter treats their next packet as unknown. All buckets of
   * the rule take one command; otherwise one per bucket. Returns how many entries went.
   */
  async flush(rule: number, buckets: readonly number[]): Promise<number> {
    const spec = this.applied;
    const count = spec?.portRules[rule]?.buckets;
    if (count !== undefined && buckets.length === count) {
      return this.conntrack.deleteByMark(ctMarkBase(rule), (nlbMarkBit | ruleFieldMask) >>> 0);
    }
    let deleted = 0;
    for (const bucket of buckets) {
      deleted += await this.conntrack.deleteByMark(ctMark(rule, bucket));
    }
    return deleted;
  }

  /**
   * Drops every connection to the cluster IPs, marked or not, and kills their sockets: for a
   * host that comes back after its peers declared it dead (DESIGN.md §4).
   */
  async flushClusterIps(clusterIps: readonly Address[]): Promise<number> {
    let deleted = 0;
    for (const ip of clusterIps) {
      deleted += await this.conntrack.deleteByDestination(ip);
      await this.ipRoute?.killSockets(ip);
    }
    return deleted;
  }

  /** Removes both tables (safe when absent). */
  async remove(tableName = this.applied?.tableName): Promise<void> {
    if (tableName === undefined) {
      throw new Error('remove: no table name given and nothing programmed');
    }
    await this.nft.apply(renderRemoval(tableName));
    this.applied = undefined;
    this.appliedText = undefined;
  }
}

export interface InterfaceSetup {
  readonly interface: string;
  readonly clusterIps: readonly Address[];
  readonly mode: ClusterMode;
  /** Unicast mode: the cluster MAC the interface takes. */
  readonly clusterMac?: string;
}

export interface AttachedInterface {
  /** The MAC before attach; detach puts it back. Persist it to survive a crash. */
  readonly originalMac: string;
  /** The cluster IPs attach added (those already present are left alone on detach too). */
  readonly added: readonly Prefix[];
}

/**
 * Gives the cluster interface the cluster MAC (unicast mode) and the cluster IPs. Call it after
 * `program`, so the filter is in place before the first VIP packet can arrive.
 */
export async function attachInterface(
  ipRoute: IpRoute,
  setup: InterfaceSetup,
): Promise<AttachedInterface> {
  const link = await ipRoute.link(setup.interface);
  if (setup.mode === 'unicast') {
    if (setup.clusterMac === undefined) {
      throw new Error('attachInterface: unicast mode needs clusterMac');
    }
    if (link.mac !== setup.clusterMac) {
      await ipRoute.setMac(setup.interface, setup.clusterMac);
    }
  }
  // Multicast and IGMP modes (ip maddr add, IGMP joins) are not implemented yet.
  const added: Prefix[] = [];
  for (const ip of setup.clusterIps) {
    const prefix = clusterIpPrefix(ip);
    if (await ipRoute.addAddress(setup.interface, prefix)) {
      added.push(prefix);
    }
  }
  return { originalMac: link.mac, added };
}

/** Undoes attachInterface: the cluster IPs first (no more VIP traffic), then the MAC. */
export async function detachInterface(
  ipRoute: IpRoute,
  setup: InterfaceSetup,
  attached: AttachedInterface,
): Promise<void> {
  for (const prefix of attached.added) {
    await ipRoute.deleteAddress(setup.interface, prefix);
  }
  const link = await ipRoute.link(setup.interface);
  if (link.mac !== attached.originalMac) {
    await ipRoute.setMac(setup.interface, attached.originalMac);
  }
}

export interface StaleSetup extends InterfaceSetup {
  readonly tableName: string;
  /** The MAC to restore if the interface still has the cluster MAC, e.g. from a state file. */
  readonly originalMac?: string;
}

export interface CleanupReport {
  readonly removedAddresses: readonly string[];
  /** The MAC put back, or undefined when the interface did not carry the cluster MAC. */
  readonly restoredMac: string | undefined;
  /** Set when the cluster MAC is still there because no original MAC was known. */
  readonly warning: string | undefined;
}

/**
 * Removes what a crashed predecessor left: the cluster IPs on the interface (first, so no VIP
 * traffic is taken unfiltered), the cluster MAC (back to the burned-in one, or
 * `originalMac`), and both tables. Never touches the dedicated IP or any other address.
 */
export async function cleanupStale(
  nft: Nft,
  ipRoute: IpRoute,
  setup: StaleSetup,
): Promise<CleanupReport> {
  const removedAddresses: string[] = [];
  const present = await ipRoute.addresses(setup.interface);
  for (const ip of setup.clusterIps) {
    const prefix = present.find((p) => addressesEqual(p.address, ip));
    if (prefix !== undefined && (await ipRoute.deleteAddress(setup.interface, prefix))) {
      removedAddresses.push(`${prefix.address.text}/${prefix.length}`);
    }
  }
  let restoredMac: string | undefined;
  let warning: string | undefined;
  const link = await ipRoute.link(setup.interface);
  if (setup.clusterMac !== undefined && link.mac === setup.clusterMac) {
    const original = link.permanentMac ?? setup.originalMac;
    if (original !== undefined && original !== link.mac) {
      await ipRoute.setMac(setup.interface, original);
      restoredMac = original;
    } else {
      warning = `${setup.interface} keeps the cluster MAC ${link.mac}: its original MAC is unknown (no permanent address); set one with 'ip link set dev ${setup.interface} address <mac>'`;
    }
  }
  await nft.apply(renderRemoval(setup.tableName));
  return { removedAddresses, restoredMac, warning };
}
