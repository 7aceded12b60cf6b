// The nftables adapter: apply a rendered script as one transaction, run one-line transactions
// (lease refresh, ownership set changes) cheaply on a long-lived `nft -e -i` process, and read
// the named counters back. `NftCli` execs the real nft; `FakeNft` records what it was given and
// models just enough (table, sets, counters) for unit tests. Both pass the same contract tests.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { type Runner, localRunner } from './exec.js';
import { formatMark } from './mark.js';
import { names } from './render.js';

export interface CounterValue {
  readonly packets: number;
  readonly bytes: number;
}

export interface Nft {
  /** Runs `script` as one transaction (`nft -f -`): all of it takes effect, or none. */
  apply(script: string): Promise<void>;
  /**
   * Runs a one-line transaction (commands separated by ';') on `table inet <tableName>`, which
   * must have the rendered `sync` set, like `renderLeaseRefresh` and `renderOwnershipUpdate`
   * produce. Resolves once the kernel has committed it; all of it or none takes effect. Cheap
   * (~2 ms) when a long-lived nft process is available.
   */
  applyQuick(tableName: string, line: string): Promise<void>;
  /** `nft -j <args>`, parsed; e.g. ['list', 'counters', 'table', 'inet', 'nlb']. */
  listJson(args: readonly string[]): Promise<unknown>;
  /** Stops the long-lived process, if any. */
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

function assertQuickLine(tableName: string, line: string): void {
  if (line.includes('\n') || line.trim() === '') {
    throw new Error(`applyQuick: '${line.slice(0, 80)}' must be one non-empty line`);
  }
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(tableName)) {
    throw new Error(`applyQuick: '${tableName}' is not a table name`);
  }
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
}

/** The real adapter: execs nft. */
export class NftCli implements Nft {
  private readonly runner: Runner;
  private readonly interactive: boolean;
  private readonly quickTimeoutMs: number;
  private readonly nftPath: string;
  private session: InteractiveNft | undefined;
  /** applyQuick calls run one after another; each answer must match its command. */
  private queue: Promise<unknown> = Promise.resolve();
  /** How often the long-lived process failed and a one-shot `nft -f` stood in (for metrics). */
  quickFallbacks = 0;
  /** Starts anywhere, so a new process never meets a marker an earlier one left behind. */
  private marker = randomInt(1, 0x7fff_0000);

  constructor(options: NftCliOptions = {}) {
    this.runner = options.runner ?? localRunner();
    this.interactive = (options.interactive ?? true) && this.runner.spawn !== undefined;
    this.quickTimeoutMs = options.quickTimeoutMs ?? quickTimeoutMsDefault;
    this.nftPath = options.nftPath ?? 'nft';
  }

  async apply(script: string): Promise<void> {
    const result = await this.runner.run(this.nftPath, ['-f', '-'], { input: script });
    if (result.code !== 0) {
      throw new NftError(result.stderr, script);
    }
  }

  applyQuick(tableName: string, line: string): Promise<void> {
    assertQuickLine(tableName, line);
    const run = this.queue.then(() => this.runQuick(tableName, line));
    this.queue = run.catch(() => {});
    return run;
  }

  private async runQuick(tableName: string, line: string): Promise<void> {
    if (!this.interactive) {
      return this.apply(line);
    }
    // Marker values are never reused while an earlier one may still be alive (1 s).
    this.marker = this.marker >= 0x7fff_ffff ? 1 : this.marker + 1;
    const marker = formatMark(this.marker);
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

  async listJson(args: readonly string[]): Promise<unknown> {
    const result = await this.runner.run(this.nftPath, ['-j', ...args]);
    if (result.code !== 0) {
      throw new NftError(result.stderr, `nft -j ${args.join(' ')}`);
    }
    return JSON.parse(result.stdout) as unknown;
  }

  async close(): Promise<void> {
    await this.queue;
    this.session?.kill();
    this.session = undefined;
  }
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

interface FakeTable {
  /** Set name -> element keys. Timeouts are not modelled: elements never expire. */
  readonly sets: Map<string, Set<number>>;
  readonly counters: Map<string, CounterValue>;
}

function cloneTable(table: FakeTable): FakeTable {
  return {
    sets: new Map([...table.sets].map(([name, elements]) => [name, new Set(elements)])),
    counters: new Map(table.counters),
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
 * The fake: records every script and models what the data plane relies on (the `inet` tables,
 * their sets with their elements, their named counters), so it answers counter reads and
 * rejects what nft would reject here: a command on a missing table or set, deleting a missing
 * element or table. A failing script changes nothing, as a real transaction.
 */
export class FakeNft implements Nft {
  readonly scripts: RecordedScript[] = [];
  private tables = new Map<string, FakeTable>();
  private failure: string | undefined;

  /** The next apply or applyQuick fails with this nft error message and changes nothing. */
  failNext(stderr: string): void {
    this.failure = stderr;
  }

  /** Sets a counter's value, as traffic would. */
  setCounter(tableName: string, name: string, value: CounterValue): void {
    const counters = this.tables.get(tableName)?.counters;
    if (counters === undefined || !counters.has(name)) {
      throw new Error(`FakeNft.setCounter: no counter ${name} in table inet ${tableName}`);
    }
    counters.set(name, value);
  }

  /** The elements of a set, sorted; undefined when the table or set does not exist. */
  elements(tableName: string, set: string): number[] | undefined {
    const elements = this.tables.get(tableName)?.sets.get(set);
    return elements === undefined ? undefined : [...elements].sort((a, b) => a - b);
  }

  apply(script: string): Promise<void> {
    this.scripts.push({ kind: 'apply', script });
    return this.take(script, (tables) => {
      let current: FakeTable | undefined;
      let set: Set<number> | undefined;
      let depth = 0;
      for (const line of script.split('\n').map((l) => l.trim())) {
        let match: RegExpExecArray | null;
        if (line === '' || line.startsWith('#')) {
          continue;
        }
        if (depth === 0) {
          if ((match = /^table (\w+) (\w+) \{$/.exec(line)) !== null) {
            depth = 1;
            current = undefined;
            if (match[1] === 'inet') {
              current = tables.get(match[2]!) ?? { sets: new Map(), counters: new Map() };
              tables.set(match[2]!, current);
            }
          } else if ((match = /^add table inet (\w+)$/.exec(line)) !== null) {
            if (!tables.has(match[1]!)) {
              tables.set(match[1]!, { sets: new Map(), counters: new Map() });
            }
          } else if ((match = /^delete table inet (\w+)$/.exec(line)) !== null) {
            if (!tables.delete(match[1]!)) {
              throw new NftError(`Error: No such file or directory\n${line}`, script);
            }
          } else {
            this.command(tables, line, script);
          }
          continue;
        }
        if (depth === 1 && current !== undefined) {
          if ((match = /^set (\w+) \{$/.exec(line)) !== null) {
            set = current.sets.get(match[1]!) ?? new Set();
            current.sets.set(match[1]!, set);
          } else if ((match = /^counter (\w+) \{\}$/.exec(line)) !== null) {
            current.counters.set(match[1]!, { packets: 0, bytes: 0 });
          }
        } else if (set !== undefined && (match = /^elements = \{ (.*) \}$/.exec(line)) !== null) {
          elementKeys(match[1]!).forEach((key) => set!.add(key));
        }
        if (line.endsWith('{') && !line.endsWith('{}')) {
          depth++;
        } else if (line === '}') {
          depth--;
          set = undefined;
        }
      }
    });
  }

  applyQuick(tableName: string, line: string): Promise<void> {
    assertQuickLine(tableName, line);
    this.scripts.push({ kind: 'quick', script: line });
    return this.take(line, (tables) => {
      if (!tables.get(tableName)?.sets.has(names.sync)) {
        throw new NftError(`Error: No such file or directory (no set ${names.sync})`, line);
      }
      for (const command of line.split(';')) {
        this.command(tables, command.trim(), line);
      }
    });
  }

  /** Set commands; anything else in a one-line transaction is not modelled. */
  private command(tables: Map<string, FakeTable>, command: string, script: string): void {
    const match = /^(add element|delete element|flush set) inet (\w+) (\w+)(?: \{ (.*) \})?$/.exec(
      command,
    );
    const missing = (): NftError =>
      new NftError(`Error: Could not process rule: No such file or directory\n${command}`, script);
    if (match === null) {
      if (/^(add|delete) table \w+ \w+$/.test(command)) {
        return;
      }
      throw new Error(`FakeNft: '${command}' is not modelled`);
    }
    const set = tables.get(match[2]!)?.sets.get(match[3]!);
    if (set === undefined) {
      throw missing();
    }
    const keys = elementKeys(match[4] ?? '');
    if (match[1] === 'flush set') {
      set.clear();
    } else if (match[1] === 'add element') {
      keys.forEach((key) => set.add(key));
    } else {
      if (keys.some((key) => !set.has(key))) {
        throw missing();
      }
      keys.forEach((key) => set.delete(key));
    }
  }

  /** Runs `change` on a copy and keeps it only when it succeeds: transactions are atomic. */
  private take(script: string, change: (tables: Map<string, FakeTable>) => void): Promise<void> {
    const failure = this.failure;
    this.failure = undefined;
    if (failure !== undefined) {
      return Promise.reject(new NftError(failure, script));
    }
    const copy = new Map([...this.tables].map(([name, table]) => [name, cloneTable(table)]));
    try {
      change(copy);
      this.tables = copy;
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  listJson(args: readonly string[]): Promise<unknown> {
    const [verb, what, kind, family, name] = args;
    if (verb !== 'list' || what !== 'counters' || kind !== 'table' || family !== 'inet') {
      return Promise.reject(new Error(`FakeNft.listJson: '${args.join(' ')}' is not modelled`));
    }
    const table = this.tables.get(name ?? '');
    if (table === undefined) {
      return Promise.reject(
        new NftError(`Error: No such file or directory\nlist counters table inet ${name}`, ''),
      );
    }
    const items: unknown[] = [{ metainfo: { version: 'fake', json_schema_version: 1 } }];
    for (const [counter, value] of table.counters) {
      items.push({ counter: { family: 'inet', name: counter, table: name, ...value } });
    }
    return Promise.resolve({ nftables: items });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
