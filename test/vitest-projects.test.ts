// Every test file that takes the lab test lock runs in vitest.config.ts's `serial` project, one
// file at a time: a lab file left in the `parallel` project would run beside the lab chain, on
// the same kernel and cores, and its timing checks would no longer mean what they say.
import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { labTestFiles, ownProcessTestFiles } from '../vitest.config.js';

/** The globs in labTestFiles use only `*` (any characters but '/'). */
function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*');
  return new RegExp(`^${escaped}$`);
}

const labPatterns = [...labTestFiles, ...ownProcessTestFiles].map(globToRegExp);
const isLabFile = (file: string): boolean => labPatterns.some((p) => p.test(file));

/** What marks a file as a lab file: it takes the lab test lock or builds a lab session. */
const labMarkers = /acquireLabTestLock|LabSession|declareLabRequirement/;

describe('vitest projects', () => {
  const files = readdirSync('test')
    .filter((name) => name.endsWith('.test.ts'))
    .map((name) => `test/${name}`);

  it('puts every file that takes the lab test lock in the serial project', () => {
    const misplaced = files.filter(
      (file) =>
        file !== 'test/vitest-projects.test.ts' &&
        labMarkers.test(readFileSync(file, 'utf8')) &&
        !isLabFile(file),
    );
    expect(misplaced).toEqual([]);
  });

  it('lists no lab file that does not exist', () => {
    for (const pattern of labPatterns) {
      expect(files.some((file) => pattern.test(file))).toBe(true);
    }
  });
});
