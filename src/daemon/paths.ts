// Where nlbd keeps its files. Every name carries the cluster name and the host id, because in a
// lab every host's nlbd shares the machine's directories while living in its own network
// namespace.
//   run directory (/run/nlb, tmpfs: gone at reboot, as is everything it describes)
//     nlbd-<cluster>-<id>.sock   the control socket
//     nlbd-<cluster>-<id>.json   the run file: the interface's own MAC, so a restart after a
//                                crash can put it back (veths have no permanent MAC)
//   state directory (/var/lib/nlb, kept across reboots; --state-dir or NLBD_STATE_DIR moves it)
//     nlbd-<cluster>-<id>.json   the retained state: the last incarnation and whether the host
//                                is suspended (retained-state.ts)
import path from 'node:path';
import { tempPathOf } from '../node/atomic-file.js';
// The run directory and the control socket's name are the control protocol's (nlb finds the
// socket by them); the daemon's own files follow the same pattern.
import { defaultSocketPath, runDirDefault } from '../control/paths.js';

export { defaultSocketPath, runDirDefault };
export const stateDirDefault = '/var/lib/nlb';
/** The environment variable that moves the state directory (labs and tests set it). */
export const stateDirEnv = 'NLBD_STATE_DIR';

/** The run file: the interface's original MAC, so a restart after a crash can put it back. */
export function stateFilePath(clusterName: string, hostId: number, runDir = runDirDefault): string {
  return path.join(runDir, `nlbd-${clusterName}-${hostId}.json`);
}

/** The state directory: `--state-dir`, else $NLBD_STATE_DIR, else /var/lib/nlb. */
export function stateDirOf(
  option: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string {
  const fromEnv = env[stateDirEnv];
  return path.resolve(
    option ?? (fromEnv === undefined || fromEnv === '' ? stateDirDefault : fromEnv),
  );
}

/** The retained state of that host: last incarnation and suspended, kept across reboots. */
export function retainedStatePath(clusterName: string, hostId: number, stateDir: string): string {
  return path.join(stateDir, `nlbd-${clusterName}-${hostId}.json`);
}

/**
 * Every file nlbd of that host may leave behind when it is killed (a clean exit removes them):
 * for `nlb lab down` and tests, which remove what a SIGKILLed daemon left.
 */
export function daemonRunFiles(clusterName: string, hostId: number): string[] {
  const runFile = stateFilePath(clusterName, hostId);
  return [defaultSocketPath(clusterName, hostId), runFile, tempPathOf(runFile)];
}

/**
 * The files nlbd of that host keeps in `stateDir` across restarts (a clean exit keeps them on
 * purpose): for `nlb lab down`, which removes a lab's hosts together with what they retained.
 */
export function daemonStateFiles(clusterName: string, hostId: number, stateDir: string): string[] {
  const file = retainedStatePath(clusterName, hostId, stateDir);
  return [file, tempPathOf(file)];
}
