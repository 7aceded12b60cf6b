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
