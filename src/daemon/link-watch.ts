// Watches the cluster interface's carrier and tells the host machine when it changes. A host
// whose link is down cannot serve; told so, it takes no buckets instead of claiming them all as
// a partition of one, which would answer clients twice in the moment the link comes back.
// Reading /sys is cheap (one small read) and works inside a network namespace, where nlbd runs
// under `ip netns exec` with that namespace's /sys; it happens on every change `ip monitor`
// reports (interface-events.ts), and polled only as a safety net while the monitor runs.
import { readFileSync } from 'node:fs';
import { type InterfaceEvents, checkOnChange } from './interface-events.js';

/** Without the monitor, carrier loss is noticed within this; well below the default detection time (1 s). */
export const linkPollMsDefault = 50;

/** Reads whether `ifname` has carrier; an interface that is down (EINVAL) or gone has none. */
export function hasCarrier(ifname: string, sysRoot = '/sys/class/net'): boolean {
  try {
    return readFileSync(`${sysRoot}/${ifname}/carrier`, 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

/**
 * Calls `onChange(up)` whenever the carrier changes (and never for the state at start, which
 * is up or the daemon would not have started). Returns a function that stops watching.
 */
export function watchLink(
  ifname: string,
  onChange: (up: boolean) => void,
  pollMs = linkPollMsDefault,
  read: (ifname: string) => boolean = hasCarrier,
  events?: InterfaceEvents,
): () => void {
  let up = read(ifname);
  if (!up) onChange(false);
  return checkOnChange(
    () => {
      const now = read(ifname);
      if (now !== up) {
        up = now;
        onChange(now);
      }
    },
    pollMs,
    events,
  );
}
