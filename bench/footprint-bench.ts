// What an idle nlbd costs (issue 11 items 5 and 7): labs of 3, 8, 16 and 32 hosts, each
// converged and left alone; per daemon, the CPU it used (user + system, its threads and the
// kernel work charged to it, such as delivering its multicast heartbeats to every peer's
// namespace) and its children (the long-lived nft processes), its memory (RSS, split into the
// anonymous part that is its own and the file-backed part, mostly the node binary, that every
// node process on the machine shares), the decisions its routine heartbeats skipped, and the
// hosts declared dead while nothing failed (false detections), during start-up and during the
// measurement.
// Writes bench/results/footprint.json and footprint.md.
//
//   npm run bench:footprint   (root; NLB_FOOTPRINT_HOSTS=3,8: those sizes only, results to the
//                              temp dir; NLB_FOOTPRINT_SECONDS=<s>: the measurement, 60;
//                              NLB_FOOTPRINT_LARGEST_SECONDS=<s>: the largest lab's, 600)
//
// Every lab gets a unique name and is taken down in a finally block; nothing but heartbeats
// flows (no client traffic), all inside the lab's namespaces.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { daemonMainPath, labDown, repoRoot } from '../src/lab/lab.js';
import type { LabState } from '../src/lab/state.js';
import { controlRequest } from '../src/control/client.js';
import { nlbdNodeFlags } from '../src/daemon/node-flags.js';
import type { ParamsData } from '../src/control/protocol.js';
import {
  daemonLog,
  labsUp,
  machineInfo,
  median,
  maxOf,
  round,
  socketOf,
  waitConverged,
  withLab,
} from './lab/support.js';

const sizesEnv = process.env.NLB_FOOTPRINT_HOSTS;
const sizes =
  sizesEnv === undefined || sizesEnv === '' ? [3, 8, 16, 32] : sizesEnv.split(',').map(Number);
const measureSecondsEach = Number(process.env.NLB_FOOTPRINT_SECONDS ?? 60);
/** The largest lab is watched for 10 minutes: issue 11 asks it to stay converged that long. */
const largestSeconds = Number(process.env.NLB_FOOTPRINT_LARGEST_SECONDS ?? 600);
/** After convergence, before measuring: start-up work (JIT, first checks) settles. */
const settleSeconds = 15;
const cpuTargetPercent = 0.5;
const convergeTimeoutMs = 180_000;
const rssTargetMb = 50;
const ticksPerSecond = 100;

function log(line: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 23)}] ${line}\n`);
}

/** utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/<pid>/stat). */
function cpuTicks(pid: number): number {
  return userSystemTicks(pid).reduce((a, b) => a + b, 0);
}

/** [utime, stime] of a process in clock ticks; 0 for a child that ended meanwhile (its time is in reapedTicks once reaped). */
function userSystemTicks(pid: number): [number, number] {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return [0, 0];
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return [Number(fields[11]), Number(fields[12])];
}

/** cutime + cstime: the CPU of its children that ended (fields 16 and 17), such as `nft list`. */
function reapedTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[13]) + Number(fields[14]);
}

function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((p) => p !== '')
      .map(Number);
  } catch {
    return [];
  }
}

function memoryKb(pid: number): { rss: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: field('VmRSS'), anon: field('RssAnon'), file: field('RssFile') };
}

interface MemoryMb {
  rss: number;
  anon: number;
  file: number;
}

/**
 * The floor under any nlbd: an idle node process with nlbd's flags and one timer, measured on
 * the same machine in the same run (most of its RSS is the node binary's own pages).
 */
async function nodeFloor(): Promise<MemoryMb> {
  const child = spawn(process.execPath, [...nlbdNodeFlags, '-e', 'setInterval(() => {}, 1000)'], {
    stdio: 'ignore',
  });
  try {
    await sleep(3_000);
    if (child.pid === undefined) throw new Error('node did not start');
    const kb = memoryKb(child.pid);
    const mb = (value: number): number => round(value / 1024);
    return { rss: mb(kb.rss), anon: mb(kb.anon), file: mb(kb.file) };
  } finally {
    child.kill('SIGKILL');
  }
}

function declaredDead(lab: LabState, fromMs: number, toMs: number): number {
  let count = 0;
  for (const host of lab.hosts) {
    for (const record of daemonLog(lab, host.id)) {
      const at = Date.parse(String(record.time));
      if (record.event === 'host declared dead' && at >= fromMs && at < toMs) count++;
    }
  }
  return count;
}

/** The protocol's counters of one host: routine heartbeats skipped, heartbeats received. */
async function protocolCounters(
  lab: LabState,
  hostId: number,
): Promise<{ skipped: number; received: number } | null> {
  try {
    const response = await controlRequest(socketOf(lab, hostId), { verb: 'params' }, 2_000);
    if (!response.ok) return null;
    const counters = (response.data as ParamsData).protocol.counters;
    return { skipped: counters.decisionsSkipped, received: counters.heartbeatsReceived };
  } catch {
    return null;
  }
}

interface SizeResult {
  hosts: number;
  /** null: the lab did not converge within convergeTimeoutMs (measured anyway, in its storm). */
  convergeMs: number | null;
  falseDetectionsAtStart: number;
  falseDetectionsMeasured: number;
  measureSeconds: number;
  cpuPercent: { median: number | null; max: number | null };
  /** The kernel's part of the daemons' CPU (stime over utime + stime, all daemons together). */
  systemShare: number | null;
  childCpuPercent: { median: number | null; max: number | null };
  rssMb: { median: number | null; max: number | null };
  anonMb: { median: number | null; max: number | null };
  fileMb: { median: number | null };
  heartbeatsPerSecondReceived: number;
  decisionsSkippedShare: number | null;
  loadAverage: number[];
}

async function measureSize(hosts: number, measureSeconds: number): Promise<SizeResult> {
  const name = `fp${hosts}_${process.pid}`.slice(0, 24);
  const run = await withLab(
    { name, hosts, clients: 0 },
    async (lab) => {
      const startedMs = Date.now();
      const members = lab.hosts.map((h) => h.id);
      const convergeMs = await waitConverged(
        lab,
        members,
        convergeTimeoutMs,
        undefined,
        1_000,
      ).catch((error: unknown) => {
        log(`${hosts} hosts: ${String(error).slice(0, 300)}`);
        return null;
      });
      await sleep(settleSeconds * 1000);
      const pids = lab.hosts.map((h) => h.daemon!.pid);
      const kids = pids.map(children);
      const before = pids.map(cpuTicks);
      const systemBefore = pids.map((pid) => userSystemTicks(pid)[1]);
      const kidsBefore = kids.map((list) => list.map(cpuTicks));
      const reapedBefore = pids.map(reapedTicks);
      const countersBefore = await Promise.all(members.map((id) => protocolCounters(lab, id)));
      const fromMs = Date.now();
      await sleep(measureSeconds * 1000);
      const toMs = Date.now();
      const cpu = pids.map(
        (pid, i) => ((cpuTicks(pid) - before[i]!) / ticksPerSecond / measureSeconds) * 100,
      );
      const systemTicks = pids.reduce(
        (sum, pid, i) => sum + userSystemTicks(pid)[1] - systemBefore[i]!,
        0,
      );
      const allTicks =
        (cpu.reduce((sum, percent) => sum + percent, 0) * ticksPerSecond * measureSeconds) / 100;
      const childCpu = kids.map(
        (list, i) =>
          (list.reduce(
            (sum, kid, k) => sum + Math.max(0, cpuTicks(kid) - kidsBefore[i]![k]!),
            reapedTicks(pids[i]!) - reapedBefore[i]!,
          ) /
            ticksPerSecond /
            measureSeconds) *
          100,
      );
      const memory = pids.map(memoryKb);
      const countersAfter = await Promise.all(members.map((id) => protocolCounters(lab, id)));
      // Over the hosts that answered both times.
      let skipped = 0;
      let received = 0;
      let answered = 0;
      countersAfter.forEach((after, i) => {
        const before = countersBefore[i];
        if (after === null || before === null || before === undefined) return;
        skipped += after.skipped - before.skipped;
        received += after.received - before.received;
        answered++;
      });
      const mb = (kb: number): number => round(kb / 1024);
      return {
        hosts,
        convergeMs: convergeMs === null ? null : round(convergeMs),
        falseDetectionsAtStart: declaredDead(lab, startedMs - 60_000, fromMs),
        falseDetectionsMeasured: declaredDead(lab, fromMs, toMs),
        measureSeconds,
        cpuPercent: { median: round(median(cpu) ?? NaN, 2), max: round(maxOf(cpu) ?? NaN, 2) },
        systemShare: allTicks === 0 ? null : round(systemTicks / allTicks, 2),
        childCpuPercent: {
          median: round(median(childCpu) ?? NaN, 2),
          max: round(maxOf(childCpu) ?? NaN, 2),
        },
        rssMb: {
          median: mb(median(memory.map((m) => m.rss)) ?? NaN),
          max: mb(maxOf(memory.map((m) => m.rss)) ?? NaN),
        },
        anonMb: {
          median: mb(median(memory.map((m) => m.anon)) ?? NaN),
          max: mb(maxOf(memory.map((m) => m.anon)) ?? NaN),
        },
        fileMb: { median: mb(median(memory.map((m) => m.file)) ?? NaN) },
        heartbeatsPerSecondReceived:
          answered === 0 ? 0 : round(received / answered / measureSeconds),
        decisionsSkippedShare: received === 0 ? null : round(skipped / received, 3),
        loadAverage: os.loadavg().map((l) => round(l, 2)),
      };
    },
    log,
  );
  return run.value;
}

function renderMarkdown(
  results: readonly SizeResult[],
  floor: MemoryMb,
  machine: Record<string, unknown>,
  seconds: number,
): string {
  const lines = [
    '# Footprint: what an idle nlbd costs',
    '',
    `Generated ${new Date().toISOString()} by \`npm run bench:footprint\` in ${seconds} s, on ${String(machine.cpu)} (${String(machine.cores)} cores), Node ${process.version}.`,
    'Each lab: N hosts running nlbd (200 ms × 5, unicast, one port rule), converged and left alone;',
    `${settleSeconds} s to settle, then ${measureSecondsEach} s measured (the largest lab ${largestSeconds} s). Everything (all daemons, the switch) shares the machine's cores.`,
    "CPU in the kernel is the daemons' system time: their heartbeats' system calls and whatever the kernel does inside them (in a lab, that can include carrying a multicast heartbeat across the bridge into each peer's namespace, which a switch does between real hosts).",
    '',
    '| hosts | heartbeats received per daemon/s | converged after start | false detections at start | false detections while measured | CPU per nlbd, median (max) | of it in the kernel | its children (nft, ip monitor, ended ones included) | RSS median (max) | of it anonymous | file-backed (shared node binary) | decisions skipped | load average (1 min) at the end |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    lines.push(
      `| ${r.hosts} | ${r.heartbeatsPerSecondReceived} | ${r.convergeMs === null ? `**not within ${convergeTimeoutMs / 1000} s**` : `${r.convergeMs} ms`} | ${r.falseDetectionsAtStart} | ${r.falseDetectionsMeasured} | ${r.cpuPercent.median}% (${r.cpuPercent.max}%) | ${r.systemShare === null ? 'n/a' : `${Math.round(r.systemShare * 100)}%`} | ${r.childCpuPercent.median}% | ${r.rssMb.median} MB (${r.rssMb.max}) | ${r.anonMb.median} MB | ${r.fileMb.median} MB | ${r.decisionsSkippedShare === null ? 'n/a' : `${Math.round(r.decisionsSkippedShare * 100)}% of heartbeats`} | ${r.loadAverage[0]} |`,
    );
  }
  lines.push(
    '',
    `For scale, node's own floor: an idle \`node ${nlbdNodeFlags.join(' ')}\` with one timer holds ${floor.rss} MB RSS here (${floor.anon} MB anonymous, ${floor.file} MB file-backed), measured in this run.`,
  );
  const largest = results.at(-1);
  if (largest !== undefined) {
    const cpuOk = (largest.cpuPercent.max ?? Infinity) <= cpuTargetPercent;
    const rssOk = (largest.rssMb.max ?? Infinity) <= rssTargetMb;
    lines.push(
      '',
      '## Targets',
      '',
      '| target | result | measured |',
      '|---|---|---|',
      `| ≤ ${cpuTargetPercent}% of a core per idle nlbd at ${largest.hosts} hosts | ${cpuOk ? 'PASS' : 'FAIL'} | max ${largest.cpuPercent.max}% |`,
      `| converges, then 0 false detections at ${largest.hosts} hosts | ${largest.convergeMs !== null && largest.falseDetectionsMeasured === 0 ? 'PASS' : 'FAIL'} | ${largest.falseDetectionsMeasured} in ${largest.measureSeconds} s |`,
      `| nlbd RSS ≤ ${rssTargetMb} MB | ${rssOk ? 'PASS' : 'FAIL'} | max ${largest.rssMb.max} MB (anonymous ${largest.anonMb.max} MB) |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    log('SKIPPED: bench:footprint needs root: it builds network namespaces (run it as root)');
    return;
  }
  if (!existsSync(daemonMainPath)) {
    throw new Error(`${daemonMainPath} does not exist: build first with \`npm run build\``);
  }
  const startMs = Date.now();
  const results: SizeResult[] = [];
  for (const hosts of sizes) {
    log(`${hosts} hosts`);
    const largest = hosts === Math.max(...sizes);
    const result = await measureSize(hosts, largest ? largestSeconds : measureSecondsEach);
    log(JSON.stringify(result));
    results.push(result);
  }
  const floor = await nodeFloor();
  log(`node's floor: ${JSON.stringify(floor)}`);
  const machine = machineInfo();
  const seconds = Math.round((Date.now() - startMs) / 1000);
  const partial = sizesEnv !== undefined && sizesEnv !== '';
  const dir = partial ? os.tmpdir() : path.join(repoRoot, 'bench', 'results');
  writeFileSync(
    path.join(dir, 'footprint.json'),
    `${JSON.stringify({ machine, nodeFloorMb: floor, results }, null, 2)}\n`,
  );
  writeFileSync(path.join(dir, 'footprint.md'), renderMarkdown(results, floor, machine, seconds));
  log(`wrote ${path.join(dir, 'footprint.md')}`);
}

process.on('SIGINT', () => {
  void Promise.all([...labsUp].map((name) => labDown(name).catch(() => undefined))).then(() =>
    process.exit(130),
  );
});

await main();
