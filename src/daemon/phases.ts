// The phases of nlbd's start-up, in order (daemon.ts's header says what each does). A stop
// requested in any of them unwinds from there; NLBD_TEST_PAUSE_AT names one for tests.
export const daemonPhases = [
  'load',
  'preflight',
  'claim',
  'clean',
  'program',
  'attach',
  'run',
] as const;
export type DaemonPhase = (typeof daemonPhases)[number];

/**
 * Test only: `NLBD_TEST_PAUSE_AT=<phase>` makes nlbd wait before that phase until SIGTERM or
 * SIGINT, so a test can stop it at an exact point of its start-up (README, "Development").
 */
export const testPauseEnv = 'NLBD_TEST_PAUSE_AT';
