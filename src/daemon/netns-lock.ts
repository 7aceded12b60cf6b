// One nlbd per network namespace. The data plane belongs to the namespace, not to a cluster: one
// nftables table `inet nlb` (render.ts's default name) and one MAC on the cluster interface. A
// second nlbd there, even of another cluster on another heartbeat port, would replace the
// first's table at its start, remove it at its exit, and leave the first reporting `converged`
// while it filters nothing. So nlbd holds a lock for its whole life and refuses to start when
// another holds it, before changing anything.
//
// The lock is a listening unix socket in the abstract namespace ('\0nlbd'): Linux scopes those
// names per network namespace, and frees one the instant its process dies, however it dies
// (SIGKILL included): no stale lock file to judge. A client that connects gets the owner's
// identity as one JSON line, so a refusal can name the daemon in the way.
//
// Several clusters on one host (a later issue) would make this per cluster: the lock name would
// carry the cluster name ('\0nlbd-<cluster>'), together with a table name per cluster in the
// data plane and an interface per cluster; `netnsLockName` is the one place to change here.
import net from 'node:net';

export const netnsLockName = '\0nlbd';

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
  ) {
    super(
      owner === undefined
        ? `another process holds the nlbd lock of this network namespace (@${lockName.slice(1)}) and does not say who it is`
        : `another nlbd (pid ${owner.pid}) already answers on @${lockName.slice(1)} in this network namespace: cluster '${owner.cluster}', host ${owner.hostId}, control socket ${owner.socket}`,
    );
    this.name = 'NetnsLockBusy';
  }

  /** What to do about it. */
  get hint(): string {
    return this.owner === undefined
      ? 'one nlbd runs per network namespace (its filter table and interface MAC are shared); find the holder with `ss -xlp | grep @nlbd` and stop it'
      : `one nlbd runs per network namespace (the filter table 'inet nlb' and the interface MAC are shared): stop the other first (\`systemctl stop nlbd\` or \`kill ${this.owner.pid}\`), or run this cluster's nlbd in another network namespace`;
  }
}

/** The held lock; `release` stops listening, which frees the name at once. */
export interface NetnsLock {
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
export function readLockOwner(name = netnsLockName): Promise<LockOwner | undefined> {
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
 * Takes the lock of this network namespace, or throws NetnsLockBusy naming its holder. `name`
 * is for tests, which use a name of their own.
 */
export async function claimNetnsLock(owner: LockOwner, name = netnsLockName): Promise<NetnsLock> {
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
        throw new NetnsLockBusy(name, holder);
      }
      await new Promise((resolve) => setTimeout(resolve, claimRetryMs));
    }
  }
}
