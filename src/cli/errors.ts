// One error class for everything `nlb` reports to its user. It carries a stable `code` (for
// scripts reading --json), a message that names the problem, a hint that names the fix, and the
// exit code. Handlers throw it; src/cli/render.ts is the one place that prints it.
import { type ExitCode, exitCodes } from './exit-codes.js';

/** Stable identifiers; JSON readers match on these, so never rename one. */
export type NlbErrorCode =
  | 'bad-usage'
  | 'bad-argument'
  | 'bad-config'
  | 'failed'
  | 'already-in-state'
  | 'port-in-no-rule'
  | 'internal';

export class NlbError extends Error {
  override readonly name = 'NlbError';
  readonly code: NlbErrorCode;
  /** What to do about it, as a sentence or a command to run; may be empty. */
  readonly hint: string;
  readonly exitCode: ExitCode;

  constructor(code: NlbErrorCode, message: string, hint: string, exitCode: ExitCode) {
    super(message);
    this.code = code;
    this.hint = hint;
    this.exitCode = exitCode;
  }
}

/**
 * A bad value on the command line. `argument` is how the user wrote it (`--port`,
 * `<cluster-ip>`), so the message points at the exact spot to fix.
 */
export function badArgument(argument: string, problem: string, hint: string): NlbError {
  return new NlbError('bad-argument', `${argument}: ${problem}`, hint, exitCodes.usage);
}

/** A config file that cannot be read or does not validate; `message` lists every error. */
export function badConfig(message: string, hint: string): NlbError {
  return new NlbError('bad-config', message, hint, exitCodes.usage);
}
