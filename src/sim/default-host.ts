// The host implementation runs use unless told otherwise: the real protocol state machine, the
// same code the daemon runs. (fake-host.ts stays as a second implementation of the contract.)
import { HostMachine } from '../core/host.js';
import type { HostFactory } from './types.js';

export const defaultHostFactory: HostFactory = (opts) => new HostMachine(opts);
