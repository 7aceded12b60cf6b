// FRR in a lab namespace (docs/routed.md#the-routed-lab): zebra, bfdd and bgpd, one instance per
// namespace, told apart by FRR's path space (`-N <namespace>`), which puts every socket and pid
// file in /run/frr/<namespace>/. The lab writes the daemons' files (from src/routed/) there too,
// with their logs, so one directory holds all of a namespace's FRR and `labDown` removes it.
//
// What worked with Debian's frr 8.4 (checked on kernel 6.18), per daemon:
//   ip netns exec <ns> /usr/lib/frr/<daemon> -d -N <ns> -P 0 -f /run/frr/<ns>/<daemon>.conf
//       --log file:/run/frr/<ns>/<daemon>.log
// `-d` daemonises (the command returns once the daemon runs), `-P 0` opens no TCP vty (vtysh
// talks to the unix socket), `-f` names the file, since the path space would otherwise look in
// /etc/frr/<ns>/. The daemons drop root for the `frr` user, so the directory is theirs. zebra
// starts first: bfdd and bgpd connect to its socket in the same directory. Inspect with
// `ip netns exec <ns> vtysh -N <ns> --config_dir /run/frr -c '…'` (vtysh.conf is there too).
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type FrrDaemon, type FrrFiles, frrDaemons, frrFileName } from '../routed/frr-config.js';
import { frrBinDir, frrRunRoot } from '../routed/frr-settings.js';
import { LabError } from './errors.js';
import { assertLabNamespace, execIn } from './netns.js';
import { processRef, type ProcessRef } from './process.js';

/** Where Debian's FRR keeps its run files; `-N <ns>` adds a directory per namespace. */
export { frrRunRoot } from '../routed/frr-settings.js';
/** A daemon writes its pid file within milliseconds of forking; 5 s means it failed to start. */
const daemonStartWaitMs = 5_000;

/** The directory of one namespace's FRR: its config, sockets, pid files and logs. */
export function frrDir(namespace: string): string {
  assertLabNamespace(namespace);
  return path.join(frrRunRoot, namespace);
}

const frrMissingHint =
  'install FRR: `apt-get install -y --no-install-recommends frr` (scripts/setup.sh does)';

/** The `frr` user's uid and gid (the daemons run as it after start-up), if it exists. */
function frrOwner(): { uid: number; gid: number } | undefined {
  let passwd: string;
  try {
    passwd = readFileSync('/etc/passwd', 'utf8');
  } catch {
    return undefined;
  }
  const fields = passwd
    .split('\n')
    .find((entry) => entry.startsWith('frr:'))
    ?.split(':');
  return fields === undefined || fields.length < 4
    ? undefined
    : { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/** Why FRR cannot run here (not installed), or undefined: checked before a routed lab is built. */
export function frrMissingProblem(): LabError | undefined {
  const missing = [...frrDaemons.map((d) => path.join(frrBinDir, d)), '/usr/bin/vtysh'].filter(
    (file) => !existsSync(file),
  );
  if (missing.length > 0) {
    return new LabError(
      'not-built',
      `FRR is not installed: ${missing.join(', ')} missing`,
      frrMissingHint,
    );
  }
  if (frrOwner() === undefined) {
    return new LabError('not-built', 'FRR is not installed: there is no frr user', frrMissingHint);
  }
  return undefined;
}

/** Writes the namespace's FRR files into its directory, owned by the frr user. */
function writeFrrFiles(namespace: string, files: FrrFiles): string {
  const dir = frrDir(namespace);
  const owner = frrOwner();
  if (owner === undefined) throw frrMissingProblem()!;
  const { uid, gid } = owner;
  mkdirSync(dir, { recursive: true, mode: 0o750 });
  chownSync(dir, uid, gid);
  const write = (name: string, text: string): void => {
    const file = path.join(dir, name);
    writeFileSync(file, text, { mode: 0o640 });
    chownSync(file, uid, gid);
  };
  for (const daemon of frrDaemons) {
    write(frrFileName(daemon), files[daemon]);
  }
  // vtysh reads <config_dir>/<ns>/vtysh.conf and complains when it is missing.
  write('vtysh.conf', '! vtysh.conf of a lab namespace, written by nlb lab\n');
  return dir;
}

async function waitForPid(dir: string, daemon: FrrDaemon): Promise<ProcessRef> {
  const pidFile = path.join(dir, `${daemon}.pid`);
  const deadline = Date.now() + daemonStartWaitMs;
  for (;;) {
    let text = '';
    try {
      text = readFileSync(pidFile, 'utf8').trim();
    } catch {
      // Not written yet.
    }
    const ref = /^\d+$/.test(text) ? processRef(Number(text)) : undefined;
    if (ref !== undefined) return ref;
    if (Date.now() > deadline) {
      throw new LabError(
        'process-failed',
        `FRR's ${daemon} did not start in ${path.basename(dir)} within ${daemonStartWaitMs} ms`,
        `see ${path.join(dir, `${daemon}.log`)}`,
      );
    }
    await sleep(20);
  }
}

/**
 * Starts zebra, bfdd and bgpd in `namespace` with `files`, and returns their processes. The
 * namespace must already be recorded in the lab's state, so that `labDown` finds whatever runs.
 */
export async function startFrr(
  namespace: string,
  files: FrrFiles,
): Promise<Record<FrrDaemon, ProcessRef>> {
  const dir = writeFrrFiles(namespace, files);
  const refs: Partial<Record<FrrDaemon, ProcessRef>> = {};
  for (const daemon of frrDaemons) {
    await execIn(namespace, [
      path.join(frrBinDir, daemon),
      '-d',
      '-N',
      namespace,
      '-P',
      '0',
      '-f',
      path.join(dir, frrFileName(daemon)),
      '--log',
      `file:${path.join(dir, `${daemon}.log`)}`,
    ]);
    refs[daemon] = await waitForPid(dir, daemon);
  }
  return refs as Record<FrrDaemon, ProcessRef>;
}

/** The pid file's process of one daemon in `namespace`, or undefined when it does not run. */
export function frrProcess(namespace: string, daemon: FrrDaemon): ProcessRef | undefined {
  try {
    const text = readFileSync(path.join(frrDir(namespace), `${daemon}.pid`), 'utf8').trim();
    return /^\d+$/.test(text) ? processRef(Number(text)) : undefined;
  } catch {
    return undefined;
  }
}

/** Runs one vtysh command in `namespace`'s FRR and returns its output. */
export async function vtysh(namespace: string, command: string): Promise<string> {
  const { stdout } = await execIn(namespace, [
    'vtysh',
    '-N',
    namespace,
    '--config_dir',
    frrRunRoot,
    '-c',
    command,
  ]);
  return stdout;
}

/** Removes a namespace's FRR directory; its daemons must be gone (labDown stops them first). */
export function removeFrrDir(namespace: string): void {
  rmSync(frrDir(namespace), { recursive: true, force: true });
}
