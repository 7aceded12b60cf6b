// Routed mode's view of the kernel and its one way of changing it (routed-net.ts,
// routed-segment.ts): one `ip -d -j -batch` reads links, rules, our routes and the marker routes
// as JSON; one `ip -force -batch` carries out a plan. Only the fields routed mode looks at are
// typed here.
import { markerRouteProtocol } from '../core/bgp.js';
import { CommandError, type CommandResult, type Runner } from './exec.js';

/** The `proto` of the routes and rules made here (a successor finds them); FRR announces 250. */
export const routedNetProtocol = 251;

/** What a plan does to one kind of device: `remove` and `make` are `ip -batch` lines' parts. */
export interface DevicePlan {
  /** Device names to delete (their routes and neighbours go with them). */
  readonly remove: string[];
  /** Lines that make the missing devices and bring every wanted one up. */
  readonly make: string[];
  /** The devices made now (the others were kept). */
  readonly created: string[];
}

export function failure(
  argv: readonly string[],
  result: CommandResult,
  what: string,
  hint: string,
) {
  const detail = result.stderr.trim() || 'no error output';
  return new CommandError(argv, `failed (exit ${result.code}${what}): ${detail}`, hint);
}

/** What `ip -d -j` says of links (VXLAN's and macvlan's data in one type), rules and routes. */
export type LinkDataJson = Partial<Record<'local' | 'remote' | 'link' | 'mode', string>> &
  Partial<Record<'id' | 'port', number>> & { learning?: boolean };
export type LinkJson = Partial<
  Record<'ifname' | 'address' | 'inet6_addr_gen_mode' | 'link', string>
> & {
  mtu?: number;
  linkinfo?: { info_kind?: string; info_data?: LinkDataJson };
};
export type EntryJson = Partial<Record<'fwmark' | 'table' | 'type' | 'dst' | 'dev', string>> & {
  priority?: number;
};

/** What routed mode looks at: links, rules, our routes (proto 251, any table), the markers. */
export interface RoutedKernelState {
  readonly links: readonly LinkJson[];
  readonly rules: readonly EntryJson[];
  readonly routes: readonly EntryJson[];
  readonly markers: readonly EntryJson[];
}

/** One `ip -batch` with `-j` prints one JSON document per line, one line per command. */
const stateQuery = [
  'link show',
  'rule show',
  `route show table all proto ${routedNetProtocol}`,
  `route show table main proto ${markerRouteProtocol}`,
];

export async function readRoutedState(runner: Runner): Promise<RoutedKernelState> {
  const argv = ['-d', '-j', '-batch', '-'];
  const result = await runner.run('ip', argv, { input: `${stateQuery.join('\n')}\n` });
  const lines = result.stdout.split('\n').filter((line) => line.trim() !== '');
  if (result.code !== 0 || lines.length !== stateQuery.length) {
    const what = `, ${lines.length} of ${stateQuery.length} answers`;
    throw failure(['ip', ...argv], result, what, 'routed mode needs iproute2 with JSON output');
  }
  const [links, rules, routes, markers] = lines.map((line) => {
    const parsed = JSON.parse(line) as unknown;
    return Array.isArray(parsed) ? (parsed as EntryJson[]) : [];
  }) as [LinkJson[], ...EntryJson[][]];
  return { links, rules: rules!, routes: routes!, markers: markers! };
}

/** One `ip -force -batch -`: every line is tried; any failure is reported with its line. */
export async function runBatch(
  runner: Runner,
  lines: readonly string[],
  hint: string,
): Promise<void> {
  if (lines.length === 0) return;
  const argv = ['-force', '-batch', '-'];
  const result = await runner.run('ip', argv, { input: `${lines.join('\n')}\n` });
  if (result.code !== 0) {
    // ip names a failed line `-:N`; quoting it spares the reader counting.
    const stderr = result.stderr.replace(/Command failed -:(\d+)/g, (text, n: string) => {
      const line = lines[Number(n) - 1];
      return line === undefined ? text : `${text} (${line})`;
    });
    throw failure(['ip', ...argv], { ...result, stderr }, '', hint);
  }
}
