// The demo's service phase (issue 14): host 1's service starts answering 503 while its host and
// nlbd stay up. Its health check (the lab's: /health every 500 ms, fall 2) declares it unhealthy,
// host 1 yields its buckets, and new connections go to hosts 2 and 3; then the service is mended
// and host 1 takes its share back. Established connections stay where they are throughout.
import { setTimeout as sleep } from 'node:timers/promises';
import { labHealthCheck } from '../lab/host-config.js';
import type { LabState } from '../lab/lab.js';
import { serviceDefault, serviceFile, writeServiceState } from '../lab/service.js';
import { convergeTimeoutMs, ownedBy, query, waitFor } from './demo-lab.js';

export interface ServicePhaseOptions {
  readonly phaseSeconds: number;
  readonly log: (line: string) => void;
  readonly signal?: AbortSignal;
}

/** Runs the phase: fail host 1's service, wait for it to be out, mend it halfway, wait back. */
export async function servicePhase(
  lab: LabState,
  { log, signal, phaseSeconds }: ServicePhaseOptions,
  mark: (name: string, description: string) => void,
  notes: string[],
): Promise<void> {
  const file = serviceFile(lab.dir, 1);
  mark('service', "phase 2: host 1's service answers 503 (the host and its nlbd stay up)");
  const failedAt = Date.now();
  writeServiceState(file, { ...serviceDefault, mode: '503' });
  const detection = labHealthCheck.fall * labHealthCheck.intervalMs;
  try {
    const ms = await waitFor(
      "host 1's health check to take it out",
      async () => {
        const view = await query(lab, 1);
        return view?.rules[0]?.health.healthy === false && ownedBy(view).length === 0;
      },
      convergeTimeoutMs,
      signal,
    );
    log(
      `   host 1 unhealthy and out of the rule ${ms} ms after its service failed (check every ${labHealthCheck.intervalMs} ms, fall ${labHealthCheck.fall}: ${detection} ms)`,
    );
  } catch (error) {
    notes.push(String(error));
  }
  await sleep(Math.max(0, (phaseSeconds * 1000) / 2 - (Date.now() - failedAt)), undefined, {
    signal,
  });
  writeServiceState(file, serviceDefault);
  try {
    const ms = await waitFor(
      'host 1 to take its share back',
      async () => ownedBy(await query(lab, 1)).length > 0,
      convergeTimeoutMs,
      signal,
    );
    log(`   service mended: host 1 serves its share again ${ms} ms later`);
  } catch (error) {
    notes.push(String(error));
  }
  await sleep(Math.max(0, phaseSeconds * 1000 - (Date.now() - failedAt)), undefined, { signal });
}
