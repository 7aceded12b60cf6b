// Keeping the table (issue 9): the Dataplane over FakeNft, whose `foreign` changes the ruleset
// as another program would (`nft flush ruleset`, a rule deleted by hand) and whose watches
// report it as nft monitor does. Each case checks that the whole table is back as rendered,
// what the restore report says, and what happens when it cannot be put back (lost).
// The same cases on a real kernel: test/dataplane-heal-kernel.test.ts.
import { beforeEach, describe, expect, it } from 'vitest';
import type { Conntrack } from '../src/dataplane/conntrack.js';
import { Dataplane } from '../src/dataplane/dataplane.js';
import { DataplaneLostError, type DataplaneOptions } from '../src/dataplane/dataplane-api.js';
import { CommandError } from '../src/dataplane/exec.js';
import { NftError } from '../src/dataplane/nft.js';
import { FakeNft } from '../src/dataplane/nft-fake.js';
import { MonitorParser } from '../src/dataplane/nft-monitor.js';
import type { DataplaneSpec } from '../src/dataplane/dataplane-spec.js';
import { renderTable } from '../src/dataplane/render.js';
import { compareImages, tableImage } from '../src/dataplane/table-image.js';
import { labSpec, mixedSpec, owner } from './dataplane-fixtures.js';

const noConntrack: Conntrack = {
  connectionsByBucket: () => Promise.resolve([]),
  deleteByMark: () => Promise.resolve(0),
  deleteByDestination: () => Promise.resolve(0),
};

/** The whole state the fake holds for table `nlb`, to compare before and after. */
function snapshot(nft: FakeNft, spec: DataplaneSpec) {
  const chains = ['prerouting', ...spec.clusterIps.map((_, i) => `vip${i}`), 'uncovered'];
  spec.portRules.forEach((_, i) => chains.push(`rule${i}`));
  const sets = ['drop_all', 'new_flows'];
  spec.portRules.forEach((_, i) => sets.push(`rule${i}_owned`, `rule${i}_orphan`));
  return {
    tables: nft.tableNames(),
    rules: chains.map((chain) => nft.rules('nlb', chain)),
    egress: nft.rules('nlb', 'egress', 'netdev'),
    sets: sets.map((set) => nft.elements('nlb', set)),
  };
}

describe('Dataplane keeps its table (FakeNft)', () => {
  let now: number;
  let nft: FakeNft;
  let dataplane: Dataplane;
  const spec: DataplaneSpec = labSpec;

  function make(options: DataplaneOptions = {}): Dataplane {
    return new Dataplane(nft, noConntrack, undefined, { nowMs: () => now, ...options });
  }

  /** Lets the monitor's reports and the comparisons they ask for run. */
  async function settle(d = dataplane): Promise<void> {
    for (let i = 0; i < 5; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      await d.settled();
    }
  }

  beforeEach(async () => {
    now = 1_000;
    nft = new FakeNft();
    dataplane = make();
    expect(await dataplane.program(spec)).toBe('table');
    await settle();
    expect(dataplane.health().watch).toBe('live');
  });

  it('puts the whole table back after `nft flush ruleset`, with the lease it had left', async () => {
    const before = snapshot(nft, spec);
    now += 300;
    const applies = nft.scripts.length;
    const flushed = nft.foreign('flush ruleset\n');
    expect(nft.tableNames()).toEqual([]);
    await flushed;
    await settle();
    expect(snapshot(nft, spec)).toEqual(before);
    // The lease was last set at 1000 for 800 ms; the restore at 1300 gives it the 500 ms left.
    // The monitor said the tables were deleted: no listing before the apply.
    expect(nft.scripts.slice(applies)).toEqual([
      { kind: 'apply', script: renderTable(spec, { leaseMs: 500 }) },
    ]);
    const refreshed = dataplane.heartbeatSent();
    expect(refreshed.restored).toEqual([
      {
        problems: ['table inet nlb was deleted', 'table netdev nlb was deleted'],
        detectedBy: 'nft monitor',
        goneMs: 0,
        restoreMs: 0,
      },
    ]);
    expect(dataplane.health()).toMatchObject({ lost: undefined, restores: 1 });
  });

  it('puts back the MAC masking table when only it was deleted', async () => {
    const before = snapshot(nft, spec);
    await nft.foreign('delete table netdev nlb\n');
    await settle();
    expect(snapshot(nft, spec)).toEqual(before);
    expect(dataplane.takeReports().map((r) => r.problems)).toEqual([
      ['table netdev nlb was deleted'],
    ]);
  });

  it('puts the table back after a rule is deleted, a chain flushed, a rule inserted, a bucket added to owned', async () => {
    const before = snapshot(nft, spec);
    const handle = (
      (await nft.listJson(['list', 'table', 'inet', 'nlb'])) as {
        nftables: { rule?: { chain: string; handle: number } }[];
      }
    ).nftables.find((item) => item.rule?.chain === 'rule0')!.rule!.handle;
    const changes = [
      `delete rule inet nlb rule0 handle ${handle}`,
      'flush chain inet nlb uncovered',
      'insert rule inet nlb prerouting accept',
      'add element inet nlb rule0_owned { 7, 8 }',
      'flush set inet nlb rule0_orphan',
    ];
    for (const change of changes) {
      await nft.foreign(`${change}\n`);
      await settle();
      expect(snapshot(nft, spec), change).toEqual(before);
    }
    expect(dataplane.takeReports().map((r) => r.problems)).toEqual([
      ['chain inet rule0 has 10 rules, 11 programmed'],
      ['chain inet uncovered has 0 rules, 8 programmed'],
      ['chain inet prerouting has 2 rules, 1 programmed'],
      ['set rule0_owned holds 7, 8 (not programmed)'],
      ['set rule0_orphan lacks 3 (programmed)'],
    ]);
  });

  it('ignores changes that leave the table as programmed, and its own set changes', async () => {
    const applies = nft.scripts.filter((s) => s.kind === 'apply').length;
    await nft.foreign('add table inet other\nadd element inet nlb rule0_owned { 0 }\n');
    await dataplane.program({
      ...spec,
      ownership: { ...spec.ownership, rules: [owner([0, 3, 6, 9], [3])] },
    });
    dataplane.heartbeatSent();
    await settle();
    expect(nft.scripts.filter((s) => s.kind === 'apply').length).toBe(applies);
    expect(dataplane.takeReports()).toEqual([]);
  });

  it('puts a multicast table back too, and does not take its own apply for a deleted netdev table', async () => {
    nft = new FakeNft();
    dataplane = make();
    // nlbd's own apply in multicast mode adds and deletes the netdev table (there is none).
    expect(await dataplane.program(mixedSpec)).toBe('table');
    await settle();
    expect(dataplane.health()).toMatchObject({ watch: 'live', restores: 0 });
    expect(nft.scripts.filter((s) => s.kind === 'apply')).toHaveLength(1);
    await nft.foreign('flush ruleset\n');
    await settle();
    // Both of its tables: the filter and the arp table that names the group MAC.
    expect(nft.tableNames()).toEqual(['arp nlb', 'inet nlb']);
    expect(dataplane.takeReports().map((r) => [...r.problems].sort())).toEqual([
      ['table arp nlb was deleted', 'table inet nlb was deleted'],
    ]);
    expect(nft.scripts.filter((s) => s.kind === 'apply')).toHaveLength(2);
  });

  it('finds a missing table at the next heartbeat without a monitor, and restores it with the lease it had left', async () => {
    nft = new FakeNft();
    dataplane = make({ watch: false });
    await dataplane.program(spec);
    await settle();
    const before = snapshot(nft, spec);
    await nft.foreign('flush ruleset\n');
    now += 300;
    const applies = nft.scripts.length;
    // A heartbeat makes no nft call (the kernel refreshed the lease as it left, had the table
    // been there); without a live monitor it asks for a comparison, which finds the table gone.
    expect(dataplane.heartbeatSent().restored).toEqual([]);
    expect(nft.scripts.length).toBe(applies);
    await settle();
    expect(snapshot(nft, spec)).toEqual(before);
    // The heartbeat at 1300 is the last lease the daemon knows of: 800 ms from then.
    expect(nft.scripts.slice(applies).filter((s) => s.kind === 'apply')).toEqual([
      { kind: 'apply', script: renderTable(spec, { leaseMs: 800 }) },
    ]);
    expect(dataplane.heartbeatSent().restored).toEqual([
      expect.objectContaining({
        detectedBy: 'heartbeat (nft monitor not live)',
        problems: ['table inet nlb is missing', 'table netdev nlb is missing'],
      }),
    ]);
    // An altered table is found the same way.
    await settle();
    await nft.foreign('add element inet nlb rule0_owned { 7 }\n');
    dataplane.heartbeatSent();
    await settle();
    expect(snapshot(nft, spec)).toEqual(before);
    expect(dataplane.heartbeatSent().restored.map((r) => r.detectedBy)).toEqual([
      'heartbeat (nft monitor not live)',
    ]);
  });

  it('compares on every heartbeat while the monitor is blind, and once per checkIntervalMs while live', async () => {
    const checks = (): number => dataplane.health().checks;
    let before = checks();
    for (let i = 0; i < 5; i++) {
      now += 190;
      dataplane.heartbeatSent();
      await settle();
    }
    expect(checks() - before).toBe(0);
    now += 10_000;
    dataplane.heartbeatSent();
    await settle();
    expect(checks() - before).toBe(1);
    nft.blindWatches('nft monitor exited');
    before = checks();
    for (let i = 0; i < 3; i++) {
      dataplane.heartbeatSent();
      await settle();
    }
    expect(checks() - before).toBe(3);
    nft.resyncWatches('nft monitor restarted');
    await settle();
    before = checks();
    dataplane.heartbeatSent();
    await settle();
    expect(checks() - before).toBe(0);
  });

  it('reads a listing that failed once again before it counts as a problem; twice running, it restores', async () => {
    const timeout = new CommandError(['nft', '-j'], 'did not finish within 1000 ms', 'slow');
    const applies = (): number => nft.scripts.filter((s) => s.kind === 'apply').length;
    const before = applies();
    nft.failListings(timeout);
    dataplane.requestCheck('test');
    await settle();
    expect(dataplane.health().listingRetries).toBe(1);
    expect(applies()).toBe(before);
    expect(dataplane.takeReports()).toEqual([]);
    // Failing twice running (both tables' listings, twice): nft may be broken, so the table goes
    // back in, as before.
    nft.failListings(timeout, 4);
    dataplane.requestCheck('test');
    await settle();
    expect(applies()).toBe(before + 1);
    expect(dataplane.takeReports().map((r) => r.problems[0])).toEqual([
      expect.stringMatching(/^table inet nlb could not be read: .*did not finish within 1000 ms/),
    ]);
  });

  it('keeps counter totals sane across a table lost and put back', async () => {
    nft.setCounter('nlb', 'rule0_accepted', { packets: 10, bytes: 600 });
    expect((await dataplane.counters()).rules[0]!.accepted).toEqual({ packets: 10, bytes: 600 });
    // Two more packets, then the table goes: they were never read, so they are lost with it.
    nft.setCounter('nlb', 'rule0_accepted', { packets: 12, bytes: 720 });
    await nft.foreign('flush ruleset\n');
    await settle();
    nft.setCounter('nlb', 'rule0_accepted', { packets: 1, bytes: 60 });
    expect((await dataplane.counters()).rules[0]!.accepted).toEqual({ packets: 11, bytes: 660 });
    // A table replaced behind nlbd's back by an identical one: nothing to restore, but its
    // counters start again from 0, and the totals must not go down.
    await nft.foreign(renderTable(spec));
    await settle();
    expect(dataplane.takeReports()).toHaveLength(1);
    nft.setCounter('nlb', 'rule0_accepted', { packets: 3, bytes: 180 });
    expect((await dataplane.counters()).rules[0]!.accepted).toEqual({ packets: 14, bytes: 840 });
  });

  it('is lost when the table cannot be put back, refuses every call, and retries at most once per restoreRetryMs', async () => {
    nft.breakNft('Error: Could not process rule: Operation not permitted');
    await nft.foreign('flush ruleset\n');
    await settle();
    expect(dataplane.health().lost).toBe(
      'table inet nlb was deleted; table netdev nlb was deleted; restoring the table failed: nft rejected the transaction, nothing was changed: Error: Could not process rule: Operation not permitted',
    );
    // A heartbeat while lost asks for nothing (the driver withholds them anyway).
    const checksWhileLost = dataplane.health().checks;
    expect(dataplane.heartbeatSent()).toEqual({ restored: [] });
    await settle();
    expect(dataplane.health().checks).toBe(checksWhileLost);
    const attempts = (): number => nft.scripts.length;
    let before = attempts();
    // Right after the failed restore: no new attempt, just the error.
    await expect(dataplane.program(spec)).rejects.toBeInstanceOf(DataplaneLostError);
    now += 499;
    await expect(dataplane.program(spec)).rejects.toBeInstanceOf(DataplaneLostError);
    expect(attempts()).toBe(before);
    now += 1;
    await expect(dataplane.program(spec)).rejects.toThrow(/retry failed/);
    expect(attempts()).toBe(before + 1);
    // A hanging nft is no better.
    nft.breakNft(new CommandError(['nft', '-f', '-'], 'did not finish within 1000 ms', 'stuck'));
    now += 500;
    await expect(dataplane.program(spec)).rejects.toThrow(/did not finish within 1000 ms/);
    nft.breakNft(undefined);
    before = attempts();
    now += 100;
    await expect(dataplane.program(spec)).rejects.toBeInstanceOf(DataplaneLostError);
    expect(attempts()).toBe(before);
    now += 400;
    const inactive = { ...spec, ownership: { ...spec.ownership, active: false } };
    expect(await dataplane.program(inactive)).toBe('table');
    expect(nft.scripts.at(-1)).toEqual({ kind: 'apply', script: renderTable(inactive) });
    expect(dataplane.health()).toMatchObject({ lost: undefined, restores: 1 });
    expect(nft.elements('nlb', 'new_flows')).toEqual([]);
    expect(dataplane.heartbeatSent()).toEqual({ restored: [] });
  });

  it('still reports a refused change as nft refusing it when the table is intact', async () => {
    nft.failNext('Error: Could not process rule: Device or resource busy');
    const moved = { ...spec, ownership: { ...spec.ownership, rules: [owner([1])] } };
    await expect(dataplane.program(moved)).rejects.toBeInstanceOf(NftError);
    expect(dataplane.health().lost).toBeUndefined();
    expect(dataplane.takeReports()).toEqual([]);
  });

  it('puts the table back with the new ownership when a quick change finds it gone', async () => {
    nft = new FakeNft();
    dataplane = make({ watch: false });
    await dataplane.program(spec);
    await settle();
    await nft.foreign('flush ruleset\n');
    const moved = { ...spec, ownership: { ...spec.ownership, rules: [owner([1, 2])] } };
    // Without a monitor nothing noticed yet: the quick change meets the missing table.
    expect(await dataplane.program(moved)).toBe('table');
    expect(nft.elements('nlb', 'rule0_owned')).toEqual([1, 2]);
    await settle();
    expect(dataplane.takeReports().map((r) => r.detectedBy)).toEqual(['program']);
  });
});

describe('table images', () => {
  it('compare a multicast table (no netdev table) and name what differs', async () => {
    const nft = new FakeNft();
    await nft.apply(renderTable(mixedSpec));
    const list = async () => tableImage(await nft.listJson(['list', 'table', 'inet', 'nlb']));
    const reference = await list();
    const sets = new Map([['rule0_owned', [1, 2]]]);
    expect(compareImages(reference, await list(), sets)).toEqual([]);
    await nft.foreign('flush chain inet nlb vip1\nflush set inet nlb rule0_owned\n');
    expect(compareImages(reference, await list(), sets)).toEqual([
      'chain inet vip1 has 0 rules, 5 programmed',
      'set rule0_owned lacks 1, 2 (programmed)',
    ]);
  });
});

describe('MonitorParser', () => {
  it('splits nft monitor output into transactions and finds the markers and the table', () => {
    const parser = new MonitorParser('nlb');
    const text = [
      'add element inet nlb sync { 0x0000002a timeout 1s expires 1s }',
      'delete element inet nlb lease { 0xffffffff timeout 800ms expires 672ms }',
      'add element inet nlb lease { 0xffffffff timeout 800ms expires 800ms }',
      '# new generation 3 by process 10414 (nft)',
      'add table inet other',
      '# new generation 4 by process 10415 (nft)',
      'delete rule netdev nlb egress handle 2',
      'delete chain netdev nlb egress',
      'delete table netdev nlb',
      '# new generation 5 by process 10416 (nft)',
    ];
    const batches = text.map((line) => parser.line(line)).filter((b) => b !== undefined);
    expect(batches).toEqual([
      {
        lines: text.slice(0, 3),
        lineCount: 3,
        relevant: true,
        markers: ['0x0000002a'],
        deleted: [],
      },
      { lines: ['add table inet other'], lineCount: 1, relevant: false, markers: [], deleted: [] },
      {
        lines: text.slice(6, 9),
        lineCount: 3,
        relevant: true,
        markers: [],
        deleted: [{ family: 'netdev', name: 'nlb' }],
      },
    ]);
    // nlbd's own whole-table apply deletes and adds its table in one transaction.
    for (const line of ['add table inet nlb', 'delete table inet nlb', 'add table inet nlb']) {
      parser.line(line);
    }
    expect(parser.line('# new generation 6 by process 1 (nft)')?.deleted).toEqual([]);
    // A line that is not a change it knows counts as relevant: better one comparison too many.
    parser.line('something else');
    expect(parser.line('# new generation 7 by process 1 (nft)')?.relevant).toBe(true);
  });
});
