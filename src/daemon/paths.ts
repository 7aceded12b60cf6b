// Where nlbd keeps its run-time files: the control socket and the state file that remembers the
// interface's own MAC across a crash. Both names carry the cluster name and the host id,
// because in a lab every host's nlbd shares /run while living in its own network namespace.
import path from 'node:path';

export const runDirDefault = '/run/nlb';

/** The control socket of nlbd of host `hostId` in cluster `clusterName`, unless --socket says. */
export function defaultSocketPath(
  clusterName: string,
  hostId: number,
  runDir = runDirDefault,
): string {
  return path.join(runDir, `nlbd-${clusterName}-${hostId}.sock`);
}

/** The state file: the interface's original MAC, so a restart after a crash can put it back. */
export function stateFilePath(clusterName: string, hostId: number, runDir = runDirDefault): string {
  return path.join(runDir, `nlbd-${clusterName}-${hostId}.json`);
}

/**
 * Every file nlbd of that host may leave behind when it is killed (a clean exit removes them):
 * for `nlb lab down` and tests, which remove what a SIGKILLed daemon left.
 */
export function daemonRunFiles(clusterName: string, hostId: number): string[] {
  return [defaultSocketPath(clusterName, hostId), stateFilePath(clusterName, hostId)];
}
