// The exit codes of `nlb`, in one table. Scripts depend on these numbers: add new ones at the
// end, never renumber. `nlb --help` prints this table.
//
// | code | name           | meaning                                                          |
// |------|----------------|------------------------------------------------------------------|
// | 0    | ok             | the command did what was asked                                   |
// | 1    | failed         | it could not (daemon unreachable, system error, internal error)  |
// | 2    | usage          | bad usage, bad argument or bad config: fix the command line/file |
// | 3    | alreadyInState | nothing to do: the host or rule is already in that state         |
// | 4    | portInNoRule   | the port given is covered by no port rule                        |

export const exitCodes = {
  ok: 0,
  failed: 1,
  usage: 2,
  alreadyInState: 3,
  portInNoRule: 4,
} as const;

export type ExitCode = (typeof exitCodes)[keyof typeof exitCodes];

/** The same table as data, for `nlb --help`. */
export const exitCodeMeanings: readonly { readonly code: ExitCode; readonly meaning: string }[] = [
  { code: exitCodes.ok, meaning: 'ok' },
  { code: exitCodes.failed, meaning: 'failed (daemon unreachable, system or internal error)' },
  { code: exitCodes.usage, meaning: 'bad usage, bad argument or bad config' },
  { code: exitCodes.alreadyInState, meaning: 'already in that state (nothing to do)' },
  { code: exitCodes.portInNoRule, meaning: 'the port is covered by no port rule' },
];
