// The control API beyond query: rule specs (vip:port, vip:all, all:port, all:all) resolved
// against the config, rule commands by spec, queryport, display, events (recent and follow),
// metrics, reload checks, and the event journal. In-process: a real HostMachine behind a fake
// target, no socket.
import { describe, expect, it } from 'vitest';
import { parseAddress } from '../src/core/address.js';
import { type Config, parseConfig } from '../src/core/config.js';
import {
  type DisplayData,
  type EventsData,
  type MapData,
  type QueryportData,
} from '../src/control/protocol.js';
import { answerControl, handleControl } from '../src/daemon/control.js';
import { checkReload } from '../src/daemon/control-reload.js';
import { parseRuleSpec, resolveRuleSpec } from '../src/control/rule-spec.js';
import { EventJournal, type JournalEntry, eventsKeptMax } from '../src/daemon/events.js';
import { makeTestTarget, testConfig } from './control-target.js';

function resolve(config: Config, text: string): number[] | string {
  const spec = parseRuleSpec(text);
  if ('error' in spec) return `error: ${spec.error}`;
  const result = resolveRuleSpec(config.cluster, spec);
  return result.ok ? [...result.rules] : result.message;
}

describe('rule specs', () => {
  const config = testConfig();

  it('parses vip:port, vip:all, all:port, all:all and [v6]:port; refuses the rest', () => {
    expect(parseRuleSpec('198.18.0.100:80')).toEqual({
      vip: parseAddress('198.18.0.100'),
      port: 80,
    });
    expect(parseRuleSpec('ALL:all')).toEqual({ vip: 'all', port: 'all' });
    expect(parseRuleSpec('[2001:db8::1]:443')).toEqual({
      vip: parseAddress('2001:db8::1'),
      port: 443,
    });
    expect(parseRuleSpec('198.18.0.100')).toMatchObject({
      error: expect.stringContaining('vip:port'),
    });
    expect(parseRuleSpec('198.18.0.100:99999')).toMatchObject({
      error: expect.stringContaining("port '99999'"),
    });
    expect(parseRuleSpec('web:80')).toMatchObject({ error: expect.stringContaining("'web'") });
    expect(parseRuleSpec('2001:db8::1:80')).toMatchObject({ error: expect.stringContaining('[') });
  });

  it('vip:port is the rule the filter uses for TCP and for UDP to that port', () => {
    // Port 80 of .100: its own TCP rule 0; UDP falls to the 'all' rule 1.
    expect(resolve(config, '198.18.0.100:80')).toEqual([0, 1]);
    // Port 81 of .100: only the 'all' rule covers it, for both protocols.
    expect(resolve(config, '198.18.0.100:81')).toEqual([1]);
    expect(resolve(config, '198.18.0.100:53')).toEqual([2]);
    expect(resolve(config, '198.18.0.101:443')).toEqual([3]);
    expect(resolve(config, '198.18.0.100:443')).toMatch(/no port rule covers 198.18.0.100:443/);
    expect(resolve(config, '198.18.0.200:80')).toMatch(/198.18.0.200 is not a cluster IP/);
  });

  it("all:port is every rule covering the port; vip:all the VIP's rules, else the 'all' rules", () => {
    expect(resolve(config, 'all:80')).toEqual([0, 1]);
    expect(resolve(config, 'all:443')).toEqual([3]);
    expect(resolve(config, 'all:8080')).toMatch(/no port rule covers all:8080/);
    expect(resolve(config, '198.18.0.100:all')).toEqual([0, 2]);
    expect(resolve(config, 'all:all')).toEqual([0, 1, 2, 3]);
    const onlyAll = testConfig();
    const shared = {
      ...onlyAll,
      cluster: { ...onlyAll.cluster, portRules: [onlyAll.cluster.portRules[1]!] },
    };
    expect(resolve(shared, '198.18.0.101:all')).toEqual([0]);
  });
});

describe('control verbs (handler)', () => {
  it('enable/disable/drain take a spec, answer the rules it named, and "not found" for none', async () => {
    const t = makeTestTarget();
    expect(await handleControl({ verb: 'drain', spec: 'all:443' }, t.context)).toEqual({
      ok: true,
      data: { code: 'ok', message: 'rule(s) 3 draining', rules: [3] },
    });
    expect(await handleControl({ verb: 'drain', spec: 'all:443' }, t.context)).toMatchObject({
      ok: true,
      data: { code: 'already' },
    });
    expect(await handleControl({ verb: 'disable', spec: 'all:8080' }, t.context)).toEqual({
      ok: true,
      data: {
        code: 'not found',
        message: 'no port rule covers all:8080: that traffic goes to the default host',
        rules: [],
      },
    });
    expect(await handleControl({ verb: 'enable', spec: 'nonsense' }, t.context)).toMatchObject({
      ok: false,
      error: { code: 'bad-request' },
    });
    expect(
      await handleControl({ verb: 'enable', spec: 'all:80', rules: [0] }, t.context),
    ).toMatchObject({
      ok: false,
      error: { code: 'bad-request', message: expect.stringContaining('not both') },
    });
    // No spec resolving to nothing ever reaches the host machine.
    expect(t.commands).toEqual([
      { verb: 'drain', rules: [3] },
      { verb: 'drain', rules: [3] },
    ]);
    expect(t.journal.recent().map((e) => e.event)).toContain('rule drained');
  });

  it('queryport shows the rule, its state, every bucket with owner and connections', async () => {
    const t = makeTestTarget();
    await handleControl({ verb: 'drain', rules: [0] }, t.context);
    const answer = await handleControl({ verb: 'queryport', spec: '198.18.0.100:80' }, t.context);
    expect(answer.ok).toBe(true);
    const data = (answer as { data: QueryportData }).data;
    expect(data).toMatchObject({ code: 'ok', spec: '198.18.0.100:80', hostId: 2 });
    expect(data.rules.map((r) => [r.rule, r.state, r.buckets.length])).toEqual([
      [0, 'draining', 60],
      [1, 'enabled', 60],
    ]);
    expect(data.rules[0]!.buckets[3]).toMatchObject({ bucket: 3, connections: 2 });
    expect(data.rules[0]!.connections).toBe(3);
    expect(data.rules[1]!.connections).toBe(0);
    const owners = Object.values(data.rules[0]!.owners).reduce((a, b) => a + b, 0);
    expect(owners).toBe(60);
    // Claims: this host is a claimant exactly where it takes new flows.
    for (const bucket of data.rules[1]!.buckets) {
      expect(bucket.claimedBy.includes(2)).toBe(bucket.ownedHere);
    }
    expect(data.rules[1]!.disagreements).toBe(
      data.rules[1]!.buckets.filter((b) => b.disagreement).length,
    );
    const map = await handleControl({ verb: 'map' }, t.context);
    expect(map).toMatchObject({
      ok: true,
      data: { hostId: 2, hashSeed: t.target.config.cluster.hashSeed },
    });
    const mapRules = (map as { data: MapData }).data.rules;
    expect(mapRules.map((r) => [r.rule, r.vip, r.portStart, r.portEnd, r.buckets])).toEqual(
      t.target.config.cluster.portRules.map((r, i) => [
        i,
        r.vip === 'all' ? 'all' : r.vip.text,
        r.portStart,
        r.portEnd,
        r.buckets,
      ]),
    );
    expect(await handleControl({ verb: 'queryport', spec: 'all:9' }, t.context)).toMatchObject({
      ok: true,
      data: { code: 'not found', rules: [] },
    });
  });

  it('display returns identity, config, interface addresses and the recent events', async () => {
    const t = makeTestTarget();
    await handleControl({ verb: 'stop' }, t.context);
    const answer = await handleControl({ verb: 'display', events: 2 }, t.context);
    const data = (answer as { data: DisplayData }).data;
    expect(data.identity.hostId).toBe(2);
    expect(data.interface?.addresses).toContain('198.18.0.100/32');
    expect(data.events).toHaveLength(2);
    expect(data.events.at(-1)).toMatchObject({ event: 'stopped' });
    expect(data.config).toMatchObject({ cluster: { name: 'test' }, host: { id: 2 } });
  });

  it('events: recent entries, and with follow a stream subscribed before the answer', async () => {
    const t = makeTestTarget();
    await handleControl({ verb: 'suspend' }, t.context);
    const recent = await handleControl({ verb: 'events', limit: 1 }, t.context);
    expect((recent as { data: EventsData }).data).toEqual({
      events: [expect.objectContaining({ event: 'suspended', time: '2026-01-01T12:00:00.000Z' })],
      following: false,
    });
    const answer = await answerControl({ verb: 'events', follow: true, limit: 1 }, t.context);
    expect(answer.response).toMatchObject({ ok: true, data: { following: true } });
    expect(answer.stream).toBeDefined();
    // An event raised before the sender is attached is kept for it.
    await handleControl({ verb: 'resume' }, t.context);
    const seen: JournalEntry[] = [];
    answer.stream!.attach((entry) => {
      seen.push(entry);
      return true;
    });
    await handleControl({ verb: 'start' }, t.context);
    expect(seen.map((e) => e.event)).toEqual(['resumed', 'started']);
    answer.stream!.close();
    expect(t.journal.followerCount).toBe(0);
    // handleControl (no streaming) never leaves a follower behind.
    await handleControl({ verb: 'events', follow: true }, t.context);
    expect(t.journal.followerCount).toBe(0);
  });

  it('metrics: Prometheus text with state, buckets, counters, heartbeats and connections', async () => {
    const t = makeTestTarget();
    const answer = await handleControl({ verb: 'metrics' }, t.context);
    const { text, contentType } = (answer as { data: { text: string; contentType: string } }).data;
    expect(contentType).toContain('text/plain');
    for (const line of [
      'nlb_host_state{state="converging",cluster="test",host="2"} 1',
      'nlb_members{cluster="test",host="2"} 1',
      'nlb_convergences_total{cluster="test",host="2"} 0',
      'nlb_buckets_owned{rule="0",vip="198.18.0.100",ports="80",protocol="tcp",cluster="test",host="2"} 0',
      'nlb_rule_packets_total{rule="3",vip="198.18.0.101",ports="443",protocol="tcp",verdict="accepted",cluster="test",host="2"} 103',
      'nlb_rule_bytes_total{rule="0",vip="198.18.0.100",ports="80",protocol="tcp",verdict="dropped",cluster="test",host="2"} 700',
      'nlb_connections{rule="3",vip="198.18.0.101",ports="443",protocol="tcp",cluster="test",host="2"} 5',
      'nlb_heartbeats_received_total{cluster="test",host="2"} 1',
      'nlb_program_seconds{quantile="last",cluster="test",host="2"} 0.0025',
    ]) {
      expect(text).toContain(line);
    }
    expect(text).toMatch(
      /^nlb_heartbeats_rejected_total\{reason="[a-z -]+",cluster="test",host="2"\} 0$/m,
    );
    expect(text).toContain('nlbd_process_cpu_seconds_total');
    // A second scrape gives the same totals (counters are set, not added up twice).
    const again = await handleControl({ verb: 'metrics' }, t.context);
    expect((again as { data: { text: string } }).data.text).toContain(
      'nlb_heartbeats_received_total{cluster="test",host="2"} 1',
    );
  });

  it('metrics: routed mode counts the packets forwarded and given a second chance', async () => {
    const value = (packets: number) => ({ packets, bytes: packets * 100 });
    const t = makeTestTarget({
      counters: () =>
        Promise.resolve({
          rules: [0, 1, 2, 3].map(() => ({
            accepted: value(10),
            dropped: value(1),
            reset: value(0),
            forwarded: value(20),
            secondChance: value(3),
          })),
          uncovered: { accepted: value(0), dropped: value(0) },
          leaseExpired: value(0),
        }),
    });
    const answer = await handleControl({ verb: 'metrics' }, t.context);
    const { text } = (answer as { data: { text: string } }).data;
    const labels = 'rule="0",vip="198.18.0.100",ports="80",protocol="tcp"';
    expect(text).toContain(
      `nlb_rule_packets_total{${labels},verdict="forwarded",cluster="test",host="2"} 20`,
    );
    expect(text).toContain(
      `nlb_rule_bytes_total{${labels},verdict="second_chance",cluster="test",host="2"} 300`,
    );
  });

  it('reload answers what the daemon reports; a target without reload says so', async () => {
    const t = makeTestTarget();
    expect(await handleControl({ verb: 'reload' }, t.context)).toMatchObject({
      ok: true,
      data: { code: 'ok', changes: ['host.rules[0].loadWeight: 50 -> 20'] },
    });
    const { reload: _reload, ...bare } = t.target;
    expect(
      await handleControl(
        { verb: 'reload' },
        { ...t.context, target: { ...bare, config: t.target.config } },
      ),
    ).toMatchObject({ ok: false, error: { code: 'unavailable' } });
  });
});

interface ConfigDocument {
  cluster: Record<string, unknown> & { portRules: unknown[] };
  host: Record<string, unknown>;
}

function reparse(config: Config, edit: (doc: ConfigDocument) => void): Config {
  const c = config.cluster;
  const doc: ConfigDocument = {
    cluster: {
      name: c.name,
      clusterIps: c.clusterIps.map((ip) => ip.text),
      interface: c.interface,
      keyFile: c.keyFile,
      portRules: [{ vip: 'all', ports: 80, protocol: 'tcp', mode: 'multiple', affinity: 'none' }],
    },
    host: { id: config.host.id, dedicatedIp: '198.18.0.12/24' },
  };
  edit(doc);
  const result = parseConfig(JSON.stringify(doc));
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.config;
}

describe('reload checks', () => {
  const base = reparse(testConfig(), () => undefined);

  it('lists what changed, and accepts rules, weights and heartbeat timing', () => {
    const next = reparse(base, (doc) => {
      doc.cluster.portRules.push({
        vip: 'all',
        ports: 81,
        protocol: 'tcp',
        mode: 'single',
        affinity: 'none',
      });
      doc.cluster.heartbeat = { periodMs: 100 };
      doc.host.loadWeight = 20;
    });
    const check = checkReload(base, next, false);
    expect(check.problems).toEqual([]);
    expect(check.changes).toContain('cluster.heartbeat.periodMs: 200 -> 100');
    expect(check.changes).toContain('cluster.portRules[1].ports: (none) -> "81"');
    expect(check.changes).toContain('host.rules[0].loadWeight: 50 -> 20');
    expect(checkReload(base, base, false)).toEqual({ problems: [], changes: [] });
  });

  it('refuses what only a restart can change, naming each', () => {
    const next = reparse(base, (doc) => {
      doc.cluster.interface = 'eth1';
      doc.cluster.clusterIps = ['198.18.0.100'];
      doc.host.id = 3;
    });
    const check = checkReload(base, next, true);
    expect(check.problems.join('\n')).toMatch(
      /cluster\.interface changed \("eth0" -> "eth1"\): restart nlbd/,
    );
    expect(check.problems.join('\n')).toMatch(/cluster\.clusterIps\[1\] changed/);
    expect(check.problems.join('\n')).toMatch(/host\.id changed \(2 -> 3\)/);
    expect(check.problems.join('\n')).toMatch(/cluster key file holds another key/);
  });
});

describe('event journal', () => {
  it(`keeps the last ${eventsKeptMax}, numbered, and drops a follower that cannot keep up`, () => {
    const journal = new EventJournal(() => new Date(0), 3);
    for (let i = 0; i < 5; i++) journal.record({ event: 'host joined', i });
    expect(journal.recent().map((e) => [e.seq, e.i])).toEqual([
      [3, 2],
      [4, 3],
      [5, 4],
    ]);
    expect(journal.recent(1)[0]).toMatchObject({ seq: 5, time: '1970-01-01T00:00:00.000Z' });
    let taken = 0;
    journal.follow(() => ++taken < 2);
    journal.record({ event: 'host joined' });
    journal.record({ event: 'host left' });
    journal.record({ event: 'converged' });
    expect(taken).toBe(2);
    expect(journal.followerCount).toBe(0);
  });

  it("logs 'bad heartbeats' at most once per 10 s, with the counts (the core rate-limits it)", () => {
    const t = makeTestTarget();
    const before = t.journal.recent().length;
    const garbage = new Uint8Array([1, 2, 3, 4]);
    for (let nowMs = 1_000; nowMs <= 25_000; nowMs += 100) {
      const ready = t.machine.step({ kind: 'datagram', nowMs, bytes: garbage });
      for (const event of ready.events) t.journal.record({ ...event });
    }
    const bad = t.journal
      .recent()
      .slice(before)
      .filter((e) => e.event === 'bad heartbeats');
    expect(bad.length).toBeGreaterThanOrEqual(2);
    expect(bad.length).toBeLessThanOrEqual(3);
    expect(bad[0]).toMatchObject({ counts: { truncated: expect.any(Number) } });
  });
});
