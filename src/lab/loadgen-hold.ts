// The load generator's long-lived connections (`HOLD`): each is opened, then pinged until the
// run is over, and the first sign it broke (a reset, a close, a ping not echoed in time) is
// recorded with when it happened. Also the socket helpers the short connections share.
import net from 'node:net';
import { parseHostReply } from './backend.js';
import type { FailureKind, HoldRecord, LoadgenSettings } from './loadgen.js';

/** A reply line longer than this is not from a lab backend. */
export const replyBytesMax = 1024;

export type HoldSettings = Pick<
  LoadgenSettings,
  'sources' | 'target' | 'port' | 'timeoutMs' | 'pingIntervalMs' | 'pingTimeoutMs'
>;

/** The run a held connection belongs to. */
export interface HoldOwner {
  /** Ms since the run started. */
  now(): number;
  /** Once true, a connection closing is the run's doing, not a break. */
  readonly runOver: boolean;
  /** Every held connection's record, in the order they were opened. */
  readonly holds: HoldRecord[];
  holdBroke(record: HoldRecord): void;
}

/** How a socket error shows in a connection's or a hold's record. */
export function classify(error: NodeJS.ErrnoException): FailureKind {
  switch (error.code) {
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'unreachable';
    default:
      return 'error';
  }
}

/**
 * The source port of a connecting socket. Node caches getsockname on first read, so this is
 * only asked once connect() has been issued. For an IP literal, net.connect issues it from a
 * process.nextTick scheduled at the call, so a nextTick scheduled right after net.connect runs
 * just after it, before any I/O callback: a setImmediate would run after the poll phase, where a
 * fast refusal or reset may already have closed the handle (the port then read as 0).
 */
export function sourceOf(socket: net.Socket): { ip: string; port: number } {
  return { ip: socket.localAddress ?? '', port: socket.localPort ?? 0 };
}

/** One long-lived `HOLD` connection: opened, then pinged until the run is over or it breaks. */
export class HeldConnection {
  readonly record: HoldRecord;
  readonly socket: net.Socket;
  private buffered = '';
  private pingSent = 0;
  /** Pending while a ping awaits its echo; firing means the connection is broken. */
  private echoTimer: NodeJS.Timeout | undefined;
  private readonly openTimer: NodeJS.Timeout;
  private readonly pinger: NodeJS.Timeout;

  constructor(
    private readonly settings: HoldSettings,
    private readonly run: HoldOwner,
    index: number,
    /** Called once the connection is held (its host answered) or broke. */
    private readonly opened: () => void,
  ) {
    const { sources, target, port, timeoutMs, pingIntervalMs } = settings;
    const localAddress = sources.length > 0 ? sources[index % sources.length] : undefined;
    this.record = { index, sourceIp: localAddress ?? '', sourcePort: 0, pingsOk: 0 };
    run.holds.push(this.record);
    const socket = net.connect({ host: target, port, ...(localAddress ? { localAddress } : {}) });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setEncoding('utf8');
    this.openTimer = setTimeout(() => this.breakHold('timeout', 'no HOLD reply'), timeoutMs);
    process.nextTick(() => {
      const s = sourceOf(socket);
      this.record.sourceIp = s.ip || this.record.sourceIp;
      this.record.sourcePort = s.port;
    });
    socket.on('connect', () => socket.write('HOLD\n'));
    socket.on('data', (chunk: string) => this.received(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) =>
      this.breakHold(classify(error), error.code ?? error.message),
    );
    socket.on('close', () => this.breakHold('closed'));
    this.pinger = setInterval(() => this.ping(), pingIntervalMs);
  }

  /** Stops its timers; the socket is destroyed by the run. */
  cleanup(): void {
    clearTimeout(this.openTimer);
    clearInterval(this.pinger);
    clearTimeout(this.echoTimer);
  }

  private breakHold(kind: FailureKind, error?: string): void {
    const record = this.record;
    if (record.broken !== undefined || this.run.runOver) {
      return;
    }
    record.broken = { kind, atMs: Math.round(this.run.now()), ...(error ? { error } : {}) };
    this.run.holdBroke(record);
    this.socket.destroy();
    this.opened();
  }

  private received(chunk: string): void {
    const record = this.record;
    this.buffered += chunk;
    let newline: number;
    while ((newline = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, newline);
      this.buffered = this.buffered.slice(newline + 1);
      if (record.host === undefined) {
        const host = parseHostReply(line);
        if (host === undefined) {
          this.breakHold('bad-reply', line.slice(0, 80));
          return;
        }
        clearTimeout(this.openTimer);
        record.host = host;
        record.openedAtMs = Math.round(this.run.now());
        this.opened();
      } else if (line === `ping ${this.pingSent}`) {
        record.pingsOk++;
        clearTimeout(this.echoTimer);
        this.echoTimer = undefined;
      } else {
        this.breakHold('bad-reply', line.slice(0, 80));
        return;
      }
    }
    if (this.buffered.length > replyBytesMax) {
      this.breakHold('bad-reply', 'line too long');
    }
  }

  private ping(): void {
    const record = this.record;
    if (record.host === undefined || record.broken !== undefined || this.echoTimer !== undefined) {
      return;
    }
    this.pingSent++;
    const sent = this.pingSent;
    const { pingTimeoutMs } = this.settings;
    this.echoTimer = setTimeout(
      () => this.breakHold('timeout', `no echo of ping ${sent} within ${pingTimeoutMs} ms`),
      pingTimeoutMs,
    );
    this.socket.write(`ping ${sent}\n`);
  }
}
