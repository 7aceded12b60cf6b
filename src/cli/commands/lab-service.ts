// `nlb lab service <host> <mode>`: break or mend a lab host's service without touching its host
// (issue 14): the backend reads the host's service file (src/lab/service.ts) again on its next
// connection, and the host's health check sees it within `fall` probes.
//   ok | refuse | hang | 503 | slow    how the backend answers from now on;
//   --weight N | none                  what it reports to the agent check (kept when not given);
//   --slow-ms N                        how late `slow` answers.
import { readFileSync } from 'node:fs';
import { hostOf, loadLab } from '../../lab/state.js';
import {
  type ServiceMode,
  type ServiceState,
  serviceDefault,
  serviceFile,
  serviceModes,
  writeServiceState,
} from '../../lab/service.js';
import { badArgument } from '../errors.js';
import { type CommandOutput, text } from '../render.js';

export interface LabServiceOptions {
  readonly name: string;
  readonly weight?: string;
  readonly slowMs?: string;
}

export interface LabServiceData {
  readonly lab: string;
  readonly host: number;
  readonly file: string;
  readonly service: ServiceState;
}

function current(file: string): ServiceState {
  try {
    return { ...serviceDefault, ...(JSON.parse(readFileSync(file, 'utf8')) as object) };
  } catch {
    return serviceDefault;
  }
}

export function labService(
  hostText: string,
  modeText: string,
  options: LabServiceOptions,
): CommandOutput<LabServiceData> {
  const state = loadLab(options.name);
  const hostId = /^(h)?\d{1,2}$/.test(hostText) ? Number(hostText.replace(/^h/, '')) : NaN;
  if (!Number.isInteger(hostId)) {
    throw badArgument('<host>', `'${hostText}' is not a host`, 'give a host id, e.g. 2 or h2');
  }
  hostOf(state, hostId);
  if (!serviceModes.includes(modeText as ServiceMode)) {
    throw badArgument(
      '<mode>',
      `'${modeText}' is not a service mode`,
      `give one of: ${serviceModes.join(', ')}`,
    );
  }
  const file = serviceFile(state.dir, hostId);
  const before = current(file);
  let weight = before.weight;
  if (options.weight !== undefined) {
    const w = options.weight.trim();
    if (w === 'none') weight = null;
    else if (/^\d{1,3}$/.test(w) && Number(w) <= 100) weight = Number(w);
    else
      throw badArgument('--weight', `'${options.weight}' is not a weight`, 'give 0..100 or none');
  }
  let slowMs = before.slowMs;
  if (options.slowMs !== undefined) {
    if (!/^\d{1,6}$/.test(options.slowMs.trim())) {
      throw badArgument(
        '--slow-ms',
        `'${options.slowMs}' is not a delay`,
        'give milliseconds, e.g. 2000',
      );
    }
    slowMs = Number(options.slowMs.trim());
  }
  const service: ServiceState = { mode: modeText as ServiceMode, weight, slowMs };
  writeServiceState(file, service);
  const weightText = weight === null ? 'no weight' : `weight ${weight}`;
  return {
    data: { lab: state.name, host: hostId, file, service },
    human: text(`lab ${state.name} host ${hostId}: service ${service.mode}, ${weightText}`),
  };
}
