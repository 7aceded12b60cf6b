// Changes to the interfaces of nlbd's network namespace, as they happen: one long-lived
// `ip -o monitor link address` prints a line for every link change (carrier, MAC, up/down) and
// every address added or deleted. The link watch and the interface guard check on each one at
// once, and otherwise poll only once a second as a safety net; while the monitor does not run
// (not installed, died: restarted after a second) they poll at their own fast rate again.
// Polling /sys and the address list 25 times a second cost an idle nlbd as much CPU as all
// its heartbeats in a small cluster; the monitor costs nothing while nothing changes.
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/** A dead monitor is started again after this. */
export const interfaceMonitorRestartMs = 1_000;
/** How often the watchers still poll while the monitor runs. */
export const slowPollMs = 1_000;
/**
 * Changes printed within this of the first make one check: `ip addr flush` or an `ip -batch`
 * prints several lines, and a check between them would repair half of what was taken.
 */
export const coalesceMs = 10;

export interface InterfaceEvents {
  /** Whether the monitor runs: the watchers may then poll slowly. */
  readonly live: boolean;
  /**
   * Calls `listener` once, `coalesceMs` after the monitor printed one or more changes, and
   * when it starts or stops running. Returns a function that unsubscribes.
   */
  subscribe(listener: () => void): () => void;
  stop(): void;
}

function spawnIpMonitor(): ChildProcess {
  // setpriv (util-linux) makes the kernel kill the monitor when nlbd dies, even by SIGKILL.
  return spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'ip', '-o', 'monitor', 'link', 'address'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
}

/** Starts the monitor; `stop` ends it. */
export function watchInterfaces(
  spawnMonitor: () => ChildProcess = spawnIpMonitor,
  restartMs = interfaceMonitorRestartMs,
): InterfaceEvents {
  const listeners = new Set<() => void>();
  let live = false;
  let stopped = false;
  let child: ChildProcess | undefined;
  let restartTimer: NodeJS.Timeout | undefined;
  let notifyQueued = false;
  const notify = (): void => {
    if (notifyQueued || stopped) return;
    notifyQueued = true;
    setTimeout(() => {
      notifyQueued = false;
      if (stopped) return;
      for (const listener of [...listeners]) listener();
    }, coalesceMs).unref();
  };
  const died = (which: ChildProcess): void => {
    if (child !== which) return;
    child = undefined;
    live = false;
    notify();
    if (stopped) return;
    restartTimer = setTimeout(start, restartMs);
    restartTimer.unref();
  };
  function start(): void {
    restartTimer = undefined;
    if (stopped) return;
    let started: ChildProcess;
    try {
      started = spawnMonitor();
    } catch {
      restartTimer = setTimeout(start, restartMs);
      restartTimer.unref();
      return;
    }
    child = started;
    started.on('spawn', () => {
      if (child !== started) return;
      live = true;
      notify();
    });
    started.on('error', () => died(started));
    started.on('close', () => died(started));
    if (started.stdout !== null) {
      createInterface({ input: started.stdout, crlfDelay: Infinity }).on('line', notify);
    }
  }
  start();
  return {
    get live() {
      return live;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    stop() {
      stopped = true;
      live = false;
      if (restartTimer !== undefined) clearTimeout(restartTimer);
      const running = child;
      child = undefined;
      running?.kill('SIGKILL');
      listeners.clear();
    },
  };
}

/**
 * Runs `check` every `pollMs`, or every `slowPollMs` while `events` is live, and at once after
 * each event. Returns a function that stops it.
 */
export function checkOnChange(
  check: () => void,
  pollMs: number,
  events: InterfaceEvents | undefined,
): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const arm = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    if (stopped) return;
    const delayMs = events?.live === true ? Math.max(pollMs, slowPollMs) : pollMs;
    timer = setTimeout(() => {
      check();
      arm();
    }, delayMs);
    timer.unref();
  };
  const unsubscribe =
    events?.subscribe(() => {
      check();
      arm();
    }) ?? (() => undefined);
  arm();
  return () => {
    stopped = true;
    if (timer !== undefined) clearTimeout(timer);
    unsubscribe();
  };
}
