// Undo in reverse order, from wherever the start-up got to. Each part of nlbd that changes the
// host or holds something (a signal handler, a lock, a socket, the nftables table, the cluster
// MAC) registers how to undo it at the moment it is acquired, or just before when a half-done
// acquisition must be undone too; `releaseAll` then undoes everything registered, newest first,
// whether nlbd is stopping after running for days or was interrupted between two phases of its
// start-up. A release that fails is recorded and the older ones still run: a table left behind
// is no reason to also leave the cluster MAC.
import { errorText } from '../core/error-text.js';

export interface Release {
  /** What is undone, for the log: "remove the nftables tables". */
  readonly what: string;
  readonly release: () => Promise<void> | void;
}

/** nlbd holds about a dozen resources; hundreds means a loop is registering without end. */
export const resourcesMax = 64;

export class ResourceStack {
  private readonly entries: Release[] = [];
  private releasing = false;

  /** How many releases are registered and not yet run. */
  get size(): number {
    return this.entries.length;
  }

  /** Registers how to undo what was (or is about to be) acquired. */
  push(what: string, release: () => Promise<void> | void): void {
    if (this.releasing) {
      throw new Error(`ResourceStack.push('${what}'): already releasing`);
    }
    if (this.entries.length >= resourcesMax) {
      throw new Error(`ResourceStack.push('${what}'): more than ${resourcesMax} resources`);
    }
    this.entries.push({ what, release });
  }

  /**
   * Runs every registered release, newest first, each once. Returns the problems, one line each
   * ("remove the nftables tables: ..."); an empty list means everything was undone.
   */
  async releaseAll(): Promise<string[]> {
    if (this.releasing) {
      throw new Error('ResourceStack.releaseAll: already releasing');
    }
    this.releasing = true;
    const problems: string[] = [];
    try {
      for (let entry = this.entries.pop(); entry !== undefined; entry = this.entries.pop()) {
        try {
          await entry.release();
        } catch (error) {
          problems.push(`${entry.what}: ${errorText(error)}`);
        }
      }
    } finally {
      this.releasing = false;
    }
    return problems;
  }
}
