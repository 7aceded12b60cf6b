// The cluster interface as nlbd changes it: the cluster MAC (unicast mode) and the cluster IPs
// (src/dataplane/dataplane.ts does the changes; this file decides when, and remembers).
//
// The run file (paths.ts) remembers the interface's own MAC, and it is written BEFORE the MAC
// changes: whatever kills nlbd afterwards, the next start finds the MAC to put back (veths and
// some NICs have no permanent MAC to fall back on). A MAC left behind is not harmless: the host
// keeps answering for the cluster MAC, and a learning bridge may learn it on this port.
//
// `detach` undoes `attach` (cluster IPs first, so no VIP traffic arrives unfiltered, then the
// MAC) and removes the run file only once the MAC is back. It also undoes an attach that failed
// half-way. Both may run more than once in nlbd's life: a data plane lost and restored (nftables
// flushed by another program) is a detach, then an attach once the table is back.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  type AttachedInterface,
  type InterfaceSetup,
  attachInterface,
  detachInterface,
} from '../dataplane/dataplane.js';
import { type IpRoute, clusterIpPrefix } from '../dataplane/iproute.js';

/** The run file's content. */
export interface RunFile {
  readonly interface: string;
  readonly originalMac: string;
}

export function readRunFile(file: string): RunFile | undefined {
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<RunFile>;
    return typeof parsed.originalMac === 'string' && typeof parsed.interface === 'string'
      ? { interface: parsed.interface, originalMac: parsed.originalMac }
      : undefined;
  } catch {
    return undefined;
  }
}

function writeRunFile(file: string, record: RunFile): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(record)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}

export class ClusterInterface {
  /** What detach must undo; set before the first change, so a half-done attach is undone too. */
  private attached: AttachedInterface | undefined;

  /**
   * `rememberedMac`: the original MAC the previous nlbd's run file named for this interface,
   * used when the interface still carries the cluster MAC (no permanent MAC to restore).
   */
  constructor(
    private readonly ipRoute: IpRoute,
    readonly setup: InterfaceSetup,
    readonly runFile: string,
    readonly rememberedMac: string | undefined,
  ) {}

  get isAttached(): boolean {
    return this.attached !== undefined;
  }

  /**
   * Gives the interface the cluster MAC and the cluster IPs. Call it only while the filter is
   * in the kernel. Throws when a change fails; `detach` then undoes what was done.
   */
  async attach(): Promise<void> {
    if (this.attached !== undefined) {
      throw new Error('ClusterInterface.attach: already attached');
    }
    const { setup } = this;
    const link = await this.ipRoute.link(setup.interface);
    // The interface may still carry the cluster MAC (a crash, and no permanent MAC to restore):
    // the MAC to put back is then the one the previous run remembered, if any.
    const originalMac = link.mac !== setup.clusterMac ? link.mac : this.rememberedMac;
    // Until attachInterface says which cluster IPs it added, every one counts as added: they
    // were all removed by the clean phase, so any present now is this attach's.
    this.attached = {
      originalMac: originalMac ?? link.mac,
      added: setup.clusterIps.map(clusterIpPrefix),
    };
    if (originalMac !== undefined) {
      writeRunFile(this.runFile, { interface: setup.interface, originalMac });
    }
    const done = await attachInterface(this.ipRoute, setup);
    this.attached = { originalMac: originalMac ?? done.originalMac, added: done.added };
  }

  /**
   * Forgets what the previous nlbd remembered, once the clean phase put the interface's own MAC
   * back: a run file then describes nothing, and a stop before attach must leave none.
   */
  discardRemembered(): void {
    if (this.attached !== undefined) {
      throw new Error('ClusterInterface.discardRemembered: attached');
    }
    if (this.rememberedMac !== undefined) {
      rmSync(this.runFile, { force: true });
    }
  }

  /** Undoes attach (or what a failed attach did); the run file goes once the MAC is back. */
  async detach(): Promise<void> {
    const attached = this.attached;
    if (attached === undefined) {
      return;
    }
    await detachInterface(this.ipRoute, this.setup, attached);
    this.attached = undefined;
    rmSync(this.runFile, { force: true });
  }
}
