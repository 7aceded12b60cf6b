// One contract for every Nft implementation (STYLE.md habit 8): the fake in unit tests and the
// real nft in a fresh network namespace must both pass it, so code tested against the fake
// behaves the same on a kernel.
import { expect, it } from 'vitest';
import { type Nft, NftError, readCounters } from '../src/dataplane/nft.js';
import {
  names,
  renderLeaseRefresh,
  renderOwnershipUpdate,
  renderRemoval,
  renderTable,
} from '../src/dataplane/render.js';
import { labSpec, mixedSpec, owner } from './dataplane-fixtures.js';

const labCounters = [
  names.leaseExpired,
  names.accepted(0),
  names.dropped(0),
  names.reset(0),
  names.uncoveredAccepted,
  names.uncoveredDropped,
];

/** Registers the contract's tests; `nft()` returns the implementation under test. */
export function nftContract(nft: () => Nft, condition = true): void {
  it.runIf(condition)('applies a whole table and reads its counters back, all zero', async () => {
    await nft().apply(renderTable(labSpec));
    const counters = await readCounters(nft(), 'nlb');
    expect([...counters.keys()].sort()).toEqual([...labCounters].sort());
    for (const value of counters.values()) {
      expect(value).toEqual({ packets: 0, bytes: 0 });
    }
  });

  it.runIf(condition)(
    'rejects a failing script as a whole and keeps the previous table',
    async () => {
      await nft().apply(renderTable(labSpec));
      const failing = `${renderTable(mixedSpec)}delete table inet nlbabsent\n`;
      await expect(nft().apply(failing)).rejects.toBeInstanceOf(NftError);
      const counters = await readCounters(nft(), 'nlb');
      expect([...counters.keys()].sort()).toEqual([...labCounters].sort());
    },
  );

  it.runIf(condition)('runs one-line transactions, and recovers after a failing one', async () => {
    await nft().apply(renderTable(labSpec));
    const next = { ...labSpec, ownership: { ...labSpec.ownership, rules: [owner([1, 2])] } };
    await nft().applyQuick('nlb', renderOwnershipUpdate(labSpec, next)!);
    await nft().applyQuick('nlb', renderOwnershipUpdate(next, labSpec)!);
    await nft().applyQuick('nlb', 'flush set inet nlb rule0_orphan');
    await nft().applyQuick('nlb', 'delete element inet nlb rule0_owned { 0 }');
    await expect(
      nft().applyQuick('nlb', 'delete element inet nlb rule0_owned { 0 }'),
    ).rejects.toBeInstanceOf(NftError);
    await expect(
      nft().applyQuick('nlb', `add element inet nlb nosuch { 1 }; ${renderLeaseRefresh(labSpec)}`),
    ).rejects.toBeInstanceOf(NftError);
    await nft().applyQuick('nlb', renderLeaseRefresh(labSpec));
    await nft().applyQuick('nlb', renderLeaseRefresh(labSpec));
  });

  it.runIf(condition)('removes both tables, also when they are already gone', async () => {
    await nft().apply(renderTable(labSpec));
    await nft().apply(renderRemoval('nlb'));
    await expect(readCounters(nft(), 'nlb')).rejects.toBeInstanceOf(NftError);
    await nft().apply(renderRemoval('nlb'));
  });
}
