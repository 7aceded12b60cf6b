// The nftables adapter: apply a rendered script as one transaction, run one-line transactions
// (lease refresh, owned/orphan set changes) cheaply on a long-lived `nft -e -i` process, and read
// the named counters back. `NftCli` execs the real nft; `FakeNft` records what it was given and
// models just enough (table, sets, counters) for unit tests. Both pass the same contract tests.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { type Runner, localRunner } from './exec.js';

export interface CounterValue {
  readonly packets: number;
  readonly bytes: number;
}

export interface Nft {
  /** Runs `script` as one transaction (`nft -f -`): all of it takes effect, or none. */
  apply(script: string): Promise<void>;
  /**
   * Runs a one-line transaction (commands separated by ';') that ends with an `add element`,
   * like `renderLeaseRefresh` and `renderOwnershipUpdate` produce. Resolves once the kernel has
   * committed it. Cheap (~2 ms) when a long-lived nft process is available.
   */
  applyQuick(line: string): Promise<void>;
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

function assertQuickLine(line: string): void {
  if (line.includes('\n') || !/(^|;)\s*add element [^;]+$/.test(line)) {
    throw new Error(
      `applyQuick: '${line.slice(0, 80)}' must be one line ending with an 'add element' command`,
    );
  }
}

/**
 * One `nft -e -i` process. With echo on, a committed transaction that adds an element prints
 * that element and then `# new generation N by process P (nft)`; a failed one prints `Error:`
 * on stderr and nothing on stdout. Commands are sent one at a time, so each answer belongs to
 * the last command sent. After an error or a timeout the process is killed and the next
 * command starts a fresh one, so a half-read error can never be blamed on a later command.
 */
class InteractiveNft {
  private readonly child: ChildProcessWithoutNullStreams;
  private stdout = '';
  private stderr = '';
  private pending:
    | { resolve: () => void; reject: (error: Error) => void; line: string; timer: NodeJS.Timeout }
    | undefined;
  private errorTimer: NodeJS.Timeout | undefined;
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
      if (/^# new generation \d+/m.test(this.stdout)) {
        this.settle(undefined);
      }
    });
    child.stderr.on('data', (text: string) => {
      this.stderr += text;
      if (this.pending !== undefined && this.errorTimer === undefined) {
        this.errorTimer = setTimeout(() => {
          this.settle(new NftError(this.stderr, this.pending?.line ?? ''));
        }, errorSettleMs);
      }
    });
    child.stdin.on('error', () => {});
    child.on('error', (error) => this.die(error));
    child.on('close', () => this.die(new Error('the interactive nft process exited')));
  }

  run(line: string): Promise<void> {
    if (this.dead) {
      return Promise.reject(new Error('the interactive nft process is gone'));
    }
    this.stdout = '';
    this.stderr = '';
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

  applyQuick(line: string): Promise<void> {
    assertQuickLine(line);
    const run = this.queue.then(() => this.runQuick(line));
    this.queue = run.catch(() => {});
    return run;
  }

  private async runQuick(line: string): Promise<void> {
    if (!this.interactive) {
      return this.apply(line);
    }
    if (this.session === undefined || this.session.dead) {
      this.session = new InteractiveNft(
        this.runner.spawn!(this.nftPath, ['-e', '-i']),
        this.quickTimeoutMs,
      );
    }
    try {
      await this.session.run(line);
    } catch (error) {
      if (error instanceof NftError) {
        throw error;
      }
      // The process died or hung: one whole `nft -f` still gets the change in.
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

/**
 * The fake: records every script, and models the `inet` table's existence, set names and named
 * counters from the last whole script applied, so it answers counter reads and rejects commands
 * naming a set that is not there, as nft would.
 */
export class FakeNft implements Nft {
  readonly scripts: RecordedScript[] = [];
  private tables = new Map<string, { sets: Set<string>; counters: Map<string, CounterValue> }>();
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

  apply(script: string): Promise<void> {
    this.scripts.push({ kind: 'apply', script });
    return this.take(script, () => this.model(script));
  }

  applyQuick(line: string): Promise<void> {
    assertQuickLine(line);
    this.scripts.push({ kind: 'quick', script: line });
    return this.take(line, () => {
      for (const match of line.matchAll(/(?:set|element) inet (\w+) (\w+)/g)) {
        if (!this.tables.get(match[1]!)?.sets.has(match[2]!)) {
          throw new NftError(`Error: No such file or directory\n${line}`, line);
        }
      }
    });
  }

  private take(script: string, change: () => void): Promise<void> {
    const failure = this.failure;
    this.failure = undefined;
    if (failure !== undefined) {
      return Promise.reject(new NftError(failure, script));
    }
    try {
      change();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  /** Replays the table-level commands of a whole script: add, delete, and a table block. */
  private model(script: string): void {
    const tables = new Map(this.tables);
    let current: { sets: Set<string>; counters: Map<string, CounterValue> } | undefined;
    for (const line of script.split('\n').map((l) => l.trim())) {
      let match: RegExpExecArray | null;
      if ((match = /^add table inet (\w+)$/.exec(line)) !== null) {
        if (!tables.has(match[1]!)) {
          tables.set(match[1]!, { sets: new Set(), counters: new Map() });
        }
      } else if ((match = /^delete table inet (\w+)$/.exec(line)) !== null) {
        if (!tables.delete(match[1]!)) {
          throw new NftError(`Error: No such file or directory\n${line}`, script);
        }
      } else if ((match = /^table inet (\w+) \{$/.exec(line)) !== null) {
        current = tables.get(match[1]!) ?? { sets: new Set(), counters: new Map() };
        tables.set(match[1]!, current);
      } else if (/^table \w+ \w+ \{$/.test(line)) {
        current = undefined;
      } else if (current !== undefined && (match = /^set (\w+) \{$/.exec(line)) !== null) {
        current.sets.add(match[1]!);
      } else if (current !== undefined && (match = /^counter (\w+) \{\}$/.exec(line)) !== null) {
        current.counters.set(match[1]!, { packets: 0, bytes: 0 });
      }
    }
    this.tables = tables;
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
