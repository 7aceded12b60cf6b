// The nftables adapter: apply a rendered script as one transaction, run one-line transactions
// (lease refresh, ownership set changes) cheaply on a long-lived `nft -e -i` process, read the
// named counters and whole tables back, and watch the ruleset for changes made by anyone else
// (`nft monitor`). `NftCli` execs the real nft; `FakeNft` records what it was given and models
// just enough (tables, chains and their rules, sets, counters) for unit tests. Both pass the
// same contract tests.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { createInterface } from 'node:readline';
import { type Runner, localRunner } from './exec.js';
import { formatMark } from './mark.js';
import { names } from './render.js';
import { errorText } from '../core/error-text.js';
import { Serial } from '../core/serial.js';

/** The nftables address families, each of which has its own tables. */
export const nftFamilies = ['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev'] as const;
export type NftFamily = (typeof nftFamilies)[number];

/** A regular expression alternative that matches any family, as a capture group. */
const familyPattern = `(${nftFamilies.join('|')})`;

/** A table as nft names it: `table <family> <name>`. */
export interface NftTable {
  readonly family: NftFamily;
  readonly name: string;
}

export interface CounterValue {
  readonly packets: number;
  readonly bytes: number;
}

/** For calls that must not wait the default 10 s for a stuck nft (restoring a lost table). */
export interface NftCallOptions {
  readonly timeoutMs?: number;
}

/**
 * What a ruleset watch reports. nft monitor prints every committed transaction; the watch
 * passes on those that touch the watched table and that this adapter did not make itself
 * through `applyQuick` (those carry its marker). Whole-table `apply` calls are not told apart
 * from anyone else's: they are rare, and a listener that compares the kernel with what it
 * expects finds nothing wrong after them.
 */
export interface RulesetChange {
  /** nft monitor's first few lines of the transaction. */
  readonly lines: readonly string[];
  /** The watched tables it deleted and did not add again. */
  readonly deleted: readonly NftTable[];
}

export interface RulesetListener {
  /** A committed transaction touched the table. */
  change(change: RulesetChange): void;
  /** The watch sees every change from now on but may have missed some before: compare now. */
  resync(reason: string): void;
  /** The watch sees no changes until the next `resync`: compare by other means meanwhile. */
  blind(reason: string): void;
}

export interface Nft {
  /** Runs `script` as one transaction (`nft -f -`): all of it takes effect, or none. */
  apply(script: string, options?: NftCallOptions): Promise<void>;
  /**
   * Runs a one-line transaction (commands separated by ';') on `table inet <tableName>`, which
   * must have the rendered `sync` set, like `renderLeaseRefresh` and `renderOwnershipUpdate`
   * produce. Resolves once the kernel has committed it; all of it or none takes effect. Cheap
   * (~2 ms) when a long-lived nft process is available.
   */
  applyQuick(tableName: string, line: string): Promise<void>;
  /** `nft -j <args>`, parsed; e.g. ['list', 'counters', 'table', 'inet', 'nlb']. */
  listJson(args: readonly string[], options?: NftCallOptions): Promise<unknown>;
  /**
   * Watches the ruleset for changes to the tables named `tableName` (every family). The
   * listener starts blind: its first `resync` says the watch is live. Returns a function that
   * stops watching.
   */
  watch(tableName: string, listener: RulesetListener): () => void;
  /** Stops the long-lived processes (the interactive nft, the watches), if any. */
  close(): Promise<void>;
}

/** nft refused a script or a command; `stderr` has nft's own message with the offending line. */
export class NftError extends Error {
  constructor(
    readonly stderr: string,
    readonly script: string,
  ) {
    super(
      `nft rejected the transaction, nothing was changed: ${stderr.trim() || 'no error output'}`,
    );
    this.name = 'NftError';
  }
}

/** A one-line transaction answers in ~2 ms; 2 s means the nft process is stuck: restart it. */
export const quickTimeoutMsDefault = 2_000;
/** How long to keep collecting an error message after its first line arrived. */
const errorSettleMs = 20;

/** Markers expire on their own; one second is far longer than any transaction takes. */
const markerTimeout = '1s';

function assertTableName(what: string, tableName: string): void {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(tableName)) {
    throw new Error(`${what}: '${tableName}' is not a table name`);
  }
}

function assertQuickLine(tableName: string, line: string): void {
  if (line.includes('\n') || line.trim() === '') {
    throw new Error(`applyQuick: '${line.slice(0, 80)}' must be one non-empty line`);
  }
  assertTableName('applyQuick', tableName);
}

/**
 * One `nft -e -i` process. Echo mode prints the elements a committed transaction added, but
 * not reliably the rest (on nft 1.0.6 a transaction that starts with a delete or a flush prints
 * no `# new generation` line), so every transaction starts by adding a fresh marker element to
 * the table's `sync` set: its echo proves the commit, since the kernel only reports the changes
 * of a transaction that committed as a whole. A failed one prints `Error:` on stderr and nothing
 * on stdout. Commands go one at a time, so each answer belongs to the last command sent. After
 * an error or a timeout the process is killed and the next command starts a fresh one, so a
 * half-read error can never be blamed on a later command.
 */
class InteractiveNft {
  private readonly child: ChildProcessWithoutNullStreams;
  private stdout = '';
  private stderr = '';
  private pending:
    | { resolve: () => void; reject: (error: Error) => void; line: string; timer: NodeJS.Timeout }
    | undefined;
  private errorTimer: NodeJS.Timeout | undefined;
  private committed: RegExp | undefined;
  dead = false;

  constructor(
    child: ChildProcessWithoutNullStreams,
    private readonly timeoutMs: number,
  ) {
    this.child = child;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      this.stdout += text;
      if (this.committed?.test(this.stdout) === true) {
        this.settle(undefined);
      }
    });
    child.stderr.on('data', (text: string) => {
      this.stderr += text;
      // Only an error aborts a transaction; anything else on stderr is left for the next read.
      if (
        this.pending !== undefined &&
        this.errorTimer === undefined &&
        /Error:/.test(this.stderr)
      ) {
        this.errorTimer = setTimeout(() => {
          this.settle(new NftError(this.stderr, this.pending?.line ?? ''));
        }, errorSettleMs);
      }
    });
    child.stdin.on('error', () => {});
    child.on('error', (error) => this.die(error));
    child.on('close', () => this.die(new Error('the interactive nft process exited')));
  }

  run(line: string, committed: RegExp): Promise<void> {
    if (this.dead) {
      return Promise.reject(new Error('the interactive nft process is gone'));
    }
    this.stdout = '';
    this.stderr = '';
    this.committed = committed;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settle(new Error(`nft -i did not answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending = { resolve, reject, line, timer };
      this.child.stdin.write(`${line}\n`);
    });
  }

  private settle(error: Error | undefined): void {
    const pending = this.pending;
    if (pending === undefined) {
      return;
    }
    this.pending = undefined;
    clearTimeout(pending.timer);
    if (this.errorTimer !== undefined) {
      clearTimeout(this.errorTimer);
      this.errorTimer = undefined;
    }
    if (error === undefined) {
      pending.resolve();
    } else {
      this.kill();
      pending.reject(error);
    }
  }

  private die(error: Error): void {
    this.dead = true;
    this.settle(error);
  }

  kill(): void {
    this.dead = true;
    this.child.stdin.end();
    this.child.kill('SIGKILL');
  }
}

export interface NftCliOptions {
  readonly runner?: Runner;
  /** Use a long-lived `nft -e -i` for applyQuick (default true when the runner can spawn). */
  readonly interactive?: boolean;
  readonly quickTimeoutMs?: number;
  readonly nftPath?: string;
  /** How long a dead `nft monitor` waits before it is started again. */
  readonly monitorRestartMs?: number;
}

/** The markers of recent quick transactions, to tell them apart in the monitor's output. */
const ownMarkersMax = 1_024;

/** The real adapter: execs nft. */
export class NftCli implements Nft {
  private readonly runner: Runner;
  private readonly interactive: boolean;
  private readonly quickTimeoutMs: number;
  private readonly nftPath: string;
  private readonly monitorRestartMs: number;
  private session: InteractiveNft | undefined;
  /** applyQuick calls run one after another; each answer must match its command. */
  private readonly quickQueue = new Serial();
  /** How often the long-lived process failed and a one-shot `nft -f` stood in (for metrics). */
  quickFallbacks = 0;
  /** Starts anywhere, so a new process never meets a marker an earlier one left behind. */
  private marker = randomInt(1, 0x7fff_0000);
  /** Markers sent, oldest first; a Set keeps insertion order. */
  private readonly ownMarkers = new Set<string>();
  private readonly monitors = new Set<RulesetMonitor>();

  constructor(options: NftCliOptions = {}) {
    this.runner = options.runner ?? localRunner();
    this.interactive = (options.interactive ?? true) && this.runner.spawn !== undefined;
    this.quickTimeoutMs = options.quickTimeoutMs ?? quickTimeoutMsDefault;
    this.nftPath = options.nftPath ?? 'nft';
    this.monitorRestartMs = options.monitorRestartMs ?? monitorRestartMsDefault;
  }

  async apply(script: string, options: NftCallOptions = {}): Promise<void> {
    const result = await this.runner.run(this.nftPath, ['-f', '-'], {
      input: script,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    });
    if (result.code !== 0) {
      throw new NftError(result.stderr, script);
    }
  }

  applyQuick(tableName: string, line: string): Promise<void> {
    assertQuickLine(tableName, line);
    return this.quickQueue.run(() => this.runQuick(tableName, line));
  }

  private async runQuick(tableName: string, line: string): Promise<void> {
    if (!this.interactive) {
      return this.apply(line);
    }
    // Marker values are never reused while an earlier one may still be alive (1 s).
    this.marker = this.marker >= 0x7fff_ffff ? 1 : this.marker + 1;
    const marker = formatMark(this.marker);
    this.ownMarkers.add(marker);
    if (this.ownMarkers.size > ownMarkersMax) {
      this.ownMarkers.delete(this.ownMarkers.values().next().value!);
    }
    const set = `inet ${tableName} ${names.sync}`;
    const marked = `add element ${set} { ${marker} timeout ${markerTimeout} }; ${line}`;
    const committed = new RegExp(`^add element ${set} \\{ ${marker} `, 'm');
    if (this.session === undefined || this.session.dead) {
      this.session = new InteractiveNft(
        this.runner.spawn!(this.nftPath, ['-e', '-i']),
        this.quickTimeoutMs,
      );
    }
    try {
      await this.session.run(marked, committed);
    } catch (error) {
      if (error instanceof NftError) {
        throw error;
      }
      // The process died or hung: one whole `nft -f` still gets the change in.
      this.quickFallbacks++;
      return this.apply(line);
    }
  }

  async listJson(args: readonly string[], options: NftCallOptions = {}): Promise<unknown> {
    const result = await this.runner.run(
      this.nftPath,
      ['-j', ...args],
      options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs },
    );
    if (result.code !== 0) {
      throw new NftError(result.stderr, `nft -j ${args.join(' ')}`);
    }
    return JSON.parse(result.stdout) as unknown;
  }

  watch(tableName: string, listener: RulesetListener): () => void {
    assertTableName('watch', tableName);
    const spawn = this.runner.spawn;
    if (spawn === undefined) {
      listener.blind('this runner cannot start a long-lived nft monitor');
      return () => undefined;
    }
    // setpriv (util-linux) makes the kernel kill the monitor when nlbd dies, even by SIGKILL:
    // it reads nothing from nlbd, so unlike `nft -i` it would not notice, and in a namespace
    // nothing changes any more (a lab's, deleted) it would wait forever.
    const monitor = new RulesetMonitor(
      () => spawn('setpriv', ['--pdeathsig', 'KILL', '--', this.nftPath, 'monitor']),
      tableName,
      (marker) => this.ownMarkers.has(marker),
      listener,
      this.monitorRestartMs,
    );
    this.monitors.add(monitor);
    monitor.start();
    return () => {
      monitor.stop();
      this.monitors.delete(monitor);
    };
  }

  async close(): Promise<void> {
    for (const monitor of this.monitors) {
      monitor.stop();
    }
    this.monitors.clear();
    await this.quickQueue.idle();
    this.session?.kill();
    this.session = undefined;
  }
}

/** A monitor that died is started again after this; a watch is blind meanwhile. */
export const monitorRestartMsDefault = 1_000;
/** Lines of one transaction kept to describe it; a `flush ruleset` of a big ruleset has thousands. */
export const monitorLinesKeptMax = 20;
/** A line longer than this is not nft monitor's: it is cut, and its transaction counts as relevant. */
const monitorLineCharsMax = 64 * 1024;
/** Error output from a running monitor asks for a comparison at most this often. */
const monitorErrorResyncMs = 1_000;

/** One committed transaction as nft monitor printed it. */
export interface MonitorBatch {
  /** The first `monitorLinesKeptMax` lines. */
  readonly lines: readonly string[];
  readonly lineCount: number;
  /** It touched the watched table (or printed something that could not be read as a change). */
  readonly relevant: boolean;
  /** The `sync` markers it added to the watched table (quick transactions carry one). */
  readonly markers: readonly string[];
  /** The watched tables it deleted and did not add again. */
  readonly deleted: readonly NftTable[];
}

const monitorEventPattern = new RegExp(
  `^(?:add|delete|destroy|flush|insert|replace|update|reset) \\w+ ${familyPattern} (\\S+)`,
);

/**
 * Reads `nft monitor` output into transactions. nft 1.0.6 prints one line per object added or
 * deleted, then `# new generation N by process P (comm)` once the transaction committed; the
 * kernel serialises commits, so the lines between two generation lines are one transaction.
 * Expired set elements print nothing (checked on kernel 6.18).
 */
export class MonitorParser {
  private lines: string[] = [];
  private lineCount = 0;
  private relevant = false;
  private markers: string[] = [];
  /** The family of each watched table -> deleted (true) or added (false), last wins. */
  private tables = new Map<NftFamily, boolean>();
  private readonly markerPattern: RegExp;
  private readonly tablePattern: RegExp;

  constructor(private readonly tableName: string) {
    assertTableName('MonitorParser', tableName);
    this.markerPattern = new RegExp(
      `^add element inet ${tableName} ${names.sync} \\{ (0x[0-9a-f]{8})\\b`,
    );
    this.tablePattern = new RegExp(`^(add|delete) table ${familyPattern} ${tableName}$`);
  }

  /** Takes one line; returns the transaction it completes, if it is a generation line. */
  line(text: string): MonitorBatch | undefined {
    const line = text.length > monitorLineCharsMax ? text.slice(0, monitorLineCharsMax) : text;
    if (line.startsWith('# new generation')) {
      const batch: MonitorBatch = {
        lines: this.lines,
        lineCount: this.lineCount,
        relevant: this.relevant,
        markers: this.markers,
        deleted: [...this.tables]
          .filter(([, deleted]) => deleted)
          .map(([family]) => ({ family, name: this.tableName })),
      };
      this.lines = [];
      this.lineCount = 0;
      this.relevant = false;
      this.markers = [];
      this.tables = new Map();
      return batch;
    }
    if (line.trim() === '') {
      return undefined;
    }
    this.lineCount++;
    if (this.lines.length < monitorLinesKeptMax) {
      this.lines.push(line);
    }
    const event = monitorEventPattern.exec(line);
    if (event === null || event[2] === this.tableName || line !== text) {
      this.relevant = true;
    }
    const marker = this.markerPattern.exec(line);
    if (marker !== null) {
      this.markers.push(marker[1]!);
    }
    // nlbd's own whole-table apply deletes the table and adds it again in one transaction.
    const table = this.tablePattern.exec(line);
    if (table !== null) {
      this.tables.set(table[2] as NftFamily, table[1] === 'delete');
    }
    return undefined;
  }
}

/**
 * One long-lived `nft monitor`, restarted when it dies. It is live, and says so with `resync`,
 * once it printed its first transaction: only then is it surely subscribed (nft prints nothing
 * when it starts), and the nlbd that owns it refreshes its lease every heartbeat period, so that
 * happens within one period. Costs nothing while the ruleset does not change; a few lines per
 * lease refresh otherwise.
 */
class RulesetMonitor {
  private child: ChildProcessWithoutNullStreams | undefined;
  private stopped = false;
  private live = false;
  private started = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private stderr = '';
  private lastErrorResyncMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly spawn: () => ChildProcessWithoutNullStreams,
    private readonly tableName: string,
    private readonly isOwn: (marker: string) => boolean,
    private readonly listener: RulesetListener,
    private readonly restartMs: number,
  ) {}

  start(): void {
    if (this.stopped) {
      return;
    }
    this.started++;
    this.live = false;
    this.stderr = '';
    const parser = new MonitorParser(this.tableName);
    let child: ChildProcessWithoutNullStreams;
    try {
      child = this.spawn();
    } catch (error) {
      this.died(`could not start: ${errorText(error)}`);
      return;
    }
    this.child = child;
    child.stdin.on('error', () => {});
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    createInterface({ input: child.stdout, crlfDelay: Infinity }).on('line', (line) => {
      if (this.child !== child) return;
      const batch = parser.line(line);
      if (batch !== undefined) this.transaction(batch);
    });
    child.stderr.on('data', (text: string) => {
      if (this.child !== child) return;
      this.stderr = `${this.stderr}${text}`.slice(-2_000);
      // A monitor that reports an error (e.g. its socket overran) may have missed changes.
      const nowMs = performance.now();
      if (this.live && nowMs - this.lastErrorResyncMs >= monitorErrorResyncMs) {
        this.lastErrorResyncMs = nowMs;
        this.listener.resync(`nft monitor reported: ${text.trim().slice(0, 200)}`);
      }
    });
    child.on('error', (error) => {
      if (this.child === child) this.died(error.message);
    });
    child.on('close', (code, signal) => {
      if (this.child === child) this.died(`exited (${signal ?? `code ${code}`})`);
    });
  }

  private transaction(batch: MonitorBatch): void {
    if (!this.live) {
      this.live = true;
      this.listener.resync(this.started === 1 ? 'nft monitor started' : 'nft monitor restarted');
    }
    if (batch.relevant && !batch.markers.some((marker) => this.isOwn(marker))) {
      this.listener.change({ lines: batch.lines, deleted: batch.deleted });
    }
  }

  private died(problem: string): void {
    this.child = undefined;
    if (this.stopped) {
      return;
    }
    this.live = false;
    const stderr = this.stderr.trim();
    this.listener.blind(
      `nft monitor ${problem}${stderr === '' ? '' : `: ${stderr.slice(-200)}`}; restarting in ${this.restartMs} ms`,
    );
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.start();
    }, this.restartMs);
    this.restartTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.restartTimer !== undefined) clearTimeout(this.restartTimer);
    const child = this.child;
    this.child = undefined;
    if (child !== undefined) {
      child.stdin.end();
      child.kill('SIGKILL');
    }
  }
}

/** `nft -j list table <family> <name>`: the whole table, parsed. */
export function listTable(
  nft: Nft,
  table: NftTable,
  options: NftCallOptions = {},
): Promise<unknown> {
  return nft.listJson(['list', 'table', table.family, table.name], options);
}

/** The named counters of `table inet <tableName>`, by name. */
export async function readCounters(
  nft: Nft,
  tableName: string,
): Promise<Map<string, CounterValue>> {
  const json = await nft.listJson(['list', 'counters', 'table', 'inet', tableName]);
  return parseCounters(json);
}

/** Parses `nft -j list counters` output: `{ nftables: [ { counter: { name, packets, bytes } } ] }`. */
export function parseCounters(json: unknown): Map<string, CounterValue> {
  const counters = new Map<string, CounterValue>();
  const items = (json as { nftables?: unknown } | null)?.nftables;
  if (!Array.isArray(items)) {
    throw new Error('nft -j output has no "nftables" array; is this nftables >= 0.9?');
  }
  for (const item of items) {
    const counter = (item as { counter?: { name?: unknown; packets?: unknown; bytes?: unknown } })
      .counter;
    if (
      counter !== undefined &&
      typeof counter.name === 'string' &&
      typeof counter.packets === 'number' &&
      typeof counter.bytes === 'number'
    ) {
      counters.set(counter.name, { packets: counter.packets, bytes: counter.bytes });
    }
  }
  return counters;
}

export interface RecordedScript {
  readonly kind: 'apply' | 'quick';
  readonly script: string;
}

interface FakeSet {
  readonly handle: number;
  flags: string | undefined;
  /** Element keys. Timeouts are not modelled: elements never expire. */
  readonly elements: Set<number>;
}

interface FakeChain {
  readonly handle: number;
  /** The base chain's `type ... hook ...` line, or undefined for a regular chain. */
  hook: string | undefined;
  rules: { readonly handle: number; readonly text: string }[];
}

interface FakeTable {
  readonly handle: number;
  readonly sets: Map<string, FakeSet>;
  readonly counters: Map<string, { readonly handle: number; value: CounterValue }>;
  readonly chains: Map<string, FakeChain>;
}

function cloneTable(table: FakeTable): FakeTable {
  return {
    handle: table.handle,
    sets: new Map(
      [...table.sets].map(([name, set]) => [name, { ...set, elements: new Set(set.elements) }]),
    ),
    counters: new Map([...table.counters].map(([name, counter]) => [name, { ...counter }])),
    chains: new Map(
      [...table.chains].map(([name, chain]) => [name, { ...chain, rules: [...chain.rules] }]),
    ),
  };
}

/** The keys of `{ 0, 3 }` or `{ 0xffffffff timeout 800ms }`. */
function elementKeys(list: string): number[] {
  return list
    .split(',')
    .map((element) => element.trim().split(/\s+/)[0] ?? '')
    .filter((key) => key !== '')
    .map(Number);
}

/**
 * The tables named `tableName` that `script` deleted last, as nft monitor reports them: a table
 * deleted and added again is not deleted; one added and deleted again is, existing or not.
 */
function deletedTables(
  script: string,
  before: ReadonlyMap<string, unknown>,
  tableName: string,
): NftTable[] {
  const last = new Map<string, boolean>();
  for (const line of script.split('\n').map((l) => l.trim())) {
    let match: RegExpExecArray | null;
    if (line === 'flush ruleset') {
      for (const key of before.keys()) last.set(key, true);
    } else if ((match = new RegExp(`^(add|delete) table ${familyPattern} (\\w+)$`).exec(line))) {
      last.set(`${match[2]} ${match[3]}`, match[1] === 'delete');
    } else if ((match = new RegExp(`^table ${familyPattern} (\\w+) \\{$`).exec(line))) {
      last.set(`${match[1]} ${match[2]}`, false);
    }
  }
  return [...last]
    .filter(([key, deleted]) => deleted && key.endsWith(` ${tableName}`))
    .map(([key]) => ({ family: key.split(' ')[0] as NftFamily, name: tableName }));
}

/**
 * The fake: records every script and models what the data plane relies on (tables of any
 * family, their chains with their rules as text, their sets with their elements, their named
 * counters), so it answers counter reads and table listings, and rejects what nft would reject
 * here: a command on a missing table, chain, set or rule, deleting a missing element or table.
 * A failing script changes nothing, as a real transaction. `foreign` changes the ruleset as
 * another program would (`nft flush ruleset`, a rule deleted by hand), which its watches report.
 */
export class FakeNft implements Nft {
  readonly scripts: RecordedScript[] = [];
  /** Tables by `<family> <name>`. */
  private tables = new Map<string, FakeTable>();
  private failure: string | undefined;
  private broken: Error | undefined;
  private nextHandle = 1;
  private readonly watches = new Set<{ tableName: string; listener: RulesetListener }>();

  /** The next apply or applyQuick fails with this nft error message and changes nothing. */
  failNext(stderr: string): void {
    this.failure = stderr;
  }

  /**
   * From now on every call fails (an nft error with this message, or this error, e.g. a
   * timeout) and changes nothing, as a broken or stuck nft binary; undefined mends it.
   */
  breakNft(failure: string | Error | undefined): void {
    this.broken =
      failure === undefined || failure instanceof Error ? failure : new NftError(failure, '');
  }

  /** Sets a counter's value, as traffic would. */
  setCounter(tableName: string, name: string, value: CounterValue): void {
    const counter = this.tables.get(`inet ${tableName}`)?.counters.get(name);
    if (counter === undefined) {
      throw new Error(`FakeNft.setCounter: no counter ${name} in table inet ${tableName}`);
    }
    counter.value = value;
  }

  /** The elements of a set, sorted; undefined when the table or set does not exist. */
  elements(tableName: string, set: string, family = 'inet'): number[] | undefined {
    const elements = this.tables.get(`${family} ${tableName}`)?.sets.get(set)?.elements;
    return elements === undefined ? undefined : [...elements].sort((a, b) => a - b);
  }

  /** The rules of a chain as text, in order; undefined when the table or chain does not exist. */
  rules(tableName: string, chain: string, family = 'inet'): string[] | undefined {
    return this.tables
      .get(`${family} ${tableName}`)
      ?.chains.get(chain)
      ?.rules.map((rule) => rule.text);
  }

  /** The tables, as `<family> <name>`, sorted. */
  tableNames(): string[] {
    return [...this.tables.keys()].sort();
  }

  apply(script: string, _options: NftCallOptions = {}): Promise<void> {
    this.scripts.push({ kind: 'apply', script });
    return this.take(script, (tables) => this.run(tables, script), 'report');
  }

  /**
   * Runs `script` as another program would: not recorded, not failed by failNext or breakNft
   * (that program's nft works), and reported to the watches.
   */
  foreign(script: string): Promise<void> {
    return this.take(script, (tables) => this.run(tables, script), 'foreign');
  }

  private run(tables: Map<string, FakeTable>, script: string): void {
    let table: FakeTable | undefined;
    let set: FakeSet | undefined;
    let chain: FakeChain | undefined;
    let match: RegExpExecArray | null;
    for (const line of script.split('\n').map((l) => l.trim())) {
      if (line === '' || line.startsWith('#')) {
        continue;
      }
      if (set !== undefined) {
        if (line === '}') {
          set = undefined;
        } else if ((match = /^elements = \{ (.*) \}$/.exec(line)) !== null) {
          elementKeys(match[1]!).forEach((key) => set!.elements.add(key));
        } else if ((match = /^flags (.+)$/.exec(line)) !== null) {
          set.flags = match[1]!;
        }
      } else if (chain !== undefined) {
        if (line === '}') {
          chain = undefined;
        } else if (/^type \w+ hook /.test(line)) {
          chain.hook = line;
        } else {
          chain.rules.push({ handle: this.nextHandle++, text: line });
        }
      } else if (table !== undefined) {
        if (line === '}') {
          table = undefined;
        } else if ((match = /^set (\w+) \{$/.exec(line)) !== null) {
          set = table.sets.get(match[1]!) ?? {
            handle: this.nextHandle++,
            flags: undefined,
            elements: new Set(),
          };
          table.sets.set(match[1]!, set);
        } else if ((match = /^counter (\w+) \{\}$/.exec(line)) !== null) {
          table.counters.set(match[1]!, {
            handle: this.nextHandle++,
            value: { packets: 0, bytes: 0 },
          });
        } else if ((match = /^chain (\w+) \{$/.exec(line)) !== null) {
          chain = table.chains.get(match[1]!) ?? {
            handle: this.nextHandle++,
            hook: undefined,
            rules: [],
          };
          table.chains.set(match[1]!, chain);
        } else {
          throw new Error(`FakeNft: '${line}' in a table block is not modelled`);
        }
      } else if ((match = new RegExp(`^table ${familyPattern} (\\w+) \\{$`).exec(line)) !== null) {
        table = this.table(tables, `${match[1]} ${match[2]}`, true);
      } else {
        for (const command of line.split(';')) {
          if (command.trim() !== '') this.command(tables, command.trim(), script);
        }
      }
    }
  }

  applyQuick(tableName: string, line: string): Promise<void> {
    assertQuickLine(tableName, line);
    this.scripts.push({ kind: 'quick', script: line });
    return this.take(
      line,
      (tables) => {
        if (!tables.get(`inet ${tableName}`)?.sets.has(names.sync)) {
          throw new NftError(`Error: No such file or directory (no set ${names.sync})`, line);
        }
        for (const command of line.split(';')) {
          this.command(tables, command.trim(), line);
        }
      },
      'own',
    );
  }

  private table(tables: Map<string, FakeTable>, key: string, create: boolean): FakeTable {
    let table = tables.get(key);
    if (table === undefined && create) {
      table = {
        handle: this.nextHandle++,
        sets: new Map(),
        counters: new Map(),
        chains: new Map(),
      };
      tables.set(key, table);
    }
    if (table === undefined) {
      throw new NftError(`Error: No such file or directory (no table ${key})`, '');
    }
    return table;
  }

  /** One command outside a table block. */
  private command(tables: Map<string, FakeTable>, command: string, script: string): void {
    const missing = (): NftError =>
      new NftError(`Error: Could not process rule: No such file or directory\n${command}`, script);
    const chainOf = (family: string, name: string, chain: string): FakeChain => {
      const found = tables.get(`${family} ${name}`)?.chains.get(chain);
      if (found === undefined) throw missing();
      return found;
    };
    let match: RegExpExecArray | null;
    if (command === 'flush ruleset') {
      tables.clear();
    } else if ((match = new RegExp(`^(add|delete) table ${familyPattern} (\\w+)$`).exec(command))) {
      const key = `${match[2]} ${match[3]}`;
      if (match[1] === 'add') {
        this.table(tables, key, true);
      } else if (!tables.delete(key)) {
        throw missing();
      }
    } else if (
      (match = new RegExp(
        `^(add element|delete element|flush set) ${familyPattern} (\\w+) (\\w+)(?: \\{ (.*) \\})?$`,
      ).exec(command))
    ) {
      const set = tables.get(`${match[2]} ${match[3]}`)?.sets.get(match[4]!)?.elements;
      if (set === undefined) throw missing();
      const keys = elementKeys(match[5] ?? '');
      if (match[1] === 'flush set') {
        set.clear();
      } else if (match[1] === 'add element') {
        keys.forEach((key) => set.add(key));
      } else {
        if (keys.some((key) => !set.has(key))) throw missing();
        keys.forEach((key) => set.delete(key));
      }
    } else if ((match = new RegExp(`^flush chain ${familyPattern} (\\w+) (\\w+)$`).exec(command))) {
      chainOf(match[1]!, match[2]!, match[3]!).rules = [];
    } else if (
      (match = new RegExp(`^delete rule ${familyPattern} (\\w+) (\\w+) handle (\\d+)$`).exec(
        command,
      ))
    ) {
      const chain = chainOf(match[1]!, match[2]!, match[3]!);
      const handle = Number(match[4]);
      if (!chain.rules.some((rule) => rule.handle === handle)) throw missing();
      chain.rules = chain.rules.filter((rule) => rule.handle !== handle);
    } else if (
      (match = new RegExp(`^(add|insert) rule ${familyPattern} (\\w+) (\\w+) (.+)$`).exec(command))
    ) {
      const chain = chainOf(match[2]!, match[3]!, match[4]!);
      const rule = { handle: this.nextHandle++, text: match[5]! };
      chain.rules = match[1] === 'add' ? [...chain.rules, rule] : [rule, ...chain.rules];
    } else {
      throw new Error(`FakeNft: '${command}' is not modelled`);
    }
  }

  /**
   * Runs `change` on a copy and keeps it only when it succeeds: transactions are atomic. A
   * committed change other than an applyQuick (`own`) is told to the watches of the tables it
   * names, as nft monitor does.
   */
  private take(
    script: string,
    change: (tables: Map<string, FakeTable>) => void,
    kind: 'own' | 'report' | 'foreign',
  ): Promise<void> {
    if (kind !== 'foreign') {
      if (this.broken !== undefined) {
        return Promise.reject(this.broken);
      }
      const failure = this.failure;
      this.failure = undefined;
      if (failure !== undefined) {
        return Promise.reject(new NftError(failure, script));
      }
    }
    const before = this.tables;
    const copy = new Map([...this.tables].map(([name, table]) => [name, cloneTable(table)]));
    try {
      change(copy);
      this.tables = copy;
    } catch (error) {
      return Promise.reject(error as Error);
    }
    if (kind !== 'own') {
      const lines = script
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '' && !l.startsWith('#'))
        .slice(0, monitorLinesKeptMax);
      // As nft monitor, a moment after the change: the caller has its answer first.
      for (const entry of [...this.watches]) {
        const { tableName, listener } = entry;
        if (
          new RegExp(`(^|\\s)${familyPattern} ${tableName}\\b|^flush ruleset`, 'm').test(script)
        ) {
          const change = { lines, deleted: deletedTables(script, before, tableName) };
          setImmediate(() => {
            if (this.watches.has(entry)) listener.change(change);
          });
        }
      }
    }
    return Promise.resolve();
  }

  listJson(args: readonly string[], _options: NftCallOptions = {}): Promise<unknown> {
    if (this.broken !== undefined) {
      return Promise.reject(this.broken);
    }
    const [verb, what, third, fourth, fifth] = args;
    const counters = verb === 'list' && what === 'counters' && third === 'table';
    const whole = verb === 'list' && what === 'table';
    if (!counters && !whole) {
      return Promise.reject(new Error(`FakeNft.listJson: '${args.join(' ')}' is not modelled`));
    }
    const family = (counters ? fourth : third) ?? '';
    const name = (counters ? fifth : fourth) ?? '';
    const table = this.tables.get(`${family} ${name}`);
    if (table === undefined) {
      return Promise.reject(
        new NftError(`Error: No such file or directory\n${args.join(' ')}`, args.join(' ')),
      );
    }
    const items: unknown[] = [{ metainfo: { version: 'fake', json_schema_version: 1 } }];
    if (whole) {
      items.push({ table: { family, name, handle: table.handle } });
    }
    for (const [counter, { handle, value }] of table.counters) {
      items.push({ counter: { family, name: counter, table: name, handle, ...value } });
    }
    if (whole) {
      for (const [set, { handle, flags, elements }] of table.sets) {
        items.push({
          set: {
            family,
            name: set,
            table: name,
            type: 'mark',
            handle,
            ...(flags === undefined ? {} : { flags: [flags] }),
            ...(elements.size === 0 ? {} : { elem: [...elements].sort((a, b) => a - b) }),
          },
        });
      }
      for (const [chain, { handle, hook }] of table.chains) {
        items.push({
          chain: {
            family,
            table: name,
            name: chain,
            handle,
            ...(hook === undefined ? {} : { hook }),
          },
        });
      }
      for (const [chain, { rules }] of table.chains) {
        for (const rule of rules) {
          items.push({
            rule: { family, table: name, chain, handle: rule.handle, expr: [{ fake: rule.text }] },
          });
        }
      }
    }
    return Promise.resolve({ nftables: items });
  }

  watch(tableName: string, listener: RulesetListener): () => void {
    assertTableName('watch', tableName);
    const entry = { tableName, listener };
    this.watches.add(entry);
    // As the real monitor, live only after the call returned.
    queueMicrotask(() => {
      if (this.watches.has(entry)) listener.resync('fake monitor started');
    });
    return () => {
      this.watches.delete(entry);
    };
  }

  /** Tells every watch it went blind, as when nft monitor dies; `resync` makes them live again. */
  blindWatches(reason: string): void {
    for (const { listener } of this.watches) listener.blind(reason);
  }

  resyncWatches(reason: string): void {
    for (const { listener } of this.watches) listener.resync(reason);
  }

  close(): Promise<void> {
    this.watches.clear();
    return Promise.resolve();
  }
}
