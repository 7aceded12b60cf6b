// The fake host's heartbeat, and its events, named and shaped as the real host's
// (src/core/events.ts), so the simulator records and prints both the same way.
import { protocolEvent, type ProtocolEvent, type ProtocolEventFields } from '../core/events.js';
import type { Command } from '../core/protocol.js';

export type FakeState = 'started' | 'draining' | 'stopped' | 'suspended';

/** The fake's heartbeat: JSON, followed by a tag of the key (enough for the simulator). */
export interface FakeHeartbeat {
  readonly v: 'fake1';
  readonly key: string;
  readonly cfg: string;
  readonly id: number;
  readonly inc: number;
  readonly seq: number;
  readonly state: FakeState;
  readonly out: boolean;
  readonly members: number[];
  readonly map: string;
  readonly owned: number[][];
  readonly weights: number[];
  readonly priorities: number[];
}

/** The event for a change of state from `from` to `to` by `command`, or none if it did not. */
export function stateEvent(
  from: FakeState,
  to: FakeState,
  command: Command,
  by: { readonly atMs: number; readonly id: number; readonly incarnation: number },
): ProtocolEvent | undefined {
  if (from === to) return undefined;
  switch (to) {
    case 'started':
      return protocolEvent('started', by.atMs, by.id, { incarnation: by.incarnation });
    case 'draining':
      return protocolEvent('drain started', by.atMs, by.id, { host: by.id });
    case 'suspended':
      return protocolEvent('suspended', by.atMs, by.id, {});
    case 'stopped':
      if (from === 'suspended') return protocolEvent('resumed', by.atMs, by.id, {});
      if (command.verb === 'connectionsEnded')
        return protocolEvent('drain completed', by.atMs, by.id, { host: by.id });
      return protocolEvent('stopped', by.atMs, by.id, {});
  }
}

/** `duplicate host id` as the real host reports it: both incarnations, and which is kept out. */
export function duplicate(
  host: number,
  older: number,
  newer: number,
  thisKeptOut: boolean,
): ProtocolEventFields['duplicate host id'] {
  return { host, incarnations: [older, newer], keptOut: thisKeptOut ? newer : older };
}
