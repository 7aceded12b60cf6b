// Where `nlb` finds a local nlbd: its control socket in the run directory (/run/nlb, tmpfs),
// named by the cluster name and the host id, because in a lab every host's nlbd shares the
// machine's directories while living in its own network namespace. The daemon's other files
// (src/daemon/paths.ts) sit beside it.
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
