// The size of a heartbeat, kept apart from the codec so that config validation can bound it
// without importing the codec (which itself depends on the config model).

/** Fits one Ethernet frame with room for IP/UDP headers and tunnels. */
export const datagramBytesMax = 1400;
export const heartbeatHeaderBytes = 73;
export const heartbeatRuleHeaderBytes = 9;
export const hmacBytes = 32;

/** The encoded size of a heartbeat for rules with these bucket counts. */
export function heartbeatBytes(bucketsPerRule: readonly number[]): number {
  return (
    heartbeatHeaderBytes +
    bucketsPerRule.reduce((n, b) => n + heartbeatRuleHeaderBytes + Math.ceil(b / 8), 0) +
    hmacBytes
  );
}
