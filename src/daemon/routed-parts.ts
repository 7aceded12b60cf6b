// Routed mode's parts of a running nlbd (docs/routed.md): the kernel's forwarding set-up that
// attach and detach bring up and down (routed-net.ts), and the marker routes FRR announces the
// cluster IPs from, which follow the ownership the driver programs. nlbd drives FRR only through
// those routes: it never runs vtysh or a process per change.
//
// When the cluster IPs are announced: while the programmed ownership gives this host a bucket
// (or makes it the default host), so a joining host attracts traffic once it serves some, and
// a stopped, suspended or drainstopped one stops once its buckets have moved; never while the
// data plane is lost or the set-up is down. Any announcing host forwards what it does not own. A dead nlbd's routes go with its announcer's guard (route-announcer), a hung
// one's when the guard hears no keepalive for a lease; a host cut off from its router loses
// its routes there by BFD.
import { readFileSync } from 'node:fs';
import type { Config } from '../core/config.js';
import { errorText } from '../core/error-text.js';
import type { Ownership } from '../core/protocol.js';
import type { Runner } from '../dataplane/exec.js';
import {
  RouteAnnouncer,
  type RoutedNetSetup,
  mssClampFor,
  setUpRouted,
  tearDownRouted,
} from '../dataplane/routed-net.js';
import { peerOrder } from '../dataplane/routed-marks.js';
import { leaseTimeoutMsFor } from '../dataplane/spec.js';
import type { EventSink } from './event-names.js';
import { frrProblems, namespaceName } from './frr-status.js';

/** The uplink's MTU as the kernel has it now (the namespace's sysfs); 1500 when unreadable. */
function uplinkMtu(interfaceName: string): number {
  try {
    const mtu = Number(readFileSync(`/sys/class/net/${interfaceName}/mtu`, 'utf8').trim());
    return Number.isInteger(mtu) && mtu > 0 ? mtu : 1500;
  } catch {
    return 1500;
  }
}

/** BGP sessions come up within seconds of bgpd starting (1.5 s in the lab); 10 s is ample. */
export const frrCheckAfterMs = 10_000;

export function routedNetSetupOf(config: Config): RoutedNetSetup {
  const cluster = config.cluster;
  return {
    interface: cluster.interface,
    localAddress: config.host.dedicatedIp.address.text,
    peers: peerOrder((cluster.heartbeat.peers ?? []).map((peer) => peer.text)),
    clusterIps: cluster.clusterIps.filter((ip) => ip.family === 4).map((ip) => ip.text),
    vxlanPort: cluster.routed?.vxlanPort ?? 4789,
    forward: cluster.routed?.forward ?? 'vxlan',
  };
}

/** Whether a host with `ownership` should attract the cluster's traffic. */
export function shouldAnnounce(ownership: Ownership): boolean {
  return ownership.isDefault || ownership.rules.some((rule) => rule.owned.length > 0);
}

export class RoutedParts {
  readonly setup: RoutedNetSetup;
  readonly mssClamp: number;
  private readonly announcer: RouteAnnouncer;
  /** Whether the set-up is up (attach ran, detach did not since). */
  private up = false;
  private wanted = false;
  private frrCheck: NodeJS.Timeout | undefined;
  private readonly bgpPeers: readonly string[];

  constructor(
    config: Config,
    private readonly runner: Runner,
    private readonly log: EventSink,
  ) {
    this.setup = routedNetSetupOf(config);
    this.bgpPeers = (config.host.routed?.peers ?? []).map((peer) => peer.address);
    this.mssClamp = mssClampFor(uplinkMtu(config.cluster.interface), this.setup.forward);
    this.announcer = new RouteAnnouncer({
      runner,
      clusterIps: this.setup.clusterIps,
      guardMs: leaseTimeoutMsFor(config.cluster.heartbeat),
      onProblem: (text) => this.log({ event: 'route announcer problem', problem: text }),
    });
  }

  /** Brings the forwarding set-up up (attach); announcing waits for an ownership. */
  async attach(): Promise<void> {
    await setUpRouted(this.runner, this.setup);
    this.up = true;
    this.apply();
    this.scheduleFrrCheck();
  }

  /**
   * Once the sessions had time to come up, says what keeps FRR from announcing (bgpd not
   * running, a peer not established), with the fix, as `routed set-up problem` events.
   */
  private scheduleFrrCheck(): void {
    if (this.frrCheck !== undefined) return;
    this.frrCheck = setTimeout(() => {
      void namespaceName(this.runner)
        .then((netns) => frrProblems(this.runner, netns, this.bgpPeers))
        .then((problems) => {
          for (const problem of problems) this.log({ event: 'routed set-up problem', problem });
        });
    }, frrCheckAfterMs);
    this.frrCheck.unref();
  }

  /** Withdraws the routes, then takes the set-up down (detach, data plane lost, stop). */
  async detach(): Promise<void> {
    this.up = false;
    this.apply();
    await tearDownRouted(this.runner, this.setup);
  }

  /** Removes a crashed predecessor's set-up (its routes went with its guard). */
  async cleanup(): Promise<void> {
    await tearDownRouted(this.runner, this.setup);
  }

  /** Each programmed ownership: announce or withdraw as it says. */
  follow(ownership: Ownership): void {
    this.wanted = shouldAnnounce(ownership);
    this.apply();
  }

  /** Every heartbeat sent: the guard hears nlbd is alive. */
  keepalive(): void {
    try {
      this.announcer.keepalive();
    } catch (error) {
      this.log({ event: 'route announcer problem', problem: errorText(error) });
    }
  }

  get announced(): boolean {
    return this.announcer.announced;
  }

  close(): void {
    clearTimeout(this.frrCheck);
    this.announcer.close({ withdraw: true });
  }

  private apply(): void {
    const announce = this.up && this.wanted;
    if (announce === this.announcer.announced) return;
    try {
      if (announce) this.announcer.announce();
      else this.announcer.withdraw();
      this.log({
        event: announce ? 'cluster IPs announced' : 'cluster IPs withdrawn',
        clusterIps: this.setup.clusterIps,
      });
    } catch (error) {
      this.log({ event: 'route announcer problem', problem: errorText(error) });
    }
  }
}
