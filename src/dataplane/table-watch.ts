// How the Dataplane sees what the kernel holds of its tables (dataplane.ts, "Keeping the
// table"): `TableWatch` turns nft monitor's reports into requests for a comparison (or for a
// restore, when the monitor saw the tables deleted), and `listKernelTables` lists both tables at
// once into one image to compare with the reference.
import { errorText } from '../core/error-text.js';
import { type Nft, NftError, type NftFamily, type RulesetListener } from './nft-api.js';
import { listTable } from './nft.js';
import type { DataplaneSpec } from './dataplane-spec.js';
import { type TableImage, tableImage } from './table-image.js';

/**
 * The families of the tables `spec` renders: the netdev one masks MACs in unicast mode, the arp
 * one names the group MAC for IPv4 cluster IPs in multicast and IGMP modes.
 */
export function tableFamilies(spec: DataplaneSpec): NftFamily[] {
  if (spec.mode === 'unicast') return ['inet', 'netdev'];
  if (spec.mode === 'routed') return ['inet'];
  return spec.clusterIps.some((ip) => ip.family === 4) ? ['inet', 'arp'] : ['inet'];
}

/** How a restore report names a table the monitor saw deleted. */
export function deletedProblem(family: NftFamily, tableName: string): string {
  return `table ${family} ${tableName} was deleted`;
}

/** nft's answer for a table that is not there (as opposed to nft failing). */
function isMissing(error: unknown): boolean {
  return error instanceof NftError && /No such file or directory/.test(error.stderr);
}

/** `live`: nft monitor reports changes; `blind`: it does not (compare by other means). */
export type WatchState = 'off' | 'blind' | 'live';

/**
 * One watch of the ruleset for the Dataplane's tables. Every report asks for a comparison
 * through `request`, with the families of the programmed tables the monitor saw deleted.
 */
export class TableWatch {
  state: WatchState = 'off';
  private stopWatch: (() => void) | undefined;

  constructor(
    private readonly nft: Nft,
    private readonly enabled: boolean,
    /** The spec the kernel should hold, as of now. */
    private readonly applied: () => DataplaneSpec | undefined,
    private readonly request: (detectedBy: string, deleted: readonly NftFamily[]) => void,
  ) {}

  /** Starts watching `tableName`, unless watching is off or already started. */
  start(tableName: string): void {
    if (!this.enabled || this.stopWatch !== undefined) {
      return;
    }
    this.state = 'blind';
    const listener: RulesetListener = {
      // Only the tables the spec has: in multicast mode nlbd's own apply deletes the netdev one.
      change: (change) => {
        const applied = this.applied();
        this.request(
          'nft monitor',
          change.deleted
            .filter(
              (table) =>
                applied !== undefined &&
                table.name === applied.tableName &&
                tableFamilies(applied).includes(table.family),
            )
            .map((table) => table.family),
        );
      },
      resync: (reason) => {
        this.state = 'live';
        this.request(reason, []);
      },
      blind: () => {
        this.state = 'blind';
      },
    };
    this.stopWatch = this.nft.watch(tableName, listener);
  }

  stop(): void {
    this.stopWatch?.();
    this.stopWatch = undefined;
    this.state = 'off';
  }
}

/** Both tables of a spec as the kernel holds them, and those that are not there. */
export interface KernelTables {
  readonly image: TableImage;
  readonly missing: string[];
}

/**
 * Both tables as the kernel has them (listed at once: a restore waits for this), or what
 * could not be read. The `inet` listing goes to `onInetListing` too, so that its counters are
 * taken as a reading and a restore that follows need not read them again.
 */
export async function listKernelTables(
  nft: Nft,
  spec: DataplaneSpec,
  timeoutMs: number,
  onInetListing: (json: unknown) => void,
): Promise<KernelTables | string> {
  const listings = await Promise.all(
    tableFamilies(spec).map((family) =>
      listTable(nft, { family, name: spec.tableName }, { timeoutMs }).then(
        (json) => ({ family, json }),
        (error: unknown) => ({ family, error }),
      ),
    ),
  );
  const items: unknown[] = [];
  const missing: string[] = [];
  for (const listing of listings) {
    if ('error' in listing) {
      if (!isMissing(listing.error)) {
        return `table ${listing.family} ${spec.tableName} could not be read: ${errorText(listing.error)}`;
      }
      missing.push(`table ${listing.family} ${spec.tableName} is missing`);
    } else {
      if (listing.family === 'inet') onInetListing(listing.json);
      items.push(...(((listing.json as { nftables?: unknown[] }).nftables ?? []) as unknown[]));
    }
  }
  return { image: tableImage({ nftables: items }), missing };
}
