// The cluster interface, in the order that keeps the host from ever taking VIP traffic
// unfiltered (see dataplane.ts): `attachInterface` after the table is programmed,
// `detachInterface` before it is removed, and `cleanupStale` for what a crashed predecessor left.
import { type Address, type Prefix, addressesEqual } from '../core/address.js';
import type { ClusterMode } from '../core/config.js';
import { errorText } from '../core/error-text.js';
import { type IpRoute, clusterIpPrefix } from './iproute.js';
import type { Nft } from './nft-api.js';
import { renderRemoval } from './render.js';
import type { Announcer } from './announce.js';
import { type GroupMembership, type JoinGroup, joinIgmpGroup } from './igmp.js';

export interface InterfaceSetup {
  readonly interface: string;
  readonly clusterIps: readonly Address[];
  readonly mode: ClusterMode;
  /** Unicast mode: the cluster MAC the interface takes. */
  readonly clusterMac?: string;
  /**
   * Multicast mode: the group MAC the interface takes frames for (`ip maddr add`). IGMP mode
   * needs none: joining the IGMP group makes the kernel take the group's MAC.
   */
  readonly groupMac?: string;
  /** IGMP mode: the group the host joins, and the dedicated IP whose interface joins it. */
  readonly igmp?: { readonly group: string; readonly interfaceAddress: string };
  /** How the membership is held (igmp.ts); default `joinIgmpGroup`. */
  readonly joinGroup?: JoinGroup;
  /** Sends gratuitous ARPs and unsolicited NAs once the cluster IPs are on; none when absent. */
  readonly announcer?: Announcer;
  /**
   * Routed mode: the cluster IPs are local routes, not addresses, and the forwarding set-up
   * (src/daemon/routed-parts.ts) comes up with attach and goes with detach; `clusterIps` is
   * then empty, and the MAC stays the interface's own.
   */
  readonly routedHooks?: RoutedHooks;
}

export interface RoutedHooks {
  attach(): Promise<void>;
  detach(): Promise<void>;
  /** Removes what a crashed predecessor's set-up left. */
  cleanup(): Promise<void>;
}

export interface AttachedInterface {
  /** The MAC before attach; detach puts it back. Persist it to survive a crash. */
  readonly originalMac: string;
  /** The cluster IPs attach added (those already present are left alone on detach too). */
  readonly added: readonly Prefix[];
  /** Set when the MAC guard could not be installed (the host works without it); why. */
  readonly warning?: string;
  /** IGMP mode: the membership detach gives up. */
  readonly membership?: GroupMembership;
  /** Set when the announcements could not be sent (the host works without them); why. */
  readonly announceProblem?: string;
}

/**
 * Gives the cluster interface the cluster MAC (unicast mode) and the cluster IPs. Call it after
 * `program`, so the filter is in place before the first VIP packet can arrive. In unicast mode
 * the MAC guard (iproute.ts macGuardBytecode) goes on first: should the masking table ever be
 * missing, the host sends nothing rather than frames from the cluster MAC. A kernel without
 * it (no clsact or cls_bpf) still attaches, with a warning.
 */
export async function attachInterface(
  ipRoute: IpRoute,
  setup: InterfaceSetup,
): Promise<AttachedInterface> {
  const link = await ipRoute.link(setup.interface);
  if (setup.routedHooks !== undefined) {
    await setup.routedHooks.attach();
    return { originalMac: link.mac, added: [] };
  }
  let warning: string | undefined;
  if (setup.mode === 'unicast') {
    if (setup.clusterMac === undefined) {
      throw new Error('attachInterface: unicast mode needs clusterMac');
    }
    try {
      await ipRoute.addMacGuard(setup.interface, setup.clusterMac);
    } catch (error) {
      warning = `no MAC guard on ${setup.interface}: ${errorText(error)}; if nlbd's nftables tables are flushed, frames from the cluster MAC may reach the switch until they are back`;
    }
    if (link.mac !== setup.clusterMac) {
      await ipRoute.setMac(setup.interface, setup.clusterMac);
    }
  }
  if (setup.mode === 'multicast') {
    if (setup.groupMac === undefined) {
      throw new Error('attachInterface: multicast mode needs groupMac');
    }
    await ipRoute.addMulticastMac(setup.interface, setup.groupMac);
  }
  let membership: GroupMembership | undefined;
  if (setup.mode === 'igmp') {
    if (setup.igmp === undefined) {
      throw new Error('attachInterface: igmp mode needs igmp');
    }
    membership = await (setup.joinGroup ?? joinIgmpGroup)(
      setup.igmp.group,
      setup.igmp.interfaceAddress,
    );
  }
  const added: Prefix[] = [];
  try {
    for (const ip of setup.clusterIps) {
      const prefix = clusterIpPrefix(ip);
      if (await ipRoute.addAddress(setup.interface, prefix)) {
        added.push(prefix);
      }
    }
  } catch (error) {
    await membership?.leave();
    throw error;
  }
  let announceProblem: string | undefined;
  if (setup.announcer !== undefined) {
    try {
      await setup.announcer.announce(setup.interface);
    } catch (error) {
      announceProblem = `no gratuitous ARP / unsolicited NA on ${setup.interface}: ${errorText(error)}; neighbours that cached another MAC for a cluster IP keep it until their entry goes stale`;
    }
  }
  return {
    originalMac: link.mac,
    added,
    ...(warning === undefined ? {} : { warning }),
    ...(membership === undefined ? {} : { membership }),
    ...(announceProblem === undefined ? {} : { announceProblem }),
  };
}

/**
 * Undoes attachInterface: the cluster IPs first (no more VIP traffic), then the MAC, then the
 * MAC guard (nothing leaves from the cluster MAC any more).
 */
export async function detachInterface(
  ipRoute: IpRoute,
  setup: InterfaceSetup,
  attached: AttachedInterface,
): Promise<void> {
  await setup.routedHooks?.detach();
  for (const prefix of attached.added) {
    await ipRoute.deleteAddress(setup.interface, prefix);
  }
  await attached.membership?.leave();
  const link = await ipRoute.link(setup.interface);
  if (link.mac !== attached.originalMac) {
    await ipRoute.setMac(setup.interface, attached.originalMac);
  }
  if (setup.mode === 'unicast') {
    await ipRoute.removeMacGuard(setup.interface);
  }
  if (setup.groupMac !== undefined) {
    await ipRoute.deleteMulticastMac(setup.interface, setup.groupMac);
  }
}

export interface StaleSetup extends InterfaceSetup {
  readonly tableName: string;
  /** The MAC to restore if the interface still has the cluster MAC, e.g. from a state file. */
  readonly originalMac?: string;
}

export interface CleanupReport {
  readonly removedAddresses: readonly string[];
  /** The MAC put back, or undefined when the interface did not carry the cluster MAC. */
  readonly restoredMac: string | undefined;
  /** Set when the cluster MAC is still there because no original MAC was known. */
  readonly warning: string | undefined;
}

/**
 * Removes what a crashed predecessor left: the cluster IPs on the interface (first, so no VIP
 * traffic is taken unfiltered), the cluster MAC (back to the burned-in one, or
 * `originalMac`), the MAC guard, and both tables. Never touches the dedicated IP or any other
 * address.
 */
export async function cleanupStale(
  nft: Nft,
  ipRoute: IpRoute,
  setup: StaleSetup,
): Promise<CleanupReport> {
  const removedAddresses: string[] = [];
  const present = await ipRoute.addresses(setup.interface);
  for (const ip of setup.clusterIps) {
    const prefix = present.find((p) => addressesEqual(p.address, ip));
    if (prefix !== undefined && (await ipRoute.deleteAddress(setup.interface, prefix))) {
      removedAddresses.push(`${prefix.address.text}/${prefix.length}`);
    }
  }
  let restoredMac: string | undefined;
  let warning: string | undefined;
  const link = await ipRoute.link(setup.interface);
  if (setup.clusterMac !== undefined && link.mac === setup.clusterMac) {
    const original = link.permanentMac ?? setup.originalMac;
    if (original !== undefined && original !== link.mac) {
      await ipRoute.setMac(setup.interface, original);
      restoredMac = original;
    } else {
      warning = `${setup.interface} keeps the cluster MAC ${link.mac}: its original MAC is unknown (no permanent address); set one with 'ip link set dev ${setup.interface} address <mac>'`;
    }
  }
  if (setup.mode === 'unicast') {
    await ipRoute.removeMacGuard(setup.interface);
  }
  if (setup.groupMac !== undefined) {
    await ipRoute.deleteMulticastMac(setup.interface, setup.groupMac);
  }
  await setup.routedHooks?.cleanup();
  await nft.apply(renderRemoval(setup.tableName));
  return { removedAddresses, restoredMac, warning };
}
