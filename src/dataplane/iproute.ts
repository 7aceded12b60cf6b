// The iproute2 adapter: the cluster interface's MAC and addresses, read through `ip -j` (JSON)
// and changed with plain `ip` commands, `ss -K` to kill sockets, and `tc` for the MAC guard.
// Everything runs in the network namespace of the process (the lab starts nlbd under
// `ip netns exec`).
import { type Address, type Prefix, parseAddress } from '../core/address.js';
import { isFormattedMac, parseMac } from '../core/mac.js';
import { CommandError, type Runner, localRunner } from './exec.js';

export interface LinkState {
  readonly name: string;
  /** The current MAC, lower case. */
  readonly mac: string;
  /** The burned-in MAC when it differs from the current one (real NICs); veths have none. */
  readonly permanentMac: string | undefined;
  /** Administratively up (`ip link set up`). */
  readonly up: boolean;
  /** The kernel's operational state: UP, DOWN, LOWERLAYERDOWN, UNKNOWN... */
  readonly operState: string;
  readonly mtu: number;
  /** The interface takes multicast (flag MULTICAST): multicast and IGMP modes need it. */
  readonly multicast: boolean;
}

/** One address of the namespace, with its interface (`IpRoute.allAddresses`). */
export interface InterfaceAddress {
  readonly interface: string;
  readonly prefix: Prefix;
}

interface IpLink {
  ifname?: string;
  address?: string;
  permaddr?: string;
  flags?: string[];
  operstate?: string;
  mtu?: number;
  addr_info?: { family?: string; local?: string; prefixlen?: number }[];
}

/**
 * The tc filter priority of the MAC guard: one of its own ('NL'), so removing the guard never
 * touches another program's filters, and low enough to run before most of them.
 */
export const macGuardPref = 0x4e4c;

/**
 * The MAC guard: a classic BPF program for cls_bpf in direct-action mode on the egress of the
 * cluster interface, which drops every frame whose source MAC is still `mac` and lets every
 * other frame on to the next filter (TC_ACT_SHOT = 2, TC_ACT_UNSPEC = -1). tc egress runs after
 * the nftables egress hook, so while the `netdev` masking table is there no frame matches; it
 * only catches what would leave unmasked without it: after `nft flush ruleset`, until nlbd puts
 * the table back, the host stays silent instead of teaching the switch the cluster MAC (a
 * learning switch would then send every VIP frame to this host alone until the entry ages out,
 * 300 s on a Linux bridge). Classic BPF, because this kernel has neither act_pedit nor
 * cls_flower to mask in tc itself, and classic BPF needs no compiler. At tc egress the frame
 * starts at the Ethernet header: bytes 6-9 and 10-11 are the source MAC.
 */
export function macGuardBytecode(mac: string): string {
  const bytes = parseMac(mac);
  if (bytes === undefined || !isFormattedMac(mac)) {
    throw new Error(`macGuardBytecode: '${mac}' is not a lower-case MAC`);
  }
  const high = ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0;
  const low = (bytes[4]! << 8) | bytes[5]!;
  return [
    '6', // instructions
    '32 0 0 6', // ld [6]
    `21 0 3 ${high}`, // jeq #high, next, pass
    '40 0 0 10', // ldh [10]
    `21 0 1 ${low}`, // jeq #low, drop, pass
    '6 0 0 2', // drop: ret #TC_ACT_SHOT
    '6 0 0 4294967295', // pass: ret #TC_ACT_UNSPEC
  ].join(',');
}

/** The prefix a cluster IP is added with: the address alone, /32 or /128. */
export function clusterIpPrefix(address: Address): Prefix {
  return { address, length: address.family === 4 ? 32 : 128 };
}

function checkedMac(what: string, mac: string): string {
  if (parseMac(mac) === undefined) {
    throw new Error(`${what}: '${mac}' is not a MAC address`);
  }
  return mac.toLowerCase();
}

function prefixesOf(link: IpLink): Prefix[] {
  const prefixes: Prefix[] = [];
  for (const info of link.addr_info ?? []) {
    const address = info.local === undefined ? undefined : parseAddress(info.local);
    if (address !== undefined && typeof info.prefixlen === 'number') {
      prefixes.push({ address, length: info.prefixlen });
    }
  }
  return prefixes;
}

function prefixText(prefix: Prefix): string {
  return `${prefix.address.text}/${prefix.length}`;
}

function parseLinks(argv: readonly string[], stdout: string): IpLink[] {
  try {
    const parsed = JSON.parse(stdout) as unknown;
    if (Array.isArray(parsed)) {
      return parsed as IpLink[];
    }
  } catch {
    // Reported below.
  }
  throw new CommandError(
    argv,
    'printed something that is not a JSON array',
    'is iproute2 >= 4.13 installed?',
  );
}

export class IpRoute {
  constructor(private readonly runner: Runner = localRunner()) {}

  private async ip(
    args: readonly string[],
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    return this.runner.run('ip', args);
  }

  private fail(
    args: readonly string[],
    result: { code: number; stderr: string },
    hint: string,
    tool: 'ip' | 'tc' = 'ip',
  ): never {
    throw new CommandError(
      [tool, ...args],
      `failed (exit ${result.code}): ${result.stderr.trim()}`,
      hint,
    );
  }

  private async showLink(name: string, what: 'link' | 'addr'): Promise<IpLink> {
    const args = ['-j', what, 'show', 'dev', name];
    const result = await this.ip(args);
    if (result.code !== 0) {
      this.fail(
        args,
        result,
        `check that interface '${name}' exists in this network namespace (ip link)`,
      );
    }
    const link = parseLinks(['ip', ...args], result.stdout)[0];
    if (link === undefined) {
      this.fail(
        args,
        { code: result.code, stderr: 'no such interface' },
        `check the interface name '${name}'`,
      );
    }
    return link;
  }

  async link(name: string): Promise<LinkState> {
    const link = await this.showLink(name, 'link');
    return {
      name: link.ifname ?? name,
      mac: (link.address ?? '').toLowerCase(),
      permanentMac: link.permaddr?.toLowerCase(),
      up: (link.flags ?? []).includes('UP'),
      operState: link.operstate ?? 'UNKNOWN',
      mtu: link.mtu ?? 0,
      multicast: (link.flags ?? []).includes('MULTICAST'),
    };
  }

  async setMac(name: string, mac: string): Promise<void> {
    const args = ['link', 'set', 'dev', name, 'address', checkedMac('setMac', mac)];
    const result = await this.ip(args);
    if (result.code !== 0) {
      this.fail(args, result, 'some drivers only change the MAC while the link is down');
    }
  }

  async setUp(name: string): Promise<void> {
    const args = ['link', 'set', 'dev', name, 'up'];
    const result = await this.ip(args);
    if (result.code !== 0) {
      this.fail(args, result, `check that interface '${name}' exists`);
    }
  }

  /** The global and link-local addresses on `name`, as prefixes. */
  async addresses(name: string): Promise<Prefix[]> {
    return prefixesOf(await this.showLink(name, 'addr'));
  }

  /** Every address of every interface in this network namespace. */
  async allAddresses(): Promise<InterfaceAddress[]> {
    const args = ['-j', 'addr', 'show'];
    const result = await this.ip(args);
    if (result.code !== 0) {
      this.fail(args, result, 'is iproute2 installed?');
    }
    return parseLinks(['ip', ...args], result.stdout).flatMap((link) =>
      prefixesOf(link).map((prefix) => ({ interface: link.ifname ?? '?', prefix })),
    );
  }

  /**
   * Makes `name` take frames sent to the group MAC `mac` (`ip maddr add`, multicast mode's
   * cluster MAC). Adding one that is there already changes nothing.
   */
  async addMulticastMac(name: string, mac: string): Promise<void> {
    const args = ['maddr', 'add', checkedMac('addMulticastMac', mac), 'dev', name];
    const result = await this.ip(args);
    if (result.code !== 0) {
      this.fail(args, result, `check that interface '${name}' exists and takes multicast`);
    }
  }

  /** Undoes addMulticastMac; false when `name` did not have `mac`. */
  async deleteMulticastMac(name: string, mac: string): Promise<boolean> {
    const args = ['maddr', 'del', checkedMac('deleteMulticastMac', mac), 'dev', name];
    const result = await this.ip(args);
    if (result.code === 0) {
      return true;
    }
    if (/No such file or directory|Cannot find device/i.test(result.stderr)) {
      return false;
    }
    return this.fail(args, result, `check that interface '${name}' exists`);
  }

  /**
   * Adds `prefix` to `name`; returns false when it was already there. IPv6 addresses skip
   * duplicate address detection: every host carries the same cluster IP on purpose, and DAD
   * would leave it "dadfailed" and unusable on all but one.
   */
  async addAddress(name: string, prefix: Prefix): Promise<boolean> {
    const args = ['addr', 'add', prefixText(prefix), 'dev', name];
    if (prefix.address.family === 6) {
      args.push('nodad');
    }
    const result = await this.ip(args);
    if (result.code === 0) {
      return true;
    }
    if (/already assigned|File exists/i.test(result.stderr)) {
      return false;
    }
    return this.fail(args, result, `check that interface '${name}' exists`);
  }

  /** Removes `prefix` from `name`; returns false when it was not there. */
  async deleteAddress(name: string, prefix: Prefix): Promise<boolean> {
    const args = ['addr', 'del', prefixText(prefix), 'dev', name];
    const result = await this.ip(args);
    if (result.code === 0) {
      return true;
    }
    if (/not found|Cannot assign requested address|does not exist/i.test(result.stderr)) {
      return false;
    }
    return this.fail(args, result, `check that interface '${name}' exists`);
  }

  private async tc(args: readonly string[]): Promise<{ code: number; stderr: string }> {
    return this.runner.run('tc', args);
  }

  /**
   * Installs the MAC guard (macGuardBytecode) on `name`'s egress, in a clsact qdisc that is
   * added unless one is there already (another program's is shared, not replaced).
   */
  async addMacGuard(name: string, mac: string): Promise<void> {
    const qdisc = ['qdisc', 'add', 'dev', name, 'clsact'];
    const added = await this.tc(qdisc);
    if (added.code !== 0 && !/Exclusivity flag on|File exists/i.test(added.stderr)) {
      this.fail(qdisc, added, 'the kernel needs the clsact qdisc (CONFIG_NET_SCH_INGRESS)', 'tc');
    }
    const filter = [
      'filter',
      'replace',
      'dev',
      name,
      'egress',
      'pref',
      String(macGuardPref),
      'handle',
      '1',
      'protocol',
      'all',
      'bpf',
      'da',
      'bytecode',
      macGuardBytecode(mac),
    ];
    const result = await this.tc(filter);
    if (result.code !== 0) {
      this.fail(filter, result, 'the kernel needs the BPF classifier (CONFIG_NET_CLS_BPF)', 'tc');
    }
  }

  /** Removes the MAC guard from `name`; false when it was not there. The qdisc stays. */
  async removeMacGuard(name: string): Promise<boolean> {
    const args = ['filter', 'del', 'dev', name, 'egress', 'pref', String(macGuardPref)];
    const result = await this.tc(args);
    if (result.code === 0) {
      return true;
    }
    if (
      /Cannot find specified filter chain|Parent Qdisc doesn't exist|No such file/i.test(
        result.stderr,
      )
    ) {
      return false;
    }
    this.fail(args, result, `check that interface '${name}' exists`, 'tc');
  }

  /**
   * Kills the connected TCP sockets whose local address is `address` (`ss -K`), so a host that
   * comes back after being declared dead stops talking on connections another host now owns.
   * Listening sockets are not touched. Needs CONFIG_INET_DIAG_DESTROY (present here).
   */
  async killSockets(address: Address): Promise<void> {
    // ss takes an IPv6 address in brackets there (`src [2001:db8::1]`), as it prints them.
    const args = [
      '-K',
      '-t',
      '-n',
      'src',
      address.family === 6 ? `[${address.text}]` : address.text,
    ];
    const result = await this.runner.run('ss', args);
    if (result.code !== 0) {
      throw new CommandError(
        ['ss', ...args],
        `failed (exit ${result.code}): ${result.stderr.trim()}`,
        'the kernel needs CONFIG_INET_DIAG_DESTROY',
      );
    }
  }
}
