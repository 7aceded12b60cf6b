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
//
// While attached, `missing` tells cheaply (no process: the kernel's address list and /sys) what
// someone took away by hand (a cluster IP deleted, `ip addr flush`, the MAC changed), and
// `repair` puts it back: a host without its cluster IP or cluster MAC would silently drop the
// clients of every bucket it owns. attach, detach and repair never overlap.
import { Serial } from '../core/serial.js';
import { readFileSync, rmSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { type Address, addressesEqual, parseAddress } from '../core/address.js';
import {
  type AttachedInterface,
  type InterfaceSetup,
  attachInterface,
  detachInterface,
} from '../dataplane/dataplane.js';
import { type IpRoute, clusterIpPrefix } from '../dataplane/iproute.js';
import { writeFileAtomic } from '../node/atomic-file.js';

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
  writeFileAtomic(file, `${JSON.stringify(record)}\n`, { mode: 0o600, dirMode: 0o755 });
}

/** What the kernel says the interface has now: its MAC and its addresses (no process run). */
export interface InterfaceNow {
  readonly mac: string | undefined;
  readonly addresses: readonly string[];
  /** The group MACs it takes frames for (/proc/net/dev_mcast), lower case. */
  readonly groupMacs: readonly string[];
}

/**
 * The group MACs of `ifname` in /proc/net/dev_mcast, whose lines read
 * `<ifindex> <name> <users> <static> <12 hex digits>`.
 */
export function groupMacsOf(devMcast: string, ifname: string): string[] {
  return devMcast
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields[1] === ifname && /^[0-9a-f]{12}$/i.test(fields[4] ?? ''))
    .map((fields) => fields[4]!.toLowerCase().match(/../g)!.join(':'));
}

export function readInterfaceNow(ifname: string): InterfaceNow {
  let mac: string | undefined;
  try {
    mac = readFileSync(`/sys/class/net/${ifname}/address`, 'utf8').trim().toLowerCase();
  } catch {
    mac = undefined;
  }
  const addresses = (networkInterfaces()[ifname] ?? []).map((a) => a.address);
  let groupMacs: string[];
  try {
    groupMacs = groupMacsOf(readFileSync('/proc/net/dev_mcast', 'utf8'), ifname);
  } catch {
    groupMacs = [];
  }
  return { mac, addresses, groupMacs };
}

/** What someone took away from an attached interface (see `ClusterInterface.missing`). */
export interface Missing {
  /** The cluster MAC is not the interface's MAC; `found` is the MAC it has instead. */
  readonly mac: { readonly found: string | undefined } | undefined;
  /** Multicast mode: the interface no longer takes the group MAC's frames. */
  readonly groupMac: boolean;
  readonly ips: readonly Address[];
}

export class ClusterInterface {
  /** What detach must undo; set before the first change, so a half-done attach is undone too. */
  private attached: AttachedInterface | undefined;
  /**
   * Set when the last attach could not install the MAC guard (the host works without it, but
   * a flushed masking table may then let the switch learn the cluster MAC): why.
   */
  guardWarning: string | undefined;
  /** Set when the last attach could not announce the cluster IPs (attachInterface): why. */
  announceProblem: string | undefined;
  /** The last of attach, detach and repair begun: the next one waits for it. */
  /** attach, detach and repair run one at a time: each reads what the one before changed. */
  private readonly busy = new Serial();

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

  /**
   * Gives the interface the cluster MAC and the cluster IPs. Call it only while the filter is
   * in the kernel. Throws when a change fails; `detach` then undoes what was done.
   */
  attach(): Promise<void> {
    return this.exclusive(() => this.attachNow());
  }

  private exclusive<T>(body: () => Promise<T>): Promise<T> {
    return this.busy.run(body);
  }

  /**
   * What of the attached setup the interface lacks now: the cluster MAC (and the MAC found
   * instead) and the cluster IPs that are gone; undefined when whole or not attached.
   */
  missing(now: InterfaceNow = readInterfaceNow(this.setup.interface)): Missing | undefined {
    if (this.attached === undefined) return undefined;
    const { clusterMac, clusterIps, groupMac } = this.setup;
    const macGone = clusterMac !== undefined && now.mac !== clusterMac;
    const groupMacGone = groupMac !== undefined && !now.groupMacs.includes(groupMac);
    const ips = clusterIps.filter(
      (ip) =>
        !now.addresses.some((text) => {
          const address = parseAddress(text.split('%')[0]!);
          return address !== undefined && addressesEqual(address, ip);
        }),
    );
    if (!macGone && !groupMacGone && ips.length === 0) return undefined;
    return { mac: macGone ? { found: now.mac } : undefined, groupMac: groupMacGone, ips };
  }

  /** `missing` in words, for the log. */
  describe(missing: Missing): string[] {
    return [
      ...(missing.mac === undefined
        ? []
        : [`cluster MAC ${this.setup.clusterMac} (found ${missing.mac.found ?? 'no interface'})`]),
      ...(missing.groupMac ? [`group MAC ${this.setup.groupMac}`] : []),
      ...missing.ips.map((ip) => `cluster IP ${ip.text}`),
    ];
  }

  /**
   * Puts back what `missing` finds (while still attached); returns what was put back, in words.
   * Cluster IPs it adds again are removed by detach as before.
   */
  repair(): Promise<string[]> {
    return this.exclusive(async () => {
      const gone = this.missing();
      if (gone === undefined) return [];
      const { setup } = this;
      if (setup.clusterMac !== undefined && gone.mac !== undefined) {
        await this.ipRoute.setMac(setup.interface, setup.clusterMac);
      }
      if (setup.groupMac !== undefined && gone.groupMac) {
        await this.ipRoute.addMulticastMac(setup.interface, setup.groupMac);
      }
      for (const ip of gone.ips) {
        await this.ipRoute.addAddress(setup.interface, clusterIpPrefix(ip));
      }
      // Neighbours may have cached something else meanwhile: announce again (attach said
      // already if announcing does not work here).
      await setup.announcer?.announce(setup.interface).catch(() => undefined);
      return this.describe(gone);
    });
  }

  private async attachNow(): Promise<void> {
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
    this.attached = { ...done, originalMac: originalMac ?? done.originalMac };
    this.guardWarning = done.warning;
    this.announceProblem = done.announceProblem;
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
  detach(): Promise<void> {
    return this.exclusive(() => this.detachNow());
  }

  private async detachNow(): Promise<void> {
    const attached = this.attached;
    if (attached === undefined) {
      return;
    }
    await detachInterface(this.ipRoute, this.setup, attached);
    this.attached = undefined;
    rmSync(this.runFile, { force: true });
  }
}
