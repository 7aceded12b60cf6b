// The lab's operating errors, each with a code the CLI maps to an exit code and a hint saying
// what to do, and the checks that raise them before anything is created.
import { existsSync } from 'node:fs';
import { labNameProblem } from './naming.js';

export type LabErrorCode =
  'not-root' | 'invalid-argument' | 'name-in-use' | 'no-such-lab' | 'not-built' | 'process-failed';

/** An operating error with what to do about it; the CLI renders `message` and `hint`. */
export class LabError extends Error {
  constructor(
    readonly code: LabErrorCode,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'LabError';
  }
}

export function assertRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new LabError(
      'not-root',
      'nlb lab needs root: it creates and enters network namespaces',
      'run it as root, e.g. `sudo nlb lab up --hosts 3`',
    );
  }
}

export function assertLabName(name: string): void {
  const problem = labNameProblem(name);
  if (problem !== undefined) {
    throw new LabError('invalid-argument', problem);
  }
}

export function assertBuilt(file: string): void {
  if (!existsSync(file)) {
    throw new LabError('not-built', `${file} does not exist`, 'build first: `npm run build`');
  }
}

export function assertIntegerIn(what: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new LabError(
      'invalid-argument',
      `${what} must be an integer from ${min} to ${max}, got ${value}`,
    );
  }
}
