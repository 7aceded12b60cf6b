// The size of a heartbeat, kept apart from the codec so that config validation can bound it
// without importing the codec (which itself depends on the config model).

/** Fits one Ethernet frame with room for IP/UDP headers and tunnels. */
export const datagramBytesMax = 1400;
export const heartbeatHeaderBytes = 73;
export const heartbeatRuleHeaderBytes = 9;
export const hmacBytes = 32;
/** Acknowledgements: a count, then (host id u8, sequence u32) per heard peer. */
export const heartbeatAckBytes = 5;
export const acksMax = 31;

/**
 * The encoded size of a heartbeat for rules with these bucket counts and this many acks
 * (by default the most a host can carry: one per possible peer).
 */
export function heartbeatBytes(bucketsPerRule: readonly number[], acks = acksMax): number {
  return (
    heartbeatHeaderBytes +
    1 +
    acks * heartbeatAckBytes +
    bucketsPerRule.reduce((n, b) => n + heartbeatRuleHeaderBytes + Math.ceil(b / 8), 0) +
    hmacBytes
  );
}
