// What one nlbd must not share with another in its network namespace, held as locks for its
// whole life and checked before it changes anything:
//   - its cluster (`clusterLockName`): a second nlbd of the same cluster there would replace the
//     first's table (`nlb_<cluster>`) at its start, remove it at its exit, and leave the first
//     reporting `converged` while it filters nothing;
//   - in unicast mode, its cluster interface (`unicastInterfaceLockName`): unicast mode gives the
//     interface the cluster's MAC, and an interface has one MAC, so two unicast clusters cannot
//     share one (multicast and IGMP modes only add a group MAC, so they can).
// Other clusters run beside it: each has its own tables, control socket, run and state files,
// heartbeat socket (a second on the same group and port is refused when it binds) and MACs.
//
// A lock is a listening unix socket in the abstract namespace: Linux scopes those names per
// network namespace, and frees one the instant its process dies, however it dies (SIGKILL
// included): no stale lock file to judge. A client that connects gets the owner's identity as
// one JSON line, so a refusal can name the daemon in the way.
import net from 'node:net';
import type { Config } from '../core/config.js';

/** The lock of cluster `cluster` in this network namespace. */
export function clusterLockName(cluster: string): string {
  return `\0nlbd-cluster-${cluster}`;
}

/** The lock a unicast-mode nlbd holds on its cluster interface. */
export function unicastInterfaceLockName(ifname: string): string {
  return `\0nlbd-unicast-${ifname}`;
}

/** Who holds the lock, as the owner answers a connecting client. */
export interface LockOwner {
  readonly cluster: string;
  readonly hostId: number;
  readonly pid: number;
  /** Its control socket. */
  readonly socket: string;
  readonly configPath: string;
}

/** Reading the owner is one local round trip; a second means the owner is stuck. */
const ownerReadTimeoutMs = 1_000;
/** The owner's line is ~200 bytes; more is not an nlbd answering. */
const ownerLineBytesMax = 4096;
/** Clients are refused nlbd starts and `ss`-style probes; more at once is a loop. */
const lockConnectionsMax = 8;
/**
 * EADDRINUSE but nobody answers: the owner is exiting right now. Trying again a few times,
 * 100 ms apart, lets a restart that follows a stop at once go through.
 */
const claimAttempts = 5;
const claimRetryMs = 100;

export class NetnsLockBusy extends Error {
  constructor(
    readonly lockName: string,
    /** Undefined when the holder did not say who it is. */
    readonly owner: LockOwner | undefined,
    /** What to do about it (the lock's purpose decides). */
    readonly hint: string,
  ) {
    super(
      owner === undefined
        ? `another process holds the nlbd lock @${lockName.slice(1)} in this network namespace and does not say who it is`
        : `another nlbd (pid ${owner.pid}) already answers on @${lockName.slice(1)} in this network namespace: cluster '${owner.cluster}', host ${owner.hostId}, control socket ${owner.socket}`,
    );
    this.name = 'NetnsLockBusy';
  }
}

/** The held lock; `release` stops listening, which frees the name at once. */
export interface NetnsLock {
  readonly name: string;
  release(): Promise<void>;
}

function listenOnce(name: string, owner: LockOwner): Promise<NetnsLock> {
  const line = `${JSON.stringify(owner)}\n`;
  const open = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => undefined);
    socket.end(line);
  });
  server.maxConnections = lockConnectionsMax;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(name, () => {
      server.off('error', reject);
      resolve({
        name,
        release: () =>
          new Promise<void>((done) => {
            // A client that never reads would otherwise keep close() waiting.
            for (const socket of open) socket.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}

/** The holder's identity, or undefined when it does not answer with one. */
export function readLockOwner(name: string): Promise<LockOwner | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect(name);
    let text = '';
    const done = (owner: LockOwner | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(owner);
    };
    const timer = setTimeout(() => done(undefined), ownerReadTimeoutMs);
    socket.setEncoding('utf8');
    socket.on('error', () => done(undefined));
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.length > ownerLineBytesMax) done(undefined);
    });
    socket.on('end', () => {
      try {
        const parsed = JSON.parse(text) as Partial<LockOwner>;
        done(
          typeof parsed.pid === 'number' &&
            typeof parsed.cluster === 'string' &&
            typeof parsed.hostId === 'number' &&
            typeof parsed.socket === 'string'
            ? (parsed as LockOwner)
            : undefined,
        );
      } catch {
        done(undefined);
      }
    });
  });
}

/**
 * Takes lock `name` in this network namespace, or throws NetnsLockBusy naming its holder, with
 * `hint` (what to do about it; it may use the holder's pid).
 */
export async function claimNetnsLock(
  owner: LockOwner,
  name: string,
  hint: (holder: LockOwner | undefined) => string,
): Promise<NetnsLock> {
  if (!name.startsWith('\0')) {
    throw new Error('claimNetnsLock: the name must be abstract (start with \\0)');
  }
  for (let attempt = 1; ; attempt++) {
    try {
      return await listenOnce(name, owner);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
        throw error;
      }
      const holder = await readLockOwner(name);
      if (holder !== undefined || attempt >= claimAttempts) {
        throw new NetnsLockBusy(name, holder, hint(holder));
      }
      await new Promise((resolve) => setTimeout(resolve, claimRetryMs));
    }
  }
}

/** What to tell the operator about the holder of a lock. */
function stopHolder(holder: LockOwner | undefined): string {
  return holder === undefined
    ? 'find the holder with `ss -xlp | grep @nlbd` and stop it'
    : `stop it first (\`systemctl stop nlbd\` or \`kill ${holder.pid}\`)`;
}

/**
 * Takes every lock nlbd of `config` holds (see the header): its cluster's, and in unicast mode
 * its interface's. Throws NetnsLockBusy, with what to do, when one is held; the locks taken
 * before it are released again.
 */
export async function claimDaemonLocks(config: Config, owner: LockOwner): Promise<NetnsLock[]> {
  const cluster = config.cluster.name;
  const wanted: [string, (holder: LockOwner | undefined) => string][] = [
    [
      clusterLockName(cluster),
      (holder) =>
        `one nlbd runs per cluster on a host (its table nlb_${cluster} and its cluster IPs are the cluster's): ${stopHolder(holder)}, or give this config another cluster.name`,
    ],
  ];
  if (config.cluster.mode === 'unicast') {
    const ifname = config.cluster.interface;
    wanted.push([
      unicastInterfaceLockName(ifname),
      (holder) =>
        `unicast mode gives ${ifname} its cluster's MAC, and an interface has one MAC: ${stopHolder(holder)}, put this cluster on another interface, or use mode: multicast or igmp (which only add a group MAC)`,
    ]);
  }
  const held: NetnsLock[] = [];
  try {
    for (const [name, hint] of wanted) {
      held.push(await claimNetnsLock(owner, name, hint));
    }
  } catch (error) {
    for (const lock of held) await lock.release();
    throw error;
  }
  return held;
}
