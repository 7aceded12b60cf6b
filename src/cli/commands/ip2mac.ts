// `nlb ip2mac <cluster-ip>`: the MAC addresses and IGMP group a cluster IP implies, by NLB's
// formulas (src/core/mac.ts). Pure computation: no config, no traffic.
import type { Command } from 'commander';
import { clusterMacs, formatMac, macSourceBytes } from '../../core/mac.js';
import { parseAddressArgument } from '../arguments.js';
import type { CliContext } from '../program.js';
import { type CommandOutput, fields } from '../render.js';

export interface Ip2MacData {
  readonly clusterIp: string;
  readonly unicast: string;
  readonly multicast: string;
  readonly igmp: string;
  readonly igmpGroup: string;
  /** Set for IPv6 cluster IPs, which NLB's formulas do not cover; null otherwise. */
  readonly note: string | null;
}

export function ip2mac(clusterIpText: string): CommandOutput<Ip2MacData> {
  const clusterIp = parseAddressArgument('<cluster-ip>', clusterIpText, '198.18.0.100');
  const macs = clusterMacs(clusterIp);
  const note = macs.fromIpv6Tail
    ? `NLB derives these from an IPv4 address; for the IPv6 cluster IP ${clusterIp.text} nlb ` +
      `uses its last four bytes (${macSourceBytes(clusterIp).join('.')}).`
    : null;
  const data: Ip2MacData = {
    clusterIp: clusterIp.text,
    unicast: formatMac(macs.unicast),
    multicast: formatMac(macs.multicast),
    igmp: formatMac(macs.igmp),
    igmpGroup: macs.igmpGroup.text,
    note,
  };
  return {
    data,
    human: fields(
      [
        ['cluster IP', data.clusterIp],
        ['unicast MAC', data.unicast],
        ['multicast MAC', data.multicast],
        ['IGMP MAC', data.igmp],
        ['IGMP group', data.igmpGroup],
      ],
      note === null ? [] : [`note: ${note}`],
    ),
  };
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('ip2mac')
    .description('show the unicast, multicast and IGMP MACs and the IGMP group of a cluster IP')
    .argument('<cluster-ip>', 'the cluster IP (IPv4, or IPv6: its last four bytes are used)')
    .addHelpText(
      'after',
      '\nFor cluster IP a.b.c.d: unicast 02:bf:a:b:c:d, multicast 03:bf:a:b:c:d,\n' +
        'IGMP 01:00:5e:7f:c:d with IGMP group 239.255.c.d.\n\nExample:\n  nlb ip2mac 198.18.0.100\n',
    )
    .action(ctx.action((clusterIp: string) => ip2mac(clusterIp)));
}
