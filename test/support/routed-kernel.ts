// What the routed-net unit tests (routed-net.test.ts, routed-segment.test.ts) fake of a host's
// kernel: its policy rules and uplink before nlb touches them, and an `ip` whose listings answer
// a given state.
import { FakeRunner } from '../../src/dataplane/exec.js';
import type { RoutedKernelState } from '../../src/dataplane/routed-net.js';

export const defaultRules = [
  { priority: 0, src: 'all', table: 'local' },
  { priority: 32766, src: 'all', table: 'main' },
  { priority: 32767, src: 'all', table: 'default' },
];
export const uplink = { ifname: 'eth0', mtu: 1500, address: '1a:37:16:9e:16:0c' };
/** A host nlb never set up. */
export const fresh: RoutedKernelState = {
  links: [uplink],
  rules: defaultRules,
  routes: [],
  markers: [],
};

/**
 * A fake runner whose `ip -j -batch` listing answers `state`; with `failBatch`, the `-force`
 * batch fails with that line of ip's error output.
 */
export function runnerFor(state: RoutedKernelState, failBatch?: string): FakeRunner {
  return new FakeRunner((argv) => {
    if (argv.includes('-j')) {
      const { links, rules, routes, markers } = state;
      return { stdout: [links, rules, routes, markers].map((l) => JSON.stringify(l)).join('\n') };
    }
    if (failBatch !== undefined && argv.includes('-force')) {
      return { code: 1, stderr: `${failBatch}\nCommand failed -:2\n` };
    }
    return {};
  });
}
