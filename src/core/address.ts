// Addresses as the core sees them: parsed once at the edge into bytes, so hashing and rule
// matching never re-parse text. ipaddr.js does the parsing; we only insist on the strict forms
// (four-part dotted decimal for IPv4) that an operator means when writing a config.
import ipaddr from 'ipaddr.js';

export type Family = 4 | 6;

export interface Address {
  readonly family: Family;
  /** 4 bytes for IPv4, 16 for IPv6, in network order. */
  readonly bytes: Uint8Array;
  /** The canonical text: dotted decimal, or RFC 5952 compressed IPv6. */
  readonly text: string;
}

/** Parses an IPv4 or IPv6 address; returns undefined when `text` is neither. */
export function parseAddress(text: string): Address | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) {
    const bytes = Uint8Array.from(ipaddr.IPv4.parse(text).toByteArray());
    return { family: 4, bytes, text: ipaddr.IPv4.parse(text).toString() };
  }
  if (!text.includes('%') && ipaddr.IPv6.isValid(text)) {
    const parsed = ipaddr.IPv6.parse(text);
    if (parsed.isIPv4MappedAddress()) {
      return undefined;
    }
    return {
      family: 6,
      bytes: Uint8Array.from(parsed.toByteArray()),
      text: parsed.toRFC5952String(),
    };
  }
  return undefined;
}

/**
 * Why `text` is not an address `parseAddress` takes, in words an operator can act on: an
 * IPv4-mapped IPv6 address is written in its IPv4 form, a zone (`%eth0`) is not accepted, IPv4
 * is four decimal parts. Undefined when `text` parses.
 */
export function addressSyntaxProblem(text: string): string | undefined {
  if (parseAddress(text) !== undefined) {
    return undefined;
  }
  const percent = text.indexOf('%');
  if (percent > 0 && ipaddr.IPv6.isValid(text.slice(0, percent))) {
    return 'an IPv6 address with a zone (%...): zones are not accepted; give an address without one (a global or unique local address)';
  }
  if (ipaddr.IPv6.isValid(text)) {
    const parsed = ipaddr.IPv6.parse(text);
    if (parsed.isIPv4MappedAddress()) {
      return `an IPv4-mapped IPv6 address: write the IPv4 form, ${parsed.toIPv4Address().toString()}`;
    }
  }
  if (ipaddr.IPv4.isValid(text)) {
    return `expected an IPv4 address as four decimal parts, e.g. ${ipaddr.IPv4.parse(text).toString()}`;
  }
  return 'expected an IPv4 or IPv6 address';
}

/** IPv4 240.0.0.0/4 ("class E"): reserved; ipaddr.js files it under `reserved` with 198.18/15. */
const ipv4FutureUse = ipaddr.IPv4.parseCIDR('240.0.0.0/4');

/**
 * Why `address` cannot be the unicast address of a host or a cluster on a LAN, or undefined when
 * it can. Refused: the unspecified block, loopback, multicast, the limited broadcast, IPv4's
 * reserved 240.0.0.0/4, and link-local addresses (IPv4 169.254/16 is what hosts give themselves
 * when nothing else is configured, RFC 3927; IPv6 fe80::/10 means nothing without a zone).
 * Routers do not forward any of them, so clients could not reach a cluster IP there. Private,
 * unique local and documentation ranges are fine: a lab or a LAN uses exactly those.
 */
export function unicastProblem(address: Address): string | undefined {
  if (address.family === 4) {
    const parsed = new ipaddr.IPv4([...address.bytes]);
    switch (parsed.range()) {
      case 'unspecified':
        return 'in 0.0.0.0/8, the unspecified ("this network") block, which is never a destination';
      case 'loopback':
        return 'a loopback address (127.0.0.0/8): only this host itself can reach it';
      case 'multicast':
        return 'a multicast address (224.0.0.0/4): it names a group of receivers, not a host';
      case 'broadcast':
        return 'the limited broadcast address: it names every host of the segment';
      case 'linkLocal':
        return 'link-local (169.254.0.0/16): hosts give themselves these addresses (RFC 3927) and routers do not forward them';
    }
    if (parsed.match(ipv4FutureUse)) {
      return 'in 240.0.0.0/4, reserved for future use: routers and most hosts drop it';
    }
    return undefined;
  }
  switch (new ipaddr.IPv6([...address.bytes]).range()) {
    case 'unspecified':
      return 'the unspecified address (::), which is never a destination';
    case 'loopback':
      return 'the loopback address (::1): only this host itself can reach it';
    case 'multicast':
      return 'a multicast address (ff00::/8): it names a group of receivers, not a host';
    case 'linkLocal':
      return 'link-local (fe80::/10): it means something only with a zone (%eth0), and routers do not forward it';
  }
  return undefined;
}

export interface Prefix {
  readonly address: Address;
  readonly length: number;
}

/** Parses `addr/len` (or a bare address, which gets `defaultLength` for its family). */
export function parsePrefix(
  text: string,
  defaultLength: { 4: number; 6: number },
): Prefix | undefined {
  const slash = text.indexOf('/');
  const address = parseAddress(slash < 0 ? text : text.slice(0, slash));
  if (address === undefined) {
    return undefined;
  }
  if (slash < 0) {
    return { address, length: defaultLength[address.family] };
  }
  const lengthText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lengthText)) {
    return undefined;
  }
  const length = Number(lengthText);
  const lengthMax = address.family === 4 ? 32 : 128;
  return length <= lengthMax ? { address, length } : undefined;
}

export function addressesEqual(a: Address, b: Address): boolean {
  return a.family === b.family && a.bytes.every((byte, i) => byte === b.bytes[i]);
}

/** Keeps the first `length` bits of `bytes` and zeroes the rest. */
export function maskBytes(bytes: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bitsHere = Math.max(0, Math.min(8, length - i * 8));
    out[i] = (bytes[i] ?? 0) & ((0xff << (8 - bitsHere)) & 0xff);
  }
  return out;
}

/** Whether `address` is inside `prefix` (same family, same first `length` bits). */
export function prefixContains(prefix: Prefix, address: Address): boolean {
  if (prefix.address.family !== address.family) return false;
  const a = maskBytes(prefix.address.bytes, prefix.length);
  const b = maskBytes(address.bytes, prefix.length);
  return a.every((byte, i) => byte === b[i]);
}

export interface Endpoint {
  readonly address: Address;
  readonly port: number;
}

/** Parses `a.b.c.d:port` or `[v6]:port`; the error says which part is wrong. */
export function parseEndpoint(text: string): Endpoint | { error: string } {
  const trimmed = text.trim();
  let host: string;
  let portText: string;
  if (trimmed.startsWith('[')) {
    const close = trimmed.indexOf(']');
    if (close < 0 || trimmed[close + 1] !== ':') {
      return { error: `'${text}' is not [ipv6]:port` };
    }
    host = trimmed.slice(1, close);
    portText = trimmed.slice(close + 2);
  } else {
    const colon = trimmed.lastIndexOf(':');
    if (colon < 0 || trimmed.indexOf(':') !== colon) {
      return { error: `'${text}' is not ip:port (write IPv6 clients as [addr]:port)` };
    }
    host = trimmed.slice(0, colon);
    portText = trimmed.slice(colon + 1);
  }
  const address = parseAddress(host);
  if (address === undefined) {
    return { error: `'${host}' in '${text}' is not an IPv4 or IPv6 address` };
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    return { error: `port '${portText}' in '${text}' is not a number from 0 to 65535` };
  }
  return { address, port: Number(portText) };
}

export function formatEndpoint(endpoint: Endpoint): string {
  return endpoint.address.family === 6
    ? `[${endpoint.address.text}]:${endpoint.port}`
    : `${endpoint.address.text}:${endpoint.port}`;
}
