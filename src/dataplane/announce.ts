// Telling the neighbours where the cluster IPs are: a gratuitous ARP for every IPv4 address and
// an unsolicited neighbour advertisement for every IPv6 address of the cluster interface, sent
// by the kernel itself, so they pass the output hooks (the `arp` table and the NA rewrite give
// them the group MAC in multicast and IGMP modes; unicast mode's interface MAC is the cluster
// MAC already). Node has no raw sockets, and the kernel sends both on a change of the
// interface's MAC when `arp_notify` and `ndisc_notify` are on (checked on kernel 6.18): setting
// the MAC it already has is such a change, without a carrier flap (one RTM_NEWLINK, the link
// stays up; the host's own neighbour cache on the interface is flushed and refills). The two
// settings are on only for that moment: the kernel sends both before `ip link set` returns.
// Neighbours update an entry they have (a client that cached a host's own MAC, or another
// mode's); one without an entry asks, and gets the same answer.
import { readFileSync, writeFileSync } from 'node:fs';
import type { IpRoute } from './iproute.js';

export interface Announcer {
  /** Sends the announcements for every address of `ifname`. */
  announce(ifname: string): Promise<void>;
}

/** The settings, read and written as files (/proc/sys is per network namespace). */
export interface SettingFiles {
  read(file: string): string | undefined;
  write(file: string, value: string): void;
}

export const procSysFiles: SettingFiles = {
  read: (file) => {
    try {
      return readFileSync(file, 'utf8').trim();
    } catch {
      return undefined;
    }
  },
  write: (file, value) => writeFileSync(file, `${value}\n`),
};

export class KernelAnnouncer implements Announcer {
  constructor(
    private readonly ipRoute: IpRoute,
    private readonly files: SettingFiles = procSysFiles,
  ) {}

  async announce(ifname: string): Promise<void> {
    // An interface without IPv6 has no ndisc_notify: then only the ARP goes.
    const settings = [
      `/proc/sys/net/ipv4/conf/${ifname}/arp_notify`,
      `/proc/sys/net/ipv6/conf/${ifname}/ndisc_notify`,
    ]
      .map((file) => ({ file, before: this.files.read(file) }))
      .filter((s): s is { file: string; before: string } => s.before !== undefined);
    try {
      for (const { file } of settings) this.files.write(file, '1');
      const link = await this.ipRoute.link(ifname);
      await this.ipRoute.setMac(ifname, link.mac);
    } finally {
      for (const { file, before } of settings) this.files.write(file, before);
    }
  }
}
