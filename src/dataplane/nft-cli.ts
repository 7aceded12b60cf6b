// The real nftables adapter: whole scripts through `nft -f -`, one-line transactions through a
// long-lived `nft -i` process (falling back to `nft -f -` when it dies or hangs), listings
// through `nft -j`, and ruleset watches through `nft monitor` (nft-monitor.ts).
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { type Runner, localRunner } from './exec.js';
import { formatMark } from './mark.js';
import {
  type Nft,
  type NftCallOptions,
  NftError,
  type RulesetListener,
  assertQuickLine,
  assertTableName,
} from './nft-api.js';
import { RulesetMonitor, monitorRestartMsDefault } from './nft-monitor.js';
import { names } from './table-names.js';
import { Serial } from '../core/serial.js';

/** A one-line transaction answers in ~1 ms; 2 s means the nft process is stuck: restart it. */
export const quickTimeoutMsDefault = 2_000;

/** Markers expire on their own; one second is far longer than any transaction takes. */
const markerTimeout = '1s';

/**
 * A command that needs no kernel round trip and always prints one known line: sent after each
 * transaction, its answer on stdout says nft has finished the line before it.
 */
const doneCommand = 'describe meta mark';
const doneAnswer = /datatype mark/;

/**
 * One `nft -i` process. Without `-e` (echo) nft builds only the cache a command needs (tables,
 * chains and sets, not every rule and element) and prints nothing on success, which cuts its
 * CPU per ownership transaction by a third here (~1.5 to ~1 ms). It sends each transaction as
 * one netlink batch, which the kernel commits (or refuses as a whole) before `sendmsg` returns,
 * and then reads the kernel's errors, printing `Error:` on stderr, before it reads the next
 * line. So every transaction is followed by `describe meta mark`: when its answer arrives on
 * stdout, nft is done with the transaction, and any error it had is already in the stderr pipe
 * (written first); one turn of the event loop later (`setImmediate`, after the poll phase that
 * read stdout, and so stderr too) it has been read. No error: committed. Commands go one at a
 * time, so each answer belongs to the last command sent. After an error or a timeout the process
 * is killed and the next command starts a fresh one, so a half-read error can never be blamed on
 * a later command.
 */
class InteractiveNft {
  private readonly child: ChildProcessWithoutNullStreams;
  private stdout = '';
  private stderr = '';
  private pending:
    | { resolve: () => void; reject: (error: Error) => void; line: string; timer: NodeJS.Timeout }
    | undefined;
  private answered = false;
  dead = false;
  /** Whether any command got its answer (the process started and works). */
  answeredOnce = false;

  constructor(
    child: ChildProcessWithoutNullStreams,
    private readonly timeoutMs: number,
  ) {
    this.child = child;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      this.stdout += text;
      if (this.pending !== undefined && !this.answered && doneAnswer.test(this.stdout)) {
        this.answered = true;
        setImmediate(() => {
          const error = /Error:/.test(this.stderr)
            ? new NftError(this.stderr, this.pending?.line ?? '')
            : undefined;
          this.settle(error);
        });
      }
    });
    child.stderr.on('data', (text: string) => {
      this.stderr += text;
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
    this.answered = false;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settle(new Error(`nft -i did not answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending = { resolve, reject, line, timer };
      this.child.stdin.write(`${line}\n${doneCommand}\n`);
    });
  }

  private settle(error: Error | undefined): void {
    const pending = this.pending;
    if (pending === undefined) {
      return;
    }
    this.pending = undefined;
    clearTimeout(pending.timer);
    if (error === undefined) {
      this.answeredOnce = true;
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
  /** Use a long-lived `nft -i` for applyQuick (default true when the runner can spawn). */
  readonly interactive?: boolean;
  readonly quickTimeoutMs?: number;
  readonly nftPath?: string;
  /** How long a dead `nft monitor` waits before it is started again. */
  readonly monitorRestartMs?: number;
  /**
   * Start the long-lived `nft -i` under SCHED_RR at this priority (through `chrt`), above nlbd's
   * own (src/daemon/scheduling.ts): an ownership change waits for no one. Undefined: it inherits
   * nlbd's scheduling.
   */
  readonly interactivePriority?: number;
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
  /** Dropped for good once a session started through chrt died before its first answer. */
  private interactivePriority: number | undefined;
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
    this.interactivePriority = options.interactivePriority;
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
    // The marker tells nft monitor's report of this transaction from someone else's.
    const marked = `add element ${set} { ${marker} timeout ${markerTimeout} }; ${line}`;
    if (this.session === undefined || this.session.dead) {
      const priority = this.interactivePriority;
      this.session = new InteractiveNft(
        priority === undefined
          ? this.runner.spawn!(this.nftPath, ['-i'])
          : this.runner.spawn!('chrt', ['--rr', String(priority), this.nftPath, '-i']),
        this.quickTimeoutMs,
      );
    }
    const session = this.session;
    try {
      await session.run(marked);
    } catch (error) {
      if (error instanceof NftError) {
        throw error;
      }
      if (!session.answeredOnce && this.interactivePriority !== undefined) {
        // chrt may be missing or refused: from now on nft -i inherits nlbd's scheduling.
        this.interactivePriority = undefined;
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
      // A marker of our own in `sync`: harmless, and printed by the monitor once it listens.
      () => {
        this.applyQuick(
          tableName,
          `add element inet ${tableName} ${names.sync} { 0x00000000 timeout ${markerTimeout} }`,
        ).catch(() => undefined);
      },
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
