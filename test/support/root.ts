// Lab and kernel tests need root (network namespaces). Without it they skip with a visible
// warning; with NLB_REQUIRE_LAB=1 (as `.ci/run` sets it) the skip becomes a failing test.
import { describe, expect, it } from 'vitest';

export const isRoot = process.getuid?.() === 0;
export const labRequired = process.env.NLB_REQUIRE_LAB === '1';

/**
 * Called once at the top of a test file whose suites run only as root: `file` names it in the
 * warning, `needs` says what needs root in the failure.
 */
export function declareRootRequirement(file: string, needs: string): void {
  if (!isRoot) {
    console.warn(
      `${file}: SKIPPED, network namespaces need root (run as root; NLB_REQUIRE_LAB=1 makes this a failure)`,
    );
  }
  describe.runIf(!isRoot && labRequired)(`${file} prerequisites`, () => {
    it('runs as root (NLB_REQUIRE_LAB=1)', () => {
      expect.fail(`NLB_REQUIRE_LAB=1 but not root: ${needs}`);
    });
  });
}
