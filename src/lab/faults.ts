// Faults a test or the demo injects into a running lab: a host's nlbd crashing (SIGKILL, so
// what it configured stays behind) and a host's cable unplugged and plugged back in.
import { assertRoot } from './errors.js';
import { ipIn } from './netns.js';
import { signalProcess, waitForExit } from './process.js';
import { type LabRef, hostOf, loadLab, updateState } from './state.js';

/** A SIGKILLed process is gone at once; a second is ample for the kernel to reap it. */
const killWaitMs = 1_000;

/**
 * Kills nlbd of one host with SIGKILL, as a crash: what it configured (VIP, MAC, nftables
 * table with its lease) stays behind, exactly as after a real crash.
 */
export async function killHostDaemon(lab: LabRef, hostId: number): Promise<boolean> {
  assertRoot();
  const host = hostOf(loadLab(lab), hostId);
  const ref = host.daemon;
  if (ref === undefined || !signalProcess(ref, 'SIGKILL')) {
    return false;
  }
  await waitForExit([ref], killWaitMs);
  await updateState(lab, (state) => {
    delete hostOf(state, hostId).daemon;
  });
  return true;
}

/** Unplugs a host: its port on the switch goes down, so its eth0 loses carrier. */
export async function cutLink(lab: LabRef, hostId: number): Promise<void> {
  await setSwitchPort(lab, hostId, 'down');
}

export async function restoreLink(lab: LabRef, hostId: number): Promise<void> {
  await setSwitchPort(lab, hostId, 'up');
}

async function setSwitchPort(lab: LabRef, hostId: number, upOrDown: 'up' | 'down'): Promise<void> {
  assertRoot();
  const state = loadLab(lab);
  await ipIn(state.switchNamespace, ['link', 'set', hostOf(state, hostId).switchPort, upOrDown]);
}
