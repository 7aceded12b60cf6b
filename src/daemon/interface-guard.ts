// Keeps the cluster interface as nlbd attached it: a cluster IP deleted by hand (or by
// `ip addr flush`, or a network manager) or the MAC changed would make this host drop, without a
// word, the clients of every bucket it owns while its heartbeats say all is well. The check is a
// read of the kernel's address list and of /sys (no process); it runs on every change `ip
// monitor` reports (interface-events.ts), and polled as a safety net; the repair runs `ip` only
// when something is missing.
import type { ClusterInterface } from './cluster-interface.js';
import type { EventSink } from './event-names.js';
import { errorText } from '../core/error-text.js';
import { type InterfaceEvents, checkOnChange } from './interface-events.js';

/** Without the monitor, noticed within this; the default heartbeat period, far below the detection time. */
export const interfaceCheckMsDefault = 200;

/**
 * Checks on every change `events` reports and every `pollMs` (slower while the monitor runs),
 * repairs and logs `interface restored`; returns a stop function.
 */
export function guardInterface(
  iface: ClusterInterface,
  log: EventSink,
  pollMs = interfaceCheckMsDefault,
  events?: InterfaceEvents,
): () => void {
  let repairing = false;
  // A change reported while a repair runs is checked again right after it.
  let again = false;
  const check = (): void => {
    if (repairing) {
      again = true;
      return;
    }
    if (iface.missing() === undefined) return;
    repairing = true;
    iface
      .repair()
      .then(
        (fixed) => {
          if (fixed.length > 0) {
            log({
              event: 'interface restored',
              interface: iface.setup.interface,
              restored: fixed,
              hint: 'something removed the cluster IPs or changed the MAC of the cluster interface (by hand, `ip addr flush`, a network manager); nlbd put them back. Keep network managers away from this interface',
            });
          }
        },
        (error: unknown) =>
          log({
            event: 'interface repair failed',
            interface: iface.setup.interface,
            error: errorText(error),
          }),
      )
      .finally(() => {
        repairing = false;
        if (again) {
          again = false;
          check();
        }
      });
  };
  return checkOnChange(check, pollMs, events);
}
