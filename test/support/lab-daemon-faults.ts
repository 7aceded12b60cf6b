// Faults of nlbd itself for test/lab-faults-2.test.ts: ending a host's nlbd with a signal, at a
// point of its start-up, and what a host must look like after (nothing left behind, or running
// clean).
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { daemonPhases } from '../../src/daemon/phases.js';
import { daemonMainPath, killHostDaemon, loadLab, startHostDaemon } from '../../src/lab/lab.js';
import { signalProcess, waitForExit } from '../../src/lab/process.js';
import { type ClusterLab, daemonLogTail } from './lab-cluster.js';
import {
  type Fault,
  clusterMac,
  interfaceOf,
  logTextCount,
  strayProcesses,
  tablesOf,
  waitForLogText,
} from './lab-faults.js';

export type StopSignal = 'SIGTERM' | 'SIGKILL';

/** A SIGTERM at any point must end nlbd within this (it undoes what it did, then exits). */
const termExitMs = 5_000;

/** Ends host `id`'s nlbd with `signal`; a SIGTERM must make it exit by itself. */
export async function signalDaemon(lab: ClusterLab, id: number, signal: StopSignal): Promise<void> {
  if (signal === 'SIGKILL') {
    expect(await killHostDaemon(lab.state.name, id)).toBe(true);
    return;
  }
  const ref = loadLab(lab.state.name).hosts.find((h) => h.id === id)!.daemon!;
  expect(signalProcess(ref, 'SIGTERM')).toBe(true);
  expect(await waitForExit([ref], termExitMs)).toEqual([]);
}

/** After a SIGTERM: no table, no cluster IP, the host's own MAC (nlbd undid everything). */
export async function expectNothingLeft(
  lab: ClusterLab,
  ownMacs: ReadonlyMap<number, string>,
  id: number,
  where: string,
): Promise<void> {
  expect(await tablesOf(lab, id), `${where}; nlbd log:\n${daemonLogTail(lab, id, 30)}`).toEqual([]);
  const view = await interfaceOf(lab, id);
  expect(view.addresses, where).toEqual([`${lab.state.hosts[id - 1]!.ip}/24`]);
  expect(view.mac, where).toBe(ownMacs.get(id));
}

/** A running host as nlbd leaves it: its two tables, the VIP once, the cluster MAC, no stray. */
export async function expectRunningClean(lab: ClusterLab, id: number): Promise<void> {
  expect(await tablesOf(lab, id)).toEqual([`inet ${lab.tableName}`, `netdev ${lab.tableName}`]);
  const view = await interfaceOf(lab, id);
  expect(view.addresses.sort()).toEqual(
    [`${lab.state.hosts[id - 1]!.ip}/24`, `${lab.state.vip}/32`].sort(),
  );
  expect(view.mac).toBe(clusterMac);
  expect(await strayProcesses(lab, id)).toEqual([]);
}

/** A point of nlbd's start-up: paused before a phase, or a delay after it was spawned. */
export type StartupPoint = { phase: (typeof daemonPhases)[number] } | { delayMs: number };

export function startupFault(
  lab: ClusterLab,
  ownMacs: ReadonlyMap<number, string>,
  first: StopSignal,
  point: StartupPoint,
  signal: StopSignal,
): Fault {
  const at =
    'phase' in point ? `paused before '${point.phase}'` : `${point.delayMs} ms after spawn`;
  const host = 3;
  return {
    name: `start-up: ${first}, started again, ${signal} ${at}`,
    host,
    inject: async ({ note }) => {
      await signalDaemon(lab, host, first);
      // Its stderr line: before `load` nlbd has no log of its own yet.
      const pauseLine = 'phase' in point ? `test pause before phase '${point.phase}'` : '';
      const pausesBefore = logTextCount(lab, host, pauseLine);
      if ('phase' in point) {
        await startHostDaemon(lab.state.name, host, {
          command: [
            'env',
            `NLBD_TEST_PAUSE_AT=${point.phase}`,
            process.execPath,
            daemonMainPath,
            '--config',
            '{config}',
          ],
        });
        // Paused: it waits for a signal before that phase. Signalled only once it says so:
        // before its signal handlers are installed (node takes ~0.3 s to load it), a signal
        // ends it by the default action, before it has done anything.
        expect(
          await waitForLogText(lab, host, pauseLine, pausesBefore, 5_000),
          daemonLogTail(lab, host),
        ).toBeDefined();
      } else {
        await startHostDaemon(lab.state.name, host, { settleMs: 0 });
        await sleep(point.delayMs);
      }
      await signalDaemon(lab, host, signal);
      // A SIGTERM undoes what this nlbd did; what a killed predecessor left is only cleaned
      // in the `clean` phase, so it may still be there when this one stopped earlier.
      const cleaned =
        first === 'SIGTERM' ||
        ('phase' in point && daemonPhases.indexOf(point.phase) > daemonPhases.indexOf('clean'));
      if (signal === 'SIGTERM' && cleaned) {
        await expectNothingLeft(lab, ownMacs, host, `after ${signal} ${at}`);
      } else {
        note('leftBehind', {
          tables: await tablesOf(lab, host),
          ...(await interfaceOf(lab, host)),
        });
      }
    },
    heal: async () => {
      await startHostDaemon(lab.state.name, host);
    },
    // A host crashed (SIGKILL) with its buckets: the connections it held when it went fail
    // (the peers reset them once they own its buckets). A SIGTERM hands them over at once.
    expect: { failuresMax: 10, rejoinMsMax: 3_000 },
  };
}
