// The iproute2 adapter: the cluster interface's MAC and addresses, read through `ip -j` (JSON)
// and changed with plain `ip` commands, plus `ss -K` to kill sockets. Everything runs in the
// network namespace of the process (the lab starts nlbd under `ip netns exec`).
import { type Address, type Prefix, parseAddress } from '../core/address.js';
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

/** The prefix a cluster IP is added with: the address alone, /32 or /128. */
export function clusterIpPrefix(address: Address): Prefix {
  return { address, length: address.family === 4 ? 32 : 128 };
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
  ): never {
    throw new CommandError(
      ['ip', ...args],
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
    };
  }

  async setMac(name: string, mac: string): Promise<void> {
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) {
      throw new Error(`setMac: '${mac}' is not a MAC address`);
    }
    const args = ['link', 'set', 'dev', name, 'address', mac.toLowerCase()];
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
    const link = await this.showLink(name, 'addr');
    const prefixes: Prefix[] = [];
    for (const info of link.addr_info ?? []) {
      const address = info.local === undefined ? undefined : parseAddress(info.local);
      if (address !== undefined && typeof info.prefixlen === 'number') {
        prefixes.push({ address, length: info.prefixlen });
      }
    }
    return prefixes;
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

  /**
   * Kills the connected TCP sockets whose local address is `address` (`ss -K`), so a host that
   * comes back after being declared dead stops talking on connections another host now owns.
   * Listening sockets are not touched. Needs CONFIG_INET_DIAG_DESTROY (present here).
   */
  async killSockets(address: Address): Promise<void> {
    const args = ['-K', '-t', '-n', 'src', address.text];
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
