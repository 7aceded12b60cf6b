import { describe, expect, it } from 'vitest';
import { type Address, parseAddress } from '../src/core/address.js';
import {
  clusterMacs,
  formatMac,
  hostSourceMac,
  igmpClusterMac,
  igmpGroup,
  isFormattedMac,
  multicastClusterMac,
  parseMac,
  unicastClusterMac,
} from '../src/core/mac.js';

function ip(text: string): Address {
  const address = parseAddress(text);
  if (address === undefined) throw new Error(`bad test address ${text}`);
  return address;
}

describe('NLB MAC formulas', () => {
  it('derives the unicast, multicast and IGMP MACs of 198.18.0.100', () => {
    const vip = ip('198.18.0.100');
    expect(formatMac(unicastClusterMac(vip))).toBe('02:bf:c6:12:00:64');
    expect(formatMac(multicastClusterMac(vip))).toBe('03:bf:c6:12:00:64');
    expect(formatMac(igmpClusterMac(vip))).toBe('01:00:5e:7f:00:64');
    expect(igmpGroup(vip).text).toBe('239.255.0.100');
  });

  it('uses every byte of the address (10.0.0.1, 255.254.253.252)', () => {
    expect(formatMac(unicastClusterMac(ip('10.0.0.1')))).toBe('02:bf:0a:00:00:01');
    const high = ip('255.254.253.252');
    expect(formatMac(unicastClusterMac(high))).toBe('02:bf:ff:fe:fd:fc');
    expect(formatMac(multicastClusterMac(high))).toBe('03:bf:ff:fe:fd:fc');
    expect(formatMac(igmpClusterMac(high))).toBe('01:00:5e:7f:fd:fc');
    expect(igmpGroup(high).text).toBe('239.255.253.252');
  });

  it('keeps the IGMP MAC the Ethernet address of the IGMP group (RFC 1112 mapping)', () => {
    for (const text of ['198.18.0.100', '10.1.2.3', '192.0.2.255']) {
      const group = igmpGroup(ip(text)).bytes;
      const mapped = Uint8Array.of(0x01, 0x00, 0x5e, group[1]! & 0x7f, group[2]!, group[3]!);
      expect(igmpClusterMac(ip(text))).toEqual(mapped);
    }
  });

  it('takes the last four bytes of an IPv6 cluster IP and says so', () => {
    const macs = clusterMacs(ip('2001:2::c612:64'));
    expect(formatMac(macs.unicast)).toBe('02:bf:c6:12:00:64');
    expect(macs.igmpGroup.text).toBe('239.255.0.100');
    expect(macs.fromIpv6Tail).toBe(true);
    expect(clusterMacs(ip('198.18.0.100')).fromIpv6Tail).toBe(false);
  });

  it("masks a host's source MAC with its host id in unicast mode", () => {
    expect(formatMac(hostSourceMac(1, ip('198.18.0.100')))).toBe('02:01:c6:12:00:64');
    expect(formatMac(hostSourceMac(32, ip('198.18.0.100')))).toBe('02:20:c6:12:00:64');
    expect(() => hostSourceMac(0, ip('198.18.0.100'))).toThrow();
  });
});

describe('parseMac', () => {
  it('reads six colon-separated hex octets in either case, and formatMac writes them back', () => {
    const mac = parseMac('02:BF:c6:12:00:64');
    expect(mac).toEqual(Uint8Array.of(0x02, 0xbf, 0xc6, 0x12, 0x00, 0x64));
    expect(formatMac(mac!)).toBe('02:bf:c6:12:00:64');
  });

  it('refuses what is not a MAC', () => {
    for (const text of [
      '',
      '02:bf:c6:12:00',
      '02:bf:c6:12:00:64:01',
      '2:bf:c6:12:00:64',
      '02-bf-c6-12-00-64',
      '02:bf:c6:12:00:6g',
      ' 02:bf:c6:12:00:64',
    ]) {
      expect(parseMac(text), text).toBeUndefined();
    }
  });

  it('isFormattedMac accepts only the lower-case form formatMac writes', () => {
    expect(isFormattedMac('02:bf:c6:12:00:64')).toBe(true);
    expect(isFormattedMac('02:BF:C6:12:00:64')).toBe(false);
    expect(isFormattedMac('not a mac')).toBe(false);
  });
});
