// Operator commands alone (src/core/host-commands.ts): replies, events and what a command
// changes in the state.
import { describe, expect, it } from 'vitest';
import { command, reload, setAdmin, setRuleStates } from '../src/core/host-commands.js';
import { eventNames, hostConfig, machineState } from './support/host-state.js';

describe('host-commands', () => {
  it('disables a rule: the event, a flush of all its buckets, and "already" the second time', () => {
    const s = machineState(1);
    const buckets = s.config.cluster.portRules[0]!.buckets;
    expect(setRuleStates(s, 5, 'disable', [0]).code).toBe('ok');
    expect(s.ruleStates).toEqual(['disabled']);
    expect(eventNames(s)).toEqual(['rule disabled']);
    expect(s.flush).toEqual([{ rule: 0, buckets: Array.from({ length: buckets }, (_, b) => b) }]);
    expect(setRuleStates(s, 6, 'disable', [0]).code).toBe('already');
    expect(setRuleStates(s, 6, 'drain', [0, 3])).toEqual({
      code: 'not found',
      message: 'no port rule 3',
    });
  });

  it('drains a rule without flushing it', () => {
    const s = machineState(1);
    expect(setRuleStates(s, 5, 'drain', [0]).code).toBe('ok');
    expect(eventNames(s)).toEqual(['rule drained']);
    expect(s.flush).toEqual([]);
  });

  it('reports a start after a suspend as resumed, and a stop releases every bucket', () => {
    const s = machineState(1);
    s.owned[0]!.add(1);
    setAdmin(s, 1, 'suspended');
    expect(s.owned[0]!.size).toBe(0);
    setAdmin(s, 2, 'started');
    setAdmin(s, 3, 'stopped');
    expect(eventNames(s)).toEqual(['suspended', 'resumed', 'stopped']);
    expect(s.events[1]).toMatchObject({ atMs: 2, by: 1, incarnation: 100 });
  });

  it('accepts only resume while suspended', () => {
    const s = machineState(1);
    setAdmin(s, 1, 'suspended');
    expect(command(s, 2, { verb: 'start' }).code).toBe('suspended');
    expect(command(s, 3, { verb: 'resume' }).code).toBe('ok');
    expect(s.adminState).toBe('stopped');
  });

  it('refuses a reload that changes host.id, and starts the rules afresh when the cluster changes', () => {
    const s = machineState(1);
    expect(reload(s, 1, hostConfig(2)).code).toBe('refused');
    expect(eventNames(s)).toEqual(['config rejected']);
    s.owned[0]!.add(4);
    s.sequence = 9;
    const other = hostConfig(1, { cluster: { hashSeed: 12345 } });
    expect(reload(s, 2, other)).toEqual({
      code: 'ok',
      message: 'config reloaded (cluster part changed)',
    });
    expect(s.owned[0]!.size).toBe(0);
    expect(s.announcedFromSequence).toBe(10);
  });
});
