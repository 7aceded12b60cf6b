// The nlbd binary (dist/daemon/main.js, built by test/global-setup.ts): it refuses to start
// with a message and a hint, changing nothing, when the config or key is bad, when it is not
// root, when nft is missing, when the interface or the dedicated IP is not there; and in a
// network namespace of its own it runs a one-host cluster end to end: attach, query, SIGTERM
// leaves nothing behind, and after a SIGKILL the next start cleans what the crash left.
// Everything that touches the network runs inside namespaces this file creates (198.18.9.0/24)
// and always removes. Needs root for those parts; skipped visibly otherwise.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { QueryData } from '../src/control/protocol.js';
import { controlRequest } from '../src/control/client.js';
import { Namespaces, isRoot } from './dataplane-netns.js';
import { declareRootRequirement } from './support/root.js';

const daemonMain = path.join(
  fileURLToPath(new URL('..', import.meta.url)),
  'dist',
  'daemon',
  'main.js',
);

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs nlbd to completion (every refusal exits at once), with an optional argv prefix. */
function runDaemon(args: readonly string[], prefix: readonly string[] = []): Promise<Run> {
  return new Promise((resolve) => {
    const argv = [...prefix, process.execPath, daemonMain, ...args];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += String(d)));
    child.stderr.on('data', (d: Buffer) => (stderr += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function configText(fields: {
  cluster: string;
  keyFile: string;
  iface?: string;
  ip?: string;
}): string {
  return [
    'cluster:',
    `  name: ${fields.cluster}`,
    '  clusterIps: [198.18.9.100]',
    `  interface: ${fields.iface ?? 'eth0'}`,
    `  keyFile: ${fields.keyFile}`,
    '  portRules:',
    '    - { vip: 198.18.9.100, ports: 80, protocol: tcp, mode: multiple, affinity: none }',
    'host:',
    '  id: 1',
    `  dedicatedIp: ${fields.ip ?? '198.18.9.11/24'}`,
    '',
  ].join('\n');
}

let dir: string;
let keyFile: string;
const cluster = `nlbt${randomBytes(3).toString('hex')}`;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nlbd-main-'));
  chmodSync(dir, 0o755);
  keyFile = path.join(dir, 'cluster.key');
  writeFileSync(keyFile, randomBytes(32), { mode: 0o600 });
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('nlbd refuses to start, saying what to do', () => {
  it('prints usage and exits 0 for --help, 2 without --config', async () => {
    const help = await runDaemon(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--config <file>');
    const bare = await runDaemon([]);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toContain("required option '-c, --config <file>' not specified");
  });

  it('prints the package version for --version, without a config', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const result = await runDaemon(['--version']);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe(version);
  });

  it('exits 2 on a --realtime-priority that is not 0-99', async () => {
    for (const bad of ['100', '-1', 'high', '1.5']) {
      const result = await runDaemon(['--config', 'any.yaml', '--realtime-priority', bad]);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(`--realtime-priority: '${bad}' is not a priority`);
      expect(result.stderr).toContain('hint: give a whole number from 1 to 99');
    }
  });

  it('exits 2 on an invalid config, listing the problem', async () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(file, configText({ cluster, keyFile }).replace('id: 1', 'id: 99'));
    const result = await runDaemon(['--config', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^nlbd: config file '.*bad\.yaml' is invalid:\n {2}host\.id/);
    expect(result.stderr).toContain('hint: fix the keys listed');
    const missing = await runDaemon(['--config', path.join(dir, 'none.yaml')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no such file');
  });

  it('exits 2 when the key file is missing or too short', async () => {
    const file = path.join(dir, 'nokey.yaml');
    writeFileSync(file, configText({ cluster, keyFile: 'absent.key' }));
    const missing = await runDaemon(['--config', file]);
    expect(missing.code).toBe(2);
    // A relative key path is relative to the config file.
    expect(missing.stderr).toContain(
      `cannot read key file '${path.join(dir, 'absent.key')}': no such file`,
    );
    expect(missing.stderr).toContain('hint: create one with `head -c 32 /dev/urandom');
    const short = path.join(dir, 'short.key');
    writeFileSync(short, 'abc', { mode: 0o600 });
    writeFileSync(file, configText({ cluster, keyFile: short }));
    const tooShort = await runDaemon(['--config', file]);
    expect(tooShort.code).toBe(2);
    expect(tooShort.stderr).toContain('holds 3 bytes; the cluster key needs at least 16');
  });

  it.runIf(isRoot)('exits 1 when not root', async () => {
    const file = path.join(dir, 'ok.yaml');
    // The key stays root's and 0600: CAP_DAC_READ_SEARCH lets the process read it anyway.
    writeFileSync(file, configText({ cluster, keyFile }));
    chmodSync(file, 0o644);
    const result = await runDaemon(
      ['--config', file],
      // Not root, but able to read the clone wherever CI put it (a 0700 temp dir, say).
      [
        'setpriv',
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        '--inh-caps=+dac_read_search',
        '--ambient-caps=+dac_read_search',
      ],
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('nlbd: not running as root');
    expect(result.stderr).toContain('hint: run it as root');
  });
});

declareRootRequirement('daemon-main (namespaces)', 'the nlbd namespace tests need root');

describe.runIf(isRoot)('nlbd in a namespace of its own', () => {
  const namespaces = new Namespaces();
  let ns: string;
  let config: string;
  let socket: string;
  const children: ChildProcessWithoutNullStreams[] = [];

  beforeAll(() => {
    ns = namespaces.add('d');
    // A veth pair inside the namespace: eth0 is the cluster interface, its peer the "wire".
    namespaces.ip(ns, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'wire0']);
    namespaces.ip(ns, ['link', 'set', 'wire0', 'up']);
    namespaces.ip(ns, ['link', 'set', 'eth0', 'up']);
    config = path.join(dir, 'ns.yaml');
    socket = path.join(dir, 'nlbd.sock');
    writeFileSync(config, configText({ cluster, keyFile }));
  });

  afterAll(() => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    rmSync(`/run/nlb/nlbd-${cluster}-1.json`, { force: true });
    namespaces.removeAll();
  });

  const inNs = (argv: readonly string[]): string => namespaces.exec(ns, argv);

  it('refuses when the dedicated IP is not on the interface, or the interface is missing', async () => {
    const noIp = await runDaemon(
      ['--config', config, '--socket', socket],
      ['ip', 'netns', 'exec', ns],
    );
    expect(noIp.code).toBe(1);
    expect(noIp.stderr).toContain('nlbd: the dedicated IP 198.18.9.11 is not an address of eth0');
    expect(noIp.stderr).toContain('hint: add it (`ip addr add 198.18.9.11/24 dev eth0`)');
    const other = path.join(dir, 'eth9.yaml');
    writeFileSync(other, configText({ cluster, keyFile, iface: 'eth9' }));
    const noIface = await runDaemon(
      ['--config', other, '--socket', socket],
      ['ip', 'netns', 'exec', ns],
    );
    expect(noIface.code).toBe(1);
    expect(noIface.stderr).toContain(
      "cluster interface 'eth9' does not exist in this network namespace",
    );
    expect(noIface.stderr).toMatch(/hint: .*\(here: .*eth0/);
    // Nothing was changed by a refusal.
    expect(inNs(['nft', 'list', 'tables'])).toBe('');
  });

  it('refuses when nft is missing', async () => {
    const result = await runDaemon(
      ['--config', config, '--socket', socket],
      ['ip', 'netns', 'exec', ns, 'env', 'PATH=/nonexistent'],
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("nlbd: 'nft' cannot be run");
    expect(result.stderr).toContain('hint: install nftables: `apt-get install nftables`');
  });

  /** SCHED_* policy (stat field 41) and realtime priority (40) of a process's threads and children. */
  function schedulingOf(pid: number): {
    threads: { policy: number; priority: number }[];
    children: { policy: number; priority: number; argv: string[] }[];
  } {
    const of = (statPath: string): { policy: number; priority: number } => {
      const fields = readFileSync(statPath, 'utf8').split(') ')[1]!.split(' ');
      return { priority: Number(fields[37]), policy: Number(fields[38]) };
    };
    const tasks = readdirSync(`/proc/${pid}/task`);
    const children = tasks.flatMap((tid) =>
      readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean),
    );
    return {
      threads: tasks.map((tid) => of(`/proc/${pid}/task/${tid}/stat`)),
      children: children.map((child) => ({
        ...of(`/proc/${child}/stat`),
        argv: readFileSync(`/proc/${child}/cmdline`, 'utf8').split('\0').filter(Boolean),
      })),
    };
  }

  function start(extra: readonly string[] = []): {
    child: ChildProcessWithoutNullStreams;
    lines: string[];
    started: Promise<void>;
  } {
    const child = namespaces.spawn(ns, [
      process.execPath,
      daemonMain,
      '--config',
      config,
      '--socket',
      socket,
      // Its retained state goes with the test's files, not to /var/lib/nlb.
      '--state-dir',
      path.join(dir, 'state'),
      ...extra,
    ]);
    children.push(child);
    const lines: string[] = [];
    const started = new Promise<void>((resolve, reject) => {
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += String(d)));
      const timer = setTimeout(() => reject(new Error(`nlbd did not start: ${stderr}`)), 10_000);
      createInterface({ input: child.stdout }).on('line', (line) => {
        lines.push(line);
        if (line.includes('"event":"nlbd started"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on('exit', () => reject(new Error(`nlbd exited: ${stderr}\n${lines.join('\n')}`)));
    });
    return { child, lines, started };
  }

  async function waitQuery(accept: (q: QueryData) => boolean): Promise<QueryData> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const answer = await controlRequest(socket, { verb: 'query' }, 1_000).catch(() => undefined);
      if (answer?.ok === true && accept(answer.data as QueryData)) return answer.data as QueryData;
      if (Date.now() > deadline) throw new Error(`query never matched: ${JSON.stringify(answer)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('refuses a mode the interface cannot do and a cluster IP in use elsewhere, changing nothing', async () => {
    namespaces.ip(ns, ['address', 'add', '198.18.9.11/24', 'dev', 'eth0']);
    const macBefore = inNs(['cat', '/sys/class/net/eth0/address']).trim();
    const refused = async (file: string): Promise<string> => {
      const result = await runDaemon(
        ['--config', file, '--socket', socket],
        ['ip', 'netns', 'exec', ns],
      );
      expect(result.code, result.stderr).toBe(1);
      // Nothing was changed by the refusal.
      expect(inNs(['nft', 'list', 'tables'])).toBe('');
      expect(inNs(['cat', '/sys/class/net/eth0/address']).trim()).toBe(macBefore);
      return result.stderr;
    };
    try {
      const igmp = path.join(dir, 'igmp.yaml');
      writeFileSync(
        igmp,
        configText({ cluster, keyFile }).replace('  interface:', '  mode: igmp\n  interface:'),
      );
      namespaces.ip(ns, ['link', 'set', 'eth0', 'multicast', 'off']);
      try {
        const stderr = await refused(igmp);
        expect(stderr).toContain(
          'nlbd: igmp mode needs an interface that takes multicast, and eth0 does not (no MULTICAST flag)',
        );
        expect(stderr).toContain(
          'hint: turn multicast on (`ip link set dev eth0 multicast on`), or use mode: unicast',
        );
      } finally {
        namespaces.ip(ns, ['link', 'set', 'eth0', 'multicast', 'on']);
      }
      for (const [prefix, iface] of [
        ['198.18.9.100/32', 'wire0'],
        ['198.18.9.100/24', 'eth0'],
      ] as const) {
        namespaces.ip(ns, ['address', 'add', prefix, 'dev', iface]);
        try {
          const stderr = await refused(config);
          expect(stderr).toContain(
            `nlbd: cluster IP 198.18.9.100 is already configured on this host (${prefix} on ${iface})`,
          );
          expect(stderr).toContain(
            `hint: nlbd adds the cluster IPs to eth0 itself: remove it (\`ip addr del ${prefix} dev ${iface}\`) or choose another cluster IP`,
          );
          // The operator's address is still there.
          expect(inNs(['ip', '-br', 'addr', 'show', iface])).toContain(prefix);
        } finally {
          namespaces.ip(ns, ['address', 'del', prefix, 'dev', iface]);
        }
      }
    } finally {
      namespaces.ip(ns, ['address', 'del', '198.18.9.11/24', 'dev', 'eth0']);
    }
  });

  it('runs a one-host cluster, and SIGTERM leaves nothing behind', async () => {
    namespaces.ip(ns, ['address', 'add', '198.18.9.11/24', 'dev', 'eth0']);
    const macBefore = inNs(['cat', '/sys/class/net/eth0/address']).trim();
    const { child, lines, started } = start();
    await started;
    // Alone, the host listens one detection window (1 s), then takes every bucket.
    const data = await waitQuery((q) => q.rules[0]!.owned.length === 60);
    expect(data).toMatchObject({ state: 'converged as default', members: [1], converged: true });
    expect(inNs(['ip', '-br', 'addr', 'show', 'eth0'])).toContain('198.18.9.100/32');
    expect(inNs(['cat', '/sys/class/net/eth0/address']).trim()).toBe('02:bf:c6:12:09:64');
    expect(inNs(['nft', 'list', 'tables'])).toContain(`table inet nlb_${cluster}\n`);
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    // Realtime by default: every thread of nlbd, and the processes it started, at SCHED_RR 10;
    // the long-lived nft that programs ownership changes one above, at 11.
    const scheduling = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(scheduling.find((e) => e.event === 'scheduling')).toMatchObject({
      policy: 'SCHED_RR',
      priority: 10,
      setBy: 'nlbd',
    });
    const policies = schedulingOf(child.pid!);
    expect(policies.threads.length).toBeGreaterThan(1);
    expect(policies.threads.every((p) => p.policy === 2 && p.priority === 10)).toBe(true);
    expect(policies.children.length).toBeGreaterThan(0);
    expect(policies.children.every((p) => p.policy === 2)).toBe(true);
    const interactive = policies.children.filter((p) => p.argv.join(' ') === 'nft -i');
    expect(interactive.map((p) => p.priority)).toEqual([11]);
    const others = policies.children.filter((p) => p.argv.join(' ') !== 'nft -i');
    expect(others.every((p) => p.priority === 10)).toBe(true);

    child.kill('SIGTERM');
    const code = await new Promise((resolve) => child.once('exit', resolve));
    expect(code).toBe(0);
    const events = lines.map((l) => (JSON.parse(l) as { event: string }).event);
    expect(events).toEqual(expect.arrayContaining(['nlbd stopping', 'stopped', 'nlbd stopped']));
    expect(inNs(['ip', '-br', 'addr', 'show', 'eth0'])).not.toContain('198.18.9.100');
    expect(inNs(['cat', '/sys/class/net/eth0/address']).trim()).toBe(macBefore);
    expect(inNs(['nft', 'list', 'tables'])).toBe('');
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(`/run/nlb/nlbd-${cluster}-1.json`)).toBe(false);
  });

  it('after a SIGKILL, the next start cleans what the crash left and puts the MAC back on exit', async () => {
    const macBefore = inNs(['cat', '/sys/class/net/eth0/address']).trim();
    const first = start();
    await first.started;
    first.child.kill('SIGKILL');
    await new Promise((resolve) => first.child.once('exit', resolve));
    // The crash left the cluster IP, the cluster MAC and the table (its lease runs out).
    expect(inNs(['ip', '-br', 'addr', 'show', 'eth0'])).toContain('198.18.9.100/32');
    expect(inNs(['cat', '/sys/class/net/eth0/address']).trim()).toBe('02:bf:c6:12:09:64');
    expect(inNs(['nft', 'list', 'tables'])).toContain(`table inet nlb_${cluster}\n`);

    // --realtime-priority 0 leaves the scheduling as it was (normal), and says so.
    const second = start(['--realtime-priority', '0']);
    await second.started;
    const scheduling = second.lines.find((l) => l.includes('"event":"scheduling"'));
    expect(JSON.parse(scheduling!)).toMatchObject({ policy: 'SCHED_OTHER', setBy: 'inherited' });
    expect(schedulingOf(second.child.pid!).threads.every((p) => p.policy === 0)).toBe(true);
    const cleaned = second.lines.find((l) => l.includes('"event":"stale state cleaned"'));
    expect(cleaned).toBeDefined();
    expect(JSON.parse(cleaned!)).toMatchObject({
      removedAddresses: ['198.18.9.100/32'],
      restoredMac: macBefore,
    });
    await waitQuery((q) => q.state === 'converging' || q.converged);
    second.child.kill('SIGTERM');
    expect(await new Promise((resolve) => second.child.once('exit', resolve))).toBe(0);
    expect(inNs(['cat', '/sys/class/net/eth0/address']).trim()).toBe(macBefore);
    expect(inNs(['nft', 'list', 'tables'])).toBe('');
  });

  it('refuses a second nlbd for the same host while the first runs', async () => {
    const first = start();
    await first.started;
    const second = await runDaemon(
      ['--config', config, '--socket', socket],
      ['ip', 'netns', 'exec', ns],
    );
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/nlbd: another nlbd \(pid \d+\) already answers on/);
    // The refusal did not disturb the first.
    expect((await controlRequest(socket, { verb: 'identity' })).ok).toBe(true);
    first.child.kill('SIGTERM');
    expect(await new Promise((resolve) => first.child.once('exit', resolve))).toBe(0);
  });
});
