// What `nlb reload` may change in a running nlbd, and what only a restart can. The protocol
// core takes a new config in one step (port rules, buckets, hash seed, heartbeat timing,
// weights, priorities) and the data plane replaces its table in one transaction, so those
// apply atomically while established connections stay. The rest is bound into the running
// process and the host: the cluster name names the control socket; the cluster IPs, mode and
// interface are on the interface; the heartbeat group, port and dedicated IP are the bound
// socket; the key is in the host machine; the host id is who this host is. Changing any of
// those on reload is refused with the reason, and the running config stays.
import type { Config } from '../core/config.js';
import { configView } from './control-views.js';

export interface ReloadCheck {
  /** Why the new config cannot be taken without a restart; empty when it can. */
  readonly problems: readonly string[];
  /** Every changed value, `path: old -> new`. */
  readonly changes: readonly string[];
}

/** `{a: {b: 1}, c: [2]}` as `[['a.b', '1'], ['c[0]', '2']]`, values as JSON. */
function flatten(value: unknown, prefix: string, out: Map<string, string>): Map<string, string> {
  if (Array.isArray(value)) {
    if (value.length === 0) out.set(prefix, '[]');
    value.forEach((item, i) => flatten(item, `${prefix}[${i}]`, out));
  } else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      flatten(item, prefix === '' ? key : `${prefix}.${key}`, out);
    }
  } else {
    out.set(prefix, JSON.stringify(value));
  }
  return out;
}

/** Paths (as `flatten` writes them) whose change needs a restart, and why. */
const restartOnly: readonly { readonly path: RegExp; readonly why: string }[] = [
  { path: /^cluster\.name$/, why: 'the control socket and the heartbeats carry it' },
  { path: /^cluster\.clusterIps/, why: 'nlbd added them to the interface at start' },
  { path: /^cluster\.mode$/, why: 'the interface MAC and the filter depend on it' },
  { path: /^cluster\.interface$/, why: 'nlbd set the interface up at start' },
  { path: /^cluster\.heartbeat\.(port|group)$/, why: 'the heartbeat socket is bound to it' },
  {
    path: /^cluster\.heartbeat\.peers/,
    why: 'the heartbeat transport (unicast to these peers, or multicast) is chosen at start',
  },
  { path: /^cluster\.keyFile$/, why: 'the cluster key is read at start' },
  { path: /^host\.id$/, why: 'it is who this host is to its peers' },
  { path: /^host\.dedicatedIp$/, why: 'heartbeats are sent from it' },
];

export function checkReload(running: Config, next: Config, keyChanged: boolean): ReloadCheck {
  const before = flatten(configView(running), '', new Map());
  const after = flatten(configView(next), '', new Map());
  const changes: string[] = [];
  const problems: string[] = [];
  for (const path of new Set([...before.keys(), ...after.keys()])) {
    const old = before.get(path);
    const now = after.get(path);
    if (old === now) continue;
    changes.push(`${path}: ${old ?? '(none)'} -> ${now ?? '(none)'}`);
    const rule = restartOnly.find((r) => r.path.test(path));
    if (rule !== undefined) {
      problems.push(
        `${path} changed (${old ?? '(none)'} -> ${now ?? '(none)'}): restart nlbd to change it; ${rule.why}`,
      );
    }
  }
  if (keyChanged) {
    problems.push(
      'the cluster key file holds another key: restart nlbd to use it (on every host, since peers with different keys cannot hear each other)',
    );
  }
  return { problems: [...new Set(problems)], changes };
}
