// The size of a heartbeat, kept apart from the codec so that config validation can bound it
// without importing the codec (which itself depends on the config model).

/** Fits one Ethernet frame with room for IP/UDP headers and tunnels. */
export const datagramBytesMax = 1400;
export const heartbeatHeaderBytes = 73;
export const heartbeatRuleHeaderBytes = 9;
export const hmacBytes = 32;
/**
 * Acknowledgements: a count, then (host id u8, incarnation u64, sequence u32) per host id heard.
 * The incarnation makes an ack name one process: a heartbeat that acks a receiver's current
 * incarnation at a recent sequence was provably made after it (see host.ts, freshness).
 */
export const heartbeatAckBytes = 13;
/**
 * One ack per process heard: the 31 other ids, and a second process on an id when two hosts
 * use it (our own id included). More than that (several duplicated ids at once) drops the
 * least useful acks first.
 */
export const acksMax = 32;

/**
 * The encoded size of a heartbeat for rules with these bucket counts and this many acks
 * (by default the most a host can carry: one per possible peer), with each rule's held bitmap
 * (routed mode) or without.
 */
export function heartbeatBytes(
  bucketsPerRule: readonly number[],
  acks = acksMax,
  withHeld = false,
): number {
  const bitmaps = withHeld ? 2 : 1;
  return (
    heartbeatHeaderBytes +
    1 +
    acks * heartbeatAckBytes +
    bucketsPerRule.reduce((n, b) => n + heartbeatRuleHeaderBytes + bitmaps * Math.ceil(b / 8), 0) +
    hmacBytes
  );
}
