// The order in which a driver carries out a Ready, written once. Every driver (the daemon's
// HostDriver, the simulator, the tests' MiniNet) walks `carryOutSteps(ready)` and does each step
// completely, awaiting it if it is asynchronous, before the next one, and the whole Ready before
// it steps the next input:
//   1. flush:   drop the established connections of the buckets listed (every connection to the
//               cluster IPs, sockets included, when the host rejoined), so that nothing left from
//               before is served once the buckets are taken again;
//   2. program: put the decided ownership into the data plane and wait until the kernel has it
//               (a driver whose kernel lags behind an earlier Ready retries here too, so the step
//               comes even when the ownership did not change);
//   3. send:    the heartbeats, only now. A released bucket is announced only after the kernel
//               stopped taking new flows for it: this is what makes release before acquire hold
//               across hosts (docs/protocol.md#release-before-acquire). A driver whose kernel
//               does not hold the decided ownership withholds them instead;
//   4. record:  the events;
//   5. wake:    step the machine with a tick no later than `atMs`.
import type { ProtocolEvent } from './events.js';
import type { Ownership, Ready } from './protocol.js';

export type CarryOutStep =
  | {
      readonly step: 'flush';
      readonly flush: Ready['flush'];
      /** Drop every connection to the cluster IPs, sockets too, not only `flush`'s buckets. */
      readonly rejoined: boolean;
    }
  | { readonly step: 'program'; readonly ownership: Ownership | undefined }
  | { readonly step: 'send'; readonly datagrams: readonly Uint8Array[] }
  | { readonly step: 'record'; readonly events: readonly ProtocolEvent[] }
  | { readonly step: 'wake'; readonly atMs: number };

/**
 * The steps of carrying out `ready`, in order. `flush`, `send` and `record` are left out when
 * they have nothing to do; `program` and `wake` are always there.
 */
export function carryOutSteps(ready: Ready): CarryOutStep[] {
  const steps: CarryOutStep[] = [];
  if (ready.rejoined || ready.flush.length > 0) {
    steps.push({ step: 'flush', flush: ready.flush, rejoined: ready.rejoined });
  }
  steps.push({ step: 'program', ownership: ready.ownership });
  if (ready.send.length > 0) steps.push({ step: 'send', datagrams: ready.send });
  if (ready.events.length > 0) steps.push({ step: 'record', events: ready.events });
  steps.push({ step: 'wake', atMs: ready.wakeAtMs });
  return steps;
}
