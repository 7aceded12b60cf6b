// The nftables adapter: apply a rendered script as one transaction, run one-line transactions
// (ownership set changes) cheaply on a long-lived `nft -i` process, read the
// named counters and whole tables back, and watch the ruleset for changes made by anyone else
// (`nft monitor`). `NftCli` execs the real nft; `FakeNft` records what it was given and models
// just enough (tables, chains and their rules, sets, counters) for unit tests. Both pass the
// same contract tests.
//
// This module is the adapter's entry point: the contract (nft-api.ts), both adapters and the
// monitor are re-exported here, beside the reads built on `Nft.listJson`.
import type { CounterValue, Nft, NftCallOptions, NftTable } from './nft-api.js';

export * from './nft-api.js';
export { NftCli, type NftCliOptions, quickTimeoutMsDefault } from './nft-cli.js';
export { FakeNft, type RecordedScript } from './nft-fake.js';
export {
  type MonitorBatch,
  MonitorParser,
  monitorLinesKeptMax,
  monitorRestartMsDefault,
} from './nft-monitor.js';

/** `nft -j list table <family> <name>`: the whole table, parsed. */
export function listTable(
  nft: Nft,
  table: NftTable,
  options: NftCallOptions = {},
): Promise<unknown> {
  return nft.listJson(['list', 'table', table.family, table.name], options);
}

/** The named counters of `table inet <tableName>`, by name. */
export async function readCounters(
  nft: Nft,
  tableName: string,
): Promise<Map<string, CounterValue>> {
  const json = await nft.listJson(['list', 'counters', 'table', 'inet', tableName]);
  return parseCounters(json);
}

/** Parses `nft -j list counters` output: `{ nftables: [ { counter: { name, packets, bytes } } ] }`. */
export function parseCounters(json: unknown): Map<string, CounterValue> {
  const counters = new Map<string, CounterValue>();
  const items = (json as { nftables?: unknown } | null)?.nftables;
  if (!Array.isArray(items)) {
    throw new Error('nft -j output has no "nftables" array; is this nftables >= 0.9?');
  }
  for (const item of items) {
    const counter = (item as { counter?: { name?: unknown; packets?: unknown; bytes?: unknown } })
      .counter;
    if (
      counter !== undefined &&
      typeof counter.name === 'string' &&
      typeof counter.packets === 'number' &&
      typeof counter.bytes === 'number'
    ) {
      counters.set(counter.name, { packets: counter.packets, bytes: counter.bytes });
    }
  }
  return counters;
}
