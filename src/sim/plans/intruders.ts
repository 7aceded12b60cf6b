// Intruders in a random plan: a machine on a spare slot that the cluster must keep out, either
// a duplicate of a member's host id or a host whose cluster config differs (its tolerance).
import { buildConfig, configDocument, defaultHostSettings } from '../cluster-config.js';
import { type RandomDraft, addAction, freeMembers } from './draft.js';
import { round } from './common.js';
import { hostsMaxSim } from './options.js';

/**
 * An intruder meets a running cluster: at least one genuine member that has taken part for two
 * periods (it has spoken), kept running (not crashed, stopped or drained) while the intruder is
 * there. Without one, the intruder would be the cluster (or the first to claim the id), and
 * keeping it out would be wrong.
 */
export function planIntruder(draft: RandomDraft, at: number, kind: 'duplicate' | 'mismatch'): void {
  const { prng, shape, hosts } = draft;
  const P = shape.periodMs;
  const anchors = freeMembers(draft, at).filter((s) => draft.activeSince[s]! + 2 * P <= at);
  if (draft.sparesUsed >= draft.spares || anchors.length === 0) return;
  const slot = hosts + draft.sparesUsed;
  const until = at + round(prng.float(2, 3 * shape.tolerance) * P);
  const anchor = prng.pick(anchors);
  if (kind === 'duplicate') {
    addAction(draft, at, {
      do: 'boot',
      slot,
      hostId: anchor + 1,
      expect: 'out',
      reason: `duplicate of h${anchor + 1}`,
    });
  } else {
    const id = hosts + draft.sparesUsed + 1;
    if (id > hostsMaxSim) return;
    const differs = { ...shape, tolerance: shape.tolerance + 1 };
    const config = buildConfig(configDocument(differs, defaultHostSettings(id, shape.ruleSet)));
    addAction(draft, at, {
      do: 'boot',
      slot,
      hostId: id,
      config,
      expect: 'out',
      reason: 'different cluster config (tolerance)',
    });
  }
  draft.sparesUsed += 1;
  draft.pinnedUntil.set(anchor, Math.max(until, draft.pinnedUntil.get(anchor) ?? -1));
  addAction(draft, until, { do: 'crash', slot });
}
