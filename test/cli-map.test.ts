// `nlb map` run as a user would, its answers checked against the core directly: the bucket
// against src/core/flow.ts, the host against the map src/core/assign.ts gives. Most cases run
// in-process through runCli (test/cli-helpers.ts); the 100,000-client timing and the bad line on
// stdin run the built binary, with its real pipes.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseEndpoint } from '../src/core/address.js';
import { assign } from '../src/core/assign.js';
import { type Affinity, type Config, parseConfig } from '../src/core/config.js';
import { flowBucket } from '../src/core/flow.js';
import { runNlb, runNlbInProcess } from './cli-helpers.js';

interface Row {
  client: string;
  rule: number | null;
  mode: string | null;
  affinity: Affinity | null;
  bucket: number | null;
  host: number | null;
  reason: string;
}

// One rule per affinity, a single-host rule and a disabled one, on the lab's VIP.
const configYaml = `
cluster:
  name: maptest
  clusterIps: [198.18.0.100, '2001:2::100']
  interface: eth0
  keyFile: /tmp/none.key
  hashSeed: 0x12345678
  portRules:
    - { vip: 198.18.0.100, ports: 80, protocol: tcp, mode: multiple, affinity: none }
    - { vip: 198.18.0.100, ports: 443, protocol: tcp, mode: multiple, affinity: single }
    - { vip: all, ports: 8000-8099, protocol: both, mode: multiple, affinity: network, buckets: 17 }
    - { vip: 198.18.0.100, ports: 53, protocol: udp, mode: single }
    - { vip: 198.18.0.100, ports: 25, protocol: tcp, mode: disabled }
host:
  id: 2
  dedicatedIp: 198.18.0.12/24
  rules:
    - { loadWeight: 20 }
    - {}
    - {}
    - { handlingPriority: 9 }
`;

const clientsV4 = [
  '198.18.0.50:40000',
  '198.18.0.50:40001',
  '198.18.0.51:40000',
  '198.18.0.77:1024',
  '198.18.1.9:65535',
  '198.18.1.200:5555',
  '198.18.7.3:33333',
  '198.19.255.254:0',
];

let dir: string;
let configPath: string;
let config: Config;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'nlb-cli-map-'));
  configPath = join(dir, 'host2.yaml');
  writeFileSync(configPath, configYaml);
  const parsed = parseConfig(configYaml);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  config = parsed.config;
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function clientArgs(clients: readonly string[]): string[] {
  return clients.flatMap((c) => ['--client', c]);
}

interface Output {
  source: string;
  note: string | null;
  hosts: number[];
  clients: Row[];
}

async function mapOutput(args: readonly string[], stdin?: string): Promise<Output> {
  const run = await runNlbInProcess(['map', '--config', configPath, '--json', ...args], stdin);
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  return JSON.parse(run.stdout) as Output;
}

async function mapJson(args: readonly string[], stdin?: string): Promise<Row[]> {
  const output = await mapOutput(args, stdin);
  expect(output.source).toBe('model');
  return output.clients;
}

/**
 * The expected owner map of rule `index` for hosts 1..3 as `nlb map` documents them: the
 * config's host (2) keeps its settings, the others weigh 50 with priority = host id.
 */
function expectedOwners(index: number, weights: Record<number, number> = {}): (number | null)[] {
  const rule = config.cluster.portRules[index]!;
  return assign({
    mode: rule.mode,
    buckets: rule.buckets,
    owners: new Array<number | null>(rule.buckets).fill(null),
    members: [1, 2, 3].map((id) => ({
      id,
      loadWeight: weights[id] ?? (id === 2 ? config.host.rules[index]!.loadWeight : 50),
      handlingPriority: id === 2 ? config.host.rules[index]!.handlingPriority : id,
      draining: false,
    })),
  });
}

function checkRows(
  rows: readonly Row[],
  clients: readonly string[],
  index: number,
  owners: (number | null)[],
): void {
  const rule = config.cluster.portRules[index]!;
  expect(rows).toHaveLength(clients.length);
  rows.forEach((row, i) => {
    const endpoint = parseEndpoint(clients[i]!);
    if ('error' in endpoint) throw new Error(endpoint.error);
    const bucket = flowBucket(endpoint, rule.affinity, rule.buckets, config.cluster.hashSeed);
    expect(row).toEqual({
      client: clients[i],
      rule: index,
      mode: rule.mode,
      affinity: rule.affinity,
      bucket,
      host: owners[bucket],
      reason: 'owner',
      inFlight: false,
      claimedBy: null,
    });
  });
}

describe('nlb map', () => {
  it('affinity none (port 80): bucket from client IP and port, host from assign', async () => {
    const rows = await mapJson(['--hosts', '1,2,3', ...clientArgs(clientsV4)]);
    checkRows(rows, clientsV4, 0, expectedOwners(0));
    // Same client IP, different ports: under affinity none they may land apart.
    expect(new Set(rows.map((r) => r.bucket)).size).toBeGreaterThan(1);
  });

  it('affinity single (port 443): one bucket per client IP whatever the port', async () => {
    const rows = await mapJson(['--hosts', '3,1,2', '--port', '443', ...clientArgs(clientsV4)]);
    checkRows(rows, clientsV4, 1, expectedOwners(1));
    expect(rows[0]!.bucket).toBe(rows[1]!.bucket);
  });

  it('affinity network (an all-VIP rule, 17 buckets): one bucket per client /24 or /64', async () => {
    const rows = await mapJson(['--hosts', '1,2,3', '--port', '8080', ...clientArgs(clientsV4)]);
    checkRows(rows, clientsV4, 2, expectedOwners(2));
    expect(new Set(rows.slice(0, 4).map((r) => r.bucket)).size).toBe(1);

    const clientsV6 = ['[2001:2::50]:40000', '[2001:2::ffff:1]:1', '[2001:2:0:1::5]:80'];
    const v6 = await mapJson([
      '--hosts',
      '1,2,3',
      '--vip',
      '2001:2::100',
      '--port',
      '8000',
      '--protocol',
      'udp',
      ...clientArgs(clientsV6),
    ]);
    checkRows(v6, clientsV6, 2, expectedOwners(2));
    expect(v6[0]!.bucket).toBe(v6[1]!.bucket);
  });

  it('--weights overrides load weights; weight 0 takes no bucket', async () => {
    const weights = { 1: 0, 2: 100, 3: 50 };
    const rows = await mapJson([
      '--hosts',
      '1,2,3',
      '--weights',
      '1=0,2=100,3=equal',
      ...clientArgs(clientsV4),
    ]);
    const owners = expectedOwners(0, weights);
    expect(owners).not.toContain(1);
    checkRows(rows, clientsV4, 0, owners);
  });

  it("single mode: the best handling priority owns everything (host 2's is 9, so host 1)", async () => {
    const rows = await mapJson([
      '--hosts',
      '1,2,3',
      '--port',
      '53',
      '--protocol',
      'udp',
      ...clientArgs(clientsV4),
    ]);
    checkRows(rows, clientsV4, 3, expectedOwners(3));
    expect(rows.every((r) => r.host === 1)).toBe(true);
  });

  it('with --config alone and no nlbd running for it: the model for the config host alone, saying so', async () => {
    const output = await mapOutput(clientArgs(clientsV4));
    expect(output.source).toBe('model');
    expect(output.hosts).toEqual([2]);
    expect(output.note).toMatch(
      /no live map \(no nlbd answers on .*nlbd-maptest-2\.sock.*host 2 alone; give --hosts/,
    );
    expect(output.clients.every((r) => r.rule === 0 && r.host === 2)).toBe(true);
  });

  it('--hosts with a daemon option, or without --config, is refused naming the fix', async () => {
    const both = await runNlbInProcess([
      'map',
      '--config',
      configPath,
      '--hosts',
      '1,2',
      '--lab',
      'x',
      '--client',
      clientsV4[0]!,
    ]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain(
      '--hosts: predicts from scratch; --socket, --lab, --host and --token-file ask a live nlbd',
    );
    const noConfig = await runNlbInProcess(['map', '--hosts', '1,2', '--client', clientsV4[0]!]);
    expect(noConfig.code).toBe(2);
    expect(noConfig.stderr).toContain('needs the cluster config');
  });

  it('traffic no rule covers goes to the default host; a disabled rule drops it', async () => {
    const none = await mapJson(['--hosts', '2,3', '--port', '22', ...clientArgs(clientsV4)]);
    expect(none.every((r) => r.rule === null && r.bucket === null && r.host === 2)).toBe(true);
    expect(none[0]!.reason).toBe('no-rule');
    const disabled = await mapJson(['--hosts', '1,2,3', '--port', '25', ...clientArgs(clientsV4)]);
    expect(disabled.every((r) => r.rule === 4 && r.host === null && r.reason === 'disabled')).toBe(
      true,
    );
  });

  it('prints a table with a summary for people', async () => {
    const run = await runNlbInProcess([
      'map',
      '--config',
      configPath,
      '--hosts',
      '1,2,3',
      ...clientArgs(clientsV4),
    ]);
    expect(run.code).toBe(0);
    const lines = run.stdout.split('\n');
    expect(lines[0]).toMatch(/^CLIENT\s+BUCKET\s+HOST$/);
    expect(run.stdout).toContain('model: the map hosts 1,2,3 reach from scratch');
    expect(lines[1]).toMatch(/^198\.18\.0\.50:40000\s+\d+\s+[123]$/);
    expect(run.stdout).toContain(
      '198.18.0.100:80/tcp: rule 0 (198.18.0.100 port 80 tcp, multiple, affinity none',
    );
    expect(run.stdout).toContain(
      'live hosts: 1 (weight 50), 2 (weight 20), 3 (weight 50); default host 1',
    );
    expect(run.stdout).toMatch(/^clients: 8; host 1: \d+ /m);
  });

  it('reads a clients file with comments and blank lines, and stdin', async () => {
    const file = join(dir, 'clients.txt');
    writeFileSync(
      file,
      `# clients\n\n${clientsV4.slice(0, 4).join('\n')}  # trailing comment\n\r\n${clientsV4.slice(4).join('\r\n')}`,
    );
    const fromFile = await mapJson(['--hosts', '1,2,3', '--clients-file', file]);
    checkRows(fromFile, clientsV4, 0, expectedOwners(0));
    const fromStdin = await mapJson(
      ['--hosts', '1,2,3', '--clients-file', '-'],
      readFileSync(file, 'utf8'),
    );
    expect(fromStdin).toEqual(fromFile);
  });

  it('maps 100,000 clients from a file within a few seconds', async () => {
    // A fixed linear congruential generator, so the test is the same on every run.
    let state = 12345;
    const next = (n: number): number => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state % n;
    };
    const lines: string[] = [];
    for (let i = 0; i < 100_000; i++) {
      lines.push(`198.18.${next(256)}.${next(256)}:${1024 + next(64512)}`);
    }
    const file = join(dir, 'clients-100k.txt');
    writeFileSync(file, lines.join('\n') + '\n');

    const run = await runNlb([
      'map',
      '--config',
      configPath,
      '--hosts',
      '1,2,3',
      '--json',
      '--clients-file',
      file,
    ]);
    console.log(`nlb map, 100,000 clients, --json: ${run.elapsedMs.toFixed(0)} ms`);
    expect(run.code).toBe(0);
    expect(run.elapsedMs).toBeLessThan(20_000);
    const rows = (JSON.parse(run.stdout) as Output).clients;
    expect(rows).toHaveLength(100_000);
    // Spot-check every 997th client against the core.
    const owners = expectedOwners(0);
    const sample = lines.filter((_, i) => i % 997 === 0);
    checkRows(
      rows.filter((_, i) => i % 997 === 0),
      sample,
      0,
      owners,
    );

    const human = await runNlb([
      'map',
      '--config',
      configPath,
      '--hosts',
      '1,2,3',
      '--clients-file',
      file,
    ]);
    console.log(`nlb map, 100,000 clients, table: ${human.elapsedMs.toFixed(0)} ms`);
    expect(human.code).toBe(0);
    expect(human.elapsedMs).toBeLessThan(20_000);
    expect(human.stdout.split('\n').length).toBeGreaterThan(100_000);
  });

  it('names the line of a bad client line, exit code 2', async () => {
    const file = join(dir, 'bad-clients.txt');
    writeFileSync(file, '# header\n198.18.0.1:1000\n\n198.18.0.2:99999\n198.18.0.3:1\n');
    const run = await runNlbInProcess(['map', '--config', configPath, '--clients-file', file]);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain(`--clients-file ${file} line 4: port '99999'`);
    expect(run.stderr).toMatch(/^hint: write one client per line as ip:port/m);

    const stdin = await runNlb(
      ['map', '--config', configPath, '--clients-file', '-'],
      '198.18.0.1:1\nnonsense\n',
    );
    expect(stdin.code).toBe(2);
    expect(stdin.stderr).toContain('--clients-file (stdin) line 2:');
  });

  it('rejects bad arguments with exit code 2 and the argument named', async () => {
    const cases: [string[], string][] = [
      [['--client', '198.18.0.1'], '--client:'],
      [['--client', '198.18.0.1:1', '--port', '70000'], "--port: '70000' is not a port"],
      [
        ['--client', '198.18.0.1:1', '--vip', '198.18.0.99'],
        '--vip: 198.18.0.99 is not a cluster IP',
      ],
      [['--client', '198.18.0.1:1', '--hosts', '1,40'], "--hosts: '40' is not a host id"],
      [
        ['--client', '198.18.0.1:1', '--hosts', '1,2', '--weights', '3=50'],
        '--weights: host 3 is not a live host',
      ],
      [['--client', '198.18.0.1:1', '--weights', '2=101'], "--weights: host 2's weight '101'"],
      [['--client', '[2001:2::1]:5'], 'is IPv6 but the cluster IP 198.18.0.100 is IPv4'],
      [[], '--client: no clients given'],
      [['--client', '198.18.0.1:1', '--protocol', 'sctp'], "argument 'sctp' is invalid"],
    ];
    for (const [args, message] of cases) {
      const run = await runNlbInProcess(['map', '--config', configPath, ...args]);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr).toContain(message);
      expect(run.stderr).toMatch(/^hint: \S/m);
    }
  });

  it('rejects a bad config with exit code 2, listing each error path', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      configYaml
        .replace('name: maptest', 'name: maptest\n  mode: broadcast')
        .replace('ports: 443', 'ports: 443-400'),
    );
    const run = await runNlbInProcess(['map', '--config', bad, '--client', '198.18.0.1:1']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`config file '${bad}' is invalid:`);
    expect(run.stderr).toMatch(/^ {2}cluster\.mode \(found "broadcast"\): /m);
    expect(run.stderr).toMatch(/^ {2}cluster\.portRules\[1\]\.ports \(found "443-400"\): /m);

    const json = await runNlbInProcess([
      'map',
      '--json',
      '--config',
      bad,
      '--client',
      '198.18.0.1:1',
    ]);
    expect(json.code).toBe(2);
    expect((JSON.parse(json.stdout) as { error: { code: string } }).error.code).toBe('bad-config');

    const missing = await runNlbInProcess([
      'map',
      '--config',
      join(dir, 'nope.yaml'),
      '--client',
      '198.18.0.1:1',
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no such file');
  });
});
