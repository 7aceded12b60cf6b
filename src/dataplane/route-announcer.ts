// The marker routes FRR announces the cluster IPs from (docs/routed.md#frr-configuration): while
// this host should attract traffic, its main table holds `<vip>/32 dev lo proto 250` for every
// cluster IP, and bgpd redistributes them. nlbd changes them through one long-lived pipeline,
//
//   bash -c <announcerScript> nlb-announcer <guard seconds> 250 <vip>...
//     forward() | ip -force -batch -
//
// where forward() passes each line nlbd writes to its stdin on to `ip`, which carries it out as
// it arrives (checked: `ip -batch -` runs each line when it is read from a pipe, not at EOF,
// and flushes its output per command), and drops the keepalive line `.`. No process per change,
// and the routes cannot outlive the nlbd that made them:
//   - nlbd dies (even SIGKILL): its end of the pipe closes, `read` sees EOF, forward() sends a
//     `route del` for every cluster IP, and the pipeline exits. The pipeline must outlive nlbd
//     for this, so it gets no parent-death signal; it ignores SIGTERM, SIGINT and SIGHUP (and
//     `ip` inherits that), so a service stop that signals the whole group still gets the
//     withdrawal through, and SIGPIPE, so `ip` reporting an error to a dead nlbd does not kill
//     it before the remaining `route del` lines.
//   - nlbd hangs: nlbd writes `.` every heartbeat; when no line comes within the guard time
//     (`read -t`), forward() withdraws the same way and the pipeline exits. The next call after
//     nlbd wakes starts a new one, which puts the routes back if they should be there.
//   - the host is cut off from its router, or the whole machine hangs: no process can help; the
//     router's BFD session times out (~300 ms) and takes the host's path out.
// `ip` reports a failed line as `RTNETLINK answers: …` then `Command failed -:N`, N counting the
// lines it was given; those are reported through onProblem with the line they belong to, except
// a `route del` of a route that is not there (`No such process`), which is what withdrawing twice
// looks like.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { parseAddress } from '../core/address.js';
import { markerRouteProtocol } from '../core/bgp.js';
import type { Runner } from './exec.js';

/**
 * The guard's bounds. It is the marker routes' lease: nlbd passes its kernel lease time, whose
 * own minimum is 10 ms (a heartbeat of 20 ms allows such leases). An hour is beyond any lease.
 */
export const announcerGuardMsMin = 10;
export const announcerGuardMsMax = 3_600_000;
/** A pipeline that keeps dying (bash or ip missing) is started again at most once a second. */
export const announcerRestartMsMin = 1_000;
/** How long close() waits for the pipeline to withdraw and exit before it kills it. */
export const announcerCloseWaitMs = 5_000;
/** The lines `ip` was given are remembered to name a failed one; older ones are forgotten. */
const sentRememberedMax = 1_024;

/** Tells the guard nlbd is alive; not passed on to `ip`. */
export const keepaliveLine = '.';
/** Makes the pipeline exit without withdrawing (close({ withdraw: false })). */
export const detachLine = '-';

/** `$1`: the guard in seconds; `$2`: the marker routes' protocol; the rest: the cluster IPs. */
export const announcerScript = `trap '' INT TERM HUP PIPE
guard=$1 proto=$2
shift 2
forward() {
  local line status
  while :; do
    IFS= read -r -t "$guard" line
    status=$?
    if [ "$status" -ne 0 ]; then
      if [ "$status" -gt 128 ]; then
        printf 'nlb-announcer: no line within %s s: withdrawing the marker routes\\n' "$guard" >&2
      fi
      break
    fi
    case $line in
      '${keepaliveLine}') ;;
      '${detachLine}') return 0 ;;
      *) printf '%s\\n' "$line" || return 1 ;;
    esac
  done
  for vip in "$@"; do printf 'route del %s/32 dev lo proto %s\\n' "$vip" "$proto"; done
}
forward "$@" | ip -force -batch -
`;

/** The `ip -batch` lines that add (`replace`) or delete the marker route of every cluster IP. */
export function markerRouteLines(verb: 'replace' | 'del', clusterIps: readonly string[]): string[] {
  return clusterIps.map((ip) => `route ${verb} ${ip}/32 dev lo proto ${markerRouteProtocol}`);
}

/** One running pipeline: what it was sent, and what its stderr says about it. */
class Pipeline {
  exited = false;
  /** The script said its guard fired (nlbd was silent): its end is that, said already. */
  guardFired = false;
  readonly closed: Promise<void>;
  /** Lines given to `ip` so far: its line numbers. */
  private forwarded = 0;
  private readonly sent = new Map<number, string>();
  private stderr = '';
  private errors: string[] = [];

  constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly onProblem: (text: string) => void,
    onExit: (description: string) => void,
  ) {
    child.stdin.on('error', () => {});
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => this.read(text));
    this.closed = new Promise((resolve) => {
      child.on('error', (error) => {
        this.exited = true;
        onExit(`could not start: ${error.message}`);
        resolve();
      });
      child.on('close', (code, signal) => {
        this.read('\n');
        this.flushErrors();
        if (!this.exited) onExit(code === null ? `killed by ${signal}` : `exit ${code}`);
        this.exited = true;
        resolve();
      });
    });
  }

  send(line: string): void {
    if (this.exited) return;
    if (line !== keepaliveLine && line !== detachLine) {
      this.forwarded++;
      this.sent.set(this.forwarded, line);
      this.sent.delete(this.forwarded - sentRememberedMax);
    }
    this.child.stdin.write(`${line}\n`);
  }

  /** Closes its stdin: the script withdraws every cluster IP and exits. */
  end(): void {
    this.child.stdin.end();
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }

  private read(text: string): void {
    this.stderr += text;
    const lines = this.stderr.split('\n');
    this.stderr = lines.pop()!;
    for (const line of lines.filter((l) => l.trim() !== '')) {
      const failed = /^Command failed -:(\d+)/.exec(line);
      if (failed !== null) {
        this.failed(Number(failed[1]));
      } else if (/^(RTNETLINK answers:|Error:)/.test(line)) {
        this.errors.push(line);
      } else {
        if (line.includes(': no line within ')) this.guardFired = true;
        this.onProblem(line);
      }
    }
  }

  private failed(lineNumber: number): void {
    const command = this.sent.get(lineNumber);
    const error = this.errors.join(' ') || 'failed';
    this.errors = [];
    // Withdrawing what is not there: the script's own lines after EOF, or a second withdraw.
    const absent = /No such process/.test(error) && !command?.startsWith('route replace');
    if (!absent) this.onProblem(`'${command ?? `line ${lineNumber}`}': ${error}`);
  }

  private flushErrors(): void {
    if (this.errors.length > 0) this.onProblem(this.errors.join(' '));
    this.errors = [];
  }
}

export interface RouteAnnouncerOptions {
  /** Must be able to spawn (localRunner and netnsRunner can). */
  readonly runner: Runner;
  readonly clusterIps: readonly string[];
  /** The routes go when no call comes for this long (nlbd passes its lease time). */
  readonly guardMs: number;
  /** RTNETLINK errors, a pipeline that exited on its own, one that cannot start. */
  readonly onProblem: (text: string) => void;
  /** The clock of the restart limit (Date.now by default). */
  readonly nowMs?: () => number;
}

/**
 * Announces and withdraws the cluster IPs' marker routes through the pipeline above. Every
 * method returns at once (a line written to a pipe); the pipeline reports failures later,
 * through onProblem. When the pipeline has exited (its guard fired after nlbd hung, or it
 * died), the next call starts a new one that carries the current wish: announced or not.
 */
export class RouteAnnouncer {
  private readonly options: RouteAnnouncerOptions;
  private readonly spawn: NonNullable<Runner['spawn']>;
  private pipeline: Pipeline | undefined;
  private wanted = false;
  private closing = false;
  private lastStartMs = -Infinity;

  constructor(options: RouteAnnouncerOptions) {
    const { runner, clusterIps, guardMs } = options;
    if (runner.spawn === undefined) {
      throw new Error('RouteAnnouncer: the runner cannot start a long-lived process');
    }
    for (const ip of clusterIps) {
      const address = parseAddress(ip);
      if (address?.family !== 4 || address.text !== ip) {
        throw new Error(`RouteAnnouncer: cluster IP '${ip}' is not IPv4`);
      }
    }
    if (
      !Number.isInteger(guardMs) ||
      guardMs < announcerGuardMsMin ||
      guardMs > announcerGuardMsMax
    ) {
      throw new Error(
        `RouteAnnouncer: guardMs ${guardMs} is not ${announcerGuardMsMin}..${announcerGuardMsMax}`,
      );
    }
    this.options = options;
    this.spawn = runner.spawn.bind(runner);
  }

  /** Whether the marker routes should be there (the last of announce and withdraw). */
  get announced(): boolean {
    return this.wanted;
  }

  /** Starts the pipeline; the first call that needs it would too. */
  start(): void {
    if (!this.closing) this.ensure();
  }

  /** `route replace` of every cluster IP's marker route. */
  announce(): void {
    this.wanted = true;
    this.send(markerRouteLines('replace', this.options.clusterIps));
  }

  /** `route del` of every cluster IP's marker route. */
  withdraw(): void {
    this.wanted = false;
    this.send(markerRouteLines('del', this.options.clusterIps));
  }

  /** nlbd is alive: call it more often than guardMs (every heartbeat). */
  keepalive(): void {
    this.send([keepaliveLine]);
  }

  /**
   * Stops the pipeline: withdrawing every marker route (its stdin closes: the script's EOF
   * path), or leaving them as they are for a successor to take over. Never rejects.
   */
  async close(options: { withdraw: boolean }): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (options.withdraw) this.wanted = false;
    const pipeline = this.pipeline;
    if (pipeline === undefined || pipeline.exited) return;
    if (!options.withdraw) pipeline.send(detachLine);
    pipeline.end();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), announcerCloseWaitMs);
    });
    const result = await Promise.race([pipeline.closed, timeout]);
    clearTimeout(timer);
    if (result === 'timeout') {
      this.options.onProblem(
        `the marker route pipeline did not exit within ${announcerCloseWaitMs} ms`,
      );
      pipeline.kill();
    }
  }

  private send(lines: readonly string[]): void {
    if (this.closing) return;
    const pipeline = this.ensure();
    if (pipeline === undefined) return;
    for (const line of lines) pipeline.send(line);
  }

  /** The running pipeline, started (again) when there is none and the restart limit allows. */
  private ensure(): Pipeline | undefined {
    if (this.pipeline !== undefined && !this.pipeline.exited) return this.pipeline;
    const now = (this.options.nowMs ?? Date.now)();
    if (this.closing || now - this.lastStartMs < announcerRestartMsMin) return undefined;
    const restart = this.pipeline !== undefined;
    this.lastStartMs = now;
    const { clusterIps, guardMs, onProblem } = this.options;
    const args = ['-c', announcerScript, 'nlb-announcer', String(guardMs / 1000)];
    const child = this.spawn('bash', [...args, String(markerRouteProtocol), ...clusterIps]);
    const pipeline: Pipeline = new Pipeline(child, onProblem, (description) => {
      // After the guard fired, the script said why it ends; its exit status says nothing more.
      if (!this.closing && !pipeline.guardFired) {
        onProblem(
          `the marker route pipeline ended (${description}); the next call starts it again`,
        );
      }
    });
    this.pipeline = pipeline;
    // After a guard timeout the routes are gone: put them back if they should be there. After
    // any other end they may not be gone: take them out if they should not be there. (The call
    // that restarted the pipeline may repeat these lines: replace and del are idempotent.)
    if (restart) {
      const lines = markerRouteLines(this.wanted ? 'replace' : 'del', clusterIps);
      for (const line of lines) pipeline.send(line);
    }
    return pipeline;
  }
}
