// How a lab host's service behaves, so tests and the demo can break a service without killing
// its host (issue 14): a small JSON file per host in the lab directory that the backend reads
// (again whenever it changes) and `nlb lab service` writes.
//   ok      answer as usual;
//   refuse  reset every new connection at once (a crashed service behind a live host);
//   hang    accept and never answer (a wedged service);
//   503     answer every request with 503 (HTTP) or `error 503` (the line protocol);
//   slow    answer after `slowMs`.
// `weight` is what the backend's `/weight` reports to nlbd's agent check (404 when null).
import { readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const serviceModes = ['ok', 'refuse', 'hang', '503', 'slow'] as const;
export type ServiceMode = (typeof serviceModes)[number];

export interface ServiceState {
  readonly mode: ServiceMode;
  /** 0..100, reported at /weight; null: /weight answers 404. */
  readonly weight: number | null;
  /** How late `slow` answers. */
  readonly slowMs: number;
}

export const serviceDefault: ServiceState = { mode: 'ok', weight: null, slowMs: 2_000 };

/** The service file of lab host `hostId` in the lab directory `dir`. */
export function serviceFile(dir: string, hostId: number): string {
  return path.join(dir, `h${hostId}-service.json`);
}

/** Writes the state atomically (a reader never sees half a file). */
export function writeServiceState(file: string, state: ServiceState): void {
  const temporary = `${file}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(state)}\n`);
  renameSync(temporary, file);
}

function parseState(text: string): ServiceState {
  const value = JSON.parse(text) as Partial<ServiceState>;
  const mode = serviceModes.includes(value.mode as ServiceMode)
    ? (value.mode as ServiceMode)
    : 'ok';
  const weight =
    typeof value.weight === 'number' && value.weight >= 0 && value.weight <= 100
      ? Math.round(value.weight)
      : null;
  const slowMs =
    typeof value.slowMs === 'number' && value.slowMs >= 0 ? value.slowMs : serviceDefault.slowMs;
  return { mode, weight, slowMs };
}

/**
 * The state in `file`, read again only when the file changed (one stat per call): the backend
 * asks for every connection. A missing or unreadable file is the default (ok, no weight).
 */
export function serviceReader(file: string | undefined): () => ServiceState {
  let seen = '';
  let state = serviceDefault;
  return () => {
    if (file === undefined) return serviceDefault;
    try {
      const info = statSync(file);
      const key = `${info.mtimeMs}/${info.size}/${info.ino}`;
      if (key !== seen) {
        seen = key;
        state = parseState(readFileSync(file, 'utf8'));
      }
    } catch {
      seen = '';
      state = serviceDefault;
    }
    return state;
  };
}
