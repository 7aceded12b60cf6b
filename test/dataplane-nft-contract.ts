// One contract for every Nft implementation (docs/architecture.md#contract-suites): the fake in
// unit tests and the real nft in a fresh network namespace must both pass it, so code tested
// against the fake behaves the same on a kernel.
import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { type Nft, NftError, readCounters } from '../src/dataplane/nft.js';
import {
  renderLeaseRefresh,
  renderOwnershipUpdate,
  renderRemoval,
  renderTable,
} from '../src/dataplane/render.js';
import { names, ownershipSets } from '../src/dataplane/table-names.js';
import { compareImages, tableImage } from '../src/dataplane/table-image.js';
import { labSpec, mixedSpec, owner } from './dataplane-fixtures.js';

const labCounters = [
  names.leaseExpired,
  names.accepted(0),
  names.dropped(0),
  names.reset(0),
  names.uncoveredAccepted,
  names.uncoveredDropped,
];

/** Polls `ok` every 20 ms until it holds or `waitMs` passed; says whether it held. */
async function until(ok: () => boolean, waitMs: number, meanwhile?: () => Promise<void>) {
  const deadline = Date.now() + waitMs;
  while (!ok() && Date.now() < deadline) {
    await meanwhile?.();
    await sleep(20);
  }
  return ok();
}

/**
 * Registers the contract's tests; `nft()` returns the implementation under test, `foreign`
 * runs an nft script as another program would (its own process, not through `nft()`).
 */
export function nftContract(
  nft: () => Nft,
  foreign: (script: string) => Promise<void>,
  condition = true,
): void {
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

  it.runIf(condition)(
    'lists whole tables as JSON whose image survives a re-apply and shows a change by hand',
    async () => {
      await nft().apply(renderTable(labSpec));
      const list = async () =>
        tableImage({
          nftables: [
            ...((await nft().listJson(['list', 'table', 'inet', 'nlb'])) as { nftables: [] })
              .nftables,
            ...((await nft().listJson(['list', 'table', 'netdev', 'nlb'])) as { nftables: [] })
              .nftables,
          ],
        });
      const reference = await list();
      const keys = [...reference.structure.keys()];
      for (const chain of ['inet prerouting', 'inet vip0', 'inet rule0', 'inet uncovered']) {
        expect(keys).toContain(`chain ${chain}`);
      }
      expect(keys).toContain('chain netdev egress');
      expect(keys).toContain('rule netdev egress 0');
      expect(keys).toContain(`counter inet ${names.accepted(0)}`);
      expect(reference.elements.get('inet rule0_owned')).toEqual([0, 3, 6]);
      expect(reference.elements.get('inet rule0_orphan')).toEqual([3]);
      expect(reference.elements.get('inet new_flows')).toEqual([0, 0xff]);
      expect(compareImages(reference, reference, ownershipSets(labSpec))).toEqual([]);
      // Handles change with every apply; the image does not.
      await nft().apply(renderTable(labSpec));
      expect(compareImages(reference, await list(), ownershipSets(labSpec))).toEqual([]);
      await foreign('flush chain inet nlb uncovered\nadd element inet nlb rule0_owned { 7 }\n');
      expect(compareImages(reference, await list(), ownershipSets(labSpec))).toEqual([
        'chain inet uncovered has 0 rules, 8 programmed',
        'set rule0_owned holds 7 (not programmed)',
      ]);
      await nft().apply(renderRemoval('nlb'));
      const missing = await nft()
        .listJson(['list', 'table', 'inet', 'nlb'])
        .catch((error: unknown) => error);
      expect(missing).toBeInstanceOf(NftError);
      expect((missing as NftError).stderr).toMatch(/No such file or directory/);
    },
  );

  it.runIf(condition)(
    'watches the ruleset: reports what others change in the table, not its own quick transactions',
    async () => {
      await nft().apply(renderTable(labSpec));
      const events: string[] = [];
      const stop = nft().watch('nlb', {
        change: (change) =>
          events.push(
            `change ${change.lines.join(' | ')}; deleted ${change.deleted.map((t) => `${t.family} ${t.name}`).join(', ')}`,
          ),
        resync: (reason) => events.push(`resync ${reason}`),
        blind: (reason) => events.push(`blind ${reason}`),
      });
      try {
        // Live once it has seen a transaction: a lease refresh is one.
        const refresh = () => nft().applyQuick('nlb', renderLeaseRefresh(labSpec));
        expect(await until(() => events.some((e) => e.startsWith('resync')), 3_000, refresh)).toBe(
          true,
        );
        events.splice(0);
        for (let i = 0; i < 3; i++) await refresh();
        await foreign('add element inet nlb rule0_owned { 7 }\n');
        expect(await until(() => events.length > 0, 2_000)).toBe(true);
        // Another table's changes are not this watch's business.
        await foreign('add table inet nlbother\n');
        await foreign('delete table inet nlbother\n');
        await refresh();
        await sleep(300);
        expect(events).toHaveLength(1);
        expect(events[0]).toMatch(
          /^change add element inet nlb rule0_owned \{ (7|0x00000007) \}; deleted $/,
        );
        // Its own whole-table apply deletes and adds the table in one transaction: not deleted.
        await nft().apply(renderTable(labSpec));
        await foreign('delete table netdev nlb\n');
        expect(await until(() => events.length >= 3, 2_000)).toBe(true);
        // The apply also clears an arp table that a multicast-mode spec would have (none here).
        expect(events[1]).toMatch(/; deleted (arp nlb)?$/);
        expect(events[2]).toMatch(/^change delete .*; deleted netdev nlb$/);
      } finally {
        stop();
      }
      await foreign('flush ruleset\n');
      await sleep(300);
      expect(events).toHaveLength(3);
    },
  );
}
