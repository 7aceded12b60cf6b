// The matrix the lab stories run in (issue 12): every cluster mode, with clients on the IPv4
// cluster IP and on the IPv6 one. A story file takes `labVariants()` and runs each of its tests
// in every variant (`describe.each`), in a lab built for it (`LabSession.up(..., variant)`).
// NLB_LAB_VARIANTS narrows the list (e.g. `unicast-v4,igmp-v6`) for a quick run; the default
// suite and `.ci/run` run all six.
import type { ClusterMode } from '../../src/core/config.js';

export interface LabVariant {
  /** `<mode>-v<family>`, e.g. `multicast-v6`. */
  readonly name: string;
  readonly mode: ClusterMode;
  /** The family of the cluster IP the clients connect to. */
  readonly family: 4 | 6;
}

const modes: readonly ClusterMode[] = ['unicast', 'multicast', 'igmp'];

export const labVariantsAll: readonly LabVariant[] = ([4, 6] as const).flatMap((family) =>
  modes.map((mode) => ({ name: `${mode}-v${family}`, mode, family })),
);

/** The plain lab the tests were written for first: unicast mode, IPv4. */
export const unicastV4: LabVariant = labVariantsAll[0]!;

export const labVariantsEnv = 'NLB_LAB_VARIANTS';

/** The variants this run covers: every one, or those NLB_LAB_VARIANTS names. */
export function labVariants(): LabVariant[] {
  const wanted = process.env[labVariantsEnv]?.trim();
  if (wanted === undefined || wanted === '' || wanted === 'all') return [...labVariantsAll];
  const names = wanted.split(',').map((n) => n.trim());
  const unknown = names.filter((n) => !labVariantsAll.some((v) => v.name === n));
  if (unknown.length > 0) {
    throw new Error(
      `${labVariantsEnv} names unknown variants ${unknown.join(', ')}; known: ${labVariantsAll.map((v) => v.name).join(', ')}`,
    );
  }
  return labVariantsAll.filter((v) => names.includes(v.name));
}
