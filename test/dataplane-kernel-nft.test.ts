// The nft adapter on a real kernel: the real nft passes the Nft contract that FakeNft passes
// too, and every rendered fixture loads and lists back. A scratch namespace of its own. Needs
// root; skipped visibly otherwise, failing instead when NLB_REQUIRE_LAB=1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsRunner } from '../src/dataplane/exec.js';
import { NftCli } from '../src/dataplane/nft-cli.js';
import { renderTable } from '../src/dataplane/render.js';
import { acquireLabTestLock } from '../src/lab/lock.js';
import { labSpec, mixedInactiveSpec, mixedSpec, mixedStoppedSpec } from './dataplane-fixtures.js';
import { Namespaces, isRoot } from './dataplane-netns.js';
import { nftContract } from './dataplane-nft-contract.js';
import { declareRootRequirement } from './support/root.js';

declareRootRequirement('dataplane-kernel-nft', 'the data plane kernel tests need root');

describe.runIf(isRoot)('the nft adapter on a real kernel (network namespace)', () => {
  const namespaces = new Namespaces();
  let releaseLock: (() => void) | undefined;
  let scratch = '';
  let scratchNft: NftCli;

  beforeAll(async () => {
    releaseLock = await acquireLabTestLock();
    scratch = namespaces.add('scratch');
    scratchNft = new NftCli({ runner: netnsRunner(scratch) });
  });

  afterAll(async () => {
    try {
      await scratchNft?.close();
      namespaces.removeAll();
    } finally {
      releaseLock?.();
    }
  });

  describe('the real nft passes the Nft contract', () => {
    nftContract(
      () => scratchNft,
      // Another program: its own nft process, not the adapter's long-lived one.
      (script) => new NftCli({ runner: netnsRunner(scratch), interactive: false }).apply(script),
    );
  });

  it('loads every rendered fixture, and nft lists it back', async () => {
    for (const fixture of [labSpec, mixedSpec, mixedInactiveSpec, mixedStoppedSpec]) {
      await scratchNft.apply(renderTable(fixture));
      const json = (await scratchNft.listJson(['list', 'table', 'inet', 'nlb'])) as {
        nftables: unknown[];
      };
      const chains = json.nftables.filter((item) => 'chain' in (item as object));
      // prerouting, uncovered and lease_refresh, one per cluster IP and one per port rule, and
      // nd_rewrite in multicast mode with an IPv6 cluster IP.
      const ndRewrite =
        fixture.mode !== 'unicast' && fixture.clusterIps.some((ip) => ip.family === 6);
      expect(chains.length).toBe(
        3 + fixture.clusterIps.length + fixture.portRules.length + (ndRewrite ? 1 : 0),
      );
      const tables = (await scratchNft.listJson(['list', 'tables'])) as { nftables: unknown[] };
      const families = tables.nftables
        .map((item) => (item as { table?: { family: string } }).table?.family)
        .filter((family) => family !== undefined)
        .sort();
      expect(families).toEqual(fixture.mode === 'unicast' ? ['inet', 'netdev'] : ['arp', 'inet']);
    }
    // Every quick transaction of the contract went through the long-lived nft process.
    expect(scratchNft.quickFallbacks).toBe(0);
  });
});
