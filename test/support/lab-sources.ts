// Client source addresses for the lab-cluster tests (test/support/lab-cluster.ts re-exports
// them): the client's own addresses in the lab's family, and addresses in other networks.
// Network safety: every address and route added here lives inside a namespace of a lab this
// session created, in 198.18.0.0/15 or 2001:db8::/32 (docs/lab.md#network-safety).
import { ipIn } from '../../src/lab/netns.js';
import { isLabSafeAddress } from '../../src/lab/naming.js';
import type { ClusterLab } from './lab-cluster.js';

/**
 * Adds `count` client addresses in as many other networks (198.19.k.7/32, or 2001:db8:19:k::7
 * in an IPv6 variant, on client c1's eth0) and a route back to them through c1 in every host
 * namespace, so the hosts' replies reach them. The lab itself is one /24 (one /64), where
 * `network` affinity would see a single client network.
 */
export async function addForeignSubnetSources(lab: ClusterLab, count: number): Promise<string[]> {
  if (!Number.isInteger(count) || count < 1 || count > 256) {
    throw new RangeError(`foreign subnet sources: 1..256, got ${count}`);
  }
  const client = lab.state.clients[0]!;
  const v6 = lab.variant.family === 6;
  const addresses = Array.from({ length: count }, (_, k) =>
    v6 ? `2001:db8:19:${k.toString(16)}::7` : `198.19.${k}.7`,
  );
  for (const address of addresses) {
    if (!isLabSafeAddress(address)) throw new Error(`not a lab address: ${address}`);
    await ipIn(client.namespace, [
      'address',
      'add',
      `${address}/${v6 ? 128 : 32}`,
      'dev',
      client.interface,
      ...(v6 ? ['nodad'] : []),
    ]);
  }
  for (const host of lab.state.hosts) {
    await ipIn(host.namespace, [
      ...(v6 ? ['-6'] : []),
      'route',
      'add',
      v6 ? '2001:db8:19::/48' : '198.19.0.0/16',
      'via',
      lab.sources[0]!,
      'dev',
      host.interface,
    ]);
  }
  return addresses;
}

/** Every source address of client c1 in the lab's family: its own, its extras, and `extra` given. */
export function clientSources(lab: ClusterLab, extra: readonly string[] = []): string[] {
  return [...lab.sources, ...extra];
}
