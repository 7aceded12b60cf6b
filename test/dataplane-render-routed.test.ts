// Routed mode's part of the table (src/dataplane/render-routed.ts): the forwarding maps follow
// the ownership (each bucket another host serves carries that host's mark, each second chance
// the previous owner's), packets that came over the overlay are never forwarded on, and the MSS
// is clamped. The real-kernel part loads the table into a scratch namespace, reads the maps back
// through the image comparison, and applies an ownership update as a quick transaction.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsRunner } from '../src/dataplane/exec.js';
import { NftCli } from '../src/dataplane/nft-cli.js';
import { listTable } from '../src/dataplane/nft.js';
import { renderOwnershipUpdate, renderTable } from '../src/dataplane/render.js';
import { ownershipElements, routedMaps } from '../src/dataplane/render-routed.js';
import { forwardMark } from '../src/dataplane/routed-marks.js';
import { compareImages, tableImage } from '../src/dataplane/table-image.js';
import type { DataplaneSpec } from '../src/dataplane/dataplane-spec.js';
import { acquireLabTestLock } from '../src/lab/lock.js';
import { routedSpec } from './dataplane-fixtures.js';
import { Namespaces, isRoot } from './dataplane-netns.js';
import { declareRootRequirement } from './support/root.js';

declareRootRequirement('dataplane-render-routed', 'the routed table is loaded into a real kernel');

const encoded = (bucket: number, mark: number): number => bucket * 2 ** 32 + mark;

/** Host 1 took over bucket 8 from host 3; bucket 4 moved from host 1 to host 3. */
const movedSpec: DataplaneSpec = {
  ...routedSpec,
  ownership: {
    ...routedSpec.ownership,
    routed: {
      ...routedSpec.ownership.routed!,
      rules: [
        {
          forward: [
            [4, 3],
            [5, 1],
            [8, 1],
            [9, 3],
          ],
          secondChance: [[2, 3]],
        },
        { forward: [[0, 1]], secondChance: [] },
      ],
    },
  },
};

describe('routed rendering', () => {
  it('gives each forwarded bucket the mark of its host by peer index, per hop', () => {
    const maps = routedMaps(routedSpec);
    // Peers sorted: 198.18.1.2 (0), 198.18.2.2 (1), 198.18.3.2 (2).
    expect(maps.get('rule0_forward')).toEqual([
      encoded(4, forwardMark(1, 0)),
      encoded(5, forwardMark(1, 0)),
      encoded(8, forwardMark(1, 2)),
      encoded(9, forwardMark(1, 2)),
    ]);
    expect(maps.get('rule0_second')).toEqual([
      encoded(2, forwardMark(2, 2)),
      encoded(3, forwardMark(2, 2)),
    ]);
    expect(maps.get('uncovered_forward')).toEqual([encoded(0, forwardMark(1, 2))]);
    const text = renderTable(routedSpec);
    expect(text).toContain('elements = { 4 : 0x4e4c0100, 5 : 0x4e4c0100, 8 : 0x4e4c0102');
    expect(text).toContain('tcp dport 80 goto route0');
    expect(text).toContain('goto route_uncovered');
    // No MAC masking and no ARP rewrite: the hosts keep their own MACs.
    expect(text).not.toContain('ether saddr set');
    expect(text).not.toContain('arp saddr ether set');
  });

  it('never forwards what came over the overlay, except the owner’s second chance', () => {
    const text = renderTable(routedSpec);
    const chain = text.slice(text.indexOf('chain route0 {'), text.indexOf('chain route1 {'));
    const lines = chain.split('\n').map((line) => line.trim());
    const secondIn = lines.findIndex((l) => l === 'iifname "nlbs*" goto rule0');
    const second = lines.findIndex((l) => l.includes('map @rule0_second'));
    const forwardIn = lines.findIndex((l) => l === 'iifname "nlbf*" goto rule0');
    const forward = lines.findIndex((l) => l.includes('map @rule0_forward'));
    // Second-chance arrivals leave first; forward arrivals may take the second chance only.
    expect(secondIn).toBeGreaterThan(0);
    expect(second).toBeGreaterThan(secondIn);
    expect(forwardIn).toBeGreaterThan(second);
    expect(forward).toBeGreaterThan(forwardIn);
    expect(lines[second]).toMatch(/^tcp flags & \(syn \| ack\) != syn /);
    // The UDP rule has no second chance: UDP follows the buckets packet by packet.
    const udp = text.slice(text.indexOf('chain route1 {'), text.indexOf('chain route_uncovered'));
    expect(udp).not.toContain('@rule1_second');
    expect(text).toContain(
      'ip saddr 198.18.0.100 tcp flags & (syn | ack) == syn | ack tcp option maxseg size > 1410 tcp option maxseg size set 1410',
    );
  });

  it('drops VXLAN from anyone but the peers, with VXLAN only', () => {
    const guard =
      'udp dport 4789 ip saddr != { 198.18.1.2, 198.18.2.2, 198.18.3.2 } counter name overlay_refused drop';
    expect(renderTable(routedSpec)).toContain(guard);
    const segment = renderTable({
      ...routedSpec,
      routed: { ...routedSpec.routed!, forward: 'segment' },
    });
    expect(segment).not.toContain('udp dport 4789');
  });

  it('moves forwarding with a quick transaction of map changes only', () => {
    const update = renderOwnershipUpdate(routedSpec, movedSpec);
    expect(update).toBe(
      'flush map inet nlb rule0_forward; add element inet nlb rule0_forward { 4 : 0x4e4c0102, 5 : 0x4e4c0100, 8 : 0x4e4c0100, 9 : 0x4e4c0102 }; ' +
        'flush map inet nlb rule0_second; add element inet nlb rule0_second { 2 : 0x4e4c0202 }',
    );
    expect(renderOwnershipUpdate(routedSpec, routedSpec)).toBe('');
  });
});

describe.runIf(isRoot)('the routed table on a real kernel', () => {
  const namespaces = new Namespaces();
  let releaseLock: (() => void) | undefined;
  let nft: NftCli;

  beforeAll(async () => {
    releaseLock = await acquireLabTestLock();
    const scratch = namespaces.add('routed');
    nft = new NftCli({ runner: netnsRunner(scratch) });
  });

  afterAll(async () => {
    try {
      await nft?.close();
      namespaces.removeAll();
    } finally {
      releaseLock?.();
    }
  });

  async function problems(spec: DataplaneSpec): Promise<string[]> {
    const image = tableImage(await listTable(nft, { family: 'inet', name: 'nlb' }));
    return compareImages(undefined, image, ownershipElements(spec));
  }

  it('loads, lists the maps back as programmed, and takes the quick update', async () => {
    await nft.apply(renderTable(routedSpec));
    expect(await problems(routedSpec)).toEqual([]);
    // The comparison sees a map that differs from what was programmed.
    expect(await problems(movedSpec)).toContain(
      'map rule0_forward holds 4 : 0x4e4c0100, 8 : 0x4e4c0102 (not programmed)',
    );
    await nft.apply(renderOwnershipUpdate(routedSpec, movedSpec)!);
    expect(await problems(movedSpec)).toEqual([]);
  });
});
