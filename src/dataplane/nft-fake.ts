// The fake nftables adapter for unit tests: it records every script and models just enough of
// the kernel (tables, chains and their rules, sets, counters) to answer like nft, and it passes
// the same contract tests as the real adapter (test/dataplane-nft-contract.ts).
import {
  type CounterValue,
  type Nft,
  type NftCallOptions,
  NftError,
  type NftFamily,
  type NftTable,
  type RulesetListener,
  assertQuickLine,
  assertTableName,
  familyPattern,
} from './nft-api.js';
import { monitorLinesKeptMax } from './nft-monitor.js';
import { names } from './table-names.js';

export interface RecordedScript {
  readonly kind: 'apply' | 'quick';
  readonly script: string;
}

interface FakeSet {
  readonly handle: number;
  /** A map's elements are `key * 2^32 + value` (how table-image.ts reads them back). */
  readonly kind: 'set' | 'map';
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

/** The keys of `{ 0, 3 }`, `{ 0xffffffff timeout 800ms }` or a map's `{ 5 : 0x4e4c0102 }`. */
function elementKeys(list: string): number[] {
  return list
    .split(',')
    .map((element) => element.trim())
    .filter((element) => element !== '')
    .map((element) => {
      const pair = /^(\S+)\s*:\s*(\S+)$/.exec(element);
      if (pair !== null) return Number(pair[1]) * 2 ** 32 + Number(pair[2]);
      return Number(element.split(/\s+/)[0]);
    });
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
  private listingFailure: { error: Error; count: number } | undefined;
  private nextHandle = 1;
  private readonly watches = new Set<{ tableName: string; listener: RulesetListener }>();

  /** The next `count` listJson calls fail with `error` (a listing that timed out, say). */
  failListings(error: Error, count = 1): void {
    this.listingFailure = { error, count };
  }

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
        } else if ((match = /^(set|map) (\w+) \{$/.exec(line)) !== null) {
          set = table.sets.get(match[2]!) ?? {
            handle: this.nextHandle++,
            kind: match[1] as 'set' | 'map',
            flags: undefined,
            elements: new Set(),
          };
          table.sets.set(match[2]!, set);
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
        `^(add element|delete element|flush set|flush map) ${familyPattern} (\\w+) (\\w+)(?: \\{ (.*) \\})?$`,
      ).exec(command))
    ) {
      const set = tables.get(`${match[2]} ${match[3]}`)?.sets.get(match[4]!)?.elements;
      if (set === undefined) throw missing();
      const keys = elementKeys(match[5] ?? '');
      if (match[1] === 'flush set' || match[1] === 'flush map') {
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
    if (this.listingFailure !== undefined && this.listingFailure.count > 0) {
      this.listingFailure.count--;
      return Promise.reject(this.listingFailure.error);
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
      for (const [set, { handle, kind, flags, elements }] of table.sets) {
        const sorted = [...elements].sort((a, b) => a - b);
        // As nft -j: a map element is [key, value].
        const elem =
          kind === 'map' ? sorted.map((e) => [Math.floor(e / 2 ** 32), e % 2 ** 32]) : sorted;
        items.push({
          [kind]: {
            family,
            name: set,
            table: name,
            type: 'mark',
            handle,
            ...(kind === 'map' ? { map: 'mark' } : {}),
            ...(flags === undefined ? {} : { flags: [flags] }),
            ...(elements.size === 0 ? {} : { elem }),
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
