// The daemon's side of the retained state (retained-state.ts holds the file format): at start,
// the incarnation and whether the host comes back suspended; while running, the suspended
// state written again whenever the operator suspends or resumes the host.
import path from 'node:path';
import type { HostState } from '../core/config.js';
import { errorText } from '../core/error-text.js';
import type { EventSink } from './event-names.js';
import { retainedStatePath, stateDirEnv } from './paths.js';
import { type RetainedState, beginStart, writeRetainedState } from './retained-state.js';
import { StartRefused } from './start-checks.js';

export class RetainedHostState {
  private retained: { readonly file: string; state: RetainedState } | undefined;

  constructor(private readonly logEvent: EventSink) {}

  /** The retained state file, once `begin` read it. */
  get file(): string | undefined {
    return this.retained?.file;
  }

  /**
   * Reads what this host retained, picks the new incarnation and writes both back, synced,
   * before any heartbeat can carry the incarnation. A state directory nlbd cannot write is a
   * refusal: without it, incarnations could repeat and a suspended host could come back.
   */
  begin(
    dir: string,
    clusterName: string,
    hostId: number,
  ): { incarnation: number; initialState: HostState | undefined } {
    const file = retainedStatePath(clusterName, hostId, dir);
    let start;
    try {
      start = beginStart(file, Date.now());
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new StartRefused(
        `cannot write the retained state ${file}: ${code ?? errorText(error)}`,
        `nlbd keeps this host's incarnation and suspended state in ${dir} across restarts: make it a directory root can write (the systemd unit's StateDirectory=nlb does), or choose another with --state-dir or ${stateDirEnv}`,
      );
    }
    if (start.unreadable !== undefined) {
      this.logEvent({
        event: 'retained state unreadable',
        problem: start.unreadable,
        hint: 'nlbd started as the config says and rewrote the file',
      });
    }
    const state = start.state;
    this.retained = { file, state };
    if (state.suspended) {
      this.logEvent({ event: 'suspended state retained', file, hint: 'resume with `nlb resume`' });
    }
    return {
      incarnation: state.incarnation,
      initialState: state.suspended ? 'suspended' : undefined,
    };
  }

  /**
   * Keeps the suspended state across restarts. It runs once the machine answered `suspend` or
   * `resume`, before the reply is sent: once `nlb suspend` answers, a restart keeps it.
   */
  setSuspended(suspended: boolean): void {
    const retained = this.retained;
    if (retained === undefined || retained.state.suspended === suspended) {
      return;
    }
    const state = { ...retained.state, suspended };
    try {
      writeRetainedState(retained.file, state);
      retained.state = state;
    } catch (error) {
      this.logEvent({
        event: 'retained state not written',
        suspended,
        problem: errorText(error),
        hint: `a restart will not know the host was ${suspended ? 'suspended' : 'resumed'}; check ${path.dirname(retained.file)}`,
      });
    }
  }
}
