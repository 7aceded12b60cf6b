// docs/events.md is generated from the event tables (src/core/events.ts for the protocol's,
// src/daemon/event-names.ts for nlbd's own), so the names a reader matches on are defined once.
// `npm run docs:events` writes it; this test fails when the file and the tables differ.
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { protocolEventNames, protocolEvents, type EventInfo } from '../src/core/events.js';
import { HostMachine } from '../src/core/host.js';
import { daemonEvents, levelOf, type EventName } from '../src/daemon/event-names.js';
import { runSimulation } from '../src/sim/index.js';
import { hostConfig, testKey } from './support/mini-net.js';

const docPath = new URL('../docs/events.md', import.meta.url);

function table(events: Readonly<Record<string, EventInfo>>): string {
  const rows = Object.entries(events).map(
    ([name, info]) => `| \`${name}\` | ${info.level} | ${info.about.replaceAll('|', '\\|')} |`,
  );
  return ['| event | level | what it means |', '| --- | --- | --- |', ...rows].join('\n');
}

export function eventsDoc(): string {
  return `# Events

<!-- Generated from src/core/events.ts and src/daemon/event-names.ts by \`npm run docs:events\`;
do not edit by hand. -->

nlbd logs one JSON line per event (\`nlb events\` and \`nlb display\` show the recent ones). The
\`event\` field is a stable name a script can match on; the other fields depend on it. \`by\` is the
id of the host that logs, \`host\` the host an event is about. Events at level \`warn\` are
something an operator should look at.

## Protocol events

What the host machine (\`src/core/host.ts\`) decides: membership, convergence, operator commands.
The simulator records the same events.

${table(protocolEvents)}

## nlbd's own events

The data plane, the interface, the process and remote control (\`src/daemon/\`).

${table(daemonEvents)}
`;
}

describe('event names', () => {
  it('docs/events.md is the one generated from the tables (npm run docs:events writes it)', () => {
    const expected = eventsDoc();
    if (process.env.NLB_WRITE_DOCS === '1') writeFileSync(docPath, expected);
    expect(readFileSync(docPath, 'utf8')).toBe(expected);
  });

  it('a name is in one table only, and nlbd logs each at its level', () => {
    const both = Object.keys(daemonEvents).filter((name) => name in protocolEvents);
    expect(both).toEqual([]);
    const levels = (names: EventName[]) => names.map((name) => [name, levelOf(name)]);
    expect(levels(['host joined', 'host declared dead', 'heartbeat withheld', 'fatal'])).toEqual([
      ['host joined', 'info'],
      ['host declared dead', 'warn'],
      ['heartbeat withheld', 'warn'],
      ['fatal', 'fatal'],
    ]);
  });

  it('every event the host machine emits in a simulated run is a named one', () => {
    const seen = new Set<string>();
    for (let seed = 1; seed <= 20; seed++) {
      const result = runSimulation({ seed, scenario: 'random' });
      for (const { event } of result.events) seen.add(event.event);
    }
    const host = new HostMachine({ config: hostConfig(1), key: testKey, incarnation: 1, nowMs: 0 });
    for (const event of host.step({ kind: 'tick', nowMs: 0 }).events) seen.add(event.event);
    expect([...seen].filter((name) => !protocolEventNames.includes(name as never))).toEqual([]);
    expect(seen.size).toBeGreaterThan(5);
  });
});
